"""Sequential apply: winners land on the target one at a time, foundation first.

Everything happens on a scratch ref with ``git merge-tree`` (no working tree);
``final_verify`` gets a worktree of its own; the target moves only when that
passes, guarded by its old value. The user's working tree, index and checked-out
branch are never touched: when the target is checked out somewhere, the verified
result stays on the scratch ref and the report says how to take it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

from agentfleet import apply as gitapply
from agentfleet.commit_text import agent_note, change_summary
from agentfleet.errors import AgentfleetError, GitError
from agentfleet.leases import AttemptLease
from agentfleet.masking import Masker
from agentfleet.naming import scratch_ref
from agentfleet.process import ShellResult, observe_spawns, run_shell
from agentfleet.results import AttemptResult, CheckResult, TaskOutcome, TaskReport, last_lines
from agentfleet.text import JsonSafeModel
from agentfleet.worktrees import temporary_worktree

Log = Callable[[str], None]


class Landing(JsonSafeModel):
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
    blocked_by: Mapping[str, Sequence[str]],
    final_verify: str | None,
    verify_timeout_s: float,
    worktree_root: Path,
    env: Mapping[str, str],
    log: Log = lambda _: None,
    cancel: threading.Event | None = None,
    redo: Collection[str] = (),
    prompts: Mapping[str, str] | None = None,
    lease_dir: Path | None = None,
) -> Landing:
    """Apply every succeeded attempt in ``order``, verify, and move ``target``.

    ``redo``: tasks whose commits on the target are replaced by their new results
    (what came after them is replayed). ``prompts``: the plan's prompts, recorded with
    each commit so that a later run sees which changed. A task whose result cannot be
    applied (a conflict, a git failure) fails alone; the others still land.
    ``lease_dir``: where ``final_verify`` leases its worktree and processes (as attempts do).
    """
    old_target = gitapply.rev_parse(repo, f"refs/heads/{target}")
    head = gitapply.start(repo, sprint, target, base_sha)
    done_before = gitapply.applied_tasks(repo, head, sprint)
    try:
        head, done_before, dropped = _take_out_redone(
            repo, sprint, head, done_before, redo, results, env, log
        )
    except AgentfleetError as exc:
        gitapply.discard(repo, sprint)
        log(f"--redo: {exc}")
        return Landing(
            tasks=[report_for(t, results.get(t), blocked_by) for t in order],
            target_sha=old_target,
            note=f"--redo: {exc}; {target} not moved",
        )
    reports: list[TaskReport] = []
    new_commits = 0
    for task_id in order:
        result = results.get(task_id)
        report = report_for(task_id, result, blocked_by)
        if task_id in done_before:
            report.outcome = TaskOutcome.ALREADY_APPLIED
            report.applied_commit = done_before[task_id].sha
            report.attempt_branch = report.attempt_branch or done_before[task_id].attempt_branch
            report.detail = _prompt_note(task_id, done_before[task_id], prompts, log)
            if task_id in redo and result is not None and not result.succeeded:
                report.outcome = TaskOutcome.FAILED
                report.detail = f"redo failed: {result.reason}; {target} keeps its earlier commit"
        elif result is not None and result.succeeded and result.head_sha:
            try:
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
                    prompt=(prompts or {}).get(task_id),
                )
            except AgentfleetError as exc:
                # This attempt's commits are unusable (e.g. its agent rewound HEAD past its
                # start): it fails, the others land.
                report.outcome = TaskOutcome.FAILED
                report.detail = f"cannot apply: {exc}"
                log(f"cannot apply {task_id} ({result.branch}): {exc}")
                reports.append(report)
                continue
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
    if new_commits == 0 and not dropped:
        # Nothing new: the target already is what this sprint would build, or (no target
        # yet) there is nothing to make one of.
        gitapply.discard(repo, sprint)
        landing.target_sha = old_target
        landing.target_up_to_date = old_target is not None
        if old_target is None:
            landing.note = f"nothing applied; {target} not created"
        return landing

    if final_verify:
        log(f"final_verify: {final_verify}")
        shell = _final_verify(
            final_verify, repo, sprint, head, worktree_root, lease_dir, env=env,
            timeout_s=verify_timeout_s, cancel=cancel,
        )
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
    try:
        gitapply.finish(repo, sprint, target, expected_old=old_target)
    except GitError as exc:
        # Someone moved the target meanwhile: refusing is right; the report says so.
        log(str(exc))
        landing.target_sha = gitapply.rev_parse(repo, f"refs/heads/{target}")
        landing.note = str(exc)
        return landing
    landing.target_moved = landing.target_up_to_date = True
    landing.target_sha = head
    return landing


def _take_out_redone(
    repo: Path,
    sprint: str,
    head: str,
    done_before: dict[str, gitapply.AppliedCommit],
    redo: Collection[str],
    results: Mapping[str, AttemptResult],
    env: Mapping[str, str],
    log: Log,
) -> tuple[str, dict[str, gitapply.AppliedCommit], bool]:
    """Take the commits of tasks run again (``--redo``) out of the scratch ref.

    Only when at least one of them succeeded this time: a redo that failed everywhere
    leaves the target as it was. Returns the new head, what is still applied, and
    whether anything was taken out.
    """
    again = [t for t in redo if t in done_before]
    if not any((r := results.get(t)) is not None and r.succeeded for t in again):
        return head, done_before, False
    head = gitapply.drop_commits(repo, head, [done_before[t].sha for t in again], env=env)
    gitapply.set_scratch(repo, sprint, head)
    log(f"took {', '.join(again)} out of the target to apply their new results")
    return head, gitapply.applied_tasks(repo, head, sprint), True


def _prompt_note(
    task_id: str,
    applied: gitapply.AppliedCommit,
    prompts: Mapping[str, str] | None,
    log: Log,
) -> str:
    """What to say of a task already applied whose prompt in the plan changed since."""
    prompt = (prompts or {}).get(task_id)
    if prompt is None or applied.prompt_digest in (None, gitapply.prompt_digest(prompt)):
        return ""
    note = f"its prompt changed since: `agentfleet run --redo {task_id}` runs it again"
    log(f"{task_id}: already applied; {note}")
    return note


def _final_verify(
    command: str,
    repo: Path,
    sprint: str,
    head: str,
    worktree_root: Path,
    lease_dir: Path | None,
    *,
    env: Mapping[str, str],
    timeout_s: float,
    cancel: threading.Event | None,
) -> ShellResult:
    """``final_verify`` in a worktree of its own, leased like an attempt's.

    After a ``kill -9`` of agentfleet, the next run of the sprint or ``agentfleet clean``
    finds the lease: it stops the verification's processes before removing its worktree.
    """
    with temporary_worktree(repo, head, worktree_root) as tree:
        lease = None
        if lease_dir is not None:
            lease = AttemptLease.take(
                lease_dir / "final_verify.json", sprint=sprint, task_id="final_verify",
                attempt=1, repo=Path(repo).resolve(), worktree=tree, branch=None,
                start_sha=head,
            )  # fmt: skip
        try:
            with observe_spawns(lease.add_process) if lease else contextlib.nullcontext():
                return run_shell(command, tree, env, timeout_s=timeout_s, cancel=cancel)
        finally:
            if lease is not None:
                lease.release()


def _first_line(result: AttemptResult) -> str:
    # agentfleet's own summary: the agent's words are no subject (agent_note, in the body).
    return change_summary(result.diffstat)


def report_for(
    task_id: str, result: AttemptResult | None, blocked_by: Mapping[str, Sequence[str]]
) -> TaskReport:
    """A task's row before landing: failed, blocked, not run, or waiting to be applied."""
    if result is None:
        if task_id in blocked_by:
            return TaskReport(
                task=task_id,
                outcome=TaskOutcome.BLOCKED,
                detail=blocked_detail(blocked_by[task_id]),
            )
        return TaskReport(task=task_id, outcome=TaskOutcome.NOT_RUN)
    return TaskReport(
        task=task_id,
        outcome=TaskOutcome.NOT_APPLIED if result.succeeded else TaskOutcome.FAILED,
        detail="" if result.succeeded else result.reason,
        # Only an attempt that committed keeps its branch: never name one that is gone.
        attempt_branch=result.branch if result.head_sha else None,
        files=result.files,
        tokens=result.tokens,
        duration_s=result.duration_s,
        verify_tail=(
            last_lines(result.verify.output_tail)
            if result.verify is not None and not result.verify.passed
            else ""
        ),
    )


def blocked_detail(blockers: Sequence[str]) -> str:
    """``blocked by a, b``: every task whose failure blocked a task, in apply order."""
    return "blocked by " + ", ".join(blockers)
