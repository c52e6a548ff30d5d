"""One attempt at one task, from a fresh worktree to a committed, verified branch.

    worktree add (own branch, from the start commit)
    -> setup -> agent (transient failures retried) -> paths check
    -> commit (agentfleet's identity) -> verify -> worktree released, branch kept

Prefect-free: ``tasks/attempt.py`` wraps it as a task run named ``<task>#<k>``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from pydantic import BaseModel
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_result,
    stop_after_attempt,
    wait_exponential_jitter,
)

from agentfleet.agent_config import AgentConfig
from agentfleet.agents import AgentRequest, run_agent
from agentfleet.outcome import AttemptOutcome, Ending
from agentfleet.patterns import matches
from agentfleet.process import run_shell
from agentfleet.results import AttemptResult, CheckResult
from agentfleet.worktrees import (
    WorktreeManager,
    changed_files,
    commit_all,
    diffstat,
    reset_worktree,
    resolve_commit,
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
    worktree = manager.add(spec.branch, spec.start_sha, name, reset=True)
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
        _run_in(worktree, spec, result, env=env, on_event=on_event, log=log, cancel=cancel)
        committed = result.head_sha is not None
    finally:
        manager.remove(worktree)
        if not committed and cancel is not None and cancel.is_set():
            # An interrupted attempt leaves nothing: its branch would only point at the start.
            manager.delete_branch(spec.branch)
        result.duration_s = time.monotonic() - started
    return result


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
    if spec.setup:
        log(f"setup: {spec.setup}")
        result.setup = CheckResult.from_shell(
            run_shell(spec.setup, worktree, env, timeout_s=spec.timeout_s, cancel=cancel)
        )
        if not result.setup.passed:
            result.reason = f"setup failed (exit {result.setup.exit_status})"
            return

    outcome = _run_agent_with_retries(worktree, spec, result, env, on_event, log, cancel)
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
            run_shell(spec.verify, worktree, env, timeout_s=spec.timeout_s, cancel=cancel)
        )
        if not result.verify.passed:
            result.reason = f"verify failed (exit {result.verify.exit_status})"
            return
    result.succeeded = True


def _run_agent_with_retries(
    worktree: Path,
    spec: AttemptSpec,
    result: AttemptResult,
    env: Mapping[str, str],
    on_event: Callable[[object], None] | None,
    log: Log,
    cancel: threading.Event | None,
) -> AttemptOutcome:
    """Retry whole agent runs on transient failures only; the one retry layer."""
    request = AgentRequest(
        worktree=worktree,
        prompt=spec.prompt,
        agent=spec.agent,
        timeout_s=spec.timeout_s,
        env=env,
        codex_path=spec.codex_path,
        idle_timeout_s=spec.idle_timeout_s,
        grace_s=spec.grace_s,
    )

    def before_sleep(state: RetryCallState) -> None:
        previous: AttemptOutcome = state.outcome.result()  # type: ignore[union-attr]
        wait = state.next_action.sleep if state.next_action else 0
        log(
            f"transient failure ({previous.error or previous.ending.value}); "
            f"retry {state.attempt_number}/{spec.retries} in {wait:.1f}s"
        )
        reset_worktree(worktree, spec.start_sha)

    def cancelled(_: object) -> bool:
        return cancel is not None and cancel.is_set()

    retrying = Retrying(
        stop=stop_after_attempt(spec.retries + 1),
        wait=wait_exponential_jitter(initial=spec.backoff_initial_s, max=spec.backoff_max_s),
        retry=retry_if_result(lambda o: o.retryable and not cancelled(o)),
        before_sleep=before_sleep,
        sleep=lambda s: cancel.wait(s) if cancel is not None else time.sleep(s),
        retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
    )
    outcome: AttemptOutcome = retrying(run_agent, request, on_event=on_event, cancel=cancel)
    result.tries = retrying.statistics.get("attempt_number", 1)
    if outcome.ending is Ending.KILLED:
        log("stopped")
    return outcome
