"""Artifact keys, the attempt's markdown, the sprint's table and the events' content."""

from __future__ import annotations

import re

import pytest

from agentfleet.artifacts import (
    ATTEMPT_COMPLETED,
    ATTEMPT_FAILED,
    SPRINT_APPLIED,
    SPRINT_FAILED,
    artifact_key,
    attempt_event,
    attempt_key,
    attempt_markdown,
    progress,
    progress_key,
    sprint_event,
    summary_key,
    summary_rows,
)
from agentfleet.codex.outcome import AttemptOutcome, CommandRun, Ending, Usage
from agentfleet.results import (
    AttemptResult,
    CheckResult,
    SprintReport,
    TaskOutcome,
    TaskReport,
)

KEY = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
BRANCH = "agentfleet-attempts/orders-v2/db-indexes/1"


def succeeded() -> AttemptResult:
    return AttemptResult(
        task_id="db-indexes", attempt=1, branch=BRANCH, start_sha="a" * 40, head_sha="b" * 40,
        succeeded=True,
        prompt="[db-indexes] Add indexes.\n\nContext from agentfleet: ```python\nx```\n",
        outcome=AttemptOutcome(
            ending=Ending.COMPLETED,
            final_message="Added indexes orders_customer and orders_total.",
            commands=[CommandRun(command="/bin/bash -lc 'cat app/db.py | head'", exit_code=0,
                                 status="completed"),
                      CommandRun(command="/bin/bash -lc 'exit 3'", exit_code=3, status="failed")],
            usage=Usage(input_tokens=1200, cached_input_tokens=200, output_tokens=150),
            duration_s=2.5, thread_id="thread-1",
        ),
        verify=CheckResult(command="python3 -m compileall -q app", passed=True, exit_status=0,
                           output_tail="\n".join(f"line {i}" for i in range(100)),
                           duration_s=0.3),
        files=["app/db.py", "migrations/002.sql"],
        diffstat=" app/db.py          | 2 +-\n migrations/002.sql | 2 ++\n",
        duration_s=3.25, tries=2,
    )


def failed() -> AttemptResult:
    return AttemptResult(
        task_id="docs", attempt=1, branch="agentfleet-attempts/orders-v2/docs/1",
        start_sha="a" * 40, succeeded=False, reason="agent failed_fatal: exit status 7",
        prompt="[docs] Document it.",
        outcome=AttemptOutcome(ending=Ending.FAILED_FATAL, error="exit status 7",
                               duration_s=0.1),
        duration_s=0.4,
    )


def report(*, applied: bool) -> SprintReport:
    docs = (TaskReport(task="docs", outcome=TaskOutcome.APPLIED, applied_commit="d" * 40)
            if applied else
            TaskReport(task="docs", outcome=TaskOutcome.FAILED, detail="exit status 7"))
    return SprintReport(
        sprint="orders-v2", repo="/r", base="main", target="agentfleet/orders-v2",
        tasks=[TaskReport(task="db-indexes", outcome=TaskOutcome.APPLIED, attempt_branch=BRANCH,
                          files=["app/db.py"], tokens=1350, duration_s=3.25,
                          applied_commit="c" * 40),
               docs],
        final_verify=CheckResult(command="pytest", passed=True, exit_status=0),
        target_moved=True, target_up_to_date=True, target_sha="e" * 40, duration_s=9.0,
    )


@pytest.mark.parametrize(
    ("parts", "key"),
    [
        (("agentfleet", "orders-v2", "db-indexes", 1), "agentfleet-orders-v2-db-indexes-1"),
        (("Agentfleet", "Orders V2", "db_indexes/x", 12), "agentfleet-orders-v2-db-indexes-x-12"),
        (("agentfleet", "--a--", "", "b"), "agentfleet-a-b"),
        (("___",), "agentfleet"),
        (("x" * 300,), "x" * 120),
    ],
)
def test_keys_use_only_lowercase_letters_digits_and_single_dashes(parts, key) -> None:
    assert artifact_key(*parts) == key
    assert KEY.match(artifact_key(*parts))


def test_keys_are_stable_per_task_and_per_sprint() -> None:
    assert attempt_key("orders-v2", "db-indexes", 1) == "agentfleet-orders-v2-db-indexes-1"
    assert summary_key("orders-v2") == "agentfleet-orders-v2-summary"
    assert progress_key("orders-v2") == "agentfleet-orders-v2-progress"


