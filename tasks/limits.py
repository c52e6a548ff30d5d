"""The shared pool as Prefect global concurrency limits: created when missing, held by lease.

``limits.pool`` names a global concurrency limit (one slot per running agent of every
sprint on the server); ``limits.starts_per_minute`` a second one, ``<pool>-starts``,
with one slot decaying at that rate, which spaces agent starts. A person sees and
changes both on the UI's Concurrency page or with ``prefect gcl``.

Slots are taken one request at a time (``increment-with-lease``; a full limit answers
423 at once) behind the process-wide ``SlotGate``, so a slot freed in this process is
taken at once and one freed elsewhere within ``POLL_S``: Prefect's own waiting sleeps
for the server's retry-after, up to 30 s. A slot is leased and the lease renewed
while the agent runs, and recorded in the attempt's lease file: the reaper of a killed
run (``agentfleet clean``, the sprint's next run) gives it back with ``give_back_slot``;
else it comes back when its lease expires. On the embedded server the pool's slots are
counted in the process instead (``shared_limits``).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
)
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings
from prefect.states import Failed, State

from agentfleet.attempt import AttemptSpec
from agentfleet.control import RunControl
from agentfleet.guardrails import ProcessSlots, RunGuards, SharedLimits, SlotGate, unrecorded
from agentfleet.leases import PoolSlot
from agentfleet.metering.sprint import HandedRoute, SprintMeter
from agentfleet.plan import Plan
from agentfleet.results import AttemptResult
from agentfleet.settings import AgentfleetSettings
from tasks.observe import attempt_finished

LEASE_S = 60.0  # a killed process's slots come back after this
_RENEW_EVERY_S = LEASE_S / 3
_LOCKED = 423
_GONE = 410  # renewing a lease that expired or was released

Log = Callable[[str], None]


def starts_limit_name(pool: str) -> str:
    """The name of the limit that spaces agent starts of ``pool``."""
    return f"{pool}-starts"


def ensure_pool(name: str, size: int, log: Log) -> int:
    """Make sure the global limit ``name`` exists (created with ``size`` slots, and said
    so); return its number of slots."""
    with get_client(sync_client=True) as client:
        try:
            return client.read_global_concurrency_limit_by_name(name).limit
        except ObjectNotFound:
            pass
        try:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=size)
            )
        except ObjectAlreadyExists:  # another sprint created it meanwhile
            return client.read_global_concurrency_limit_by_name(name).limit
    log(
        f"created the Prefect global concurrency limit '{name}' with {size} slots "
        f"(AGENTFLEET_POOL_SIZE), shared by the agents of every sprint on this server; "
        f"see and change it on the UI's Concurrency page or with `prefect gcl update {name} "
        "--limit N`"
    )
    return size


def ensure_starts(pool: str, per_minute: float, log: Log) -> str:
    """The limit spacing agent starts at ``per_minute`` (one slot, decaying), created or
    set to that rate; its name."""
    name = starts_limit_name(pool)
    decay = per_minute / 60.0
    with get_client(sync_client=True) as client:
        try:
            found = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            found = None
        if found is None:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1, slot_decay_per_second=decay)
                )
                log(f"created the Prefect global concurrency limit '{name}' (one slot, decaying "
                    f"{decay:g}/s): at most {per_minute:g} agent starts a minute on '{pool}'")
            except ObjectAlreadyExists:
                pass
        elif found.slot_decay_per_second != decay or found.limit != 1:
            client.update_global_concurrency_limit(
                name, GlobalConcurrencyLimitUpdate(limit=1, slot_decay_per_second=decay)
            )
            log(f"set '{name}' to {per_minute:g} agent starts a minute (was "
                f"{found.slot_decay_per_second * 60:g} with {found.limit} slots)")
    return name


@dataclass
class Lease:
    """One held slot of the pool, renewed until released (None: the limit was gone)."""

    lease_id: UUID | None
    limit: str = ""
    api_url: str | None = None  # the server holding it; None: the embedded one
    stop: threading.Event = field(default_factory=threading.Event)


def _slot_of(lease: Lease) -> PoolSlot | None:
    """The lease as the attempt's lease file records it."""
    if lease.lease_id is None:
        return None
    return PoolSlot(limit=lease.limit, lease_id=str(lease.lease_id), api_url=lease.api_url)


def _api_url() -> str | None:
    url = get_current_settings().api.url
    return str(url) if url else None


