"""Per-run ``-c`` overrides that point one Codex run at the metering proxy."""

from __future__ import annotations

import tomllib

import pytest

from agentfleet.metering import ProviderRoute, codex_args, provider_route, route_overrides

CONFIG = tomllib.loads("""
model = "gpt-5.5"
model_provider = "corp"

[model_providers.corp]
name = "corp gateway"
base_url = "https://llm.corp.example/openai/v1"
env_key = "CORP_KEY"
wire_api = "responses"

[model_providers.other]
name = "other"
base_url = "http://127.0.0.1:9999/v1"

[profiles.fast]
model_provider = "other"
""")
PROXY = "http://127.0.0.1:4321/a/api-1/openai/v1"


def test_a_custom_provider_is_routed_by_its_base_url():
    route = provider_route(CONFIG)
    assert route == ProviderRoute("corp", "https://llm.corp.example/openai/v1")
    assert not route.builtin
    assert codex_args(route_overrides(route, PROXY)) == [
        "-c", f'model_providers.corp.base_url="{PROXY}"']


def test_the_run_own_overrides_and_profile_pick_the_provider():
    assert provider_route(CONFIG, profile="fast").provider_id == "other"
    assert provider_route(CONFIG, {"model_provider": "other"}, profile="fast").upstream == (
        "http://127.0.0.1:9999/v1")
    overridden = provider_route(CONFIG, {"model_providers.corp.base_url": "http://x:1/v1"})
    assert overridden.upstream == "http://x:1/v1"


def test_the_builtin_openai_provider_uses_openai_base_url():
    route = provider_route({})
    assert route == ProviderRoute("openai", "https://api.openai.com/v1") and route.builtin
    assert route_overrides(route, PROXY) == {"openai_base_url": PROXY}
    assert codex_args(route_overrides(route, PROXY)) == ["-c", f'openai_base_url="{PROXY}"']
    assert provider_route({"openai_base_url": "https://eu.api.openai.com/v1"}).upstream == (
        "https://eu.api.openai.com/v1")
    assert provider_route({}, chatgpt_login=True).upstream == (
        "https://chatgpt.com/backend-api/codex")


@pytest.mark.parametrize(("config", "match"), [
    ({"model_provider": "ollama"}, "CODEX_OSS_BASE_URL"),
    ({"model_provider": "nowhere"}, "no base_url"),
    ({"model_provider": "a.b", "model_providers": {"a.b": {"base_url": "http://x/v1"}}},
     "cannot be named"),
])
def test_providers_that_cannot_be_routed_say_why(config, match):
    with pytest.raises(ValueError, match=match):
        provider_route(config)


def test_values_are_toml_strings():
    assert codex_args({"k": 'a"b'}) == ["-c", 'k="a\\"b"']
