"""The review logic without a server: items, the form, answers, timeouts, outcomes; plan keys."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import yaml

from agentfleet.errors import PlanError, ReviewError
from agentfleet.plan import load_plan, plan_json_schema
from agentfleet.results import AttemptResult
from agentfleet.review import (
    PLAN,
    Reviews,
    answer_fields,
    decided,
    form_markdown,
    is_pause_of,
    parse_answers,
    pause_key,
    plan_item,
    read_choice,
    task_item,
)
from agentfleet.selection import Candidate, choose


def candidate(k: int, passed: bool = True, score: float | None = None, **kw) -> Candidate:
    return Candidate(k=k, branch=f"agentfleet-attempts/s/api/{k}", passed=passed,
                     files=kw.pop("files", ["api.py"]), added=kw.pop("added", k),
                     removed=0, score=score, verify_exit_status=0 if passed else 1,
                     reason="" if passed else "verify failed (exit 1)", **kw)


def result(k: int, passed: bool = True) -> AttemptResult:
    return AttemptResult(task_id="api", attempt=k, branch=f"agentfleet-attempts/s/api/{k}",
                         start_sha="0" * 40, head_sha=str(k) * 40, succeeded=passed)


SELECTION = choose([candidate(1, score=5.0), candidate(2, score=2.0), candidate(3, False)],
                   "min")
RESULTS = {1: result(1), 2: result(2), 3: result(3, passed=False)}


def test_a_task_item_offers_the_passing_candidates_and_reject_defaulting_to_the_choice():
    item = task_item("api", SELECTION, timeout_s=60, on_timeout="auto", now=100.0)
    assert item is not None
    assert item.choices == ["k=1", "k=2", "reject"] and item.default == "k=2"
    assert item.deadline == 160.0
    assert "Automatic choice: **k=2** (k=2 won on score: 2.0 < 5.0)" in item.markdown
    assert "| 1 | passed | `agentfleet-attempts/s/api/1` | 1 file (+1 -0): api.py | exit 0 " \
           "| 5 | 1 |  |" in item.markdown
    assert "| 3 | failed |" in item.markdown and "verify failed (exit 1)" in item.markdown


def test_nothing_passed_means_nothing_to_review():
    none = choose([candidate(1, False)], "min")
    assert task_item("api", none, timeout_s=60, on_timeout="auto", now=0) is None


def test_one_form_for_every_pending_review_with_a_field_each():
    items = [task_item("api", SELECTION, timeout_s=3600, on_timeout="fail", now=0),
             plan_item("# Proposed plan", timeout_s=60, on_timeout="auto", now=0)]
    text = form_markdown(items, "s")
    assert text.startswith("# agentfleet review: sprint `s`\n\n2 reviews waiting.")
    assert "Unanswered after 1h: `reject` (on_review_timeout: fail)" in text
    assert "Unanswered after 1m: `approve` (on_review_timeout: auto)" in text
    form = pydantic.create_model("Form", **answer_fields(items))
    assert form().model_dump() == {"api": "k=2", PLAN: "approve"}
    schema = form.model_json_schema()["properties"]
    assert schema["api"]["enum"] == ["k=1", "k=2", "reject"]
    with pytest.raises(pydantic.ValidationError):
        form(api="k=3")  # k=3 failed: not a choice


def test_answers_decide_and_unknown_ones_are_refused():
    reviews = Reviews()
    reviews.hold(task_item("api", SELECTION, timeout_s=60, on_timeout="auto", now=0))
    with pytest.raises(ReviewError, match="no review of 'db' is waiting; api: 'k=3' is not"):
        reviews.answer({"db": "k=1", "api": "k=3"})
    (decision,) = reviews.answer({"api": "k=1"})
    assert decision.k == 1 and decision.by == "review" and not decision.rejected
    assert decision.line == "api: k=1 by review (the automatic choice was k=2)"
    assert not reviews.pending


def test_timeouts_take_the_automatic_choice_or_fail_only_when_due():
    reviews = Reviews()
    reviews.hold(task_item("api", SELECTION, timeout_s=10, on_timeout="auto", now=0))
    reviews.hold(task_item("db", SELECTION, timeout_s=30, on_timeout="fail", now=0))
    assert reviews.seconds_left(4.0) == 6.0
    assert reviews.expired(9.9) == []
    (auto,) = reviews.expired(10.0)
    assert (auto.key, auto.choice, auto.by) == ("api", "k=2", "timeout")
    assert auto.line == "api: review not answered within 10s; on_review_timeout: auto, so k=2"
    assert reviews.seconds_left(50.0) == 0.0
    (fail,) = reviews.expired(50.0)
    assert fail.rejected and fail.line.endswith("on_review_timeout: fail, so reject")
    assert reviews.seconds_left(50.0) is None


def test_the_outcome_of_a_pick_a_confirmation_a_reject_and_a_timeout():
    reviews = Reviews()
    for key in ("a", "b", "c"):
        reviews.hold(task_item(key, SELECTION, timeout_s=1, on_timeout="fail", now=0))
    pick, same, reject = reviews.answer({"a": "k=1", "b": "k=2", "c": "reject"})
    res, sel = decided(pick, RESULTS, SELECTION)
    assert res.attempt == 1 and sel.winner_k == 1 and sel.criterion == "review"
    assert sel.sentence == "k=1 chosen by review (automatic: k=2)"
    res, sel = decided(same, RESULTS, SELECTION)
    assert res.attempt == 2 and sel.criterion == "score"
    assert sel.sentence.endswith("; confirmed by review")
    res, _ = decided(reject, RESULTS, SELECTION)
    assert not res.succeeded and res.reason == "rejected by review; the automatic choice was k=2"
    assert res.branch == "agentfleet-attempts/s/api/1"  # branches are kept
    reviews.hold(task_item("d", SELECTION, timeout_s=1, on_timeout="fail", now=0))
    (late,) = reviews.expired(5)
    res, _ = decided(late, RESULTS, SELECTION)
    assert res.reason == "review timed out (on_review_timeout: fail); the automatic choice was k=2"


def test_typed_answers_and_command_line_answers():
    choices = ["k=1", "k=2", "reject"]
    assert read_choice("", choices, "k=2") == "k=2"
    assert read_choice(" 1 ", choices, "k=2") == "k=1"
    assert read_choice("r", choices, "k=2") == "reject"
    assert read_choice("k=3", choices, "k=2") is None
    fields = {"api": (choices, "k=2"), "db": (["k=1", "reject"], "k=1")}
    assert parse_answers(["api=1"], fields, auto=True) == {"api": "k=1", "db": "k=1"}
    assert parse_answers(["api=reject", "db=k=1"], fields, auto=False) == {
        "api": "reject", "db": "k=1"}
    with pytest.raises(ReviewError, match="no answer for db: add --answer db=CHOICE, or --auto"):
        parse_answers(["api=2"], fields, auto=False)
    with pytest.raises(ReviewError, match="no review of 'web' is waiting"):
        parse_answers(["web=1"], fields, auto=True)
    with pytest.raises(ReviewError, match="'api' : expected TASK=CHOICE|expected TASK=CHOICE"):
        parse_answers(["api"], fields, auto=True)


def test_pause_keys_name_the_sprint():
    key = pause_key("orders", "ab12")
    assert is_pause_of(key, "orders") and not is_pause_of(key, "order")
    assert not is_pause_of(None, "orders")


def test_plan_keys_review_review_timeout_and_on_review_timeout(tmp_path: Path):
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({
        "name": "s", "on_review_timeout": "fail",
        "tasks": [{"id": "a", "prompt": "x", "review": True, "review_timeout": "90s"},
                  {"id": "b", "prompt": "y", "on_review_timeout": "auto"}],
    }))
    plan = load_plan(path)
    assert plan.task_review("a") and not plan.task_review("b")
    assert plan.task_review_timeout("a") == 90 and plan.task_review_timeout("b") == 3600
    assert plan.task_on_review_timeout("a") == "fail"
    assert plan.task_on_review_timeout("b") == "auto"
    path.write_text(yaml.safe_dump({"name": "s", "tasks": [
        {"id": "a", "prompt": "x", "review": "maybe", "on_review_timeout": "never"}]}))
    with pytest.raises(PlanError) as caught:
        load_plan(path)
    text = str(caught.value)
    assert "tasks[a].review: expected true or false, got the text 'maybe'" in text
    assert "tasks[a].on_review_timeout: the text 'never' is not one of 'auto' or 'fail'" in text
    task = plan_json_schema()["$defs"]["Task"]["properties"]
    assert {"review", "review_timeout", "on_review_timeout"} <= set(task)
    assert plan_json_schema()["properties"]["review_timeout"]["default"] == "1h"


def test_agentfleet_plan_marks_a_reviewed_task(make_repo):
    from agentfleet.checking import check_plan_data, render_plan

    repo = make_repo()
    checked = check_plan_data({"name": "s", "agent": {"kind": "command", "run": "true"},
                               "tasks": [{"id": "a", "prompt": "x", "paths": ["a"],
                                          "review": True, "attempts": 2}]},
                              repo / "plan.yaml", source="plan.yaml")
    assert "  a  feature     a  2 attempts  review\n" in render_plan(checked)
