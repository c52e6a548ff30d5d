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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from agentfleet import apply as gitapply
from agentfleet.commit_text import agent_note, change_summary
from agentfleet.errors import AgentfleetError, GitError
from agentfleet.leases import AttemptLease
from agentfleet.masking import Masker
from agentfleet.merging import MergeInProgress, label_for, merge_start
from agentfleet.naming import scratch_ref
from agentfleet.plan import Plan
from agentfleet.process import ShellResult, observe_spawns, run_shell
from agentfleet.remote import REMOTE_NAME
from agentfleet.results import (
    AttemptResult,
    CheckResult,
    TaskOutcome,
    TaskReport,
    last_lines,
    one_line,
)
from agentfleet.standalone import APPLY_SPRINT
from agentfleet.text import JsonSafeModel
from agentfleet.verified import VerifiedTrees
from agentfleet.worktrees import temporary_worktree

Log = Callable[[str], None]


ConflictStrategy = Literal["rerun", "resolve", "overwrite", "skip"]
FinalVerifyFailure = Literal["bisect", "fail"]
# How often the stack is rebuilt on a target someone else keeps moving before giving up.
MAX_REBUILDS = 3
# The other side's diff in a rerun's prompt is cut to this many characters.
RERUN_DIFF_MAX = 8000


class AttemptRequest(JsonSafeModel):
    """An attempt landing asks the flow for: a rerun of a conflicting task, or a resolver."""

    task_id: str
    attempt: int
    kind: Literal["rerun", "resolve"]
    start_sha: str
    prompt: str
    merge: MergeInProgress | None = None  # a resolver's merge, in progress in its worktree


RunAttempt = Callable[[AttemptRequest], AttemptResult]


class PredictedConflict(JsonSafeModel):
    """A winner that ``git merge-tree`` says conflicts with the target, before applying."""

    task: str
    files: list[str]


class Landing(JsonSafeModel):
    """What sequential apply did."""

    tasks: list[TaskReport]
    final_verify: CheckResult | None = None
    target_moved: bool = False
    target_up_to_date: bool = False
    target_sha: str | None = None
    note: str = ""
    predicted_conflicts: list[PredictedConflict] = []
    verifications: int = 0  # final_verify runs, bisection's included
    ejected: list[str] = []  # tasks taken out of the stack because final_verify failed
    rebuilds: int = 0  # times the stack was rebuilt on a target moved by someone else
    pushed: bool | None = None  # None: no push asked for (or nothing moved)
    push_note: str = ""


def conflict_rows(landing: Landing) -> list[dict[str, str]]:
    """The predicted conflicts as table rows (task, files, what became of the task)."""
    outcome = {t.task: t for t in landing.tasks}
    return [
        {
            "task": c.task,
            "files": ", ".join(c.files),
            "outcome": outcome[c.task].outcome.value if c.task in outcome else "",
            "detail": outcome[c.task].detail if c.task in outcome else "",
        }
        for c in landing.predicted_conflicts
    ]


class LandingPolicy(JsonSafeModel):
    """How landing treats conflicts and a failed ``final_verify`` (the plan's keys)."""

    on_conflict: dict[str, ConflictStrategy] = {}  # per task; missing: ``default``
    default: ConflictStrategy = "skip"
    max_reruns: int = 1
    on_final_verify_failure: FinalVerifyFailure = "fail"
    max_ejections: int = 2
    concurrency: int = 1  # final_verify runs at once while bisecting
    push: str | None = None  # a remote name or URL to push the moved target to
    push_attempts: bool = False  # also push every applied task's attempt branch
    mirror: bool = False  # the repository is agentfleet's mirror of the remote pushed to

    def strategy(self, task_id: str) -> ConflictStrategy:
        """The task's ``on_conflict``."""
        return self.on_conflict.get(task_id, self.default)


