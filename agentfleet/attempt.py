"""One attempt at one task, from a fresh worktree to a committed, verified branch.

    worktree add (own branch, from the start commit)
    -> setup -> agent (transient failures retried, a full context window continued)
    -> paths check
    -> commit (agentfleet's identity) -> verify -> worktree released, branch kept

Prefect-free: ``tasks/attempt.py`` wraps it as a task run named ``<task>#<k>``.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from pydantic import BaseModel
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from agentfleet.agent_config import AgentConfig
from agentfleet.agents import (
    EXCLUDE_SLASH_TMP,
    EXCLUDE_TMPDIR,
    AgentRequest,
    codex_home,
    isolation_overrides,
    rollout_usage,
    run_agent,
    toml_value,
)
from agentfleet.leases import AttemptLease
from agentfleet.outcome import AttemptOutcome, Ending, Usage
from agentfleet.patterns import matches
from agentfleet.process import observe_spawns, run_shell
from agentfleet.prompts import continuation_prompt
from agentfleet.results import AttemptResult, CheckResult
from agentfleet.worktrees import (
    WorktreeManager,
    changed_files,
    commit_all,
    diffstat,
    resolve_commit,
    restore_worktree,
    snapshot_worktree,
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
    timeout_s: float
    retries: int = 2
    idle_timeout_s: float | None = None
    codex_path: Path | None = None
    grace_s: float = 5.0
    backoff_initial_s: float = 2.0
    backoff_max_s: float = 60.0
    keep_failed_worktree: bool = False
    lease_dir: Path | None = None  # where the attempt's lease goes; None: no lease


def outside_paths(files: list[str], paths: list[str] | None) -> list[str]:
    """The files a task changed that its ``paths`` do not allow."""
    if paths is None:
        return []
    return [f for f in files if not any(matches(p, f) for p in paths)]


def run_attempt(
    spec: AttemptSpec,
    *,
    env: Mapping[str, str],
    on_event: Callable[[object], None] | None = None,
    log: Log = lambda _: None,
    cancel: threading.Event | None = None,
) -> AttemptResult:
    """Run one attempt end to end; never raises for an agent's own failure."""
    started = time.monotonic()
    manager = WorktreeManager(spec.repo, spec.worktree_root)
    name = f"{spec.task_id}-{spec.attempt}"
    # The lease comes first: a run killed during `worktree add` leaves a worktree that
    # the next run can still find and remove.
    lease = _take_lease(spec, manager.root / name)
    try:
        worktree = manager.add(spec.branch, spec.start_sha, name, reset=True)
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
            _run_in(worktree, spec, result, env=env, on_event=on_event, log=log, cancel=cancel)
        committed = result.head_sha is not None
    finally:
        interrupted = cancel is not None and cancel.is_set()
        if spec.keep_failed_worktree and not result.succeeded and not interrupted:
            if lease is not None:
                lease.keep()
            log(f"worktree kept for inspection: {worktree}")
            result.reason = f"{result.reason or 'failed'} (worktree kept at {worktree})"
        else:
            manager.remove(worktree)
            if lease is not None:
                lease.release()
        if not committed and interrupted:
            # An interrupted attempt leaves nothing: its branch would only point at the start.
            manager.delete_branch(spec.branch)
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
    worktree: Path,
    spec: AttemptSpec,
    result: AttemptResult,
    *,
    env: Mapping[str, str],
    on_event: Callable[[object], None] | None,
    log: Log,
    cancel: threading.Event | None,
) -> None:
    # `timeout` bounds the whole attempt: setup, every agent run (retries, continuations)
    # and verify share one deadline.
    deadline = time.monotonic() + spec.timeout_s
    if spec.setup:
        log(f"setup: {spec.setup}")
        result.setup = CheckResult.from_shell(
            run_shell(spec.setup, worktree, env, timeout_s=_left(deadline), cancel=cancel)
        )
        if not result.setup.passed:
            result.reason = f"setup failed (exit {result.setup.exit_status})"
            return

    outcome = _run_agent_with_retries(
        worktree, spec, result, env, on_event, log, cancel, deadline
    )
    result.outcome = outcome
    if not outcome.ok:
        detail = f": {outcome.error}" if outcome.error else ""
        result.reason = f"agent {outcome.ending.value}{detail}"
        return

    head = commit_all(
        worktree,
        f"agentfleet: {spec.task_id} (attempt {spec.attempt})\n\n"
        + (outcome.final_message or "").strip(),
    )
    if head is None:
        # Nothing left to commit; the agent may have committed by itself (outside the sandbox).
        current = resolve_commit(worktree, "HEAD")
        if current == spec.start_sha:
            result.reason = "the agent changed no file"
            return
        head = current
    result.head_sha = head
    result.files = changed_files(spec.repo, spec.start_sha, head)
    result.diffstat = diffstat(spec.repo, spec.start_sha, head)
    stray = outside_paths(result.files, spec.paths)
    if stray:
        result.reason = "changed files outside its paths: " + ", ".join(stray)
        return

    if spec.verify:
        log(f"verify: {spec.verify}")
        result.verify = CheckResult.from_shell(
            run_shell(spec.verify, worktree, env, timeout_s=_left(deadline), cancel=cancel)
        )
        if not result.verify.passed:
            result.reason = f"verify failed (exit {result.verify.exit_status})"
            return
    result.succeeded = True


