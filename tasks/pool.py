"""Attempts of a ``placement: pool`` sprint: each a flow run of the ``attempt`` deployment.

The sprint's side (``pooled_attempt``): push the start commit to the remote, start the
attempt's flow run with ``run_deployment`` (linked as this task run's subflow), wait for
it while watching the attempt's stop switch (interrupt, cancel, early stop: the flow run
is cancelled and its worker stops the agent), retry a crashed run (a worker that died)
within the task's ``retries``, read the result from the shared result storage and fetch
the attempt branch the worker pushed into this run's mirror.

A rerun's attempts are looked up in the shared result storage here first, under the key
the worker would use (``tasks.cache``): a hit starts no flow run at all; its branch is
fetched from the remote (or restored from the result's patch and pushed, when the
remote lost it) as a local cached rerun restores it.

A Codex attempt is metered by the sprint's proxy as a local one is: each of its flow
runs gets a route of its own (``SprintMeter.hand``) and only the ``-c`` overrides that
send the worker's Codex there (the ``metering`` parameter: URLs, never a key); the
route is closed when the run ends in any state, and the result that comes back carries
the proxy's count and, past a budget, "over budget: ...".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import cast
from uuid import UUID

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import TERMINAL_STATES, FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.settings import get_current_settings
from prefect.states import Cancelled, Cancelling, Crashed, State

from agentfleet.attempt import AttemptSpec
from agentfleet.codex.cli import find_codex
from agentfleet.errors import AgentfleetError, AgentNotFound, ConfigError, GitError
from agentfleet.liveness import HEARTBEAT_LABEL, Liveness
from agentfleet.metering.sprint import SprintMeter
from agentfleet.remote import (
    GitAccess,
    RemoteRepository,
    delete_remote_refs,
    fetch_refs,
    push_branches,
    push_refs,
    start_ref,
)
from agentfleet.restore import restore_branch
from agentfleet.results import AttemptResult
from agentfleet.settings import PROJECT_ROOT, AgentfleetSettings
from tasks.api_url import require_pool_server
from tasks.cache import cache_key, cached_state, lookup
from tasks.limits import skipped, with_metered_usage
from tasks.remote import remote_access
from tasks.run_watch import STOP_CHECK_S, Reader, RunWatch
from tasks.runtime import agent_env, attempt_control, run_control

ATTEMPT_DEPLOYMENT = "attempt/attempt"
# How often the attempt runs are looked at: an end is seen within a quarter second (one
# read for all the runs in flight, a few milliseconds of the server's time: RunWatch).
POLL_S = 0.25
# ... while the server's events stream is up, which tells each end as it happens: only
# as often as the liveness check needs (workers beat every 2 s).
QUIET_S = 2.0
# As an event names them (``prefect.state-type``).
FINAL_TYPES = frozenset(state_type.value for state_type in TERMINAL_STATES)
# The events of a flow run's final states, by the names Prefect gives them (the types'
# own, and TimedOut, a Failed). The sprint's stream asks for these only: the server sends
# a subscriber every event its filter admits, and at each connection the last minute of
# them again; `prefect.flow-run.*` also brought every run's Scheduled, Pending and Running,
# on the whole server. An end under another name is read at the next quiet read.
FINAL_EVENTS = sorted({f"prefect.flow-run.{t.title()}" for t in FINAL_TYPES}
                      | {"prefect.flow-run.TimedOut"})
CANCEL_WAIT_S = 60.0  # how long a cancelled attempt run may take to end
START_S = 180.0  # how long a worker may take from picking a run up to its first beat


def check_attempt_deployment(pool: str) -> str | None:
    """``ConfigError`` unless the ``attempt`` deployment exists on work pool ``pool``; a
    warning when no worker would take its runs now (they wait, Scheduled, until one does)."""
    require_pool_server()
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(ATTEMPT_DEPLOYMENT)
        except ObjectNotFound as exc:
            raise ConfigError(
                f"placement: pool needs the deployment '{ATTEMPT_DEPLOYMENT}' (prefect.yaml: "
                f"`prefect --no-prompt deploy -n attempt --pool {pool}`) and workers on "
                f"pool '{pool}'"
            ) from exc
        if deployment.work_pool_name != pool:
            raise ConfigError(
                f"the deployment '{ATTEMPT_DEPLOYMENT}' is on work pool "
                f"'{deployment.work_pool_name}', not on '{pool}' (AGENTFLEET_ATTEMPT_POOL): "
                f"deploy it there (`prefect --no-prompt deploy -n attempt --pool {pool}`) or "
                "set AGENTFLEET_ATTEMPT_POOL"
            )
        status = client.read_work_pool(pool).status
    return idle_pool_warning(pool, None if status is None else status.value)


def idle_pool_warning(pool: str, status: str | None) -> str | None:
    """What a sprint should say of work pool ``pool`` in ``status`` (Prefect's: READY while
    a worker polls it), or None."""
    if status == "PAUSED":
        return (f"work pool '{pool}' is paused: the attempts' flow runs wait until it is "
                f"resumed (`prefect work-pool resume {pool}`)")
    if status == "NOT_READY":
        return (f"no worker polls work pool '{pool}': the attempts' flow runs wait until one "
                f"does (`agentfleet worker --pool {pool}`, or Prefect's worker of the pool's "
                "type)")
    return None


def key_codex(codex: Path | None, settings: AgentfleetSettings) -> Path | None:
    """The Codex whose version keys a pool sprint's cache lookups on its own machine.

    The plan's (its agent block's path), else the one this machine would run, if any:
    workers with the same Codex (one image) share its keys, and a rerun starts no flow
    run; with another Codex, or none here, the lookup misses and each worker looks up
    under its own version."""
    if codex is not None:
        return codex
    try:
        return find_codex(settings.codex_path, PROJECT_ROOT, os.environ.get("PATH"))
    except AgentNotFound:
        return None


def _cancel(flow_run_id: UUID) -> None:
    with get_client(sync_client=True) as client:
        # Read now, not the watch's last look (seconds old while the events stream is up):
        # a run started since must be Cancelling, for its worker to stop its agent. Not yet
        # started: it simply never will (its Running is refused).
        state = client.read_flow_run(flow_run_id).state
        new: State = Cancelled() if state is None or state.is_scheduled() or state.is_pending() \
            else Cancelling()
        client.set_flow_run_state(flow_run_id, new, force=True)


@contextlib.contextmanager
def _api_reader() -> Iterator[Reader]:
    """Reads of flow runs by id through one API client (``RunWatch``'s session)."""
    with get_client(sync_client=True) as client:
        def read(ids: Sequence[UUID]) -> list[FlowRun]:
            return client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(ids))),
                limit=len(ids))

        yield read