def policy_of(plan: Plan, *, remote: bool = False) -> LandingPolicy:
    """The landing policy a plan's keys ask for.

    ``remote``: the repository is a remote's mirror, so the target and the applied attempt
    branches are pushed back to it (``origin``) unless ``push`` names another remote.
    """
    return LandingPolicy(
        on_conflict={t.id: plan.task_on_conflict(t) for t in plan.tasks},
        default=plan.on_conflict,
        max_reruns=plan.max_reruns,
        on_final_verify_failure=plan.on_final_verify_failure,
        max_ejections=plan.max_ejections,
        concurrency=plan.limits.concurrency,
        push=plan.push or (REMOTE_NAME if remote else None),
        push_attempts=plan.push_attempts or remote,
        mirror=remote,
    )


class LandingRequest(BaseModel):
    """What to land: which results, in what order, onto which target, checked how.

    A task whose result cannot be applied (a conflict, a git failure) fails alone; the
    others still land.
    """

    model_config = ConfigDict(frozen=True)

    repo: Path
    sprint: str
    base_sha: str  # where a target that does not exist yet starts
    target: str
    order: list[str]  # apply order: foundation first
    results: dict[str, AttemptResult]  # per task, the result that stands for it
    blocked_by: dict[str, list[str]] = {}  # tasks that never ran, and why
    final_verify: str | None = None
    verify_timeout_s: float
    worktree_root: Path  # where final_verify's worktrees go
    # Tasks whose commits on the target are replaced by their new results (what came
    # after them is replayed).
    redo: list[str] = []
    # The plan's prompts, recorded with each commit so that a later run sees which changed.
    prompts: dict[str, str] | None = None
    lease_dir: Path | None = None  # where final_verify leases its worktree and processes
    policy: LandingPolicy = LandingPolicy()  # conflict strategies, a failed final_verify
    depends_on: dict[str, list[str]] = {}  # direct dependencies (ejected with what broke)


