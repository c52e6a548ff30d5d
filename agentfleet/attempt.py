"""One attempt at one task, from a fresh worktree to a committed, verified branch.

    worktree add (own branch, from the start commit)
    -> a resolver's: `git merge` of the conflicting commit left in progress (merging.py)
    -> setup -> (a Codex agent may start here, ahead of its slot: start_ahead.py)
    -> agent slot -> agent (transient failures retried, a full context window continued)
    -> refs the agent created in the repository removed
    -> commit: the worktree's files onto the start commit (agentfleet's identity), however
       the agent moved HEAD; no nested repository, no .git pointer changed
    -> scope check (paths, symlinks out) -> verify -> worktree released, branch kept
       (a failed attempt that committed nothing keeps no branch)

Prefect-free: ``tasks/attempt.py`` wraps it as a task run named ``<task>#<k>``.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from tenacity.stop import stop_base

from agentfleet.agent_config import AgentConfig
from agentfleet.agents import AgentRequest, CodexRun, run_agent, start_codex_agent
from agentfleet.codex.cli import (
    EXCLUDE_SLASH_TMP,
    EXCLUDE_TMPDIR,
    codex_home,
    isolation_overrides,
    rollout_usage,
    toml_value,
)
from agentfleet.codex.events import TurnCompleted
from agentfleet.codex.outcome import AttemptOutcome, Ending, Usage
from agentfleet.codex.sandbox import no_change_reason
from agentfleet.commit_text import attempt_message
from agentfleet.errors import WORKTREE_TAMPERED, GitError, WorktreeTampered
from agentfleet.gitcmd import git, run_git
from agentfleet.guardrails import AgentSlot, RunGuards
from agentfleet.leases import AttemptLease
from agentfleet.masking import Masker
from agentfleet.merging import MergeInProgress, begin_merge, resolution_problems
from agentfleet.naming import ATTEMPTS_NAMESPACE
from agentfleet.patterns import matches
from agentfleet.process import observe_spawns, run_shell
from agentfleet.prompts import continuation_prompt
from agentfleet.results import AttemptResult, CheckResult
from agentfleet.start_ahead import Gate, HeldAgent, StartAhead
from agentfleet.worktree_pool import WorktreePool, pool_for
from agentfleet.worktrees import (
    Snapshot,
    Worktree,
    WorktreeManager,
    commit_staged,
    diffstat,
    git_common_dir,
    gitlinks,
    restore_worktree,
    snapshot_worktree,
    stage_files,
    symlinks_out,
    tree_changes,
    written_submodule_folders,
)

Log = Callable[[str], None]


class AttemptSpec(BaseModel):
    """Everything that decides an attempt. Holds no secrets: the environment comes apart."""

    sprint: str
    task_id: str
    attempt: int
    branch: str
    repo: Path
    worktree_root: Path
    start_sha: str
    prompt: str
    paths: list[str] | None
    agent: AgentConfig
    setup: str | None = None
    verify: str | None = None
    score: str | None = None  # run after verify passed; its last line ranks the candidates
    timeout_s: float
    retries: int = 2
    idle_timeout_s: float | None = None
    codex_path: Path | None = None
    grace_s: float = 5.0
    backoff_initial_s: float = 2.0
    backoff_max_s: float = 60.0
    keep_failed_worktree: bool = False
    keep_setup_products: bool = False  # a reused worktree keeps what the same setup made
    lease_dir: Path | None = None  # where the attempt's lease goes; None: no lease
    allow_external_symlinks: bool = False  # symlinks out of the repository pass the scope check
    merge: MergeInProgress | None = None  # a resolver's: this merge is in progress at start
    # The saved agentfleet-agent block whose secrets (the API key) join the agent's
    # environment when it starts: a name here, the value never.
    agent_block: str | None = None
    max_tokens: int | None = None  # the attempt's token budget (metered Codex agents)


def outside_paths(files: list[str], paths: list[str] | None) -> list[str]:
    """The files a task changed that its ``paths`` do not allow."""
    if paths is None:
        return []
    return [f for f in files if not any(matches(p, f) for p in paths)]


@dataclass
class _AttemptRun:
    """The attempt in progress: what its steps share, passed to each as one."""

    worktree: Worktree
    spec: AttemptSpec
    result: AttemptResult
    env: Mapping[str, str]
    on_event: Callable[[object], None] | None
    log: Log
    cancel: threading.Event | None
    # `timeout` bounds the whole attempt: setup, every agent run (retries, continuations)
    # and verify share one deadline.
    deadline: float
    private_tmp: Path | None = None  # a sandboxed Codex agent's TMPDIR, made after setup
    slot: AgentSlot | None = None  # the agent's slots while its step runs (None: no limits)

    def left(self) -> float:
        """Seconds left before the deadline (never quite zero: a bound, not a skip)."""
        return max(self.deadline - time.monotonic(), 0.01)

    def stopped(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def agent_event(self, event: object) -> None:
        """An event of the agent: a completed Codex turn gives its slots back at once."""
        if isinstance(event, TurnCompleted) and self.slot is not None:
            # `codex exec` asks nothing more after its turn: the next agent need not wait
            # for this one's process to exit (about 0.1 s a handoff).
            try:
                self.slot.give_back()
            except Exception as exc:  # noqa: BLE001 - the agent's run goes on regardless
                self.log(f"could not give the agent slot back ({exc}): the pool's lease "
                         "frees it when it expires")
        if self.on_event is not None:
            self.on_event(event)

    def slot_again(self) -> bool:
        """Before another agent run (a retry, a continuation): take the slots back if a
        completed turn gave them away; False when stopped while waiting."""
        if self.slot is None or self.slot:
            return True
        waiting = time.monotonic()
        if not self.slot.take(self.cancel, self.log):
            return False
        self.waited_since(waiting)
        return True

    def waited_since(self, waiting: float) -> None:
        """Move the deadline by the time since ``waiting``, spent waiting for a slot: that
        counts against no part of the attempt."""
        self.deadline += time.monotonic() - waiting


def run_attempt(
    spec: AttemptSpec,
    *,
    env: Mapping[str, str],
    on_event: Callable[[object], None] | None = None,
    log: Log = lambda _: None,
    cancel: threading.Event | None = None,
    guards: RunGuards | None = None,
    ahead: StartAhead | None = None,
    gate: Gate | None = None,
) -> AttemptResult:
    """Run one attempt end to end; never raises for an agent's own failure.

    ``guards``: the sprint's slots the agent and the checks wait for (none: no limits).
    ``ahead`` and ``gate``: the sprint's places for agents started ahead of their slot,
    and this attempt's route on the metering proxy (start_ahead.py); None: no head start.
    """
    started = time.monotonic()
    manager = WorktreeManager(spec.repo, spec.worktree_root)
    name = f"{spec.task_id}-{spec.attempt}"
    # The lease comes first: a run killed during `worktree add` leaves a worktree that
    # the next run can still find and remove.
    lease = _take_lease(spec, manager.root / name)
    # A run's pool (agentfleet/worktree_pool.py) hands out a released worktree reset to the start.
    pool = pool_for(spec.worktree_root)
    try:
        if pool is not None:
            keep = spec.setup if spec.keep_setup_products else None
            worktree = pool.acquire(spec.branch, spec.start_sha, name, setup=keep)
            path = worktree.path
        else:
            path = manager.add(spec.branch, spec.start_sha, name, reset=True)
            worktree = manager.pinned(path)
    except BaseException:
        if lease is not None:
            lease.release()
        raise
    result = AttemptResult(
        task_id=spec.task_id,
        attempt=spec.attempt,
        branch=spec.branch,
        start_sha=spec.start_sha,
        succeeded=False,
        prompt=spec.prompt,
    )
    committed = False
    try:
        # Every process the attempt starts (setup, agent, verify) goes into its lease.
        with observe_spawns(lease.add_process) if lease else contextlib.nullcontext():
            run = _AttemptRun(worktree, spec, result, env, on_event, log, cancel,
                              deadline=time.monotonic() + spec.timeout_s)
            # The pool slot its agent holds goes into the lease too (the reaper gives it back).
            _run_in(run, guards=guards.recording(lease.hold_slot) if guards and lease else guards,
                    pool=pool, ahead=ahead, gate=gate)
        committed = result.head_sha is not None
    finally:
        interrupted = cancel is not None and cancel.is_set()
        kept = spec.keep_failed_worktree and not result.succeeded and not interrupted
        if kept:
            if lease is not None:
                lease.keep()
            log(f"worktree kept for inspection: {path}")
            result.reason = f"{result.reason or 'failed'} (worktree kept at {path})"
        else:
            if pool is not None:
                pool.release(worktree)
            else:
                manager.remove(path)
            if lease is not None:
                lease.release()
        if not committed and not kept:
            # Nothing of agentfleet's on it: the branch would only point at the start (or at
            # what an agent committed by itself, which agentfleet does not take).
            try:
                manager.delete_branch(spec.branch)
            except GitError as exc:  # e.g. a lock file the agent left; clean finds it later
                log(f"could not delete {spec.branch}: {exc}")
        result.duration_s = time.monotonic() - started
    return result


def _take_lease(spec: AttemptSpec, worktree: Path) -> AttemptLease | None:
    if spec.lease_dir is None:
        return None
    return AttemptLease.take(
        spec.lease_dir / f"{spec.task_id}-{spec.attempt}.json",
        sprint=spec.sprint,
        task_id=spec.task_id,
        attempt=spec.attempt,
        repo=spec.repo.resolve(),
        worktree=worktree,
        branch=spec.branch,
        start_sha=spec.start_sha,
    )


def _run_in(
    run: _AttemptRun,
    *,
    guards: RunGuards | None = None,
    pool: WorktreePool | None = None,
    ahead: StartAhead | None = None,
    gate: Gate | None = None,
) -> None:
    spec, worktree, result = run.spec, run.worktree, run.result
    if spec.merge is not None:
        # A resolver's worktree: the merge in progress, as `git merge` leaves it.
        try:
            conflicted = begin_merge(worktree, spec.merge)
        except GitError as exc:  # not the agent's failure: not cached (no outcome)
            result.reason = f"could not set up the merge to resolve: {exc}"
            return
        run.log(f"merging {spec.merge.label}: conflicts in {', '.join(conflicted) or 'no file'}")
    if spec.setup and not _shell_check(run, "setup", spec.setup):
        return
    if spec.setup and spec.keep_setup_products and pool is not None:
        pool.record_setup(worktree, spec.setup)  # before any agent: setup's own products

    refs_before = _refs(spec.repo)
    run.private_tmp = _private_tmp(worktree.path, spec.agent)
    try:
        _log_isolation(spec.agent, run.private_tmp, run.log)
        # Taken before the slot, as is the head start: the slot is the agent's alone.
        # Only a retry restores it.
        snapshot = snapshot_worktree(worktree) if spec.retries else None
        early = None
        if (guards is not None and ahead is not None and gate is not None
                and ahead.places > 0 and spec.agent.kind == "codex"):
            early = HeldAgent(ahead, gate, run.log)
        try:
            outcome = _in_agent_slot(run, guards, early, snapshot, refs_before)
        finally:
            if early is not None:
                early.drop()  # not granted (stopped while waiting): not a try, no token
    finally:
        if run.private_tmp is not None:
            shutil.rmtree(run.private_tmp, ignore_errors=True)
    if outcome is None:
        return
    result.outcome = outcome
    _remove_new_refs(run, refs_before)
    if not outcome.ok:
        detail = f": {outcome.error}" if outcome.error else ""
        result.reason = f"agent {outcome.ending.value}{detail}"
        return
    # Commit, verify and score use this machine: capped by limits.checks instead.
    waiting = time.monotonic()
    with guards.check_slot(run.cancel) if guards else contextlib.nullcontext(True) as held:
        if not held:
            result.reason = "stopped while waiting for a check slot"
            return
        run.waited_since(waiting)
        _check(run)


def _in_agent_slot(
    run: _AttemptRun,
    guards: RunGuards | None,
    held: HeldAgent | None,
    snapshot: Snapshot | None,
    refs_before: Mapping[str, str],
) -> AttemptOutcome | None:
    """Wait for an agent slot and run the agent in it; None (the reason set) when it
    never ran."""
    # The agent holds its slots (the sprint's, the shared pool's) only while it runs;
    # time spent waiting for a slot does not count against the attempt's `timeout`.
    waiting = time.monotonic()

    def start_ahead() -> None:  # called while it waits, when its turn is near
        assert held is not None
        request = _agent_request(run, run.spec.prompt)
        try:
            if held.start(lambda: start_codex_agent(request, on_event=run.agent_event)):
                run.log("agent started ahead of its slot: its model requests wait for the slot")
        except Exception as exc:  # noqa: BLE001 - the normal start says it in its place
            run.log(f"could not start the agent ahead of its slot: {exc}")

    slot = (guards.agent_slot(run.cancel, run.log, start_ahead if held else None,
                              held.ahead.places if held else 0)
            if guards else contextlib.nullcontext(True))
    with slot as granted:
        if not granted:
            run.result.reason = "stopped while waiting for an agent slot"
            return None
        run.waited_since(waiting)
        run.slot = granted if isinstance(granted, AgentSlot) else None
        first = held.grant() if held is not None else None
        try:
            return _run_agent_with_retries(run, snapshot, first)
        except WorktreeTampered as exc:  # found between two agent runs
            _remove_new_refs(run, refs_before)
            run.log(str(exc))
            run.result.reason = WORKTREE_TAMPERED
            return None
        finally:
            run.slot = None
            if first is not None and not first.ended():  # never waited for (an error)
                first.stop()


def _agent_request(run: _AttemptRun, prompt: str) -> AgentRequest:
    """One agent run of the attempt, bounded by what is left before its deadline."""
    spec, worktree = run.spec, run.worktree
    return AgentRequest(
        worktree=worktree.path,
        prompt=prompt,
        agent=spec.agent,
        timeout_s=run.left(),
        timeout_named_s=spec.timeout_s,
        env=run.env,
        codex_path=spec.codex_path,
        idle_timeout_s=spec.idle_timeout_s,
        grace_s=spec.grace_s,
        private_tmp=run.private_tmp,
        git_dir=worktree.git_dir,
    )


def _check(run: _AttemptRun) -> None:
    """Commit the agent's work, check its scope, then ``verify`` and ``score``."""
    try:
        if not _commit(run):
            return
    except WorktreeTampered as exc:
        run.log(str(exc))
        run.result.reason = WORKTREE_TAMPERED
        return

    checks: tuple[tuple[Literal["verify", "score"], str | None], ...] = (
        ("verify", run.spec.verify), ("score", run.spec.score))
    for name, command in checks:
        if command and not _shell_check(run, name, command):
            return
    run.result.succeeded = True