def _run_ends(heard: Callable[[UUID | None], None], stop: threading.Event) -> None:
    """The server's events stream of flow runs' final states: ``heard(None)`` once it is
    up, then ``heard(run_id)`` for each run that ends, until ``stop`` or the stream's loss."""
    from prefect.events.clients import get_events_subscriber
    from prefect.events.filters import EventFilter, EventNameFilter

    async def listen() -> None:
        async with get_events_subscriber(filter=EventFilter(
                event=EventNameFilter(name=FINAL_EVENTS))) as events:
            heard(None)
            async for event in events:
                if event.resource.get("prefect.state-type") in FINAL_TYPES:
                    heard(UUID(event.resource.id.removeprefix("prefect.flow-run.")))

    async def until_stopped() -> None:
        task = asyncio.create_task(listen())
        while not task.done() and not stop.is_set():
            await asyncio.wait({task}, timeout=STOP_CHECK_S)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(until_stopped())


_watches: dict[str, RunWatch] = {}  # per API: every attempt run this process waits on
_watches_lock = threading.Lock()


def _run_watch() -> RunWatch:
    """The watch for the current Prefect API (a process may talk to more than one)."""
    api = str(get_current_settings().api.url)
    with _watches_lock:
        if api not in _watches:
            _watches[api] = RunWatch(_api_reader, POLL_S, listen=_run_ends, quiet_s=QUIET_S)
        return _watches[api]