def land(
    request: LandingRequest,
    *,
    env: Mapping[str, str],
    log: Log = lambda _: None,
    cancel: threading.Event | None = None,
    run_attempt: RunAttempt | None = None,
    remote_env: Mapping[str, str] | None = None,
    verified: VerifiedTrees | None = None,
) -> Landing:
    """Apply every succeeded attempt of ``request`` in its order, verify, move the target.

    ``env``: ``final_verify``'s environment. ``run_attempt``: runs a rerun or resolver
    attempt (the flow's; without it both skip). ``remote_env``: git's environment for
    reaching ``policy.push`` (a repository token's header may be in it, so never
    ``final_verify``'s); default ``env``. ``verified``: earlier passes of ``final_verify``:
    a tree that passed with the same command and environment is not verified again (and
    each new pass is recorded).
    """
    repo, sprint, target, order = request.repo, request.sprint, request.target, request.order
    results, blocked_by, redo, prompts = (
        request.results, request.blocked_by, request.redo, request.prompts)
    final_verify, policy, depends_on = request.final_verify, request.policy, request.depends_on
    git_env = remote_env if remote_env is not None else env
    old_target = gitapply.rev_parse(repo, f"refs/heads/{target}")
    remote_was: dict[str, str | None] = {}
    if policy.push:
        # The lease: the value last fetched (or, without one, what the remote holds now); a
        # push by someone else since is refused.
        remote_was[_branch_ref(target)] = gitapply.lease_value(
            repo, policy.push, _branch_ref(target), env=git_env
        )
    # What the target held when landing read it: the remote may hold no more than this.
    first_target = old_target
    head = gitapply.start(repo, sprint, target, request.base_sha)
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
    reports: dict[str, TaskReport] = {}
    candidates: list[str] = []
    for task_id in order:
        result = results.get(task_id)
        report = reports[task_id] = report_for(task_id, result, blocked_by)
        if task_id in done_before:
            report.outcome = TaskOutcome.ALREADY_APPLIED
            report.applied_commit = done_before[task_id].sha
            report.attempt_branch = report.attempt_branch or done_before[task_id].attempt_branch
            report.detail = _prompt_note(task_id, done_before[task_id], prompts, log)
            if task_id in redo and result is not None and not result.succeeded:
                report.outcome = TaskOutcome.FAILED
                report.detail = f"redo failed: {result.reason}; {target} keeps its earlier commit"
        elif result is not None and result.succeeded and result.head_sha:
            candidates.append(task_id)

    stacker = _Stacker(
        repo=repo, sprint=sprint, target=target, results=dict(results), reports=reports,
        policy=policy, env=env, log=log, prompts=prompts or {}, run_attempt=run_attempt,
    )  # fmt: skip
    landing = Landing(tasks=[])
    landing.predicted_conflicts = stacker.predict(head, candidates)
    base = head
    stack = stacker.build(base, candidates)
    head = stack[-1][1] if stack else base
    gitapply.set_scratch(repo, sprint, head)

    def finished() -> Landing:
        landing.tasks = [reports[t] for t in order]
        return landing

    if not stack and not dropped:
        # Nothing new: the target already is what this sprint would build, or (no target
        # yet) there is nothing to make one of.
        gitapply.discard(repo, sprint)
        landing.target_sha = old_target
        landing.target_up_to_date = old_target is not None
        if old_target is None:
            landing.note = f"nothing applied; {target} not created"
        return finished()

    verifier = _Verifier(
        command=final_verify, repo=repo, sprint=sprint, worktree_root=request.worktree_root,
        lease_dir=request.lease_dir, env=env, timeout_s=request.verify_timeout_s,
        cancel=cancel, log=log, concurrency=policy.concurrency, verified=verified,
    )  # fmt: skip
    for rebuild in range(MAX_REBUILDS + 1):
        if final_verify:
            log(f"final_verify: {final_verify}")
            check, stack = _verify_stack(
                verifier, stacker, policy, base, stack, candidates, depends_on or {}, landing
            )
            head = stack[-1][1] if stack else base
            gitapply.set_scratch(repo, sprint, head)
            landing.final_verify = check
            landing.verifications = verifier.runs
            if final_verify and verifier.runs > 1:
                log(f"final_verify: {verifier.runs} verifications")
            if not check.passed:
                gitapply.discard(repo, sprint)
                landing.target_sha = old_target
                landing.note = (
                    f"final_verify failed (exit {check.exit_status}); {target} not moved"
                )
                return finished()

        holders = gitapply.checked_out_in(repo, target)
        if holders:
            landing.target_sha = old_target
            landing.note = (
                f"{target} is checked out at {holders[0]}, so agentfleet left it alone; the "
                f"verified result is {scratch_ref(sprint)} ({head[:10]}): run "
                f"`git merge --ff-only {scratch_ref(sprint)}` there to take it"
            )
            return finished()
        try:
            # Compare and swap against the value the stack was built and verified on.
            gitapply.finish(repo, sprint, target, expected_old=old_target)
        except GitError as exc:
            now = gitapply.rev_parse(repo, f"refs/heads/{target}")
            if now is None or now == old_target or rebuild == MAX_REBUILDS or dropped:
                # Deleted, or a redo's rewritten history: refusing is right; the report says.
                log(str(exc))
                landing.target_sha = now
                landing.note = str(exc)
                return finished()
            # Someone moved the target meanwhile: their commits stay, the stack goes on top.
            log(f"{target} moved to {now[:10]} while landing; rebuilding the stack on it")
            landing.rebuilds += 1
            old_target = base = now
            gitapply.set_scratch(repo, sprint, base)
            candidates = [t for t in candidates if t not in landing.ejected]
            landing.predicted_conflicts = stacker.predict(base, candidates)
            stack = stacker.build(base, candidates)
            head = stack[-1][1] if stack else base
            gitapply.set_scratch(repo, sprint, head)
            if not stack:
                gitapply.discard(repo, sprint)
                landing.target_sha = now
                landing.note = f"nothing applies on {target} as it is now ({now[:10]})"
                return finished()
            continue
        break
    landing.target_moved = landing.target_up_to_date = True
    landing.target_sha = head
    if policy.push:
        _push(repo, policy, target, head, landing, reports, remote_was, git_env, log,
              known=[t for t in (head, first_target) if t], sprint=sprint)
    return finished()


