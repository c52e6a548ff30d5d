"""One attempt end to end with a `command` agent: the deadline, the paths check, the branch."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from agentfleet.agent_config import AgentConfig
from agentfleet.attempt import AttemptSpec, _AttemptRun, run_attempt
from agentfleet.codex.events import parse_event
from agentfleet.codex.outcome import Ending
from agentfleet.guardrails import RunGuards


def spec(repo: Path, tmp_path: Path, run: str, **kw: object) -> AttemptSpec:
    sha = os.popen(f"git -C {repo} rev-parse HEAD").read().strip()
    fields: dict[str, object] = dict(
        sprint="s1", task_id="t", attempt=1, branch="agentfleet-attempts/s1/t/1", repo=repo,
        worktree_root=tmp_path / "work", start_sha=sha, prompt="do it", paths=None,
        agent=AgentConfig(kind="command", run=run), timeout_s=20, retries=0, grace_s=1,
    )
    fields.update(kw)
    return AttemptSpec(**fields)  # type: ignore[arg-type]


def test_timeout_bounds_the_whole_attempt_setup_included(repo: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_attempt(
        spec(repo, tmp_path, "sleep 30", setup="sleep 2", timeout_s=3), env=dict(os.environ)
    )
    assert time.monotonic() - started < 8  # setup's 2 s and the agent's 1 s left, not 2 + 3
    assert result.setup is not None and result.setup.passed
    assert result.outcome is not None and result.outcome.ending is Ending.TIMED_OUT
    assert not result.succeeded and result.reason.startswith("agent timed_out")


def test_time_waiting_for_an_agent_slot_is_not_taken_from_verify(
    repo: Path, tmp_path: Path
) -> None:
    guards = RunGuards(1, 1)
    other = guards.agent_slot()
    other.__enter__()  # another agent of the sprint holds the only slot for 6 s
    threading.Timer(6, other.__exit__, (None, None, None)).start()
    result = run_attempt(
        spec(repo, tmp_path, "echo x > x.txt", verify="sleep 1", timeout_s=5),
        env=dict(os.environ), guards=guards,
    )
    # Its 6 s wait count for nothing: the agent and verify share the 5 s (a loaded machine
    # took over 2.5 s for them).
    assert result.succeeded, result.reason
    assert result.verify is not None and result.verify.passed


def test_changes_outside_paths_fail_the_attempt_and_the_branch_keeps_them(
    repo: Path, tmp_path: Path, git
) -> None:
    result = run_attempt(
        spec(repo, tmp_path, "echo a > allowed.txt && echo b > other.txt",
             paths=["allowed.txt"]),
        env=dict(os.environ),
    )
    assert not result.succeeded
    assert result.reason == "changed files outside its paths: other.txt"
    assert sorted(result.files) == ["allowed.txt", "other.txt"]
    assert git(repo, "show", "agentfleet-attempts/s1/t/1:other.txt") == "b\n"
    assert not (tmp_path / "work" / "t-1").exists()  # worktree released, branch kept


def test_a_failed_verify_is_the_agents_result_not_retried(repo: Path, tmp_path: Path) -> None:
    result = run_attempt(
        spec(repo, tmp_path, "echo x > x.txt && echo done", verify="test -f y.txt",
             retries=2),
        env=dict(os.environ),
    )
    assert not result.succeeded and result.tries == 1
    assert result.verify is not None and result.verify.exit_status == 1
    assert result.reason == "verify failed (exit 1)"
    assert result.outcome is not None and result.outcome.final_message == "done"


def test_a_completed_codex_turn_gives_the_agent_slot_back_and_a_retry_waits_for_it() -> None:
    guards = RunGuards(1, 1)
    seen: list[object] = []
    cancel = threading.Event()
    run = _AttemptRun(None, None, None, {}, seen.append, lambda _: None, cancel,  # type: ignore[arg-type]
                      deadline=time.monotonic() + 60)
    with guards.agent_slot() as slot:
        run.slot = slot
        run.agent_event(parse_event('{"type":"turn.started"}'))
        assert slot  # still the agent's while its turn runs
        run.agent_event(parse_event('{"type":"turn.completed","usage":{"input_tokens":1,'
                                    '"cached_input_tokens":0,"output_tokens":1}}'))
        assert not slot and len(seen) == 2  # given back; the events still reach the sprint
        other = guards.agent_slot()
        assert other.__enter__()  # the next agent starts before this one's process exits
        threading.Timer(1, other.__exit__, (None, None, None)).start()
        waited = time.monotonic()
        assert run.slot_again() and slot  # a retry waits for the slot again
        assert time.monotonic() - waited > 0.5
        assert run.deadline - time.monotonic() > 58  # the wait is not counted
        slot.give_back()
        cancel.set()
        with guards.agent_slot():
            assert not run.slot_again()  # stopped while waiting
