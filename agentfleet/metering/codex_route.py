"""Point one Codex run at the metering proxy, for that run only: ``-c`` overrides.

Found in the pinned Codex CLI 0.169.0 (its config code and strings, then tried for
real against the scripted server and the proxy, ``tests/e2e/test_metering_codex.py``):

- **A custom provider** (``model_providers.<id>`` in the user's ``config.toml``):
  ``-c model_providers.<id>.base_url="http://127.0.0.1:P/a/<attempt>/v1"``. A
  dotted ``-c`` key is merged into the user's table, so ``name``, ``env_key``,
  ``wire_api``, retries and headers stay the user's; only the URL changes.
- **The built-in ``openai`` provider**: ``-c openai_base_url="http://127.0.0.1:P/a/<attempt>/v1"``.
  0.169 refuses ``model_providers.openai.…`` outright ("model_providers contains
  reserved built-in provider IDs: `openai`. Built-in providers cannot be
  overridden", exit 1) and no longer reads the ``OPENAI_BASE_URL`` environment
  variable (a run with it still went to api.openai.com). In ``codex exec`` the key
  comes from ``CODEX_API_KEY`` (``OPENAI_API_KEY`` alone sent no ``Authorization``).
  The built-in provider first tries the Responses API over a WebSocket
  (``GET …/v1/responses`` with ``Upgrade: websocket``): the proxy answers ``426``,
  after which Codex uses HTTPS at once; with a 404 or 5xx it retries the WebSocket
  six times (about 6 s) before falling back. ``features.responses_websockets=false``
  and ``--disable responses_websockets`` did not stop those tries.
- The other built-in providers (``ollama``, ``lmstudio``) take their URL from
  ``CODEX_OSS_BASE_URL`` only: not routable with ``-c``, refused here.

Pure functions: the caller reads ``config.toml`` (``tomllib``) and passes it in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OPENAI = "openai"
OPENAI_BASE_URL = "https://api.openai.com/v1"
CHATGPT_BASE_URL = "https://chatgpt.com/backend-api/codex"
BUILTIN_OSS = ("ollama", "lmstudio")
BUILTIN_OPENAI_URL_KEY = "openai_base_url"
_PROVIDER_ID = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class ProviderRoute:
    """The provider a Codex run talks to and where its requests go without the proxy."""

    provider_id: str
    upstream: str  # the provider's base URL, e.g. https://api.openai.com/v1

    @property
    def builtin(self) -> bool:
        """Whether it is Codex's built-in ``openai`` provider."""
        return self.provider_id == OPENAI


def _lookup(table: Mapping[str, Any], dotted: str) -> Any:
    node: Any = table
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _setting(key: str, config: Mapping[str, Any], overrides: Mapping[str, object],
             profile: str | None) -> Any:
    """A setting as Codex resolves it: ``-c`` first, then the profile, then the top level."""
    if key in overrides:
        return overrides[key]
    if profile:
        value = _lookup(config, f"profiles.{profile}.{key}")
        if value is not None:
            return value
    return _lookup(config, key)


def provider_route(
    config: Mapping[str, Any],
    overrides: Mapping[str, object] | None = None,
    *,
    profile: str | None = None,
    chatgpt_login: bool = False,
) -> ProviderRoute:
    """Which provider a run uses and its upstream, from ``config.toml`` and the run's ``-c``.

    ``overrides`` are the run's own ``-c`` settings as plain values (e.g. the plan's
    ``agent.config``); ``chatgpt_login``: the built-in provider signs in with ChatGPT,
    whose default URL differs. Raises ``ValueError`` for a provider that cannot be routed.
    """
    overrides = overrides or {}
    provider_id = str(_setting("model_provider", config, overrides, profile) or OPENAI)
    if provider_id == OPENAI:
        configured = _setting(BUILTIN_OPENAI_URL_KEY, config, overrides, profile)
        default = CHATGPT_BASE_URL if chatgpt_login else OPENAI_BASE_URL
        return ProviderRoute(OPENAI, str(configured or default))
    if provider_id in BUILTIN_OSS:
        raise ValueError(
            f"the built-in provider {provider_id!r} takes its URL from CODEX_OSS_BASE_URL only; "
            "define it under [model_providers] with another id to meter it"
        )
    if not _PROVIDER_ID.match(provider_id):
        raise ValueError(f"provider id {provider_id!r} cannot be named in a -c key")
    key = f"model_providers.{provider_id}.base_url"
    base_url = overrides.get(key) or _lookup(config, key)
    if not base_url:
        raise ValueError(f"provider {provider_id!r} has no base_url in config.toml")
    return ProviderRoute(provider_id, str(base_url))


def route_overrides(route: ProviderRoute, proxy_base_url: str) -> dict[str, str]:
    """The ``-c`` settings (key to plain value) that send this run to ``proxy_base_url``."""
    if route.builtin:
        return {BUILTIN_OPENAI_URL_KEY: proxy_base_url}
    return {f"model_providers.{route.provider_id}.base_url": proxy_base_url}


def codex_args(overrides: Mapping[str, str]) -> list[str]:
    """``["-c", 'key="value"', ...]`` for the Codex command line (values as TOML strings)."""
    args: list[str] = []
    for key, value in overrides.items():
        # A JSON string is a valid TOML basic string.
        args += ["-c", f"{key}={json.dumps(value, ensure_ascii=False)}"]
    return args
