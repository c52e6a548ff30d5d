"""The Prefect server a command needs: pool sprints and workers share one.

Without ``PREFECT_API_URL`` Prefect starts a temporary server of the process's own,
which no worker sees: a pool sprint's runs would wait for ever, and a worker (Prefect
refuses to start one so, with a traceback) would first start that server for nothing.
"""

from __future__ import annotations

import os

from agentfleet.errors import ConfigError

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