def _push(
    repo: Path,
    policy: LandingPolicy,
    target: str,
    head: str,
    landing: Landing,
    reports: Mapping[str, TaskReport],
    remote_was: dict[str, str | None],
    env: Mapping[str, str],
    log: Log,
    known: Sequence[str],
    sprint: str,
) -> None:
    """Push the moved target (and with ``push_attempts`` the applied attempt branches).

    Leased on the value last fetched (``remote_was``), and only when that value holds no
    commit that the target here lacks (``known``): a forced push never drops anyone's work.
    """
    assert policy.push is not None
    # A mirror is agentfleet's own: the next run fetches what is there and lands on it.
    run = ("`agentfleet apply` with the same branches" if sprint == APPLY_SPRINT
           else "the sprint")
    again = (f"Run {run} again: it lands on {target} as it is there now, from its results"
             if policy.mirror else None)
    was = remote_was[_branch_ref(target)]
    if was is not None and not gitapply.holds(repo, was, known):
        landing.pushed = False
        landing.push_note = (
            f"push to {policy.push} not attempted: {target} there ({was[:10]}) holds commits "
            f"that {target} here does not have; {target} is moved here only. " + (again or (
                f"Fetch, merge or rebase {target} on what is there, and push again"))
        )
        landing.note = (landing.note + "; " if landing.note else "") + landing.push_note
        log(landing.push_note)
        return
    updates = {_branch_ref(target): (head, was)}
    if policy.push_attempts:
        for report in reports.values():
            if report.outcome is TaskOutcome.APPLIED and report.attempt_branch:
                ref = _branch_ref(report.attempt_branch)
                sha = gitapply.rev_parse(repo, ref)
                if sha is not None:
                    updates[ref] = (sha, gitapply.remote_value(repo, policy.push, ref, env=env))
    refused = gitapply.push_leased(repo, policy.push, updates, env=env)
    landing.pushed = refused is None
    if refused is None:
        log(f"pushed {target} ({head[:10]}) to {policy.push}")
        return
    landing.push_note = (
        f"push to {policy.push} refused ({target} there is no longer "
        f"{was[:10] if was else 'absent'}: someone pushed meanwhile); {target} is moved here "
        "only. " + (again or (f"Fetch, look at what they pushed, then merge or rebase "
                              f"{target} on it and push again")) + f". git said: {refused}"
    )
    landing.note = (landing.note + "; " if landing.note else "") + landing.push_note
    log(landing.push_note)


def _branch_ref(branch: str) -> str:
    return branch if branch.startswith("refs/") else f"refs/heads/{branch}"


Stack = list[tuple[str, str]]  # (task, its commit), bottom first