def _shell_check(
    run: _AttemptRun, name: Literal["setup", "verify", "score"], command: str
) -> bool:
    """Run ``command`` in the worktree as the attempt's check ``name`` (the result field of
    that name records it); False, with the reason set, when it failed."""
    run.log(f"{name}: {command}")
    check = CheckResult.from_shell(
        run_shell(command, run.worktree.path, run.env, timeout_s=run.left(), cancel=run.cancel)
    )
    setattr(run.result, name, check)
    if not check.passed:
        run.result.reason = f"{name} failed (exit {check.exit_status})"
    return check.passed


def _commit(run: _AttemptRun) -> bool:
    """Commit the worktree's files onto the start and check their scope; False: failed."""
    worktree, spec, result = run.worktree, run.spec, run.result
    worktree.check()
    staged = stage_files(worktree, spec.start_sha)
    if staged.nested:
        # Refused rather than committed as files: a nested repository is usually a clone
        # (a dependency, a second project) that nobody asked to vendor, and its history,
        # remote and uncommitted state would be lost either way. A gitlink would point at
        # a commit that exists nowhere. The user decides; the report names the folders.
        folders = ", ".join(p.rstrip("/") for p in staged.nested)
        result.reason = (
            f"the agent created a nested git repository in {folders}: its files are not "
            "committed (remove its .git to commit them as files)"
        )
        return False
    unseen = written_submodule_folders(worktree, spec.start_sha)
    notes = [f"files written into the uninitialised submodule folder {p} are not committed"
             for p in unseen]
    changes = tree_changes(spec.repo, spec.start_sha, staged.tree)
    if not changes:
        refused = result.outcome.sandbox_refused if result.outcome else None
        result.reason = "; ".join(notes) or no_change_reason(refused)
        return False
    for note in notes:
        run.log(note)
        result.warnings.append(note)
    links = gitlinks(spec.repo, changes)
    if links:  # a submodule moved to a commit only a local checkout of it has
        result.reason = "the agent changed the commit of the submodule " + ", ".join(links)
        return False
    stat = diffstat(spec.repo, spec.start_sha, staged.tree)
    masker = Masker.from_env(run.env, spec.agent.env)
    final = result.outcome.final_message if result.outcome else None
    message = attempt_message(spec.task_id, spec.attempt, stat, final, masker)
    result.head_sha = commit_staged(worktree, staged.tree, spec.start_sha, message)
    result.files = sorted(c.path for c in changes)
    result.diffstat = stat
    problems = []
    stray = outside_paths(result.files, spec.paths)
    if stray:
        problems.append("changed files outside its paths: " + ", ".join(stray))
    if not spec.allow_external_symlinks:
        problems += [f"symlink {p} points outside the repository"
                     for p in symlinks_out(spec.repo, changes)]
    if spec.merge is not None:
        problems += resolution_problems(
            spec.repo, spec.start_sha, result.head_sha, spec.merge, spec.paths
        )
    if problems:
        result.reason = "; ".join(problems)
        return False
    return True