def test_attempt_markdown_has_prompt_message_commands_diffstat_verify_and_cost() -> None:
    md = attempt_markdown(succeeded(), sprint="orders-v2")
    assert md.startswith("# db-indexes #1: succeeded\n")
    # The prompt whole, in a fence longer than the backticks inside it.
    prompt = "[db-indexes] Add indexes.\n\nContext from agentfleet: ```python\nx```"
    assert f"````text\n{prompt}\n````" in md
    assert "Added indexes orders_customer and orders_total." in md
    assert "| `cat app/db.py \\| head` | 0 |" in md
    assert "| `exit 3` | 3 |" in md
    assert "migrations/002.sql | 2 ++" in md
    assert "## verify: passed" in md and "`python3 -m compileall -q app`" in md
    assert "line 99" in md and "line 59" not in md and "(60 lines before)" in md
    assert "| tokens | 1,350 (1,200 input, 200 cached, 150 output) |" in md
    assert "| duration | 3.2s, agent 2.5s, 2 agent runs |" in md
    assert f"| branch | `{BRANCH}` |" in md and "| commit | `bbbbbbbbbb` |" in md


def test_failed_attempt_markdown_says_why() -> None:
    md = attempt_markdown(failed(), sprint="orders-v2")
    assert md.startswith("# docs #1: failed\n")
    assert "| outcome | failed: agent failed_fatal: exit status 7 |" in md
    assert "## Error\n\n```text\nexit status 7\n```" in md
    assert "## Commands\n\n_none_" in md and "## Files changed\n\n_none_" in md
    assert "## verify" not in md


def test_summary_rows_one_per_task() -> None:
    rows = summary_rows(report(applied=False), {"db-indexes": succeeded(), "docs": failed()})
    assert rows == [
        {"task": "db-indexes", "attempts": 2, "outcome": "applied", "detail": "",
         "tokens": 1350, "duration": "3.2s", "applied": "cccccccccc", "branch": BRANCH},
        {"task": "docs", "attempts": 1, "outcome": "failed", "detail": "exit status 7",
         "tokens": 0, "duration": "0.0s", "applied": "no", "branch": ""},
    ]
    assert summary_rows(report(applied=True))[1]["attempts"] == 0


def test_progress_counts_finished_tasks() -> None:
    assert progress({"a": "pending", "b": "running"}) == (
        0.0, "0/2 tasks finished (1 pending, 1 running)"
    )
    percent, line = progress({"a": "succeeded", "b": "failed", "c": "blocked", "d": "done_before"})
    assert percent == 100.0 and line.startswith("4/4 tasks finished (")
    assert "1 done before" in line
    assert progress({"a": "succeeded", "b": "running", "c": "pending"})[0] == 33.3
    assert progress({}) == (100.0, "0/0 tasks finished ()")


def test_attempt_events_name_sprint_task_and_branch() -> None:
    ok = attempt_event(succeeded(), sprint="orders-v2")
    assert ok.event == ATTEMPT_COMPLETED
    assert ok.resource["prefect.resource.id"] == "agentfleet.sprint.orders-v2.task.db-indexes"
    assert ok.resource["agentfleet.branch"] == BRANCH
    assert {r["prefect.resource.role"]: r["prefect.resource.id"] for r in ok.related} == {
        "sprint": "agentfleet.sprint.orders-v2", "branch": f"agentfleet.branch.{BRANCH}",
    }
    assert ok.payload["outcome"] == "succeeded" and ok.payload["tokens"] == 1350
    bad = attempt_event(failed(), sprint="orders-v2")
    assert bad.event == ATTEMPT_FAILED
    assert bad.payload["reason"] == "agent failed_fatal: exit status 7"
    assert bad.payload["ending"] == "failed_fatal"


def test_sprint_events_applied_or_failed_with_target() -> None:
    good = sprint_event(report(applied=True))
    assert good.event == SPRINT_APPLIED and good.payload["reason"] == ""
    assert good.resource["prefect.resource.id"] == "agentfleet.sprint.orders-v2"
    assert good.resource["agentfleet.target"] == "agentfleet/orders-v2"
    roles = [(r["prefect.resource.role"], r["prefect.resource.id"]) for r in good.related]
    assert ("target", "agentfleet.branch.agentfleet/orders-v2") in roles
    assert ("task", "agentfleet.sprint.orders-v2.task.docs") in roles
    bad = sprint_event(report(applied=False))
    assert bad.event == SPRINT_FAILED
    assert bad.payload["not_applied"] == {"docs": "failed"}
    assert bad.payload["reason"] == "not applied: docs (failed)"
    assert bad.payload["applied"] == 1 and bad.payload["tasks"] == 2


def test_a_pool_sprints_table_has_a_worker_column() -> None:
    def report(*tasks: TaskReport) -> SprintReport:
        return SprintReport(sprint="s", repo="/r", base="main", target="t", tasks=list(tasks))

    local = report(TaskReport(task="a", outcome=TaskOutcome.APPLIED, applied_commit="c" * 40))
    assert "worker" not in local.table()
    pool = report(TaskReport(task="a", outcome=TaskOutcome.APPLIED, applied_commit="c" * 40,
                             ran_on="w2 (build-3)"),
                  TaskReport(task="b", outcome=TaskOutcome.NOT_RUN))
    header, _, first, second = pool.table().splitlines()
    assert header.split()[-1] == "worker"
    assert first.endswith("w2 (build-3)") and second.endswith("-")