class _Stacker:
    """Builds the stack of applied tasks on a base, with each task's conflict strategy."""

    def __init__(
        self,
        *,
        repo: Path,
        sprint: str,
        target: str,
        results: dict[str, AttemptResult],
        reports: dict[str, TaskReport],
        policy: LandingPolicy,
        env: Mapping[str, str],
        log: Log,
        prompts: Mapping[str, str],
        run_attempt: RunAttempt | None,
    ) -> None:
        self.repo, self.sprint, self.target = repo, sprint, target
        self.results, self.reports, self.policy = results, reports, policy
        self.env, self.log, self.prompts, self.run_attempt = env, log, prompts, run_attempt
        self.reruns: dict[str, int] = {}
        self.next_attempt: dict[str, int] = {t: r.attempt + 1 for t, r in results.items()}

    def predict(self, onto: str, candidates: Sequence[str]) -> list[PredictedConflict]:
        """Every candidate checked against ``onto`` with ``git merge-tree``; logged."""
        found = []
        for task_id in candidates:
            result = self.results[task_id]
            assert result.head_sha is not None
            try:
                files = gitapply.predict(self.repo, onto, result.head_sha, result.start_sha)
            except AgentfleetError:
                continue  # applying reports it
            if files:
                self.log(f"predicted conflict: {task_id} in {', '.join(files)}")
                found.append(PredictedConflict(task=task_id, files=files))
        return found

    def build(self, base: str, candidates: Sequence[str]) -> Stack:
        """Apply ``candidates`` in order on ``base``; each report says what became of it."""
        stack: Stack = []
        head = base
        for task_id in candidates:
            commit = self._apply(head, task_id, stack)
            if commit is not None:
                stack.append((task_id, commit))
                head = commit
        return stack

    def _apply(self, head: str, task_id: str, stack: Stack) -> str | None:
        report = self.reports[task_id]
        result = self.results[task_id]
        strategy = self.policy.strategy(task_id)
        try:
            applied = self._apply_result(head, task_id, result, overwrite=strategy == "overwrite")
        except AgentfleetError as exc:
            # This attempt's commits are unusable (e.g. its agent rewound HEAD past its
            # start): it fails, the others land.
            report.outcome = TaskOutcome.FAILED
            report.detail = f"cannot apply: {exc}"
            self.log(f"cannot apply {task_id} ({result.branch}): {exc}")
            return None
        if applied.applied and applied.commit:
            return self._applied(task_id, result, applied, stack)
        if applied.empty:
            report.outcome = TaskOutcome.NOT_APPLIED
            report.detail = "its changes are already on the target"
            return None
        files = applied.conflicts
        self.log(f"conflict applying {task_id}: {', '.join(files)} (on_conflict: {strategy})")
        if strategy == "rerun":
            return self._rerun(head, task_id, files, stack)
        if strategy == "resolve":
            return self._resolve(head, task_id, files, stack)
        self._skip(task_id, result, files)
        return None

    def _apply_result(
        self, head: str, task_id: str, result: AttemptResult, *, overwrite: bool = False
    ) -> gitapply.ApplyResult:
        assert result.head_sha is not None
        return gitapply.apply_one(
            self.repo, head, result.head_sha, sprint=self.sprint, task_id=task_id,
            attempt_branch=result.branch, start=result.start_sha,
            subject=f"{task_id}: {_first_line(result)}",
            body=agent_note(result.outcome.final_message if result.outcome else None,
                            Masker.from_env(self.env)),
            prompt=self.prompts.get(task_id),
            overwrite_env=self.env if overwrite else None,
        )  # fmt: skip

    def _applied(
        self, task_id: str, result: AttemptResult, applied: gitapply.ApplyResult, stack: Stack
    ) -> str:
        assert applied.commit is not None
        report = self.reports[task_id]
        report.outcome = TaskOutcome.APPLIED
        report.applied_commit = applied.commit
        report.attempt_branch = result.branch
        report.files = result.files
        report.detail = ""
        if applied.overwritten:
            touched = set(applied.overwritten)
            others = [t for t, _ in stack if touched & set(self.results[t].files)]
            who = ", ".join(others) if others else f"{self.target}'s own commits"
            report.detail = (
                f"overwrote {', '.join(applied.overwritten)}: the changes of {who} to them "
                "are lost"
            )
            self.log(f"{task_id}: {report.detail}")
        self.log(f"applied {task_id} ({result.branch}) as {applied.commit[:10]}")
        return applied.commit

    def _skip(
        self, task_id: str, result: AttemptResult, files: Sequence[str], why: str = ""
    ) -> None:
        report = self.reports[task_id]
        report.outcome = TaskOutcome.CONFLICT
        report.attempt_branch = result.branch
        report.detail = (
            f"conflict in {', '.join(files)}{why}; branch kept. To finish by hand: git switch "
            f"{self.target} && git cherry-pick {result.start_sha[:12]}..{result.branch}, fix "
            f"{', '.join(files)}, git add them, git cherry-pick --continue"
        )
        self.log(f"{task_id}: {report.detail}")
        return None

    def _attempt(self, task_id: str, kind: Literal["rerun", "resolve"], start: str,
                 prompt: str, merge: MergeInProgress | None = None) -> AttemptResult | None:
        if self.run_attempt is None:
            return None
        k = self.next_attempt.get(task_id, 2)
        self.next_attempt[task_id] = k + 1
        self.log(f"{task_id}#{k}: {kind} from {start[:10]}")
        new = self.run_attempt(
            AttemptRequest(task_id=task_id, attempt=k, kind=kind, start_sha=start, prompt=prompt,
                           merge=merge)
        )
        self.reports[task_id].tokens += new.tokens
        self.reports[task_id].duration_s += new.duration_s
        return new

    def _rerun(self, head: str, task_id: str, files: list[str], stack: Stack) -> str | None:
        original = self.results[task_id]
        while self.reruns.get(task_id, 0) < self.policy.max_reruns:
            self.reruns[task_id] = self.reruns.get(task_id, 0) + 1
            result = self.results[task_id]
            prompt = rerun_prompt(
                self.prompts.get(task_id) or original.prompt, files,
                [t for t, _ in stack if set(files) & set(self.results[t].files)],
                _diff(self.repo, result.start_sha, head, files),
            )  # fmt: skip
            new = self._attempt(task_id, "rerun", head, prompt)
            if new is None:
                break
            if not new.succeeded or not new.head_sha:
                self._skip(task_id, original, files, f"; its rerun failed: {new.reason}")
                return None
            self.results[task_id] = new
            try:
                applied = self._apply_result(head, task_id, new)
            except AgentfleetError as exc:
                self._skip(task_id, original, files, f"; its rerun cannot apply: {exc}")
                return None
            if applied.applied and applied.commit:
                return self._applied(task_id, new, applied, stack)
            if applied.empty:
                self.reports[task_id].outcome = TaskOutcome.NOT_APPLIED
                self.reports[task_id].detail = "its rerun changed nothing on the stack"
                return None
            files = applied.conflicts
        self._skip(task_id, self.results[task_id], files)
        return None

    def _resolve(self, head: str, task_id: str, files: list[str], stack: Stack) -> str | None:
        result = self.results[task_id]
        if self.run_attempt is None or result.head_sha is None:
            self._skip(task_id, result, files)
            return None
        # The resolver's worktree: `git merge` of the task's commit in progress on the
        # stack, markers in place (agentfleet.merging).
        merge = MergeInProgress(
            commit=result.head_sha, label=label_for(self.repo, result.branch, result.head_sha),
            files=files,
        )  # fmt: skip
        start = merge_start(self.repo, head, result.start_sha, task_id)
        ours = {t: self.prompts.get(t) or self.results[t].prompt for t, _ in stack}
        prompt = resolve_prompt(
            task_id, self.prompts.get(task_id) or result.prompt, files,
            ours or {self.target: "its commits as they are"}, merge.label,
        )  # fmt: skip
        new = self._attempt(task_id, "resolve", start, prompt, merge)
        if new is None or not new.succeeded or not new.head_sha:
            why = new.reason if new is not None else "no resolver"
            self._skip(task_id, result, files, f"; the resolver failed: {why}")
            return None
        left = gitapply.has_conflict_markers(self.repo, new.head_sha, files)
        if left:  # the attempt checks this too; a result from elsewhere is checked here
            self._skip(
                task_id, result, files, f"; the resolver left conflict markers in {', '.join(left)}"
            )
            return None
        commit = gitapply.commit_task(
            self.repo, head, gitapply.tree_of(self.repo, new.head_sha), sprint=self.sprint,
            task_id=task_id, attempt_branch=new.branch,
            subject=f"{task_id}: {_first_line(result)} (conflicts resolved)",
            prompt=self.prompts.get(task_id),
        )  # fmt: skip
        self.results[task_id] = new.model_copy(update={"files": sorted(
            set(result.files) | set(new.files))})
        return self._applied(
            task_id, self.results[task_id],
            gitapply.ApplyResult(applied=True, commit=commit), stack,
        )