# agentfleet's own refs, which other attempts and sprints create while an agent runs.
_OWN_REFS = (f"refs/heads/{ATTEMPTS_NAMESPACE}", "refs/agentfleet/")


def _refs(repo: Path) -> dict[str, str]:
    """Every ref of the repository and its object."""
    out = git(repo, "for-each-ref", "--format=%(refname)%00%(objectname)")
    return dict(line.split("\0", 1) for line in out.splitlines() if "\0" in line)


def _remove_new_refs(run: _AttemptRun, before: Mapping[str, str]) -> None:
    """Remove the refs that appeared in the repository while the agent ran, and say so.

    A worktree shares its repository's refs, so an agent's `git branch`/`git tag` lands
    in the user's repository. Refs in agentfleet's namespaces, or written by agentfleet
    (its reflog messages start with "agentfleet:", e.g. another sprint's new target),
    are other runs' and stay.
    """
    repo = run.spec.repo
    created = {
        ref: sha for ref, sha in _refs(repo).items()
        if ref not in before and not ref.startswith(_OWN_REFS) and not _by_agentfleet(repo, ref)
    }  # fmt: skip
    if not created:
        return
    common = git_common_dir(repo)
    for ref, sha in created.items():
        # Only if still what the agent left; a symbolic ref goes, never what it names.
        run_git(repo, "update-ref", "--no-deref", "-d", ref, sha)
        _remove_empty_parents(common, ref)
    # "While the agent ran": a concurrent attempt's agent may have made one of them.
    note = "refs created in the repository while the agent ran, removed: " + ", ".join(
        sorted(created)
    )
    run.log(note)
    run.result.warnings.append(note)


