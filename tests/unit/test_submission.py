"""What an attempt starts from and is given: decided without git, Prefect or a server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentfleet.decompose import decompose
from agentfleet.plan import Plan
from agentfleet.submission import Prior, RunPlace, attempt_spec, decide_start, start_line


def plan(*tasks: dict[str, Any], **top: Any) -> Plan:
    return Plan.model_validate(
        {"name": "s", **top, "tasks": [{"prompt": f"do {t['id']}", **t} for t in tasks]}
    )


PLAN = plan(
    {"id": "db", "paths": ["src/db/**"], "stage": "foundation"},
    {"id": "api", "paths": ["src/**/*.py"]},
    {"id": "docs", "paths": ["docs/**"], "depends_on": ["api"]},
)
PLACE = RunPlace(repo=Path("/r"), worktree_root=Path("/w"), grace_s=1.5,
                 backoff_initial_s=0.5, lease_dir=Path("/l"))


def test_a_task_waiting_for_nothing_starts_from_base() -> None:
    decision = decide_start(PLAN, "db", [], {})
    assert decision.heads == [] and decision.predecessors == [] and decision.left_out == []
    assert start_line("a" * 40, decision.used, decision.left_out) == "starts from base aaaaaaaaaa"


def test_a_start_holds_every_prior_with_its_relation() -> None:
    waits = decompose(PLAN).waits_on
    assert waits["docs"] == ["api"] and waits["api"] == ["db"]
    priors = {"db": Prior("db", "d" * 40, "made the schema", " 1 file changed")}
    decision = decide_start(PLAN, "api", waits["api"], priors)
    assert decision.heads == ["d" * 40]
    assert [(p.task_id, p.relation, p.final_message) for p in decision.predecessors] == [
        ("db", "paths overlap", "made the schema")
    ]
    docs = decide_start(PLAN, "docs", ["api"], {"api": Prior("api", "e" * 40, None, "")})
    assert docs.predecessors[0].relation == "depends_on"


def test_a_failed_prior_is_left_out_and_said() -> None:
    decision = decide_start(PLAN, "api", ["db"], {})
    assert decision.heads == [] and decision.left_out == ["db"]
    line = start_line("b" * 40, decision.used, decision.left_out)
    assert line == "starts from base bbbbbbbbbb; waited for db, which failed: not in its start"


def test_the_spec_comes_from_the_plan_and_the_place() -> None:
    p = plan({"id": "api", "paths": ["src/**"], "verify": "make test", "timeout": "5m"},
             retries=1, keep_failed_worktrees=True)
    priors = {"db": Prior("db", "d" * 40, "made the schema", "stat")}
    decision = decide_start(p, "api", ["db"], priors)
    spec = attempt_spec(p, "api", 2, start_sha="c" * 40, predecessors=decision.predecessors,
                        place=PLACE)
    assert spec.branch == "agentfleet-attempts/s/api/2" and spec.attempt == 2
    assert spec.start_sha == "c" * 40 and spec.repo == Path("/r")
    assert spec.worktree_root == Path("/w") and spec.lease_dir == Path("/l")
    assert spec.verify == "make test" and spec.timeout_s == 300 and spec.retries == 1
    assert spec.keep_failed_worktree and spec.grace_s == 1.5 and spec.backoff_initial_s == 0.5
    assert spec.prompt.startswith("do api") and "made the schema" in spec.prompt
    assert "src/**" in spec.prompt


def test_attempt_k_uses_its_variant_and_hint() -> None:
    p = plan({"id": "q", "variants": [{"model": "fast", "hint": "prefer an index"},
                                      {"model": "deep", "env": {"X": "1"}}]},
             attempts=3, agent={"model": "base", "env": {"Y": "2"}})
    specs = [attempt_spec(p, "q", k, start_sha="c" * 40, predecessors=[], place=PLACE)
             for k in (1, 2, 3)]
    assert [s.agent.model for s in specs] == ["fast", "deep", "fast"]
    assert specs[0].prompt.endswith("prefer an index") and "prefer" not in specs[1].prompt
    assert specs[1].agent.env == {"Y": "2", "X": "1"}
    assert [s.branch for s in specs] == [f"agentfleet-attempts/s/q/{k}" for k in (1, 2, 3)]


def test_attempt_keys_inherit_and_are_bounded() -> None:
    import pytest
    from pydantic import ValidationError

    p = plan({"id": "a"}, {"id": "b", "attempts": 2, "score": "cat n", "score_goal": "max",
                           "early_stop": "first_pass"}, attempts=4)
    assert (p.task_attempts("a"), p.task_attempts("b")) == (4, 2)
    assert (p.task_score("a"), p.task_score("b"), p.task_score_goal("b")) == (None, "cat n", "max")
    assert (p.task_early_stop("a"), p.task_early_stop("b")) == ("none", "first_pass")
    assert plan({"id": "a"}).task_attempts("a") == 1
    for bad in (0, 9, 1.5):
        with pytest.raises(ValidationError):
            plan({"id": "a"}, attempts=bad)
    with pytest.raises(ValidationError):
        plan({"id": "a", "variants": [{"hint": "x", "modle": "y"}]})


def test_a_variant_that_leaves_a_command_agent_without_run_is_a_plan_problem() -> None:
    from agentfleet.plan import read_plan_data

    reading = read_plan_data(
        {"name": "s", "variants": [{"kind": "command"}, {"model": "x"}],
         "tasks": [{"id": "a", "prompt": "x"},
                   {"id": "b", "prompt": "y", "variants": [{"hint": "h"}, {"kind": "command"}]}]},
        Path("/tmp/plan.yaml"), source="plan.yaml",
    )
    assert [str(p) for p in reading.problems] == [
        "plan.yaml: variants[0].run: required when the agent kind is 'command' "
        "(the shell command to run)",
        "plan.yaml: tasks[b].variants[1].run: required when the agent kind is 'command' "
        "(the shell command to run)",
    ]