def rerun_prompt(prompt: str, files: Sequence[str], by: Sequence[str], diff: str) -> str:
    """A conflicting task's prompt, extended with what changed in its files meanwhile."""
    who = f" by {', '.join(by)}" if by else ""
    return (
        f"{prompt}\n\n---\nagentfleet: an earlier attempt at this task conflicted with "
        f"changes made meanwhile{who} in {', '.join(files)}. This worktree holds those "
        "changes: do the task again on top of them, keeping them. What changed in those "
        f"files:\n\n{diff}"
    )


def resolve_prompt(
    task_id: str, prompt: str, files: Sequence[str], ours: Mapping[str, str], label: str = ""
) -> str:
    """The resolver's prompt: the merge in progress, the conflicted files, both sides' intent."""
    applied = "\n".join(f"- {t}: {one_line(p, 500)}" for t, p in ours.items())
    theirs = f" ({label})" if label else ""
    return (
        f"A `git merge` is in progress in this worktree: HEAD is the target branch, MERGE_HEAD "
        f"is task {task_id}'s change{theirs}. The files {', '.join(files)} hold git conflict "
        "markers (<<<<<<< ======= >>>>>>>); `git status` and `git diff` show them. Resolve "
        "every conflict so that both sides' intent is kept, remove every marker, and change "
        "no file that is not in conflict. Leave the result in the files: agentfleet commits "
        "it (`git add` or `git commit` are not needed).\n\n"
        f"One side (HEAD, already on the target):\n{applied}\n\n"
        f"The other side (MERGE_HEAD, task {task_id}):\n{prompt}"
    )


