"""Prefect's side of reusing attempt results: the key, the lookup, the state, the restore.

An attempt's result is persisted in Prefect's result storage (local files under
``PREFECT_RESULTS_LOCAL_STORAGE_PATH``, default ``$PREFECT_HOME/storage``, or the
block named by ``PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK``) under a key that holds
everything that decides it (``agentfleet.cache_key``), so a rerun, a resume after a
crash or a run on another machine sharing the storage finds it and runs no agent.

The attempt task looks the key up and writes it itself instead of through a Prefect
cache policy: Prefect turns every cache hit into a Completed state, and a cached
*failure* (verify failed) must stay Failed (red in the UI) when it is served again.
A hit is a state named ``Cached``, Completed or Failed as the result was.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from prefect.context import TaskRunContext
from prefect.futures import PrefectFuture
from prefect.results import get_result_store
from prefect.settings import PREFECT_TASKS_REFRESH_CACHE
from prefect.states import Completed, Failed, State

from agentfleet.apply import tree_of
from agentfleet.attempt import AttemptSpec
from agentfleet.cache_key import attempt_key, is_cacheable
from agentfleet.codex.cli import native_launch
from agentfleet.errors import AgentfleetError
from agentfleet.files import write_atomically
from agentfleet.gitcmd import git
from agentfleet.restore import capture, restore_branch
from agentfleet.results import AttemptResult

CACHED = "Cached"  # the state name of a result served from the cache, success or failure


def cache_key(spec: AttemptSpec, agent_version: str | None) -> str:
    """The attempt's key: its spec with the start commit's tree instead of the commit."""
    merge_trees = None
    if spec.merge is not None:  # a resolver: what is merged, and from where
        base = git(spec.repo, "merge-base", spec.start_sha, spec.merge.commit).strip()
        merge_trees = (tree_of(spec.repo, spec.merge.commit), tree_of(spec.repo, base))
    return attempt_key(spec, tree_of(spec.repo, spec.start_sha), agent_version, merge_trees)


def _refresh() -> bool:
    """``--no-cache`` (``attempt.with_options(refresh_cache=True)``) or Prefect's setting."""
    ctx = TaskRunContext.get()
    if ctx is not None and ctx.task.refresh_cache is not None:
        return bool(ctx.task.refresh_cache)
    return bool(PREFECT_TASKS_REFRESH_CACHE.value())


def lookup(key: str) -> AttemptResult | None:
    """The result stored under ``key`` (call inside the task run), unless refreshing."""
    if _refresh():
        return None
    store = get_result_store()
    try:
        if not store.exists(key):
            return None
        value = store.read(key).result
    except Exception:  # noqa: BLE001 - an unreadable record is a miss: the attempt runs
        return None
    return value if isinstance(value, AttemptResult) else None


def cached_state(result: AttemptResult) -> State:
    """The state of a task run served from the cache: red when the result is a failure."""
    if result.succeeded:
        return Completed(name=CACHED, data=result, message="cached; no agent run")
    return Failed(name=CACHED, data=result, message=f"cached failure: {result.reason}")


def agent_version(codex: Path | None, record_dir: Path | None = None) -> str | None:
    """``codex --version`` (part of every Codex attempt's key), or None without Codex.

    Asked once per binary (its path, size and mtime): per process, and with ``record_dir``
    (the work dir) across runs, where the answer is kept in ``codex-version.json``; in the
    background when ``prefetch_agent_version`` came first. Codex's start-up is off the
    run's critical path, and a rerun pays none of it.
    """
    if codex is None:
        return None
    return _version_of(codex, record_dir).result()


def prefetch_agent_version(codex: Path | None, record_dir: Path | None = None) -> None:
    """Start asking ``codex --version`` now, while the run starts up."""
    if codex is not None:
        _version_of(codex, record_dir)


VERSION_RECORD = "codex-version.json"

_versions: dict[tuple[str, int, int], Future[str]] = {}
_versions_lock = threading.Lock()


def _version_of(codex: Path, record_dir: Path | None = None) -> Future[str]:
    try:
        resolved = codex.resolve()
        st = resolved.stat()
        key = (str(resolved), st.st_size, st.st_mtime_ns)
    except OSError:
        key = None
    with _versions_lock:
        found = _versions.get(key) if key is not None else None
        if found is not None:
            return found
        future: Future[str] = Future()
        if key is not None:
            _versions[key] = future
            recorded = _recorded_version(record_dir, key)
            if recorded is not None:
                future.set_result(recorded)
                return future

    def ask() -> None:
        version = _ask_version(codex)
        if key is not None and not version.startswith("unknown"):
            _record_version(record_dir, key, version)
        future.set_result(version)

    threading.Thread(target=ask, name="codex-version", daemon=True).start()
    return future


def _recorded_version(record_dir: Path | None, key: tuple[str, int, int]) -> str | None:
    """The version an earlier run asked of this very binary (same path, size, mtime)."""
    if record_dir is None:
        return None
    try:
        entry = json.loads((record_dir / VERSION_RECORD).read_text()).get(key[0])
    except (OSError, ValueError, AttributeError):
        return None
    if (isinstance(entry, dict) and entry.get("size") == key[1]
            and entry.get("mtime_ns") == key[2] and isinstance(entry.get("version"), str)):
        return entry["version"]
    return None


def _record_version(record_dir: Path | None, key: tuple[str, int, int], version: str) -> None:
    """Keep the answer for later runs; best effort (a run without it asks again)."""
    if record_dir is None:
        return
    path = record_dir / VERSION_RECORD
    try:
        try:
            known = json.loads(path.read_text())
        except (OSError, ValueError):
            known = {}
        if not isinstance(known, dict):
            known = {}
        known[key[0]] = {"size": key[1], "mtime_ns": key[2], "version": version}
        # A run reading it at the same time sees all or nothing.
        write_atomically(path, json.dumps(known, indent=1) + "\n")
    except OSError:
        pass


def _ask_version(codex: Path) -> str:
    program, env = native_launch(codex, os.environ)
    try:
        done = subprocess.run(
            [str(program), "--version"], capture_output=True, text=True, timeout=60,
            stdin=subprocess.DEVNULL, check=False, env=env,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({type(exc).__name__})"
    return done.stdout.strip() or f"unknown (exit {done.returncode})"


def finished(
    spec: AttemptSpec, result: AttemptResult, key: str, warn: Callable[[str], None]
) -> State:
    """The attempt task's final state, its result stored under ``key`` when reusable.

    Completed for a success, Failed for any failure: a cached one (verify failed) too.
    """
    if result.head_sha:
        result.patch = capture(spec.repo, spec.start_sha, result.head_sha)
    cacheable = is_cacheable(result)
    if cacheable:
        try:
            get_result_store().write(result, key=key)  # replaces what --no-cache ran again
        except Exception as exc:  # noqa: BLE001 - the result stands; only its reuse is lost
            warn(f"could not store the result for reuse: {exc}")
    if result.succeeded:
        return Completed(data=result)
    return Failed(data=result, message=result.reason + ("" if cacheable else " (not cached)"))


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
    if future.state.name != CACHED:
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
            log(f"{spec.task_id}#{spec.attempt}: cached result could not be restored: {exc}; "
                "run again with --no-cache")
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
