"""Prefect's side of reusing attempt results: the cache policy, the state, the restore.

An attempt's result is persisted in Prefect's result storage (local files under
``PREFECT_RESULTS_LOCAL_STORAGE_PATH``, default ``$PREFECT_HOME/storage``, or the
block named by ``PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK``) under a key that holds
everything that decides it (``agentfleet.cache_key``). Prefect's default policy
includes the run id; this one does not, so a rerun, a resume after a crash or a run
on another machine sharing the storage finds the result and runs no agent.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.futures import PrefectFuture
from prefect.states import Completed, Failed, State

from agentfleet.apply import tree_of
from agentfleet.attempt import AttemptSpec
from agentfleet.cache_key import attempt_key, is_cacheable
from agentfleet.errors import AgentfleetError
from agentfleet.restore import capture, restore_branch
from agentfleet.results import AttemptResult


class AttemptCachePolicy(CachePolicy):
    """Key an ``attempt(spec, agent_version)`` task run on what decides its result."""

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        """The attempt's key: its spec with the start commit's tree instead of the commit."""
        spec: AttemptSpec = inputs["spec"]
        return attempt_key(spec, tree_of(spec.repo, spec.start_sha), inputs.get("agent_version"))


ATTEMPT_CACHE = AttemptCachePolicy()


def agent_version(codex: Path | None) -> str | None:
    """``codex --version`` (part of every Codex attempt's key), or None without Codex."""
    if codex is None:
        return None
    try:
        done = subprocess.run(
            [str(codex), "--version"], capture_output=True, text=True, timeout=60,
            stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({type(exc).__name__})"
    return done.stdout.strip() or f"unknown (exit {done.returncode})"


def finished(spec: AttemptSpec, result: AttemptResult) -> State:
    """The attempt task's final state: Completed (cached) or Failed (not cached).

    A Failed state is Prefect's way to keep a result out of the cache: the
    transaction rolls back, the result is still returned to the flow.
    """
    if result.head_sha:
        result.patch = capture(spec.repo, spec.start_sha, result.head_sha)
    if is_cacheable(result):
        return Completed(data=result, message=result.reason or None)
    return Failed(data=result, message=f"{result.reason} (not cached)")


def settle(
    future: PrefectFuture, spec: AttemptSpec, log: Callable[[str], None]
) -> AttemptResult:
    """The attempt's result; a cached one with its branch restored onto this run's start.

    Raises what the task raised (an agentfleet bug or a git failure, not the agent's).
    """
    value = future.result(raise_on_failure=False)
    if isinstance(value, BaseException):
        raise value
    if not isinstance(value, AttemptResult):
        raise AgentfleetError(f"{spec.task_id}#{spec.attempt} returned {type(value).__name__}")
    if future.state.name != "Cached":
        return value
    result = value.model_copy(deep=True)
    what = "succeeded" if result.succeeded else f"failed: {result.reason}"
    if result.head_sha and result.patch is not None:
        try:
            # The environment is read here, at the edge, for git alone (a temporary index).
            restored = restore_branch(
                spec.repo, spec.branch, spec.start_sha, result.patch, env=os.environ
            )
        except AgentfleetError as exc:
            log(f"{spec.task_id}#{spec.attempt}: cached result could not be restored: {exc}")
            return result.model_copy(
                update={"succeeded": False, "reason": f"cached result not restorable: {exc}; "
                        "run again with --no-cache"}
            )
        result.head_sha = restored.head_sha
        result.start_sha = restored.start_sha
        branch = ("restored" if restored.restored else "kept") + f" {spec.branch}"
    else:
        branch = "no branch"
    log(f"{spec.task_id}#{spec.attempt}: cached ({what}; {branch}); no agent run")
    return result
