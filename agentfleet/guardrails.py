"""Slots for agents and checks: one sprint's limits and the pool every sprint shares.

An attempt's agent holds, while it runs (retries and continuations included):

1. one of its sprint's ``limits.concurrency`` agent slots (in this process);
2. one slot of the shared pool (``limits.pool``, a Prefect global concurrency limit
   shared by every sprint on the server), through the process-wide ``SlotGate``;
3. after (2), one start of ``limits.starts_per_minute`` (a limit with slot decay;
   taken, never given back).

While it holds (2), the slot (its Prefect lease) is in the attempt's lease file, so the
reaper of a killed run gives it back at once (``clean.py``) instead of when the lease
expires. It gives (1) and (2) back when its Codex turn completed (it asks the model
nothing more; a retry after that takes them again) or when the agent ends, before the
commit, ``verify`` and ``score``, which hold one of the sprint's ``limits.checks`` slots
instead: they use this machine's CPU, not the model.

Why a gate in front of the pool: Prefect's server answers a slot request it cannot
grant with a wait of up to 30 s, which would leave a freed (paid-for) slot idle.
The gate asks the server once per try and, when refused, waits on a local
condition: a slot given back in this process wakes the first waiter at once, and
slots freed by other processes are seen at the next poll (``poll_s``). Waiters of
one process are served first come, first served; only the first one polls.

Prefect-free: the acquire and release calls are injected (``tasks/limits.py``).
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from agentfleet.leases import PoolSlot

if TYPE_CHECKING:
    from agentfleet.plan import Plan

H = TypeVar("H")

# How often the first waiter of a process asks the server again: freed slots of other
# processes (sprints) are taken within this plus one request.
POLL_S = 0.5
# How often a waiter looks at its cancel event while it waits.
_CANCEL_SLICE_S = 0.25


class SlotGate(Generic[H]):
    """First come, first served access to a shared limit from the threads of one process.

    ``try_acquire()`` asks the limit's owner once: a handle when granted, None when
    full. ``release(handle)`` gives it back (and wakes this process's first waiter).
    """

    def __init__(
        self,
        try_acquire: Callable[[], H | None],
        release: Callable[[H], None],
        *,
        poll_s: float = POLL_S,
    ) -> None:
        self._try_acquire = try_acquire
        self._release = release
        self.poll_s = poll_s
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()
        self._generation = 0  # counts releases, so a release during a try is not missed
        self.waited = 0  # how many acquisitions had to wait (for logs and tests)

    @property
    def queued(self) -> int:
        """How many threads of this process wait for a slot."""
        with self._cond:
            return len(self._queue)

    def acquire(
        self, cancel: threading.Event | None = None, on_wait: Callable[[], None] | None = None,
        on_queued: Callable[[], None] | None = None,
    ) -> H | None:
        """Wait for a slot; its handle, or None when ``cancel`` was set first.

        ``on_wait`` is called once if the limit's owner refused it; ``on_queued`` once if
        it first waits behind others of this process (a full limit, or only their
        requests under way: a sprint's first agents)."""
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
        queued = refused = False
        try:
            while True:
                with self._cond:
                    behind = self._queue[0] is not ticket
                if behind and not queued:
                    queued = True
                    if not refused:
                        self.waited += 1
                    if on_queued is not None:
                        on_queued()
                with self._cond:
                    while self._queue[0] is not ticket:
                        if cancel is not None and cancel.is_set():
                            return None
                        self._cond.wait(_CANCEL_SLICE_S)
                    generation = self._generation
                if cancel is not None and cancel.is_set():
                    return None
                handle = self._try_acquire()
                if handle is not None:
                    return handle
                if not refused:
                    refused = True
                    if not queued:
                        self.waited += 1
                    if on_wait is not None:
                        on_wait()
                with self._cond:
                    # Woken by a release in this process, else ask again after poll_s.
                    waited = 0.0
                    while self._generation == generation and waited < self.poll_s:
                        if cancel is not None and cancel.is_set():
                            return None
                        step = min(_CANCEL_SLICE_S, self.poll_s - waited)
                        self._cond.wait(step)
                        waited += step
        finally:
            with self._cond:
                self._queue.remove(ticket)
                self._cond.notify_all()

    def release(self, handle: H) -> None:
        """Give a slot back and wake the first waiter of this process."""
        try:
            self._release(handle)
        finally:
            with self._cond:
                self._generation += 1
                self._cond.notify_all()


class ProcessSlots:
    """A limit of ``size`` slots counted in this process, for a ``SlotGate``: the shared
    pool when no Prefect server is shared (the embedded one)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.held = 0
        self._lock = threading.Lock()

    def try_acquire(self) -> ProcessSlots | None:
        with self._lock:
            if self.held >= self.size:
                return None
            self.held += 1
            return self

    def release(self, _handle: ProcessSlots) -> None:
        with self._lock:
            self.held -= 1


def in_flight(concurrency: int, checks: int) -> int:
    """How many attempts of a sprint may be under way at once: ``concurrency`` with their
    agents, ``checks`` committing and verifying; the rest wait unstarted."""
    return concurrency + checks


class FifoSlots:
    """Slots of this process handed out first come, first served.

    A ``threading.Semaphore`` wakes whichever waiter runs first: an attempt whose Codex
    agent started ahead (start_ahead.py) could watch later attempts take slot after slot.
    """

    def __init__(self, slots: int) -> None:
        self._cond = threading.Condition()
        self._free = slots
        self._queue: deque[object] = deque()

    def acquire(self, cancel: threading.Event | None = None,
                near: Callable[[], None] | None = None, within: int = 0) -> bool:
        """Wait for a slot, in turn; False when ``cancel`` was set first.

        ``near`` is called once (outside the lock) when this waiter has to wait and is
        one of the first ``within`` in line."""
        ticket = object()
        called = near is None
        with self._cond:
            self._queue.append(ticket)
            try:
                while self._queue[0] is not ticket or self._free == 0:
                    if cancel is not None and cancel.is_set():
                        return False
                    if not called and self._queue.index(ticket) < within:
                        called = True
                        self._cond.release()
                        try:
                            near()  # type: ignore[misc]
                        finally:
                            self._cond.acquire()
                        continue
                    self._cond.wait(_CANCEL_SLICE_S)
                if cancel is not None and cancel.is_set():
                    return False
                self._free -= 1
                return True
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()

    def release(self) -> None:
        """Give a slot back; the first waiter takes it at once."""
        with self._cond:
            self._free += 1
            self._cond.notify_all()


def _take(sem: threading.Semaphore, cancel: threading.Event | None) -> bool:
    """Acquire a local semaphore unless ``cancel`` is set first."""
    while not sem.acquire(timeout=_CANCEL_SLICE_S):
        if cancel is not None and cancel.is_set():
            return False
    if cancel is not None and cancel.is_set():
        sem.release()
        return False
    return True


def unrecorded(_handle: object) -> None:
    """Nothing for the attempt's lease file: a slot counted in this process, which a killed
    run takes along."""
    return None


@dataclass
class SharedLimits:
    """The shared pool (and optional start rate) of every sprint, as this process sees it."""

    pool: str
    gate: SlotGate  # the pool's slots
    starts: SlotGate | None = None  # one start per slot, decaying; never released
    # What a handle of ``gate`` is, for the attempt's lease file (None: nothing to record).
    slot_of: Callable[[Any], PoolSlot | None] = unrecorded


@dataclass
class _Held:
    """What one agent holds: its sprint's slot, and the pool's when ``pooled``."""

    pooled: bool = False
    handle: Any = None  # the shared pool gate's
    slot: PoolSlot | None = None  # the handle as the attempt's lease file records it
    # Prefect's settings as the taking thread has them: a give-back from the agent's event
    # reader talks to the same server.
    context: contextvars.Context = field(default_factory=contextvars.copy_context)


class AgentSlot:
    """The slots one agent holds, given back once: when the agent's step ends, or as soon
    as its Codex turn completed (``give_back()`` from the event reader: it asks the model
    nothing more, so the next agent need not wait for its process to exit). ``take()``
    waits for them again (a retry after an early give-back). True while held."""

    def __init__(self, guards: RunGuards) -> None:
        self._guards = guards
        self._lock = threading.Lock()
        self._held: _Held | None = None

    def __bool__(self) -> bool:
        return self._held is not None

    def take(self, cancel: threading.Event | None = None,
             log: Callable[[str], None] | None = None,
             ahead: Callable[[], None] | None = None, within: int = 0) -> bool:
        """Wait for the slots (see ``RunGuards.agent_slot``); False when cancelled first."""
        if self._held is not None:
            return True
        held = self._guards._take(cancel, log, ahead, within)
        if held is None:
            return False
        with self._lock:
            self._held = held
        return True

    def give_back(self) -> None:
        """Give the slots back now, from any thread; once (later calls do nothing)."""
        with self._lock:
            held, self._held = self._held, None
        if held is not None:
            held.context.copy().run(self._guards._give_back, held)


class RunGuards:
    """One sprint run's slots: agents (``limits.concurrency``), checks (``limits.checks``)
    and, when set, the shared pool."""

    def __init__(self, concurrency: int, checks: int, shared: SharedLimits | None = None) -> None:
        if concurrency < 1 or checks < 1:
            raise ValueError("concurrency and checks must be at least 1")
        self.concurrency = concurrency
        self.checks = checks
        self._agents = FifoSlots(concurrency)
        self._checks = threading.Semaphore(checks)
        self.shared = shared
        self.on_slot: Callable[[PoolSlot | None], None] | None = None

    def recording(self, on_slot: Callable[[PoolSlot | None], None]) -> RunGuards:
        """The same slots, reporting each pool slot an agent takes to ``on_slot`` (then
        None when it is given back): one attempt's view, for its lease file."""
        view = copy.copy(self)
        view.on_slot = on_slot
        return view

    @contextlib.contextmanager
    def agent_slot(
        self, cancel: threading.Event | None = None, log: Callable[[str], None] | None = None,
        ahead: Callable[[], None] | None = None, within: int = 0,
    ) -> Iterator[AgentSlot]:
        """Hold an agent slot (the sprint's, then the pool's, then a start) while the body
        runs, or until ``give_back()``; yields it false, holding nothing, when ``cancel``
        was set while waiting.

        ``log`` hears when the agent has to wait for the shared pool or the start rate.
        ``ahead`` is called once when the agent has to wait and is one of the next
        ``within`` in line for the sprint's slots, or has one and waits for the pool: it
        may start the agent ahead (start_ahead.py)."""
        slot = AgentSlot(self)
        slot.take(cancel, log, ahead, within)
        try:
            yield slot
        finally:
            slot.give_back()

    def _take(
        self, cancel: threading.Event | None, log: Callable[[str], None] | None,
        ahead: Callable[[], None] | None, within: int,
    ) -> _Held | None:
        if not self._agents.acquire(cancel, ahead, within):
            return None
        if self.shared is None:
            return _Held()
        try:
            held = self._take_shared(self.shared, cancel, log, ahead)
        except BaseException:
            self._agents.release()
            raise
        if held is None:
            self._agents.release()
        return held

    def _take_shared(
        self, shared: SharedLimits, cancel: threading.Event | None,
        log: Callable[[str], None] | None, ahead: Callable[[], None] | None,
    ) -> _Held | None:
        def waiting(what: str) -> Callable[[], None]:
            def said() -> None:
                if log is not None:
                    log(f"waiting for {what}")
                if ahead is not None:
                    ahead()
            return said

        handle = shared.gate.acquire(
            cancel, waiting(f"a free slot of the shared pool '{shared.pool}'"), ahead)
        if handle is None:
            return None
        held = _Held(pooled=True, handle=handle)
        if self.on_slot is not None:
            held.slot = shared.slot_of(handle)
        try:
            if held.slot is not None and self.on_slot is not None:
                self.on_slot(held.slot)
            if shared.starts is not None and shared.starts.acquire(
                    cancel, waiting(f"its turn to start ('{shared.pool}-starts')"),
                    ahead) is None:
                self._give_back_shared(held)
                return None
        except BaseException:
            self._give_back_shared(held)
            raise
        return held

    def _give_back(self, held: _Held) -> None:
        try:
            self._give_back_shared(held)
        finally:
            self._agents.release()

    def _give_back_shared(self, held: _Held) -> None:
        if not held.pooled or self.shared is None:
            return
        # Unrecorded first: a run killed in between leaves the slot to its lease's
        # expiry, never to a reaper giving back a slot that is no longer its own.
        try:
            if held.slot is not None and self.on_slot is not None:
                self.on_slot(None)
        finally:
            self.shared.gate.release(held.handle)

    @contextlib.contextmanager
    def check_slot(self, cancel: threading.Event | None = None) -> Iterator[bool]:
        """Hold one of the sprint's ``limits.checks`` slots (commit, verify, score)."""
        if not _take(self._checks, cancel):
            yield False
            return
        try:
            yield True
        finally:
            self._checks.release()


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def budget_problems(raw: dict[str, Any]) -> list[tuple[str, str]]:
    """Budgets that cannot all hold (read leniently: each key's own check reports its type):
    an attempt's ``max_tokens`` over the sprint's ``limits.tokens``."""
    limits = raw.get("limits")
    sprint = _count(limits.get("tokens")) if isinstance(limits, dict) else None
    if sprint is None:
        return []
    problems: list[tuple[str, str]] = []
    plan_max = _count(raw.get("max_tokens"))
    if plan_max is not None and plan_max > sprint:
        problems.append(("max_tokens", f"{plan_max:,} tokens per attempt is more than the "
                         f"sprint's limits.tokens ({sprint:,}): lower one or raise the other"))
    tasks = raw.get("tasks")
    for index, task in enumerate(tasks if isinstance(tasks, list) else []):
        own = _count(task.get("max_tokens")) if isinstance(task, dict) else None
        if own is not None and own > sprint:
            label = task.get("id") if isinstance(task.get("id"), str) else index
            problems.append((f"tasks[{label}].max_tokens",
                             f"{own:,} tokens is more than the sprint's limits.tokens "
                             f"({sprint:,}): lower one or raise the other"))
    return problems


def limits_line(plan: Plan) -> str:
    """The plan's shared limits and budgets in one line (``agentfleet plan``, a run's start)."""
    limits = plan.limits
    parts = [f"pool '{limits.pool}' (slots shared by every sprint on the Prefect server)",
             f"checks {limits.checks_cap} at once"]
    if limits.starts_per_minute:
        parts.append(f"at most {limits.starts_per_minute:g} agent starts a minute")
    own = sorted({t.max_tokens for t in plan.tasks if t.max_tokens is not None})
    budgets = []
    if plan.max_tokens is not None:
        budgets.append(f"{plan.max_tokens:,} tokens per attempt")
    if own:
        budgets.append("tasks' own: " + ", ".join(f"{n:,}" for n in own))
    if limits.tokens is not None:
        budgets.append(f"{limits.tokens:,} tokens for the sprint")
    parts.append("budgets: " + ("; ".join(budgets) if budgets else "none"))
    return "; ".join(parts)


def task_model(plan: Plan, task_id: str, defaults: Mapping[str, str] | None = None) -> str | None:
    """The model a task's agent runs: the one its agent names (the plan's `agent.model` or
    the task's own), else its `complexity`'s from `models` (else ``defaults``, the
    settings'), else None: Codex's configured default."""
    task = plan.task(task_id)
    named = plan.task_agent(task).model
    if named or task.complexity is None:
        return named
    routed = getattr(plan.models, task.complexity) if plan.models is not None else None
    return routed or (defaults or {}).get(task.complexity)


def model_note(plan: Plan, task_id: str, defaults: Mapping[str, str] | None = None) -> str:
    """``  model NAME`` (with its complexity when routed) for a task's line in the plan;
    empty for a command agent or Codex's own default."""
    if plan.task_agent(task_id).kind != "codex":
        return ""
    model = task_model(plan, task_id, defaults)
    complexity = plan.task(task_id).complexity
    if model is None:
        if complexity is not None:  # routed by a setting not known here
            return f"  model: {complexity} (AGENTFLEET_MODEL_{complexity.upper()})"
        return "  model: Codex's default"
    routed = complexity is not None and not plan.task_agent(task_id).model
    return f"  model {model}" + (f" ({complexity})" if routed else "")
