"""The slot gate and a run's guards, with an in-memory limit standing for Prefect's."""

from __future__ import annotations

import threading

from agentfleet.guardrails import (
    FifoSlots,
    ProcessSlots,
    RunGuards,
    SharedLimits,
    SlotGate,
    in_flight,
    limits_line,
)
from agentfleet.leases import PoolSlot
from tests.support.waiting import wait_for


class Limit:
    """A counting limit like a global concurrency limit: grants up to ``size`` slots."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.held = 0
        self.peak = 0
        self.tries = 0
        self.lock = threading.Lock()

    def try_acquire(self) -> int | None:
        with self.lock:
            self.tries += 1
            if self.held >= self.size:
                return None
            self.held += 1
            self.peak = max(self.peak, self.held)
            return self.held

    def release(self, _handle: int) -> None:
        with self.lock:
            self.held -= 1


def test_a_release_in_the_process_wakes_the_first_waiter_without_polling():
    limit = Limit(1)
    # A poll interval far longer than the test: only the local wakeup can hand it over.
    gate = SlotGate(limit.try_acquire, limit.release, poll_s=3600)
    first = gate.acquire()
    got: list[int | None] = []
    waiter = threading.Thread(target=lambda: got.append(gate.acquire()))
    waiter.start()
    while gate.waited == 0:
        threading.Event().wait(0.01)
    gate.release(first)  # type: ignore[arg-type]
    waiter.join(timeout=30)
    assert not waiter.is_alive() and got == [1]
    assert limit.tries == 3  # the first, the refused try, the try after the wakeup


def test_waiters_are_served_in_arrival_order_and_never_exceed_the_limit():
    limit = Limit(2)
    gate = SlotGate(limit.try_acquire, limit.release, poll_s=3600)
    order: list[int] = []
    told: list[int] = []
    queued: list[int] = []
    held = [gate.acquire(), gate.acquire()]
    threads = []
    for i in range(4):
        def work(i: int = i) -> None:
            handle = gate.acquire(on_wait=lambda: told.append(i),
                                  on_queued=lambda: queued.append(i))
            order.append(i)
            gate.release(handle)  # type: ignore[arg-type]
        t = threading.Thread(target=work)
        t.start()
        threads.append(t)
        while gate.queued < i + 1:  # each queued before the next arrives
            threading.Event().wait(0.01)
    gate.release(held[0])  # type: ignore[arg-type]  # one slot: they go one by one
    for t in threads:
        t.join(timeout=30)
    gate.release(held[1])  # type: ignore[arg-type]
    assert order == [0, 1, 2, 3]
    assert limit.peak == 2 and limit.held == 0
    # Each heard it had to wait: the first refused (its log line), the rest queued behind
    # it (their chance to start their agent ahead).
    assert told == [0] and sorted(queued) == [1, 2, 3] and gate.waited == 4


def test_slots_counted_in_the_process_go_to_the_next_waiter_at_once():
    counted = ProcessSlots(1)
    gate = SlotGate(counted.try_acquire, counted.release, poll_s=3600)
    first = gate.acquire()
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(gate.acquire()))
    waiter.start()
    wait_for(lambda: gate.waited == 1, what="the waiter refused")
    assert counted.held == 1 and got == []
    gate.release(first)  # type: ignore[arg-type]
    waiter.join(timeout=30)
    assert got == [counted] and counted.held == 1


def test_a_slot_freed_elsewhere_is_seen_at_the_next_poll():
    limit = Limit(1)
    gate = SlotGate(limit.try_acquire, limit.release, poll_s=0.05)
    limit.held = 1  # held by another process: no local release will come
    got: list[int | None] = []
    waiter = threading.Thread(target=lambda: got.append(gate.acquire()))
    waiter.start()
    while limit.tries < 3:
        threading.Event().wait(0.01)
    limit.release(0)
    waiter.join(timeout=30)
    assert got == [1]


def test_a_cancelled_waiter_gives_up_holding_nothing():
    limit = Limit(1)
    gate = SlotGate(limit.try_acquire, limit.release, poll_s=3600)
    first = gate.acquire()
    cancel = threading.Event()
    got: list[int | None] = []
    waiter = threading.Thread(target=lambda: got.append(gate.acquire(cancel)))
    waiter.start()
    while gate.waited == 0:
        threading.Event().wait(0.01)
    cancel.set()
    waiter.join(timeout=30)
    assert got == [None] and limit.held == 1
    gate.release(first)  # type: ignore[arg-type]
    assert gate.acquire() == 1  # the queue holds no stale ticket


def test_sprint_slots_go_first_come_first_served_and_tell_the_next_in_line():
    slots = FifoSlots(1)
    assert slots.acquire()
    order: list[str] = []
    near: list[str] = []
    threads = []
    for name in ("a", "b", "c"):
        t = threading.Thread(target=lambda n=name: slots.acquire(
            near=lambda: near.append(n), within=2) and order.append(n))
        t.start()
        threads.append(t)
        wait_for(lambda n=name: n in near or len(near) == 2, what=f"{name} queued")
    # Only the first two in line heard their turn is near; nobody got the held slot.
    assert near == ["a", "b"] and order == []
    for k in range(3):
        slots.release()
        wait_for(lambda k=k: len(order) == k + 1, what="the next waiter")
    for t in threads:
        t.join(5)
    assert order == ["a", "b", "c"] and near == ["a", "b", "c"]


def test_agent_slots_go_back_before_checks_and_are_capped_by_the_pool():
    pool = Limit(1)
    guards = RunGuards(2, 1, SharedLimits("p", SlotGate(pool.try_acquire, pool.release)))
    with guards.agent_slot() as held:
        assert held and pool.held == 1
    assert pool.held == 0
    with guards.check_slot() as held:
        assert held and pool.held == 0
    # The sprint's own concurrency is 2, but the shared pool has one slot.
    cancel = threading.Event()
    seen: list[bool] = []

    def second() -> None:
        with guards.agent_slot(cancel) as held:
            seen.append(bool(held))

    with guards.agent_slot():
        waiter = threading.Thread(target=second)
        waiter.start()
        while guards.shared.gate.waited == 0:  # type: ignore[union-attr]
            threading.Event().wait(0.01)
        cancel.set()
        waiter.join(timeout=30)
    assert seen == [False] and pool.held == 0


def test_an_attempts_view_records_its_pool_slot_while_its_agent_holds_it():
    pool = Limit(2)
    shared = SharedLimits("p", SlotGate(pool.try_acquire, pool.release),
                          slot_of=lambda h: PoolSlot(limit="p", lease_id=f"lease-{h}"))
    guards = RunGuards(2, 1, shared)
    recorded: list[PoolSlot | None] = []
    with guards.recording(recorded.append).agent_slot() as held:
        assert held and recorded == [PoolSlot(limit="p", lease_id="lease-1")]
        with guards.agent_slot():  # the sprint's other agents record nothing of it
            assert pool.held == 2
    assert recorded[-1] is None and pool.held == 0  # no longer recorded, then given back


def test_an_agent_slot_given_back_early_is_given_back_once_and_can_be_taken_again():
    pool = Limit(1)
    recorded: list[PoolSlot | None] = []
    shared = SharedLimits("p", SlotGate(pool.try_acquire, pool.release),
                          slot_of=lambda h: PoolSlot(limit="p", lease_id=f"lease-{h}"))
    guards = RunGuards(1, 1, shared)
    with guards.recording(recorded.append).agent_slot() as slot:
        assert slot and pool.held == 1
        slot.give_back()  # its Codex turn completed: the next agent may start
        slot.give_back()
        assert not slot and pool.held == 0 and recorded[-1] is None
        with guards.agent_slot(threading.Event()) as other:  # the sprint's one slot is free
            assert other and pool.held == 1
        assert slot.take() and pool.held == 1  # a retry takes the slots again
    lease = PoolSlot(limit="p", lease_id="lease-1")  # the limit's first slot, both times
    assert pool.held == 0 and recorded == [lease, None, lease, None]
    with guards.agent_slot() as again:  # nothing was given back twice
        assert again and pool.held == 1


def test_checks_are_capped_on_their_own():
    guards = RunGuards(4, 1)
    cancel = threading.Event()
    with guards.check_slot() as first:
        cancel.set()
        with guards.check_slot(cancel) as second:
            assert first and second is False
        with guards.agent_slot(threading.Event()) as agent:  # agents do not wait for checks
            assert agent
    assert in_flight(4, 1) == 5


# -- plan keys -------------------------------------------------------------------------


def plan_problems(tmp_path, text: str) -> list[str]:
    from tests.unit.test_plan import problems

    return problems(tmp_path, text)


def test_limits_defaults_and_the_one_line_summary(tmp_path):
    from agentfleet.plan import load_plan

    path = tmp_path / "plan.yaml"
    path.write_text("name: s\nlimits: {concurrency: 3}\ntasks:\n  - {id: a, prompt: do it}\n")
    plan = load_plan(path)
    assert plan.limits.pool == "agentfleet-agents" and plan.limits.checks_cap == 3
    assert plan.limits.starts_per_minute is None and plan.limits.tokens is None
    assert limits_line(plan) == ("pool 'agentfleet-agents' (slots shared by every sprint on "
                                 "the Prefect server); checks 3 at once; budgets: none")
    path.write_text(
        "name: s\nmax_tokens: 2500\nlimits: {pool: team-a, checks: 1, starts_per_minute: 30, "
        "tokens: 50000}\ntasks:\n  - {id: a, prompt: do it, max_tokens: 4000}\n"
    )
    plan = load_plan(path)
    assert plan.effective("a", "max_tokens") == 4000
    assert limits_line(plan) == (
        "pool 'team-a' (slots shared by every sprint on the Prefect server); checks 1 at "
        "once; at most 30 agent starts a minute; budgets: 2,500 tokens per attempt; tasks' "
        "own: 4,000; 50,000 tokens for the sprint"
    )


def test_inconsistent_budgets_are_refused_with_where_they_are(tmp_path):
    found = plan_problems(tmp_path, (
        "name: s\nmax_tokens: 9000\nlimits: {tokens: 5000}\ntasks:\n"
        "  - {id: a, prompt: do it, max_tokens: 6000}\n  - {id: b, prompt: do it}\n"
    ))
    assert any("max_tokens: 9,000 tokens per attempt is more than the sprint's limits.tokens "
               "(5,000)" in p for p in found), found
    assert any("tasks[a].max_tokens: 6,000 tokens is more than" in p for p in found), found
    one_task = "tasks:\n  - {id: a, prompt: x}\n"
    zero = plan_problems(tmp_path, "name: s\nlimits: {tokens: 0}\n" + one_task)
    assert any("limits.tokens" in p for p in zero), zero
    bad_pool = plan_problems(tmp_path, "name: s\nlimits: {pool: a/b}\n" + one_task)
    assert any("limits.pool" in p for p in bad_pool), bad_pool


def test_a_tasks_model_named_routed_or_codexs_default(tmp_path):
    from agentfleet.guardrails import model_note, task_model
    from agentfleet.plan import load_plan

    path = tmp_path / "plan.yaml"
    path.write_text(
        "name: s\nagent: {kind: codex}\nmodels: {simple: small-1}\ntasks:\n"
        "  - {id: easy, prompt: x, complexity: simple}\n"
        "  - {id: hard, prompt: x, complexity: complex}\n"
        "  - {id: named, prompt: x, complexity: simple, agent: {model: big-2}}\n"
        "  - {id: plain, prompt: x}\n"
        "  - {id: cmd, prompt: x, complexity: simple, agent: {kind: command, run: 'true'}}\n"
    )
    plan = load_plan(path)
    defaults = {"simple": "luna", "complex": "sol"}
    assert [task_model(plan, t, defaults) for t in ("easy", "hard", "named", "plain")] == [
        "small-1", "sol", "big-2", None]
    assert model_note(plan, "easy", defaults) == "  model small-1 (simple)"
    assert model_note(plan, "hard") == "  model: complex (AGENTFLEET_MODEL_COMPLEX)"
    assert model_note(plan, "named", defaults) == "  model big-2"
    assert model_note(plan, "plain") == "  model: Codex's default"
    assert model_note(plan, "cmd", defaults) == ""