def _wait(flow_run_id: UUID, spec: AttemptSpec, stale_s: float) -> tuple[State, bool]:
    """The flow run's final state, and whether it was cancelled from here.

    A run whose worker stopped beating (``agentfleet.liveness``) is marked Crashed here.
    """
    control = attempt_control(f"{spec.task_id}#{spec.attempt}")
    cancelled_at: float | None = None
    alive = Liveness(stale_s=stale_s, start_s=max(START_S, stale_s))
    watch = _run_watch()
    with watch.watching(flow_run_id):
        state: State | None = None
        while True:
            # Each tick's read; at once, with the last one seen, when the attempt is stopped.
            flow_run = watch.read(flow_run_id, stop=None if cancelled_at else control.cancel)
            if flow_run is not None:
                state = flow_run.state
                if state is not None and state.is_final():
                    return state, cancelled_at is not None
            if control.stopped and cancelled_at is None:
                _cancel(flow_run_id)
                cancelled_at = time.monotonic()
            if cancelled_at is not None:
                if time.monotonic() - cancelled_at > CANCEL_WAIT_S:
                    return state or Cancelled(), True
                continue
            if flow_run is None:  # a stop, handled above
                continue
            now = time.monotonic()
            beat = flow_run.labels.get(HEARTBEAT_LABEL) if flow_run.labels else None
            if alive.dead(now, state.type.value if state else None,
                          None if beat is None else str(beat)):
                crashed: State = Crashed(message=f"its worker has not beaten for "
                                          f"{alive.silence(now):.0f}s (gone?)")
                with get_client(sync_client=True) as client:
                    client.set_flow_run_state(flow_run_id, crashed, force=True)
                return crashed, False


@task(name="pooled-attempt", task_run_name="{spec.task_id}#{spec.attempt}",
      cache_policy=NO_CACHE, persist_result=False)
def pooled_attempt(
    spec: AttemptSpec, remote: RemoteRepository, no_cache: bool = False,
    pool: str | None = None, starts_per_minute: float | None = None,
    agent_version: str | None = None,
) -> AttemptResult | State:
    """Run ``spec`` as a flow run of the ``attempt`` deployment; its result, branch fetched.

    ``pool`` and ``starts_per_minute`` (the plan's limits) are the worker's to hold: its
    agent takes a slot of the shared pool as a local sprint's agent does.
    ``agent_version``: this machine's Codex version, for the cache lookup done here (a
    worker with another Codex has other keys: it misses here and looks up its own)."""
    logger = get_run_logger()
    meter = run_control().meter
    meter = meter if isinstance(meter, SprintMeter) else None
    if meter is not None and (spent := meter.sprint_spent()):
        return skipped(spec, f"skipped: {spent}", logger.warning)
    access = remote_access(remote)
    if not no_cache and (hit := _cached(spec, remote, access, agent_version)) is not None:
        return hit
    ref = start_ref(spec.sprint, spec.task_id, spec.attempt)
    handed = {ref: spec.start_sha}
    if spec.merge is not None:
        # A resolver's merge in progress needs the other side's commit on the worker too.
        handed[ref + "-merge"] = spec.merge.commit
    push_refs(remote, handed, access)
    parameters = {"spec": spec.model_dump(mode="json"), "remote": remote.model_dump(mode="json"),
                  "start_ref": ref, "more_refs": list(handed)[1:], "no_cache": no_cache,
                  "pool": pool, "starts_per_minute": starts_per_minute}
    try:
        return _run(spec, remote, parameters, access, AgentfleetSettings().attempt_stale_s,
                    meter)
    finally:
        try:
            delete_remote_refs(remote, list(handed), access)
        except AgentfleetError as exc:  # litter on the remote, not a failure of the attempt
            logger.warning(f"could not delete {ref} on {remote.shown}: {exc}")


def _cached(spec: AttemptSpec, remote: RemoteRepository, access: GitAccess,
            agent_version: str | None) -> State | None:
    """The attempt's result from the shared result storage, its branch on the remote and
    in the mirror; None when it must run (not stored, or its branch cannot be restored).

    A Cached state: the sprint's ``settle`` then finds the branch held as a local rerun does.
    """
    result = lookup(cache_key(spec, agent_version))
    if result is None or (result.head_sha and result.patch is None):
        return None  # a result without its patch: its worker decides what it is worth
    if result.head_sha and result.patch is not None:
        try:
            fetch_refs(remote, [spec.branch], access)
            on_remote = True
        except GitError:  # deleted there: restored from the result's patch, pushed again
            on_remote = False
        try:
            # The environment is read here, at the edge, for git alone (a temporary index).
            restored = restore_branch(remote.mirror, spec.branch, spec.start_sha,
                                      result.patch, env=os.environ)
            if restored.restored or not on_remote:
                push_branches(remote, [spec.branch], access)
        except AgentfleetError as exc:
            get_run_logger().info(f"{spec.task_id}#{spec.attempt}: its cached result is not "
                                  f"restorable here ({exc}): its worker runs it")
            return None
        result = result.model_copy(update={"head_sha": restored.head_sha,
                                           "start_sha": restored.start_sha})
    return cached_state(result)


