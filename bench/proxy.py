"""One model request through the metering proxy against the same request direct.

The scripted model answers a one-message streamed response at once; a client
times the whole response (request sent to last byte read), alternating direct and
through a ``MeteringProxy`` so a busy moment hits both alike. Both connections are
kept alive and warmed first, as Codex keeps its own.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from agentfleet.metering import Ledger, MeteringProxy
from agentfleet.testing import Script
from bench.common import Goal, Row, median, say

ROWS = ("proxy",)
FULL_REQUESTS = 200
SMOKE_REQUESTS = 10
BODY = {"model": "gpt-5.5", "stream": True, "prompt_cache_key": "bench", "input": [
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "ping"}]}]}


def measure(ctx, work: Path) -> list[Row]:  # noqa: ANN001 - bench.sprints.Context
    """The proxy row: medians direct and proxied; the goal is on the added milliseconds."""
    n = SMOKE_REQUESTS if ctx.smoke else FULL_REQUESTS
    model = ctx.model()
    model.set_script(Script.model_validate({"rules": [{
        "name": "ping", "match": "ping",
        "responses": [{"steps": [{"do": "message", "text": "pong"}]}] * (2 * n + 4)}]}))
    say(f"proxy: {n} streamed responses direct and {n} through the metering proxy")
    with MeteringProxy(Ledger()) as proxy, httpx.Client(timeout=30) as client:
        url = proxy.register("bench", "bench", model.base_url)

        def timed(base: str) -> float:
            started = time.perf_counter()
            reply = client.post(f"{base}/responses", json=BODY)
            seconds = time.perf_counter() - started
            if reply.status_code != 200 or b"response.completed" not in reply.content:
                raise RuntimeError(f"{base}: {reply.status_code} {reply.text[:200]}")
            return seconds

        timed(model.base_url), timed(url)  # open and warm both connections
        direct, proxied = [], []
        for _ in range(n):
            direct.append(timed(model.base_url))
            proxied.append(timed(url))
        metered = proxy.snapshot().attempts["bench"].responses
    added_ms = (median(proxied) - median(direct)) * 1000
    return [Row(
        "proxy", f"one model request through the metering proxy (median of {n})", "direct",
        median(direct), median(proxied), median(proxied) / median(direct),
        notes=f"adds {added_ms:+.2f} ms at the median",
        details={"added_ms": added_ms, "requests": n, "metered_responses": metered,
                 "direct_ms": [round(x * 1000, 3) for x in direct],
                 "proxied_ms": [round(x * 1000, 3) for x in proxied]},
    ).judge(Goal("≤ +2 ms", lambda r: r.details["added_ms"] <= 2.0))]