def _diff(repo: Path, old: str, new: str, files: Sequence[str]) -> str:
    text = gitapply.git(repo, "diff", old, new, "--", *files)
    if len(text) > RERUN_DIFF_MAX:
        text = text[:RERUN_DIFF_MAX] + f"\n[... cut: {len(text) - RERUN_DIFF_MAX} more characters]"
    return text or "(no textual change)"


def _dependents(task_id: str, depends_on: Mapping[str, Sequence[str]]) -> set[str]:
    """``task_id`` and every task depending on it, directly or not."""
    found = {task_id}
    grew = True
    while grew:
        grew = False
        for task, deps in depends_on.items():
            if task not in found and found & set(deps):
                found.add(task)
                grew = True
    return found


def _verify_stack(
    verifier: _Verifier,
    stacker: _Stacker,
    policy: LandingPolicy,
    base: str,
    stack: Stack,
    candidates: list[str],
    depends_on: Mapping[str, Sequence[str]],
    landing: Landing,
) -> tuple[CheckResult, Stack]:
    """``final_verify`` on the stack; if it fails, bisect, eject and rebuild (``policy``)."""
    head = stack[-1][1] if stack else base
    check = verifier.run([head])[0]
    ejections = 0
    while (
        not check.passed
        and policy.on_final_verify_failure == "bisect"
        and ejections < policy.max_ejections
        and stack
        and not (verifier.cancel is not None and verifier.cancel.is_set())
    ):
        culprit, convicting = bisect(verifier, base, stack, check)
        out = _dependents(culprit, depends_on) & {t for t in candidates}
        ejections += 1
        verifier.log(
            f"final_verify: {culprit} breaks it; ejecting {', '.join(sorted(out))}"
        )
        for task_id in out:
            report = stacker.reports[task_id]
            report.outcome = TaskOutcome.EJECTED
            report.applied_commit = None
            report.detail = (
                f"broke final_verify (exit {convicting.exit_status})" if task_id == culprit
                else f"depends on {culprit}, which broke final_verify"
            )
            report.verify_tail = last_lines(convicting.output_tail)
            landing.ejected.append(task_id)
        candidates[:] = [t for t in candidates if t not in out]
        stack = stacker.build(base, candidates)
        head = stack[-1][1] if stack else base
        if not stack:
            return check, stack  # every task ejected: the failure stands, nothing moves
        check = verifier.run([head])[0]
    return check, stack


def bisect(
    verifier: _Verifier, base: str, stack: Stack, failed: CheckResult
) -> tuple[str, CheckResult]:
    """The first task of ``stack`` whose addition breaks ``final_verify``, and that run.

    The base is taken as passing and the whole stack is known to fail (``failed``, the
    "+1" of the bound). Bisection itself takes at most ⌈log2 n⌉ verifications, as a
    binary search; with ``verifier.concurrency`` > 1 a round verifies several prefixes
    at once (as Zuul speculates), but only as many as keep the worst case within that
    bound (:func:`round_width`): fewer rounds, never more verifications.
    """
    good, bad = 0, len(stack)  # prefix sizes
    convicting = failed
    budget = ceil_log2(len(stack))
    while bad - good > 1:
        points = split_points(good, bad, round_width(bad - good, budget, verifier.concurrency))
        checks = verifier.run([stack[p - 1][1] for p in points])
        budget -= len(points)
        failing = [(p, c) for p, c in zip(points, checks, strict=True) if not c.passed]
        if failing:
            bad, convicting = failing[0]
        good = max(
            (p for p, c in zip(points, checks, strict=True) if c.passed and p < bad),
            default=good,
        )
    return stack[bad - 1][0], convicting


