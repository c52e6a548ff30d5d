"""Live token metering between a sprint's Codex agents and their model provider.

``MeteringProxy`` (``proxy``) forwards and reads the traffic; ``Ledger`` (``ledger``)
counts tokens per attempt, task and sprint, holds budgets and shared backoff;
``codex_route`` builds the per-run ``-c`` overrides that send one Codex run through it.
"""

from __future__ import annotations

from agentfleet.metering.codex_route import (
    ProviderRoute,
    codex_args,
    provider_route,
    route_overrides,
)
from agentfleet.metering.ledger import (
    AttemptView,
    Ledger,
    LedgerSnapshot,
    Refusal,
    TokenUsage,
    UsageEvent,
    over_budget_text,
)
from agentfleet.metering.proxy import (
    BackoffEvent,
    MeteringProxy,
    SseUsageScanner,
    retry_after_seconds,
)

__all__ = [
    "AttemptView",
    "BackoffEvent",
    "Ledger",
    "LedgerSnapshot",
    "MeteringProxy",
    "ProviderRoute",
    "Refusal",
    "SseUsageScanner",
    "TokenUsage",
    "UsageEvent",
    "codex_args",
    "over_budget_text",
    "provider_route",
    "retry_after_seconds",
    "route_overrides",
]
