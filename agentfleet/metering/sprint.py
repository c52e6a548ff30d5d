"""The metering proxy as one sprint uses it: route each Codex attempt through it, enforce
budgets, end attempts over budget with a clear reason, tell the log what is spent.

One ``SprintMeter`` per sprint run, started before its first attempt and stopped after
its last (``tasks/limits.py``). Each Codex attempt is registered under its name
(``<task>#<k>``) with its ``max_tokens``; its run gets the ``-c`` overrides that send
it through the proxy (``codex_route``), added to its agent's ``config`` for that run
only. Command agents are not metered.

An attempt of a ``placement: pool`` sprint runs on a worker, maybe on another machine:
the sprint registers it here just the same (``hand``: a route of its own per flow run,
closed when that run ends) and hands the worker only the ``-c`` overrides, which the
worker's ``HandedRoute`` adds to its agent's run. The worker's Codex then talks to this
proxy, with the worker's own credentials, so budgets, the shared backoff and the live
count span every worker; the API key never leaves the worker.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agentfleet.agent_config import AgentConfig
from agentfleet.codex.outcome import Usage
from agentfleet.errors import ConfigError
from agentfleet.metering.codex_route import provider_route, route_overrides
from agentfleet.metering.ledger import Ledger, TokenUsage, UsageEvent, over_budget_text
from agentfleet.metering.proxy import BackoffEvent, MeteringProxy

Log = Callable[[str], None]
_TOTAL_EVERY_S = 1.0
_REACH_S = 5.0


def _codex_config(env: Mapping[str, str]) -> dict[str, Any]:
    """The agent's ``config.toml`` (``$CODEX_HOME``, default ``~/.codex``); {} if none."""
    home = env.get("CODEX_HOME") or (str(Path(env["HOME"]) / ".codex") if env.get("HOME") else None)
    if not home:
        return {}
    try:
        return tomllib.loads((Path(home) / "config.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}


def as_usage(usage: TokenUsage) -> Usage:
    """The proxy's figures in the report's terms."""
    return Usage(input_tokens=usage.input_tokens, cached_input_tokens=usage.cached_input_tokens,
                 output_tokens=usage.output_tokens,
                 reasoning_output_tokens=usage.reasoning_output_tokens)


class SprintMeter:
    """The sprint's metering proxy and its ledger, with the sprint's log."""

    def __init__(self, sprint_tokens: int | None, log: Log, warn: Log | None = None, *,
                 host: str = "127.0.0.1", port: int = 0,
                 public_url: str | None = None) -> None:
        self.log = log
        self.warn = warn or log
        self.ledger = Ledger(sprint_tokens)
        # ``host``/``port``: where it listens; ``public_url``: where workers reach it.
        self._where = f"{host}:{port}"
        self.proxy = MeteringProxy(self.ledger, on_usage=self._on_usage,
                                   on_backoff=self._on_backoff, host=host, port=port,
                                   public_url=public_url)
        self._lock = threading.Lock()
        self._sprint_spent_said = False
        # Told, at most once a second, that the sprint's count grew (the progress artifact
        # then reads ``total_line``); None: nobody listens.
        self.on_total: Callable[[], None] | None = None
        self._total_at = 0.0

    def __enter__(self) -> SprintMeter:
        try:
            self.proxy.start()
        except OSError as exc:
            raise ConfigError(
                f"the metering proxy cannot listen on {self._where}: {exc.strerror or exc} "
                "(AGENTFLEET_PROXY_HOST, AGENTFLEET_PROXY_PORT; a fixed port serves one sprint "
                "at a time: 0 takes any free one)"
            ) from exc
        return self

    def __exit__(self, *exc: object) -> None:
        self.proxy.stop()

    # -- attempts ----------------------------------------------------------------------

    def route(self, name: str, task_id: str, agent: AgentConfig, env: Mapping[str, str],
              max_tokens: int | None) -> AgentConfig:
        """The agent of attempt ``name`` for this run: its Codex requests go through the
        proxy. An agent whose provider cannot be routed runs unmetered (and is told so)."""
        overrides = self._register(name, task_id, agent, env, max_tokens)
        if overrides is None:
            return agent
        return agent.model_copy(update={"config": {**agent.config, **overrides}})

    def hand(self, name: str, task_id: str, agent: AgentConfig, env: Mapping[str, str],
             max_tokens: int | None) -> tuple[str, dict[str, str]] | None:
        """Register attempt ``name`` for one run on a worker: its route (``close`` it when
        the run ends) and the ``-c`` overrides the worker adds; None: not metered."""
        if agent.kind != "codex":
            return None
        key = f"{name}~{secrets.token_hex(4)}"  # this run's; an orphan of another run has none
        overrides = self._register(name, task_id, agent, env, max_tokens, key)
        return (key, overrides) if overrides is not None else None

    def _register(self, name: str, task_id: str, agent: AgentConfig, env: Mapping[str, str],
                  max_tokens: int | None, key: str | None = None) -> dict[str, str] | None:
        """Register attempt ``name`` (on route ``key``, else its name): the ``-c`` overrides
        that send its Codex here; None, and told so, when its provider cannot be routed."""
        try:
            route = provider_route(_codex_config(env), agent.config, profile=agent.profile)
        except ValueError as exc:
            self.warn(f"{name}: not metered ({exc}); its tokens count when it ends")
            return None
        url = self.proxy.register(name, task_id, route.upstream, max_tokens, route=key)
        return route_overrides(route, url)

    def close(self, route: str) -> None:
        """The run behind ``route`` (``hand``) ended: its requests are refused from now on."""
        self.proxy.close(route)

    def count_spent(self, name: str, task_id: str, usage: Usage) -> None:
        """Count tokens spent before the proxy ran (the planner's) against ``limits.tokens``."""
        self.ledger.register(name, task_id, upstream="(counted when it ended)")
        self.ledger.record_usage(name, TokenUsage(
            input_tokens=usage.input_tokens, cached_input_tokens=usage.cached_input_tokens,
            output_tokens=usage.output_tokens,
            reasoning_output_tokens=usage.reasoning_output_tokens))
        self.log(f"{name}: {usage.total:,} tokens counted against the sprint's budget"
                 f"{'; ' + self.total_line() if self.ledger.snapshot().sprint_tokens else ''}")

    def metered(self, name: str) -> bool:
        """Whether attempt ``name`` went through the proxy."""
        return self.ledger.upstream_of(name) is not None

    def saw(self, name: str) -> bool:
        """Whether any response or refusal of attempt ``name`` went through the proxy (a
        worker that served the attempt from the cache sent nothing)."""
        view = self.ledger.snapshot().attempts.get(name)
        return view is not None and (view.responses > 0 or view.refused > 0)

    def over_budget(self, name: str) -> str | None:
        """``over budget: 3,300 of 2,500 tokens`` when attempt ``name`` reached its budget,
        ``sprint over budget: ...`` when it was refused for the sprint's."""
        own = self.ledger.over_budget(name)
        if own is not None:
            return own
        view = self.ledger.snapshot().attempts.get(name)
        if view is not None and view.refused:
            return self.sprint_spent()
        return None

    def usage(self, name: str) -> Usage:
        """What attempt ``name`` spent, as the proxy counted it."""
        return as_usage(self.ledger.usage_of(name))

    def sprint_spent(self) -> str | None:
        """``sprint over budget: ...`` once ``limits.tokens`` is spent, else None."""
        snap = self.ledger.snapshot()
        if not snap.sprint_over_budget or snap.sprint_tokens is None:
            return None
        return "sprint " + over_budget_text(snap.sprint.total, snap.sprint_tokens)

    # -- the live view -------------------------------------------------------------------

    def _on_usage(self, event: UsageEvent) -> None:
        attempt = f"{event.attempt.total:,}"
        if event.max_tokens is not None:
            attempt += f" of {event.max_tokens:,}"
        sprint = f"{event.sprint.total:,}"
        if event.sprint_tokens is not None:
            sprint += f" of {event.sprint_tokens:,}"
        self.log(f"{event.attempt_id}: tokens {attempt} (+{event.usage.total:,}); "
                 f"sprint {sprint}{self._limits_line()}")
        self._tell_total()
        if event.sprint_tokens is not None and event.sprint.total >= event.sprint_tokens:
            with self._lock:
                said, self._sprint_spent_said = self._sprint_spent_said, True
            if not said:
                self.warn(f"sprint over budget: {event.sprint.total:,} of "
                          f"{event.sprint_tokens:,} tokens; running agents are refused "
                          "their next request and no attempt starts")

    def total_line(self) -> str:
        """``tokens: 2,200 of 5,000`` (the sprint's so far, against ``limits.tokens``)."""
        snap = self.ledger.snapshot()
        budget = f" of {snap.sprint_tokens:,}" if snap.sprint_tokens is not None else ""
        return f"tokens: {snap.sprint.total:,}{budget}"

    def _tell_total(self) -> None:
        listener = self.on_total
        now = time.monotonic()
        with self._lock:
            if listener is None or now - self._total_at < _TOTAL_EVERY_S:
                return
            self._total_at = now
        listener()

    def _limits_line(self) -> str:
        """The provider's remaining-limit headers, when it sends them."""
        seen = {k: v for headers in self.ledger.snapshot().rate_limits.values()
                for k, v in headers.items() if "remaining" in k}
        return "; " + ", ".join(f"{k}: {v}" for k, v in sorted(seen.items())) if seen else ""

    def _on_backoff(self, event: BackoffEvent) -> None:
        self.warn(event.message)


class HandedRoute:
    """On a worker: the route the sprint's meter handed one pool attempt (``SprintMeter.hand``).

    Stands where a sprint's ``SprintMeter`` would (``RunControl.meter``): the attempt's
    Codex run gets the handed ``-c`` overrides; the counting, budgets and the report's
    figures are the sprint's.
    """

    def __init__(self, overrides: Mapping[str, str]) -> None:
        self.overrides = dict(overrides)

    def route(self, name: str, task_id: str, agent: AgentConfig, env: Mapping[str, str],
              max_tokens: int | None) -> AgentConfig:
        """The agent with the sprint's overrides; ``ConfigError`` when this worker's Codex
        would not use them (another provider than the sprint's): its budget would not hold."""
        try:
            here = provider_route(_codex_config(env), agent.config, profile=agent.profile)
        except ValueError as exc:
            here_keys: set[str] = set()
            reason = str(exc)
        else:
            here_keys = set(route_overrides(here, "").keys())
            reason = f"this worker's Codex uses the provider {here.provider_id!r}"
        if here_keys != set(self.overrides):
            raise ConfigError(
                f"{name}: the sprint meters it through {', '.join(sorted(self.overrides))} but "
                f"{reason}: give the workers the same Codex provider configuration "
                "(config.toml) as the sprint's machine, or name the provider in the plan's "
                "agent.config"
            )
        for url in self.overrides.values():
            _reachable(name, url)
        return agent.model_copy(update={"config": {**agent.config, **self.overrides}})

    def sprint_spent(self) -> str | None:
        """Never here: the sprint does not start an attempt once its budget is spent."""
        return None


def _reachable(name: str, url: str) -> None:
    """``ConfigError`` unless this machine can connect to the proxy at ``url``: Codex would
    retry an unreachable provider for ever."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=_REACH_S):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{name}: the sprint's metering proxy at {parts.scheme}://{parts.netloc} is not "
            f"reachable from this worker ({exc.strerror or type(exc).__name__}): where the "
            "sprint runs, set AGENTFLEET_PROXY_HOST (e.g. 0.0.0.0) and AGENTFLEET_PROXY_URL "
            "(an address the workers reach)"
        ) from exc