def ceil_log2(n: int) -> int:
    """⌈log2 n⌉ for n ≥ 1 (0 for 1)."""
    return max(0, (n - 1).bit_length())


def split_points(good: int, bad: int, width: int) -> list[int]:
    """``width`` prefix sizes strictly between ``good`` and ``bad``, spread evenly."""
    span = bad - good
    points = sorted({good + span * j // (width + 1) for j in range(1, width + 1)})
    return [p for p in points if good < p < bad] or [(good + bad) // 2]


def round_width(span: int, budget: int, concurrency: int) -> int:
    """How many prefixes to verify at once on an interval of ``span`` (1: binary search).

    The widest round, up to ``concurrency``, whose verifications plus a binary search of
    the largest part it can leave still fit in ``budget``; one always fits when the
    budget is at least ⌈log2 span⌉, which halving keeps true.
    """
    best = 1
    for width in range(2, min(concurrency, span - 1) + 1):
        points = split_points(0, span, width)
        gaps = [b - a for a, b in zip([0, *points], [*points, span], strict=True)]
        if len(points) + ceil_log2(max(gaps)) <= budget:
            best = width
    return best


class _Verifier:
    """Runs ``final_verify`` on commits, each in a temporary detached worktree, leased."""

    def __init__(
        self,
        *,
        command: str | None,
        repo: Path,
        sprint: str,
        worktree_root: Path,
        lease_dir: Path | None,
        env: Mapping[str, str],
        timeout_s: float,
        cancel: threading.Event | None,
        log: Log,
        concurrency: int,
        verified: VerifiedTrees | None = None,
    ) -> None:
        self.command, self.repo, self.sprint = command, repo, sprint
        self.worktree_root, self.lease_dir, self.env = worktree_root, lease_dir, env
        self.timeout_s, self.cancel, self.log = timeout_s, cancel, log
        self.concurrency = max(1, concurrency)
        self.verified = verified
        self.runs = 0

    def run(self, commits: Sequence[str]) -> list[CheckResult]:
        """``final_verify`` on each commit, up to ``concurrency`` at once."""
        assert self.command is not None
        self.runs += len(commits)
        if len(commits) == 1:
            return [self._one(commits[0], 0)]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(commits))) as pool:
            return list(pool.map(self._one, commits, range(len(commits))))

    def _one(self, commit: str, slot: int) -> CheckResult:
        assert self.command is not None
        tree = gitapply.tree_of(self.repo, commit) if self.verified is not None else ""
        if self.verified is not None:
            found = self.verified.find(tree, self.command, self.timeout_s)
            if found is not None:
                self.log(f"final_verify: this tree ({tree[:10]}) passed it before, with the "
                         f"same command and environment ({found.label()}): not run again "
                         "(--no-cache runs it)")
                return VerifiedTrees.reused(found)
        shell = _final_verify(
            self.command, self.repo, self.sprint, commit, self.worktree_root, self.lease_dir,
            env=self.env, timeout_s=self.timeout_s, cancel=self.cancel,
            lease_name="final_verify.json" if slot == 0 else f"final_verify-{slot}.json",
        )  # fmt: skip
        check = CheckResult.from_shell(shell)
        if self.verified is not None:
            self.verified.keep(tree, check)
        return check


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
    lease_name: str = "final_verify.json",
) -> ShellResult:
    """``final_verify`` in a worktree of its own, leased like an attempt's.

    After a ``kill -9`` of agentfleet, the next run of the sprint or ``agentfleet clean``
    finds the lease: it stops the verification's processes before removing its worktree.
    """
    with temporary_worktree(repo, head, worktree_root) as tree:
        lease = None
        if lease_dir is not None:
            lease = AttemptLease.take(
                lease_dir / lease_name, sprint=sprint, task_id="final_verify",
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
        ran_on=result.ran_on,
        verify_tail=(
            last_lines(result.verify.output_tail)
            if result.verify is not None and not result.verify.passed
            else ""
        ),
    )


def blocked_detail(blockers: Sequence[str]) -> str:
    """``blocked by a, b``: every task whose failure blocked a task, in apply order."""
    return "blocked by " + ", ".join(blockers)
