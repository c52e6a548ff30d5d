"""The ``attempt`` flow: one attempt of a ``placement: pool`` sprint, on a worker of its pool.

The sprint flow starts it with ``run_deployment`` (a subflow run ``<task>#<k>``). The
worker may be on another machine: it fetches the remote into its own mirror under its
own work dir, fetches the attempt's start commit (which the sprint pushed to
``refs/agentfleet/starts/...``), runs the attempt exactly as a local sprint does
(worktree, agent, verify, commit, lease, cache in the shared result storage), pushes the
attempt branch, and returns the result through Prefect's result storage. Cancelling the
run (or the sprint, which cancels it) stops the agent. A worker killed outright (``kill
-9``) stops nothing: the run notices that its worker is gone and ends as if cancelled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Iterator

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from agentfleet.attempt import AttemptSpec
from agentfleet.clean import reap_orphans
from agentfleet.codex.cli import find_codex
from agentfleet.guardrails import RunGuards
from agentfleet.leases import lease_dir
from agentfleet.lifeline import watch_parent
from agentfleet.liveness import HEARTBEAT_LABEL, HEARTBEAT_S
from agentfleet.locks import repo_key
from agentfleet.metering.sprint import HandedRoute
from agentfleet.process import stop_all
from agentfleet.remote import (
    RemoteRepository,
    fetch_refs,
    mirror_path,
    push_branches,
    sync_mirror,
)
from agentfleet.results import AttemptResult
from agentfleet.settings import PROJECT_ROOT, AgentfleetSettings
from flows import warm
from flows.heartbeat import heartbeat
from tasks.attempt import attempt as attempt_task
from tasks.cache import agent_version, prefetch_agent_version, settle
from tasks.limits import give_back_slot, shared_limits
from tasks.remote import remote_access
from tasks.runtime import open_run


# The ignore: Prefect 3.9's own annotation of task_runner rejects its ThreadPoolTaskRunner.
@flow(
    name="attempt",
    flow_run_name="{spec.task_id}#{spec.attempt}",
    task_runner=ThreadPoolTaskRunner(max_workers=1),  # type: ignore[arg-type]
    # The sprint reads the result from the shared result storage.
    persist_result=True,
    result_serializer="json",
)
def attempt(
    spec: AttemptSpec,
    remote: RemoteRepository,
    start_ref: str,
    more_refs: list[str] | None = None,
    no_cache: bool = False,
    pool: str | None = None,
    starts_per_minute: float | None = None,
    metering: dict[str, str] | None = None,
) -> AttemptResult:
    """Run one attempt of a sprint on this worker, from the remote, and push its branch.

    ``start_ref`` (and ``more_refs``, e.g. a resolver's other side) are fetched first.
    ``spec``'s paths are the sprint's machine's: they are replaced by this worker's.
    ``metering``: the ``-c`` overrides that send its Codex through the sprint's metering
    proxy (apart from ``spec``: they are not part of its cache key).
    """
    # Its liveness label (the sprint tells a dead worker from a slow one) and Prefect's
    # heartbeat event, from one thread.
    with heartbeat(HEARTBEAT_LABEL, HEARTBEAT_S), dies_with_worker():
        return _attempt(spec, remote, [start_ref, *(more_refs or [])], no_cache, pool,
                        starts_per_minute, metering)


@contextlib.contextmanager
def dies_with_worker() -> Iterator[None]:
    """End this flow run when the worker that started it is gone (killed with -9).

    Its agents run in their own sessions: nothing else stops them. SIGTERM to this process
    takes the cancel path (the agent stops, its worktree goes) and the engine marks the run
    Crashed, so the sprint runs the attempt again on another worker at once. Only in a
    flow-run process a worker started (the worker's environment names the run)."""
    if not os.environ.get("PREFECT__FLOW_RUN_ID"):
        yield
        return
    logger = get_run_logger()
    grace_s = AgentfleetSettings().stop_grace_s

    def gone(worker: int) -> None:
        # At the main thread: a signal to the process may reach another thread, and then
        # a main thread blocked on a lock never sees it.
        main = threading.main_thread().ident
        if main is not None:  # None only before the thread started: never for the main one
            signal.pthread_kill(main, signal.SIGTERM)
        logger.warning(f"its worker (process {worker}) is gone: stopping the agent; the "
                       "sprint runs this attempt again on another worker")
        # A main thread that does not unwind in time: its agents go, then the process.
        last = threading.Timer(grace_s + 30, lambda: (stop_all(grace_s=0), os._exit(1)))
        last.daemon = True  # a process that did unwind does not wait for it
        last.start()

    with watch_parent(gone, parent=warm.worker_pid()):
        yield


def _attempt(
    spec: AttemptSpec, remote: RemoteRepository, refs: list[str], no_cache: bool,
    pool: str | None, starts_per_minute: float | None, metering: dict[str, str] | None,
) -> AttemptResult:
    logger = get_run_logger()
    settings = AgentfleetSettings()
    access = remote_access(remote)
    # The agent block's Codex path (in the spec) wins over this worker's setting.
    codex = (find_codex(spec.codex_path or settings.codex_path, PROJECT_ROOT,
                        os.environ.get("PATH"))
             if spec.agent.kind == "codex" else None)
    # Its version (part of the cache key) is asked while the mirror is fetched, and kept in
    # the work dir: the worker's next attempts do not ask again.
    prefetch_agent_version(codex, settings.work_dir)
    mirror = mirror_path(settings.work_dir, remote.location)
    if not (mirror / "HEAD").is_file():  # this worker's first attempt from the remote
        sync_mirror(remote.location, mirror, access, log=logger.info)
    here = remote.model_copy(update={"mirror": mirror})
    # The start commit (and what it is made of) is all the attempt needs from the remote:
    # one fetch, not the whole mirror's (two round trips more per attempt).
    fetch_refs(here, refs, access)
    key = repo_key(mirror)
    # Agents of an attempt whose worker process was killed on this machine may still run.
    reap_orphans(settings.work_dir, mirror, spec.sprint, grace_s=settings.stop_grace_s,
                 log=logger.warning, release_slot=give_back_slot)
    local = spec.model_copy(update={
        "repo": mirror,
        "worktree_root": settings.worktree_root(key, spec.sprint),
        "lease_dir": lease_dir(settings.work_dir, key, spec.sprint),
        "codex_path": codex,
        "grace_s": settings.stop_grace_s,
    })
    with open_run(spec.sprint) as control:
        if pool is not None:
            # Its agent holds a slot of the pool every sprint on this server shares (the
            # sprint's own limits.concurrency is held where the sprint runs).
            control.guards = RunGuards(1, 1, shared_limits(pool, settings.pool_size,
                                                           starts_per_minute, logger.info))
            logger.info(f"its agent holds a slot of the shared pool {pool} while it runs")
        if metering:  # counted, and held to its budgets, by the sprint's proxy
            control.meter = HandedRoute(metering)
        run = attempt_task.with_options(refresh_cache=True) if no_cache else attempt_task
        future = run.submit(local, agent_version=agent_version(codex, settings.work_dir))
        try:
            result = settle(future, local, logger.info)
        except BaseException:
            # Cancelled (the worker's SIGTERM) or interrupted: stop the agent, let the task
            # remove its worktree, then go.
            control.stop(settings.stop_grace_s)
            future.wait(timeout=settings.stop_grace_s + 30)
            raise
    if result.head_sha:
        push_branches(here, [spec.branch], access)
        logger.info(f"pushed {spec.branch} to {remote.shown}")
    # Here, not in the task: the cached result, which a rerun's sprint finds, names no worker.
    return result.model_copy(update={"ran_on": ran_here()})


def ran_here() -> str:
    """This worker and its host, as the sprint's report names them: ``w2 (build-3)``;
    the host alone in a run no worker started."""
    host = socket.gethostname()
    worker = os.environ.get("PREFECT__WORKER_NAME")  # set by Prefect's workers for the run
    return f"{worker} ({host})" if worker else host