def _try_pool(name: str) -> Lease | None:
    with get_client(sync_client=True) as client:
        try:
            response = client.increment_concurrency_slots_with_lease(
                names=[name], slots=1, mode="concurrency", lease_duration=LEASE_S
            )
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == _LOCKED:
                return None
            raise
    data: dict[str, Any] = response.json()
    if not data.get("limits"):  # deleted (or deactivated) by someone meanwhile: no limit
        return Lease(None)
    lease = Lease(UUID(str(data["lease_id"])), name, _api_url())
    # With this thread's Prefect settings (the API it holds the lease on).
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(_renew, lease), daemon=True,
                     name=f"agentfleet-lease-{name}").start()
    return lease


def _renew(lease: Lease) -> None:
    while not lease.stop.wait(_RENEW_EVERY_S):
        try:
            with get_client(sync_client=True) as client:
                client.renew_concurrency_lease(lease.lease_id, LEASE_S)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - the next renewal may work; expiry frees it anyway
            continue


def _release_pool(lease: Lease) -> None:
    lease.stop.set()
    if lease.lease_id is None:
        return
    try:
        with get_client(sync_client=True) as client:
            # An expired (repossessed) lease is no error: the server then does nothing.
            client.release_concurrency_slots_with_lease(lease.lease_id)
    except Exception:  # noqa: BLE001 - its server gone (after Prefect's retries): the lease
        return  # expires there by itself; the agent's work stands, whatever became of it


def give_back_slot(slot: PoolSlot) -> str:
    """Give back the pool slot a killed run's agent held (the reaper's call), at once rather
    than when its lease expires (60 s); what happened, for the log.

    On a server the lease is released by id. The embedded server of a killed process kept
    its leases in that process's memory: no lease is left to expire, and the slot stays
    counted in the database until it is decremented here."""
    label = f"slot of the shared pool '{slot.limit}'"
    here = _api_url()
    if slot.api_url is None and here is not None:
        return (f"its {label} was taken on an embedded server; run `agentfleet clean` without "
                f"PREFECT_API_URL to give it back")
    settings = ({PREFECT_API_URL: slot.api_url}
                if slot.api_url is not None and slot.api_url != here else {})
    with temporary_settings(settings), get_client(sync_client=True) as client:
        lease_id = UUID(slot.lease_id)
        try:
            client.renew_concurrency_lease(lease_id, LEASE_S)  # is it still held?
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code not in (404, _GONE):
                raise
            if slot.api_url is not None:
                return f"its {label} was back already (its lease had expired)"
            # occupancy_seconds only feeds the limit's statistics, and must be over 0.
            client.release_concurrency_slots(names=[slot.limit], slots=1, occupancy_seconds=1)
            return f"gave back its {label} (the embedded server's lease was lost with it)"
        client.release_concurrency_slots_with_lease(lease_id)
    return f"gave back its {label} (lease {slot.lease_id}, not left to expire)"


def _try_start(name: str) -> bool | None:
    with get_client(sync_client=True) as client:
        try:
            client.increment_concurrency_slots(names=[name], slots=1, mode="rate_limit")
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == _LOCKED:
                return None
            raise
    return True


_gates_lock = threading.Lock()
_gates: dict[tuple[str, str], SlotGate] = {}


def _gate(name: str, make: Callable[[], SlotGate]) -> SlotGate:
    """The process's gate of limit ``name`` on the current Prefect API (one per server)."""
    key = (str(get_current_settings().api.url or "ephemeral"), name)
    with _gates_lock:
        gate = _gates.get(key)
        if gate is None:
            gate = _gates[key] = make()
        return gate


def waits(name: str) -> int:
    """How many agents of this process had to wait for a slot of limit ``name`` (behind
    others of this process, or refused by the server)."""
    key = (str(get_current_settings().api.url or "ephemeral"), name)
    with _gates_lock:
        gate = _gates.get(key)
    return gate.waited if gate is not None else 0


