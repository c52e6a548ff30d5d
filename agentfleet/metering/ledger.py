"""What agents spend, as the metering proxy sees it: tokens, budgets, shared backoff.

Pure accounting, no sockets: the proxy calls ``record_usage`` when a response's
``response.completed`` event passes, ``refusal`` before it forwards a request,
``note_headers`` with every upstream response's headers and ``hold`` on a 429 with
``retry-after``. Everything is guarded by one lock; ``snapshot`` is a consistent copy
for a live view (a progress artifact, a log line).

Budgets count ``total`` tokens (input, cached input included, plus output), the
figure the Responses API reports as ``total_tokens``. A budget is *reached* when
the spending is at or over it; the check happens before a request is forwarded,
so an attempt overspends by at most the one response that crossed the line (and
the sprint by at most one response per attempt that was running at that moment).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, Literal

# Rate-limit headers kept as the latest seen (lower-case names; prefixes end in "-").
RATE_LIMIT_HEADERS = ("retry-after", "retry-after-ms")
RATE_LIMIT_PREFIXES = ("x-ratelimit-", "x-codex-primary-", "x-codex-secondary-")

Clock = Callable[[], float]


@dataclass(frozen=True)
class TokenUsage:
    """Token figures of one response, or a sum of them."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_output_tokens: int = 0

    @property
    def total(self) -> int:
        """Input plus output: what budgets count."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.input_tokens + other.input_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.output_tokens + other.output_tokens,
            self.reasoning_output_tokens + other.reasoning_output_tokens,
        )

    @classmethod
    def from_api(cls, usage: Mapping[str, Any]) -> TokenUsage:
        """From a Responses-API ``usage`` object (missing or malformed fields count 0)."""

        def number(value: object) -> int:
            return value if isinstance(value, int) and not isinstance(value, bool) else 0

        def detail(key: str, name: str) -> int:
            details = usage.get(key)
            return number(details.get(name)) if isinstance(details, Mapping) else 0

        return cls(
            input_tokens=number(usage.get("input_tokens")),
            cached_input_tokens=detail("input_tokens_details", "cached_tokens"),
            output_tokens=number(usage.get("output_tokens")),
            reasoning_output_tokens=detail("output_tokens_details", "reasoning_tokens"),
        )


def over_budget_text(spent: int, budget: int) -> str:
    """``over budget: 3,300 of 2,500 tokens``."""
    return f"over budget: {spent:,} of {budget:,} tokens"


@dataclass(frozen=True)
class Refusal:
    """Why a request is not forwarded: its attempt's or the sprint's budget is spent."""

    scope: Literal["attempt", "sprint"]
    spent: int
    budget: int

    @property
    def message(self) -> str:
        """The text Codex shows and the attempt ends with."""
        text = over_budget_text(self.spent, self.budget)
        return text if self.scope == "attempt" else f"sprint {text}"


@dataclass(frozen=True)
class AttemptView:
    """One attempt in a snapshot."""

    attempt_id: str
    task_id: str
    upstream: str
    usage: TokenUsage
    max_tokens: int | None
    responses: int
    refused: int

    @property
    def over_budget(self) -> bool:
        """Whether its spending reached its own budget."""
        return self.max_tokens is not None and self.usage.total >= self.max_tokens


@dataclass(frozen=True)
class LedgerSnapshot:
    """A consistent copy of the ledger at one moment."""

    sprint: TokenUsage
    sprint_tokens: int | None
    attempts: dict[str, AttemptView]
    tasks: dict[str, TokenUsage]
    rate_limits: dict[str, dict[str, str]]  # upstream -> latest rate-limit headers
    holds: dict[str, float]  # upstream -> clock time until which requests wait

    @property
    def sprint_over_budget(self) -> bool:
        """Whether the sprint's spending reached ``limits.tokens``."""
        return self.sprint_tokens is not None and self.sprint.total >= self.sprint_tokens


@dataclass(frozen=True)
class UsageEvent:
    """One response's usage, with the running totals it brought (for ``on_usage``)."""

    attempt_id: str
    task_id: str
    usage: TokenUsage
    attempt: TokenUsage
    task: TokenUsage
    sprint: TokenUsage
    max_tokens: int | None
    sprint_tokens: int | None


@dataclass
class _Attempt:
    task_id: str
    upstream: str
    max_tokens: int | None
    usage: TokenUsage = field(default_factory=TokenUsage)
    responses: int = 0
    refused: int = 0


