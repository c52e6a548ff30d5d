"""Sequential apply: winners land on the target one at a time, foundation first.

Everything happens on a scratch ref with ``git merge-tree`` (no working tree);
``final_verify`` gets a worktree of its own; the target moves only when that
passes, guarded by its old value. The user's working tree, index and checked-out
branch are never touched: when the target is checked out somewhere, the verified
result stays on the scratch ref and the report says how to take it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from pydantic import BaseModel

from agentfleet import apply as gitapply
from agentfleet.commit_text import agent_note, change_summary
from agentfleet.masking import Masker
from agentfleet.naming import scratch_ref
from agentfleet.process import run_shell
from agentfleet.results import AttemptResult, CheckResult, TaskOutcome, TaskReport
from agentfleet.worktrees import temporary_worktree

Log = Callable[[str], None]


class Landing(BaseModel):
    """What sequential apply did."""

    tasks: list[TaskReport]
    final_verify: CheckResult | None = None
    target_moved: bool = False
    target_up_to_date: bool = False
    target_sha: str | None = None
    note: str = ""


def land(
    *,
    repo: Path,
    sprint: str,
    base_sha: str,
    target: str,
    order: list[str],
    results: Mapping[str, AttemptResult],
    blocked_by: Mapping[str, str],
    final_verify: str | None,
    verify_timeout_s: float,
    worktree_root: Path,
    env: Mapping[str, str],
    log: Log = lambda _: None,
    cancel: threading.Event | None = None,
) -> Landing:
    """Apply every succeeded attempt in ``order``, verify, and move ``target``."""
    old_target = gitapply.rev_parse(repo, f"refs/heads/{target}")
    head = gitapply.start(repo, sprint, target, base_sha)
    done_before = gitapply.applied_tasks(repo, head, sprint)
    reports: list[TaskReport] = []
    new_commits = 0
    for task_id in order:
        result = results.get(task_id)
        report = report_for(task_id, result, blocked_by)
        if task_id in done_before:
            report.outcome = TaskOutcome.ALREADY_APPLIED
            report.applied_commit = done_before[task_id].sha
            report.attempt_branch = report.attempt_branch or done_before[task_id].attempt_branch
        elif result is not None and result.succeeded and result.head_sha:
            applied = gitapply.apply_one(
                repo,
                head,
                result.head_sha,
                sprint=sprint,
                task_id=task_id,
                attempt_branch=result.branch,
                start=result.start_sha,
                subject=f"{task_id}: {_first_line(result)}",
                body=agent_note(result.outcome.final_message if result.outcome else None,
                                Masker.from_env(env)),
            )
            if applied.applied and applied.commit:
                head = applied.commit
                gitapply.set_scratch(repo, sprint, head)
                new_commits += 1
                report.outcome = TaskOutcome.APPLIED
                report.applied_commit = head
                log(f"applied {task_id} ({result.branch}) as {head[:10]}")
            elif applied.empty:
                report.outcome = TaskOutcome.NOT_APPLIED
                report.detail = "its changes are already on the target"
            else:
                report.outcome = TaskOutcome.CONFLICT
                report.detail = "conflict in " + ", ".join(applied.conflicts)
                log(f"conflict applying {task_id}: {', '.join(applied.conflicts)}; branch kept")
        reports.append(report)

    landing = Landing(tasks=reports)
    if old_target is not None and new_commits == 0:
        # Nothing new: the target already is what this sprint would build.
        gitapply.discard(repo, sprint)
        landing.target_sha = old_target
        landing.target_up_to_date = True
        return landing

    if final_verify:
        log(f"final_verify: {final_verify}")
        with temporary_worktree(repo, head, worktree_root) as tree:
            shell = run_shell(final_verify, tree, env, timeout_s=verify_timeout_s, cancel=cancel)
        landing.final_verify = CheckResult.from_shell(shell)
        if not landing.final_verify.passed:
            gitapply.discard(repo, sprint)
            landing.target_sha = old_target
            landing.note = f"final_verify failed (exit {shell.exit_status}); {target} not moved"
            return landing

    holders = gitapply.checked_out_in(repo, target)
    if holders:
        landing.target_sha = old_target
        landing.note = (
            f"{target} is checked out at {holders[0]}, so agentfleet left it alone; the verified "
            f"result is {scratch_ref(sprint)} ({head[:10]}): run "
            f"`git merge --ff-only {scratch_ref(sprint)}` there to take it"
        )
        return landing
    gitapply.finish(repo, sprint, target, expected_old=old_target)
    landing.target_moved = landing.target_up_to_date = True
    landing.target_sha = head
    return landing


def _first_line(result: AttemptResult) -> str:
    # agentfleet's own summary: the agent's words are no subject (agent_note, in the body).
    return change_summary(result.diffstat)


def report_for(
    task_id: str, result: AttemptResult | None, blocked_by: Mapping[str, str]
) -> TaskReport:
    """A task's row before landing: failed, blocked, not run, or waiting to be applied."""
    if result is None:
        if task_id in blocked_by:
            return TaskReport(
                task=task_id,
                outcome=TaskOutcome.BLOCKED,
                detail=f"blocked by {blocked_by[task_id]}",
            )
        return TaskReport(task=task_id, outcome=TaskOutcome.NOT_RUN)
    return TaskReport(
        task=task_id,
        outcome=TaskOutcome.NOT_APPLIED if result.succeeded else TaskOutcome.FAILED,
        detail="" if result.succeeded else result.reason,
        attempt_branch=result.branch,
        files=result.files,
        tokens=result.tokens,
        duration_s=result.duration_s,
    )