# Folders every repository has (git makes them at init); never removed.
_STANDARD_REF_DIRS = {"refs", "refs/heads", "refs/tags", "logs", "logs/refs", "logs/refs/heads"}


def _remove_empty_parents(common: Path, ref: str) -> None:
    """The folders git left for a deleted ref (e.g. ``refs/hidden/``), once empty."""
    for top in ("", "logs/"):
        parts = (top + ref).split("/")[:-1]
        while parts and "/".join(parts) not in _STANDARD_REF_DIRS:
            with contextlib.suppress(OSError):  # not empty, or already gone
                (common / "/".join(parts)).rmdir()
            parts.pop()


def _by_agentfleet(repo: Path, ref: str) -> bool:
    done = run_git(repo, "log", "-g", "-1", "--format=%gs", "--end-of-options", ref, "--")
    return done.returncode == 0 and done.stdout.startswith("agentfleet:")


# Fresh sessions after "ran out of room in the model's context window", per attempt.
MAX_CONTINUATIONS = 2


def _run_agent_with_retries(
    run: _AttemptRun, snapshot: Snapshot | None, first: CodexRun | None = None
) -> AttemptOutcome:
    """Run the agent: transient failures retried (the one retry layer), an exhausted
    context window continued in a fresh session on the same worktree.

    ``snapshot``: the files the first session starts from; ``first``: its first try,
    already started (ahead of the slot)."""
    spec, log = run.spec, run.log
    tries: list[AttemptOutcome] = []
    sessions: list[AttemptOutcome] = []  # ended with the context window full, work kept
    while True:
        prompt = continuation_prompt(spec.prompt, sessions) if sessions else spec.prompt
        outcome = _retry_transient(
            run, _agent_request(run, prompt), tries,
            snapshot=None if sessions else snapshot, first=None if sessions else first,
        )
        if outcome.ending is not Ending.CONTEXT_WINDOW or run.stopped():
            break
        if len(sessions) >= MAX_CONTINUATIONS:
            log(f"context window exhausted again; no continuation left "
                f"({MAX_CONTINUATIONS} used)")
            break
        sessions.append(outcome)
        log(
            f"context window exhausted in session {len(sessions)}; continuing in a fresh "
            f"session on the same worktree ({len(sessions)}/{MAX_CONTINUATIONS}), "
            f"files so far: {', '.join(outcome.files_changed) or 'none'}"
        )
    run.result.tries = len(tries)
    run.result.continuations = len(sessions)
    if outcome.ending is Ending.KILLED:
        log("stopped")
    return _summed(tries)