def shared_limits(pool: str, size: int, starts_per_minute: float | None, log: Log) -> SharedLimits:
    """The pool (and start rate) every sprint on this Prefect server shares.

    On the embedded server (no ``PREFECT_API_URL``) the pool holds within this process:
    its size is the limit's, its slots are counted here. No request per agent, so no
    handoff waits on the server's SQLite (a stall of 2.4 s seen in a busy sprint), and a
    killed run leaves no slot counted."""
    slots = ensure_pool(pool, size, log)
    slot_of: Callable[[Any], PoolSlot | None]
    if _api_url() is None:
        counted = ProcessSlots(slots)
        gate = _gate(pool, lambda: SlotGate(counted.try_acquire, counted.release))
        where, slot_of = "; counted in this process, no Prefect server is shared", unrecorded
    else:
        gate = _gate(pool, lambda: SlotGate(lambda: _try_pool(pool), _release_pool))
        where, slot_of = "", _slot_of
    starts = None
    if starts_per_minute:
        name = ensure_starts(pool, starts_per_minute, log)
        starts = _gate(name, lambda: SlotGate(lambda: _try_start(name), lambda _: None))
    rate = f", at most {starts_per_minute:g} starts a minute" if starts_per_minute else ""
    log(f"agents share the pool '{pool}' ({slots} slot{'s' if slots != 1 else ''}{rate}{where})")
    return SharedLimits(pool=pool, gate=gate, starts=starts, slot_of=slot_of)


def run_guards(plan: Plan, settings: AgentfleetSettings, log: Log) -> RunGuards:
    """One sprint run's slots: its own agents and checks, and the server's shared pool."""
    limits = plan.limits
    shared = shared_limits(limits.pool, settings.pool_size, limits.starts_per_minute, log)
    return RunGuards(limits.concurrency, limits.checks_cap, shared)


@contextlib.contextmanager
def guarded(plan: Plan, settings: AgentfleetSettings, control: RunControl, log: Log,
            warn: Log) -> Iterator[None]:
    """For the length of a sprint run: its slots, and (with Codex agents) its metering
    proxy, on ``control`` for its attempts to find."""
    control.guards = run_guards(plan, settings, log)
    if all(plan.task_agent(t).kind != "codex" for t in plan.tasks):
        yield
        return
    with SprintMeter(plan.limits.tokens, log, warn, host=settings.proxy_host,
                     port=settings.proxy_port, public_url=settings.proxy_url) as meter:
        control.meter = meter
        budgets = []
        if plan.limits.tokens is not None:
            budgets.append(f"{plan.limits.tokens:,} tokens for the sprint")
        if plan.max_tokens is not None or any(t.max_tokens for t in plan.tasks):
            budgets.append("max_tokens per attempt")
        where = meter.proxy.url
        if plan.placement == "pool":  # the workers' agents talk to it from their machines
            where += f", workers reach it at {meter.proxy.public_url}"
        log(f"metering proxy on {where}: Codex agents' tokens counted as they "
            f"stream" + (f"; budgets: {', '.join(budgets)}" if budgets else ""))
        try:
            yield
        finally:
            control.meter = None


def metered_spec(spec: AttemptSpec, meter: SprintMeter | HandedRoute | None, name: str,
                 env: Mapping[str, str], log: Log) -> AttemptSpec:
    """``spec`` with its Codex agent routed through ``meter`` (unchanged otherwise)."""
    if meter is None or spec.agent.kind != "codex":
        return spec
    agent = meter.route(name, spec.task_id, spec.agent, env, spec.max_tokens)
    added = {k: v for k, v in agent.config.items() if spec.agent.config.get(k) != v}
    if added:
        budget = f"; budget {spec.max_tokens:,} tokens" if spec.max_tokens else ""
        log("metered: its model requests go through the sprint's proxy ("
            + ", ".join(f"-c {k}={v}" for k, v in added.items()) + f"){budget}")
    return spec.model_copy(update={"agent": agent})


def with_metered_usage(result: AttemptResult, meter: SprintMeter, name: str,
                       warn: Log) -> AttemptResult:
    """The tokens the proxy counted, and "over budget: ..." for an attempt it stopped."""
    if result.outcome is not None:
        counted = meter.usage(name)
        own = result.outcome.usage
        if own.total and own.total != counted.total:  # Codex reports usage of a turn it ends
            warn(f"Codex reported {own.total:,} tokens, the metering proxy counted "
                 f"{counted.total:,}; the report shows the proxy's")
        result.outcome = result.outcome.model_copy(update={"usage": counted})
    over = meter.over_budget(name)
    if over is not None and not result.succeeded:
        result.reason = over
    return result


def skipped(spec: AttemptSpec, reason: str, warn: Log) -> State:
    """An attempt not started (the sprint's budget is spent): failed, not cached."""
    result = AttemptResult(task_id=spec.task_id, attempt=spec.attempt, branch=spec.branch,
                           start_sha=spec.start_sha, succeeded=False, reason=reason,
                           prompt=spec.prompt)
    warn(reason)
    attempt_finished(spec, result)
    return Failed(data=result, message=f"{reason} (not cached)")