def _left(deadline: float) -> float:
    """Seconds left before the attempt's deadline (never quite zero: a bound, not a skip)."""
    return max(deadline - time.monotonic(), 0.01)


# Fresh sessions after "ran out of room in the model's context window", per attempt.
MAX_CONTINUATIONS = 2


def _run_agent_with_retries(
    worktree: Path,
    spec: AttemptSpec,
    result: AttemptResult,
    env: Mapping[str, str],
    on_event: Callable[[object], None] | None,
    log: Log,
    cancel: threading.Event | None,
    deadline: float,
) -> AttemptOutcome:
    """Run the agent: transient failures retried (the one retry layer), an exhausted
    context window continued in a fresh session on the same worktree."""
    private_tmp = _private_tmp(worktree, spec.agent)
    _log_isolation(spec.agent, private_tmp, log)
    tries: list[AttemptOutcome] = []
    sessions: list[AttemptOutcome] = []  # ended with the context window full, work kept
    try:
        while True:
            prompt = continuation_prompt(spec.prompt, sessions) if sessions else spec.prompt
            request = AgentRequest(
                worktree=worktree,
                prompt=prompt,
                agent=spec.agent,
                timeout_s=_left(deadline),
                env=env,
                codex_path=spec.codex_path,
                idle_timeout_s=spec.idle_timeout_s,
                grace_s=spec.grace_s,
                private_tmp=private_tmp,
            )
            outcome = _retry_transient(request, spec, tries, on_event, log, cancel, deadline)
            stopped = cancel is not None and cancel.is_set()
            if outcome.ending is not Ending.CONTEXT_WINDOW or stopped:
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
    finally:
        if private_tmp is not None:
            shutil.rmtree(private_tmp, ignore_errors=True)
    result.tries = len(tries)
    result.continuations = len(sessions)
    if outcome.ending is Ending.KILLED:
        log("stopped")
    return _summed(tries)


def _retry_transient(
    request: AgentRequest,
    spec: AttemptSpec,
    tries: list[AttemptOutcome],
    on_event: Callable[[object], None] | None,
    log: Log,
    cancel: threading.Event | None,
    deadline: float,
) -> AttemptOutcome:
    """One session: the agent run again, from the same files, while it fails transiently."""
    # Each try starts from the files the session started from: after setup, or after the
    # sessions before it. Ignored files (setup's products) are kept.
    snapshot = snapshot_worktree(request.worktree)

    def one_try() -> AttemptOutcome:
        outcome = run_agent(
            replace(request, timeout_s=_left(deadline)), on_event=on_event, cancel=cancel
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
        log(
            f"transient failure ({previous.error or previous.ending.value}); "
            f"retry {state.attempt_number}/{spec.retries} in {wait:.1f}s"
        )
        restore_worktree(request.worktree, snapshot)
        if request.private_tmp is not None:
            shutil.rmtree(request.private_tmp, ignore_errors=True)
            request.private_tmp.mkdir(parents=True)

    def cancelled(_: object) -> bool:
        return cancel is not None and cancel.is_set()

    retrying = Retrying(
        # No retry that the attempt's deadline would cut short before it starts.
        stop=stop_after_attempt(spec.retries + 1)
        | (lambda state: _left(deadline) <= (state.upcoming_sleep or 0) + 1),
        # Doubling from the first wait, plus jitter as large as it, so that agents failing
        # together retry apart.
        wait=wait_exponential(multiplier=spec.backoff_initial_s, max=spec.backoff_max_s)
        + wait_random(0, spec.backoff_initial_s),
        retry=retry_if_result(lambda o: o.retryable and not cancelled(o)),
        before_sleep=before_sleep,
        sleep=lambda s: cancel.wait(s) if cancel is not None else time.sleep(s),
        retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
    )
    outcome: AttemptOutcome = retrying(one_try)
    if outcome.retryable and not cancelled(outcome):
        log(f"transient failure ({outcome.error}); no retry left ({spec.retries} used)")
    return outcome


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