def _retry_transient(
    run: _AttemptRun,
    request: AgentRequest,
    tries: list[AttemptOutcome],
    *,
    snapshot: Snapshot | None = None,
    first: CodexRun | None = None,
) -> AttemptOutcome:
    """One session: the agent run again, from the same files, while it fails transiently.

    ``first``: the session's first try, started already; ``snapshot``: its files, taken
    already."""
    # Each try starts from the files the session started from: after setup, or after the
    # sessions before it. Ignored files (setup's products) are kept.
    worktree, spec, cancel = run.worktree, run.spec, run.cancel
    if snapshot is None and spec.retries:
        snapshot = snapshot_worktree(worktree)
    started = [first] if first is not None else []

    def one_try() -> AttemptOutcome:
        if started:
            outcome = started.pop().wait(cancel, timeout_s=run.left())
        elif not run.slot_again():
            outcome = AttemptOutcome(ending=Ending.KILLED,
                                     error="stopped while waiting for an agent slot")
        else:
            outcome = run_agent(
                replace(request, timeout_s=run.left()), on_event=run.agent_event, cancel=cancel
            )
        if request.agent.kind == "codex" and not outcome.ok and outcome.usage.total == 0:
            # A failed turn's tokens are not in --json, but they were spent.
            spent = rollout_usage(codex_home({**request.env, **request.agent.env}),
                                  outcome.thread_id)
            if spent is not None:
                outcome = outcome.model_copy(update={"usage": spent})
        tries.append(outcome)
        return outcome

    def before_sleep(state: RetryCallState) -> None:
        previous: AttemptOutcome = state.outcome.result()  # type: ignore[union-attr]
        wait = state.next_action.sleep if state.next_action else 0
        run.log(
            f"transient failure ({previous.error or previous.ending.value}); "
            f"retry {state.attempt_number}/{spec.retries} in {wait:.1f}s"
        )
        assert snapshot is not None  # taken whenever a retry may come
        restore_worktree(worktree, snapshot)
        if request.private_tmp is not None:
            shutil.rmtree(request.private_tmp, ignore_errors=True)
            request.private_tmp.mkdir(parents=True)

    def pause(seconds: float) -> None:
        if cancel is not None:
            cancel.wait(seconds)
        else:
            time.sleep(seconds)

    retrying = Retrying(
        # No retry that the attempt's deadline would cut short before it starts.
        stop=stop_after_attempt(spec.retries + 1) | _OutOfTime(run.left),
        # Doubling from the first wait, plus jitter as large as it, so that agents failing
        # together retry apart.
        wait=wait_exponential(multiplier=spec.backoff_initial_s, max=spec.backoff_max_s)
        + wait_random(0, spec.backoff_initial_s),
        retry=retry_if_result(lambda o: o.retryable and not run.stopped()),
        before_sleep=before_sleep,
        sleep=pause,
        retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
    )
    outcome: AttemptOutcome = retrying(one_try)
    if outcome.retryable and not run.stopped():
        run.log(f"transient failure ({outcome.error}); no retry left ({spec.retries} used)")
    return outcome


