"""``agentfleet status``/``show`` formatting: pure, from plain data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agentfleet.artifacts import attempt_key, attempt_markdown, summary_rows
from agentfleet.watching import (
    AttemptArtifact,
    SprintRunView,
    attempt_number,
    parse_task_ref,
    run_duration,
    show_attempt,
    show_sprint,
    status_table,
    table_rows,
)
from tests.unit.test_artifacts import failed, report, succeeded

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def finished_run(**more) -> SprintRunView:
    rows = summary_rows(report(applied=False))
    return SprintRunView(
        id="0a1b2c3d-0000-0000-0000-000000000000", name="sprint orders-v2",
        state_type="FAILED", message="sprint orders-v2: 1/2 tasks applied",
        start=NOW - timedelta(minutes=5), end=NOW - timedelta(minutes=1), run_time_s=242,
        summary=rows, url="http://127.0.0.1:4200/runs/flow-run/0a1b", **more,
    )


def test_status_lists_outcome_tasks_applied_tokens_duration_and_link() -> None:
    running = SprintRunView(id="ffff0000-0000-0000-0000-000000000000", name="sprint nightly",
                            state_type="RUNNING", start=NOW - timedelta(seconds=30))
    lines = status_table([running, finished_run()], NOW).splitlines()
    assert lines[0].split() == ["sprint", "flow", "run", "started", "outcome", "applied",
                                "tokens", "duration", "link"]
    assert lines[1].split()[:2] == ["nightly", "ffff0000"]
    assert lines[1].split()[4:8] == ["running", "-", "-", "30s"]
    assert lines[2].split()[4:] == ["failed", "1/2", "1,350", "4m02s",
                                    "http://127.0.0.1:4200/runs/flow-run/0a1b"]
    assert status_table([], NOW) == "no sprint runs on this server yet\n"


def test_a_run_without_prefects_run_time_is_timed_from_the_api_s_own_datetimes() -> None:
    from prefect.client.schemas.objects import FlowRun

    # What the API returns: Prefect's (pendulum's) datetimes, no total_run_time yet.
    api = FlowRun(flow_id="0a1b2c3d-0000-0000-0000-000000000000",
                  start_time="2026-11-30T11:58:00Z", end_time="2026-11-30T11:59:05Z")
    done = SprintRunView(id="0a1b", name="sprint quick", state_type="COMPLETED",
                         start=api.start_time, end=api.end_time)
    assert run_duration(done, NOW) == 65.0
    assert status_table([done], NOW).splitlines()[1].split()[7] == "1m05s"


def test_a_table_artifact_is_read_back_from_its_json_text() -> None:
    assert table_rows('[{"task": "a"}, 3]') == [{"task": "a"}]
    assert table_rows("not json") == [] and table_rows(None) == []


def test_task_refs_and_attempt_numbers_never_mix_up_tasks_with_a_common_prefix() -> None:
    assert parse_task_ref("db-indexes#2") == ("db-indexes", 2)
    assert parse_task_ref("db-indexes") == ("db-indexes", None)
    assert attempt_number(attempt_key("orders-v2", "db", 3), "orders-v2", "db") == 3
    assert attempt_number(attempt_key("orders-v2", "db-indexes", 1), "orders-v2", "db") is None


def test_show_attempt_prints_prompt_final_message_diffstat_and_verify_tail() -> None:
    result = succeeded()
    markdown = attempt_markdown(result, sprint="orders-v2")
    text = show_attempt(AttemptArtifact(key="k", markdown=markdown))
    assert text.startswith("== db-indexes #1: succeeded\n")
    assert "outcome: succeeded" in text and "branch: agentfleet-attempts/orders-v2/" in text
    assert "-- Prompt (as sent, with agentfleet's context)\n  [db-indexes] Add indexes." in text
    # A fence inside the prompt stays; only the section's own fence goes.
    assert "```python" in text
    assert "-- Final message\n  Added indexes orders_customer and orders_total." in text
    assert "-- Files changed\n   app/db.py          | 2 +-" in text
    assert "-- verify: passed" in text and "  line 99" in text and "line 40\n" not in text


def test_show_attempt_of_a_failed_attempt_says_why_and_what_it_left() -> None:
    text = show_attempt(AttemptArtifact(key="k", markdown=attempt_markdown(failed(),
                                                                           sprint="s")))
    assert "== docs #1: failed" in text
    assert "-- Error\n  exit status 7" in text
    assert "-- Files changed\n  (none)" in text


def test_show_sprint_lists_its_attempts_and_not_its_other_artifacts() -> None:
    attempts = [AttemptArtifact(key="agentfleet-orders-v2-docs-1", description="docs#1 failed"),
                AttemptArtifact(key="agentfleet-orders-v2-plan", description="waves")]
    text = show_sprint("orders-v2", finished_run(), attempts, NOW)
    assert text.splitlines()[0].startswith("sprint orders-v2: failed, 1/2 tasks applied")
    assert "  docs#1 failed" in text and "waves" not in text