def _metered_run(spec: AttemptSpec, parameters: dict[str, object], stale_s: float,
                 meter: SprintMeter | None) -> tuple[FlowRun, State, bool]:
    """One flow run of the attempt, its Codex routed through the sprint's proxy on a route
    of its own, closed when the run ends (whatever its state: an agent its killed worker
    left behind is refused from then on)."""
    logger = get_run_logger()
    name = f"{spec.task_id}#{spec.attempt}"
    # The routing reads the agent's Codex configuration only: no key is loaded here.
    routed = (meter.hand(name, spec.task_id, spec.agent, agent_env({}, spec.agent.env),
                         spec.max_tokens) if meter is not None else None)
    route, overrides = routed if routed is not None else (None, None)
    if overrides:
        budget = f"; budget {spec.max_tokens:,} tokens" if spec.max_tokens else ""
        logger.info(f"{name}: metered: its worker's Codex goes through the sprint's proxy ("
                    + ", ".join(f"-c {k}={v}" for k, v in overrides.items()) + f"){budget}")
    try:
        # Only when metered: an attempt deployment made before this parameter still takes
        # the others (redeploy it to meter pool attempts).
        given = {**parameters, "metering": overrides} if overrides else parameters
        flow_run = cast(FlowRun, run_deployment(  # sync here: not a coroutine
            ATTEMPT_DEPLOYMENT, parameters=given, flow_run_name=name, timeout=0,
            as_subflow=True))
        logger.info(f"{name}: flow run {flow_run.name} ({flow_run.id}) on the attempt pool")
        state, cancelled = _wait(flow_run.id, spec, stale_s)
        return flow_run, state, cancelled
    finally:
        if meter is not None and route is not None:
            meter.close(route)


def _run(spec: AttemptSpec, remote: RemoteRepository, parameters: dict[str, object],
         access: GitAccess, stale_s: float, meter: SprintMeter | None) -> AttemptResult | State:
    logger = get_run_logger()
    name = f"{spec.task_id}#{spec.attempt}"
    for run in range(1, spec.retries + 2):
        if meter is not None and run > 1 and (spent := meter.sprint_spent()):
            return skipped(spec, f"skipped: {spent}", logger.warning)
        flow_run, state, cancelled = _metered_run(spec, parameters, stale_s, meter)
        if cancelled:
            control = attempt_control(name)
            return AttemptResult(task_id=spec.task_id, attempt=spec.attempt, branch=spec.branch,
                                 start_sha=spec.start_sha, succeeded=False,
                                 reason=f"stopped: {control.reason or 'interrupted'}")
        if state.is_completed():
            result = state.result()
            if not isinstance(result, AttemptResult):
                raise AgentfleetError(f"{name}: its flow run returned {type(result).__name__}")
            if result.head_sha:
                fetch_refs(remote, [spec.branch], access)
            if result.ran_on:
                logger.info(f"{name}: ran on {result.ran_on}")
            # The proxy's count and budget; a result served from the cache ran no agent.
            if meter is not None and meter.saw(name):
                result = with_metered_usage(result, meter, name, logger.warning)
            return result
        # Crashed (a worker gone) or Failed (the worker could not fetch or push: the agent's
        # own failures come back Completed, as results): another run, maybe elsewhere.
        if not (state.is_crashed() or state.is_failed()) or run > spec.retries:
            raise AgentfleetError(
                f"{name}: its flow run {flow_run.name} ended {state.name}: {state.message}"
            )
        logger.warning(f"{name}: flow run {flow_run.name} {state.type.value.lower()} "
                       f"({state.message}); running it again ({run}/{spec.retries})")
    raise AssertionError("unreachable")  # pragma: no cover
