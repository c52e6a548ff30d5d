"""The sprint's meter: which Codex runs it routes, and what it says (no model involved)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentfleet.agent_config import AgentConfig
from agentfleet.errors import ConfigError
from agentfleet.metering.ledger import TokenUsage
from agentfleet.metering.sprint import HandedRoute, SprintMeter


def codex_home(tmp_path: Path, text: str) -> dict[str, str]:
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(text)
    return {"CODEX_HOME": str(home)}


def test_a_custom_provider_is_routed_for_this_run_only(tmp_path):
    env = codex_home(tmp_path, 'model_provider = "corp"\n[model_providers.corp]\n'
                               'base_url = "https://llm.example/v1"\n')
    agent = AgentConfig(kind="codex", config={"model_reasoning_effort": "low"})
    said: list[str] = []
    with SprintMeter(None, said.append) as meter:
        routed = meter.route("api#1", "api", agent, env, max_tokens=100)
        url = routed.config["model_providers.corp.base_url"]
        assert url == f"{meter.proxy.url}/a/api%231/v1"
        assert routed.config["model_reasoning_effort"] == "low"
        assert agent.config == {"model_reasoning_effort": "low"}  # the plan's agent unchanged
        assert meter.metered("api#1") and not meter.metered("api#2")
        meter.ledger.record_usage("api#1", TokenUsage(input_tokens=90, output_tokens=20))
        assert meter.over_budget("api#1") == "over budget: 110 of 100 tokens"
        assert meter.usage("api#1").input_tokens == 90


def test_the_builtin_provider_gets_openai_base_url(tmp_path):
    env = codex_home(tmp_path, 'model = "gpt-6-luna"\n')
    with SprintMeter(None, lambda _: None) as meter:
        routed = meter.route("a#1", "a", AgentConfig(kind="codex"), env, None)
        assert routed.config == {"openai_base_url": f"{meter.proxy.url}/a/a%231/v1"}


def test_an_unroutable_provider_runs_unmetered_and_says_so(tmp_path):
    env = codex_home(tmp_path, 'model_provider = "ollama"\n')
    warned: list[str] = []
    with SprintMeter(None, lambda _: None, warned.append) as meter:
        agent = AgentConfig(kind="codex")
        assert meter.route("a#1", "a", agent, env, None) == agent
        assert not meter.metered("a#1")
    assert warned and warned[0].startswith("a#1: not metered (the built-in provider 'ollama'")


def test_the_sprint_budget_once_spent_is_said_once(tmp_path):
    env = codex_home(tmp_path, "")
    said: list[str] = []
    with SprintMeter(1000, said.append) as meter:
        meter.route("a#1", "a", AgentConfig(kind="codex"), env, None)
        assert meter.sprint_spent() is None
        for _ in range(2):
            event = meter.ledger.record_usage("a#1", TokenUsage(input_tokens=600))
            meter._on_usage(event)  # what the proxy calls as a response passes
        assert meter.sprint_spent() == "sprint over budget: 1,200 of 1,000 tokens"
    assert said[0] == "a#1: tokens 600 (+600); sprint 600 of 1,000"
    assert sum("running agents are refused" in line for line in said) == 1


def test_the_planners_tokens_count_against_the_sprint_budget():
    from agentfleet.codex.outcome import Usage

    said: list[str] = []
    with SprintMeter(1000, said.append) as meter:
        meter.count_spent("planner", "planner", Usage(input_tokens=900, output_tokens=150))
        assert meter.usage("planner").total == 1050
        assert meter.ledger.sprint_over_budget  # so no attempt starts
        assert meter.sprint_spent() == "sprint over budget: 1,050 of 1,000 tokens"
    assert "planner: 1,050 tokens counted against the sprint's budget; tokens: 1,050 of 1,000" \
        in said


def test_a_pool_attempt_is_handed_a_route_of_its_own_and_the_worker_uses_it(tmp_path):
    env = codex_home(tmp_path, 'model_provider = "corp"\n[model_providers.corp]\n'
                               'base_url = "https://llm.example/v1"\n')
    agent = AgentConfig(kind="codex", config={"model_reasoning_effort": "low"})
    with SprintMeter(None, lambda _: None, public_url="http://localhost") as meter:
        handed = meter.hand("api#1", "api", agent, env, max_tokens=100)
        assert handed is not None
        route, overrides = handed
        assert route.startswith("api#1~")
        assert overrides == {"model_providers.corp.base_url":
                             f"http://localhost:{meter.proxy.port}/a/api%231~{route[6:]}/v1"}
        assert meter.metered("api#1") and not meter.saw("api#1")
        meter.ledger.record_usage("api#1", TokenUsage(input_tokens=10))
        assert meter.saw("api#1")
        assert meter.hand("api#1", "api", AgentConfig(kind="command"), env, None) is None
        # The worker: the same provider in its config, the overrides join its agent's run.
        worker = HandedRoute(overrides)
        routed = worker.route("api#1", "api", agent, env, 100)
        assert routed.config == {"model_reasoning_effort": "low", **overrides}
        assert worker.sprint_spent() is None
        # A worker whose Codex uses another provider would not be metered: refused.
        (tmp_path / "other").mkdir()
        other = codex_home(tmp_path / "other", 'model = "gpt-6-luna"\n')
        with pytest.raises(ConfigError, match="this worker's Codex uses the provider 'openai'"):
            worker.route("api#1", "api", agent, other, 100)
    # A proxy the worker cannot reach: said at once (Codex would retry it for ever).
    with pytest.raises(ConfigError, match="not reachable from this worker"):
        worker.route("api#1", "api", agent, env, 100)


def test_a_port_taken_is_a_configuration_error_that_names_the_settings():
    with SprintMeter(None, lambda _: None) as first:
        taken = first.proxy.port
        with pytest.raises(ConfigError, match="AGENTFLEET_PROXY_PORT"):
            with SprintMeter(None, lambda _: None, port=taken):
                pass