class _OutOfTime(stop_base):
    """Stop when the attempt's deadline would cut the next try short before it starts."""

    def __init__(self, left: Callable[[], float]) -> None:
        self.left = left

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.left() <= (retry_state.upcoming_sleep or 0) + 1


def _private_tmp(worktree: Path, agent: AgentConfig) -> Path | None:
    """A fresh TMPDIR for a sandboxed Codex agent, next to its worktree (never committed)."""
    if agent.kind != "codex" or agent.sandbox != "workspace-write":
        return None
    path = worktree.with_name(worktree.name + ".tmp")
    shutil.rmtree(path, ignore_errors=True)  # a killed run's leftover
    path.mkdir(parents=True)
    return path


def _log_isolation(agent: AgentConfig, private_tmp: Path | None, log: Log) -> None:
    """Say which sandbox settings agentfleet adds, and which the plan chose itself."""
    if private_tmp is None:
        return
    own_tmp = "TMPDIR" not in agent.env
    added = isolation_overrides(agent, private_tmp=own_tmp)
    flags = " ".join(f"-c {k}={toml_value(v)}" for k, v in added.items())
    chosen = [k for k in (EXCLUDE_SLASH_TMP, EXCLUDE_TMPDIR) if k in agent.config]
    log(
        "sandbox: keeping the agent to its worktree"
        + (f"; agentfleet adds {flags}" if flags else "")
        + (f"; TMPDIR is its own {private_tmp}" if own_tmp else "; TMPDIR set by agent.env")
        + (f"; left to agent.config: {', '.join(chosen)}" if chosen else "")
    )


def _summed(tries: list[AttemptOutcome]) -> AttemptOutcome:
    """The last try's ending, with the tokens, commands and time of every try."""
    last = tries[-1]
    usage = Usage()
    for outcome in tries:
        usage = usage + outcome.usage
    return last.model_copy(
        update={
            "usage": usage,
            "commands": [c for o in tries for c in o.commands],
            "warnings": [w for o in tries for w in o.warnings],
            "duration_s": sum(o.duration_s for o in tries),
        }
    )