def _check_budget(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")


class Ledger:
    """Tokens per attempt, task and sprint; budgets; the latest rate-limit headers; holds."""

    def __init__(self, sprint_tokens: int | None = None, *, clock: Clock | None = None) -> None:
        _check_budget("limits.tokens", sprint_tokens)
        self._clock: Clock = clock or time.monotonic
        self._sprint_tokens = sprint_tokens
        self._lock = threading.Lock()
        self._attempts: dict[str, _Attempt] = {}
        self._tasks: dict[str, TokenUsage] = {}
        self._sprint = TokenUsage()
        self._rate_limits: dict[str, dict[str, str]] = {}
        self._holds: dict[str, float] = {}

    # -- attempts ----------------------------------------------------------------------

    def register(self, attempt_id: str, task_id: str, upstream: str,
                 max_tokens: int | None = None) -> None:
        """Make an attempt known before its agent starts (again: updates task and budget)."""
        _check_budget("max_tokens", max_tokens)
        with self._lock:
            known = self._attempts.get(attempt_id)
            if known is None:
                self._attempts[attempt_id] = _Attempt(task_id, upstream, max_tokens)
            else:
                if known.task_id != task_id:
                    raise ValueError(
                        f"attempt {attempt_id!r} belongs to task {known.task_id!r}, not {task_id!r}"
                    )
                known.upstream, known.max_tokens = upstream, max_tokens
            self._tasks.setdefault(task_id, TokenUsage())

    def upstream_of(self, attempt_id: str) -> str | None:
        """The upstream base URL of a registered attempt; None when unknown."""
        with self._lock:
            known = self._attempts.get(attempt_id)
            return known.upstream if known else None

    # -- budgets -----------------------------------------------------------------------

    def refusal(self, attempt_id: str) -> Refusal | None:
        """Why the attempt's next request must be refused, or None to forward it.

        Counts the refusal: a refused attempt shows ``refused`` in the snapshot.
        """
        with self._lock:
            known = self._attempts.get(attempt_id)
            if known is None:
                return None
            refusal = None
            if known.max_tokens is not None and known.usage.total >= known.max_tokens:
                refusal = Refusal("attempt", known.usage.total, known.max_tokens)
            elif self._sprint_tokens is not None and self._sprint.total >= self._sprint_tokens:
                refusal = Refusal("sprint", self._sprint.total, self._sprint_tokens)
            if refusal is not None:
                known.refused += 1
            return refusal

    def over_budget(self, attempt_id: str) -> str | None:
        """``over budget: 3,300 of 2,500 tokens`` when the attempt's budget is spent."""
        with self._lock:
            known = self._attempts.get(attempt_id)
            if known is None or known.max_tokens is None:
                return None
            if known.usage.total < known.max_tokens:
                return None
            return over_budget_text(known.usage.total, known.max_tokens)

    @property
    def sprint_over_budget(self) -> bool:
        """Whether the sprint's budget is spent: no new attempt should start."""
        with self._lock:
            return self._sprint_tokens is not None and self._sprint.total >= self._sprint_tokens

    # -- usage -------------------------------------------------------------------------

    def record_usage(self, attempt_id: str, usage: TokenUsage) -> UsageEvent | None:
        """Count one response's usage; None when the attempt is unknown."""
        with self._lock:
            known = self._attempts.get(attempt_id)
            if known is None:
                return None
            known.usage += usage
            known.responses += 1
            task = self._tasks[known.task_id] = self._tasks.get(known.task_id, TokenUsage()) + usage
            self._sprint += usage
            return UsageEvent(attempt_id, known.task_id, usage, known.usage, task, self._sprint,
                              known.max_tokens, self._sprint_tokens)

    def usage_of(self, attempt_id: str) -> TokenUsage:
        """What one attempt spent so far (zero when unknown)."""
        with self._lock:
            known = self._attempts.get(attempt_id)
            return known.usage if known else TokenUsage()

    # -- rate limits and backoff ---------------------------------------------------------

    def note_headers(self, upstream: str, headers: Mapping[str, str] | Message) -> None:
        """Keep the rate-limit headers of an upstream response (the latest value of each)."""
        seen = {
            name.lower(): value
            for name, value in headers.items()
            if name.lower() in RATE_LIMIT_HEADERS or name.lower().startswith(RATE_LIMIT_PREFIXES)
        }
        if seen:
            with self._lock:
                self._rate_limits.setdefault(upstream, {}).update(seen)

    def hold(self, upstream: str, seconds: float) -> bool:
        """Hold the upstream's requests for ``seconds`` from now; True when this starts a hold.

        A hold already running that ends later is kept; one ending sooner is extended (and
        that is not a new hold: the log says "backing off" once per hold).
        """
        now = self._clock()
        until = now + max(0.0, seconds)
        with self._lock:
            current = self._holds.get(upstream, now)
            running = current > now
            if until > current or not running:
                self._holds[upstream] = until
            return not running

    def wait_time(self, upstream: str) -> float:
        """Seconds a request to ``upstream`` must still wait (0 when not held)."""
        with self._lock:
            until = self._holds.get(upstream)
        return max(0.0, until - self._clock()) if until is not None else 0.0

    # -- the live view -----------------------------------------------------------------

    def snapshot(self) -> LedgerSnapshot:
        """A consistent copy of everything, safe to read from any thread."""
        with self._lock:
            attempts = {
                attempt_id: AttemptView(attempt_id, a.task_id, a.upstream, a.usage,
                                        a.max_tokens, a.responses, a.refused)
                for attempt_id, a in self._attempts.items()
            }
            return LedgerSnapshot(
                sprint=self._sprint,
                sprint_tokens=self._sprint_tokens,
                attempts=attempts,
                tasks=dict(self._tasks),
                rate_limits={k: dict(v) for k, v in self._rate_limits.items()},
                holds=dict(self._holds),
            )
