"""The Prefect server a command needs (pool sprints and workers share one), and what to
say when it does not answer.

Without ``PREFECT_API_URL`` Prefect starts a temporary server of the process's own,
which no worker sees: a pool sprint's runs would wait for ever, and a worker (Prefect
refuses to start one so, with a traceback) would first start that server for nothing.
"""

from __future__ import annotations

import os
import sys

from agentfleet.errors import ConfigError, ServerUnreachable

EXAMPLE = "http://127.0.0.1:4200/api, where `prefect server start` serves"


def api_url() -> str | None:
    """``PREFECT_API_URL`` from the environment, else from Prefect's settings (a profile):
    Prefect is imported only in the second case."""
    if url := os.environ.get("PREFECT_API_URL"):
        return url
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def require_api_url(what: str, why: str) -> str:
    """The API URL; ``ConfigError`` (exit 2) saying what needs it and why when none is set."""
    url = api_url()
    if url is None:
        raise ConfigError(f"{what} needs a Prefect server {why}: set PREFECT_API_URL to its "
                          f"API (for example {EXAMPLE})")
    return url


def require_pool_server() -> str:
    """The API URL a ``placement: pool`` sprint runs against; ``ConfigError`` without one."""
    return require_api_url("placement: pool", "that its workers reach too")


def server_unreachable(exc: BaseException) -> ServerUnreachable | None:
    """What to say when ``exc``, or what caused it, is Prefect's API not answering (its
    server down, or ``PREFECT_API_URL`` naming the wrong place): not a bug of ours."""
    httpx = sys.modules.get("httpx")  # loaded with Prefect; nothing to look for without it
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        # Prefect's own words when a flow run cannot start: "Failed to reach API at <url>".
        if (httpx is not None and isinstance(cause, httpx.TransportError)) or (
                isinstance(cause, RuntimeError) and str(cause).startswith("Failed to reach API")):
            api = api_url() or "the Prefect server"
            return ServerUnreachable(
                f"cannot reach the Prefect API at {api} ({cause}): start the server "
                "(`prefect server start`) or set PREFECT_API_URL to one that runs")
        cause = cause.__cause__ or cause.__context__
    return None
