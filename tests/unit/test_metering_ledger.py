"""The metering ledger: pure accounting of tokens, budgets and shared backoff."""

from __future__ import annotations

import threading

import pytest

from agentfleet.metering import Ledger, TokenUsage, over_budget_text

UPSTREAM = "https://api.openai.com/v1"
REQUEST = TokenUsage(input_tokens=1000, cached_input_tokens=300, output_tokens=100,
                     reasoning_output_tokens=40)


class Clock:
    """A clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_usage_from_the_api_object_and_its_total():
    usage = TokenUsage.from_api({
        "input_tokens": 1000, "input_tokens_details": {"cached_tokens": 300},
        "output_tokens": 100, "output_tokens_details": {"reasoning_tokens": 40},
        "total_tokens": 1100})
    assert usage == REQUEST
    assert usage.total == 1100
    assert TokenUsage.from_api({"input_tokens": "x", "output_tokens_details": None}) == TokenUsage()


def test_usage_is_counted_per_attempt_task_and_sprint():
    ledger = Ledger()
    ledger.register("a1", "api", UPSTREAM)
    ledger.register("a2", "api", UPSTREAM)
    ledger.register("b1", "docs", UPSTREAM)
    ledger.record_usage("a1", REQUEST)
    ledger.record_usage("a1", REQUEST)
    ledger.record_usage("a2", REQUEST)
    event = ledger.record_usage("b1", TokenUsage(input_tokens=5, output_tokens=1))

    snap = ledger.snapshot()
    assert snap.attempts["a1"].usage == REQUEST + REQUEST
    assert snap.attempts["a1"].responses == 2
    assert snap.tasks == {"api": REQUEST + REQUEST + REQUEST, "docs": TokenUsage(5, 0, 1, 0)}
    assert snap.sprint.total == 3 * 1100 + 6
    assert event is not None and event.task_id == "docs" and event.sprint == snap.sprint
    assert ledger.record_usage("nobody", REQUEST) is None


def test_an_attempt_is_refused_once_its_spending_reached_its_budget():
    ledger = Ledger()
    ledger.register("a1", "api", UPSTREAM, max_tokens=2500)
    for _ in range(3):
        assert ledger.refusal("a1") is None
        ledger.record_usage("a1", REQUEST)
    refusal = ledger.refusal("a1")
    assert refusal is not None and refusal.scope == "attempt"
    assert refusal.message == "over budget: 3,300 of 2,500 tokens"
    assert ledger.over_budget("a1") == "over budget: 3,300 of 2,500 tokens"
    assert ledger.snapshot().attempts["a1"].refused == 1
    assert ledger.snapshot().attempts["a1"].over_budget


def test_exactly_reaching_the_budget_counts_as_spent():
    ledger = Ledger()
    ledger.register("a1", "api", UPSTREAM, max_tokens=1100)
    ledger.record_usage("a1", REQUEST)
    assert ledger.refusal("a1") is not None


def test_the_sprint_budget_refuses_every_attempt():
    ledger = Ledger(sprint_tokens=2000)
    ledger.register("a1", "api", UPSTREAM)
    ledger.register("b1", "docs", UPSTREAM, max_tokens=10_000)
    ledger.record_usage("a1", REQUEST)
    assert not ledger.sprint_over_budget and ledger.refusal("b1") is None
    ledger.record_usage("a1", REQUEST)
    assert ledger.sprint_over_budget
    for attempt in ("a1", "b1"):
        refusal = ledger.refusal(attempt)
        assert refusal is not None and refusal.scope == "sprint"
        assert refusal.message == "sprint over budget: 2,200 of 2,000 tokens"


@pytest.mark.parametrize("bad", [0, -1, True, 2.5])
def test_budgets_are_whole_numbers_of_at_least_one(bad):
    with pytest.raises(ValueError):
        Ledger(sprint_tokens=bad)
    with pytest.raises(ValueError):
        Ledger().register("a1", "api", UPSTREAM, max_tokens=bad)


def test_an_attempt_keeps_its_task():
    ledger = Ledger()
    ledger.register("a1", "api", UPSTREAM)
    ledger.register("a1", "api", UPSTREAM, max_tokens=5)  # a new budget is fine
    with pytest.raises(ValueError, match="belongs to task 'api'"):
        ledger.register("a1", "docs", UPSTREAM)


def test_over_budget_text_groups_thousands():
    assert over_budget_text(1_234_567, 1_000_000) == "over budget: 1,234,567 of 1,000,000 tokens"


def test_a_hold_is_shared_and_announced_once():
    clock = Clock()
    ledger = Ledger(clock=clock)
    assert ledger.wait_time(UPSTREAM) == 0
    assert ledger.hold(UPSTREAM, 2) is True
    assert ledger.hold(UPSTREAM, 1) is False  # inside the running hold: not a new one
    assert ledger.wait_time(UPSTREAM) == 2
    assert ledger.hold(UPSTREAM, 3) is False  # extends it, still the same hold
    assert ledger.wait_time(UPSTREAM) == 3
    assert ledger.wait_time("http://other/v1") == 0
    clock.now += 3
    assert ledger.wait_time(UPSTREAM) == 0
    assert ledger.hold(UPSTREAM, 1) is True  # the old one ran out: a new hold


def test_the_latest_rate_limit_headers_are_kept_per_upstream():
    ledger = Ledger()
    ledger.note_headers(UPSTREAM, {"X-RateLimit-Remaining-Tokens": "900", "Authorization": "x",
                                   "content-type": "text/event-stream"})
    ledger.note_headers(UPSTREAM, {"x-ratelimit-remaining-tokens": "800", "retry-after": "2"})
    assert ledger.snapshot().rate_limits == {
        UPSTREAM: {"x-ratelimit-remaining-tokens": "800", "retry-after": "2"}}


def test_counting_from_many_threads_loses_nothing():
    ledger = Ledger()
    for i in range(8):
        ledger.register(f"a{i}", f"t{i % 2}", UPSTREAM)

    def spend(i: int) -> None:
        for _ in range(500):
            ledger.record_usage(f"a{i}", TokenUsage(input_tokens=1, output_tokens=1))
            ledger.snapshot()

    threads = [threading.Thread(target=spend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = ledger.snapshot()
    assert snap.sprint.total == 8 * 500 * 2
    assert snap.tasks["t0"].total == snap.tasks["t1"].total == 4 * 500 * 2
