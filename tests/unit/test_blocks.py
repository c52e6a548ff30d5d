"""The Blocks validate and convert, without a server: secrets stay out of the plain models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from agentfleet.agent_config import AgentConfig
from agentfleet.block_refs import (
    AgentBlockRef,
    RepositoryBlockRef,
    RepositorySource,
    load_agent_profile,
    load_repository_source,
    resolve_agent,
)
from agentfleet.codex.cli import codex_argv
from blocks import AgentBlock, RepositoryBlock

KEY = "sk-unit-test-0123456789"
TOKEN = "ghp_unit0test0token0value"


def test_the_agent_block_converts_to_a_profile_without_its_key() -> None:
    block = AgentBlock(
        model="gpt-5.1-codex", profile="team", sandbox="read-only", reasoning_effort="high",
        config={"model_verbosity": "low"}, codex_path="/opt/codex", api_key=KEY,
    )  # fmt: skip
    profile = block.to_profile()
    assert profile.secret_env_names == ("OPENAI_API_KEY",)
    assert profile.codex_path == Path("/opt/codex")
    assert KEY not in profile.model_dump_json()
    assert block.secret_env() == {"OPENAI_API_KEY": KEY}
    resolved = resolve_agent(AgentBlockRef(block="team-codex"), profile=profile)
    assert KEY not in resolved.model_dump_json()
    argv = codex_argv(Path("/opt/codex"), resolved.agent)
    assert KEY not in " ".join(argv)
    assert ["-m", "gpt-5.1-codex"] == argv[argv.index("-m"):argv.index("-m") + 2]
    assert 'model_reasoning_effort="high"' in argv


def test_the_key_is_masked_in_every_rendering_of_the_block() -> None:
    block = AgentBlock(api_key=KEY, api_key_env="CODEX_API_KEY")
    for text in (repr(block), str(block), json.dumps(block.model_dump(mode="json")),
                 str(block.model_dump())):
        assert KEY not in text
    assert block.secret_env() == {"CODEX_API_KEY": KEY}


def test_no_key_means_no_secret_environment() -> None:
    assert AgentBlock().secret_env() == {}
    assert AgentBlock(api_key="").secret_env() == {}
    assert AgentBlock().to_profile().secret_env_names == ()


def test_an_invalid_agent_block_fails_when_made_and_never_prints_the_key() -> None:
    for values in (
        {"api_key_env": "OPENAI_AUTH"},  # a name the masker would not recognise
        {"env": {"OPENAI_API_KEY": "plain"}},  # would shadow the secret
        {"reasoning_effort": "high", "config": {"model_reasoning_effort": "low"}},
        {"sandbox": "anything"},
    ):
        with pytest.raises(ValidationError) as caught:
            AgentBlock(api_key=KEY, **values)
        assert KEY not in str(caught.value)


def test_the_repository_block_converts_and_builds_git_credentials() -> None:
    block = RepositoryBlock(url="https://github.com/org/orders.git", base_branch="main",
                            token=TOKEN)
    source = block.to_source()
    assert source == RepositorySource(
        url="https://github.com/org/orders.git", base_branch="main", has_token=True
    )
    assert TOKEN not in repr(block) and TOKEN not in source.model_dump_json()
    env = block.git_env({"PATH": "/bin"})
    assert env["GIT_CONFIG_KEY_0"] == "http.https://github.com/.extraHeader"
    assert TOKEN not in json.dumps(env)  # base64 in a header, never the raw token
    assert TOKEN in block.secret_values()
    assert RepositoryBlock(path="/srv/orders").git_env() == {}


def test_an_invalid_repository_block_fails_when_made_and_never_prints_the_token() -> None:
    for values in (
        {"url": "git@github.com:org/orders.git"},  # a token needs https
        {"path": "/srv/orders"},
        {"url": "https://github.com/org/orders.git", "path": "/srv/orders"},
    ):
        with pytest.raises(ValidationError) as caught:
            RepositoryBlock(token=TOKEN, **values)
        assert TOKEN not in str(caught.value)
    with pytest.raises(ValidationError, match="put the token in the block"):
        RepositoryBlock(url=f"https://x:{TOKEN}@github.com/org/orders.git")


def test_blocks_are_what_the_domain_loaders_accept() -> None:
    """The Prefect side passes ``AgentBlock.load``; a stand-in returns the same objects."""
    saved_agents = {"team-codex": AgentBlock(model="gpt-5", api_key=SecretStr(KEY))}
    saved_repos = {"orders-service": RepositoryBlock(path="/srv/orders")}
    profile = load_agent_profile(AgentBlockRef(block="team-codex"), saved_agents.__getitem__)
    assert profile is not None and profile.model == "gpt-5"
    source = load_repository_source(RepositoryBlockRef(block="orders-service"),
                                    saved_repos.__getitem__)
    assert source is not None and source.path == Path("/srv/orders")
    assert resolve_agent(AgentConfig()).agent == AgentConfig()
