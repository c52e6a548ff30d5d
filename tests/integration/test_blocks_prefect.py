"""Blocks against a real Prefect server: registered by the CLI, saved with secrets, loaded,
converted and resolved the way a plan naming them will be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from agentfleet.agent_config import AgentOverride
from agentfleet.agents import AgentRequest, run_agent
from agentfleet.block_refs import (
    AgentBlockRef,
    RepositoryBlockRef,
    agent_environment,
    load_agent_profile,
    load_repository_source,
    resolve_agent,
    resolve_repository,
)
from agentfleet.codex.cli import codex_argv
from agentfleet.errors import ConfigError
from agentfleet.settings import AgentfleetSettings
from blocks import AgentBlock, RepositoryBlock, agent_secret_env
from tests.conftest import MakeRepo

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-integration-0123456789abcdef"
TOKEN = "ghp_integration0token0value"
SLUGS = ("agentfleet-agent", "agentfleet-repository")


@pytest.fixture(scope="module")
def server(harness: str) -> str:
    """The harness server's API URL."""
    return harness


def test_block_register_cli_registers_both_block_types(server: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PREFECT_API_URL": server,
        "PREFECT_HOME": str(tmp_path / "home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "COLUMNS": "200",
    }
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "blocks"],
        cwd=tmp_path,  # the installed package, not this checkout's folder
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Successfully registered 2 blocks" in done.stdout
    assert "agentfleet agent" in done.stdout and "agentfleet repository" in done.stdout
    with get_client(sync_client=True) as client:
        for slug in SLUGS:
            block_type = client.read_block_type_by_slug(slug)
            schema = client.get_most_recent_block_schema_for_block_type(block_type.id)
            assert schema is not None
            secret = "api_key" if slug == "agentfleet-agent" else "token"
            assert secret in schema.fields["secret_fields"]


def test_a_saved_agent_block_loads_masked_and_its_key_goes_only_to_the_env(server: str) -> None:
    AgentBlock(
        model="gpt-5.1-codex", sandbox="read-only", reasoning_effort="medium", api_key=KEY,
        codex_path="/opt/team/codex",
    ).save("team-codex", overwrite=True)  # fmt: skip

    loaded = AgentBlock.load("team-codex")
    assert KEY not in repr(loaded) and KEY not in str(loaded.model_dump())
    assert KEY not in json.dumps(loaded.model_dump(mode="json"))
    assert loaded.api_key is not None and loaded.api_key.get_secret_value() == KEY
    with get_client(sync_client=True) as client:  # what the API shows anyone who asks
        stored = client.read_block_document_by_name(
            "team-codex", "agentfleet-agent", include_secrets=False
        )
    assert KEY not in json.dumps(stored.data, default=str)

    # The plan's `agent: {block: team-codex}` resolved with the loader the flow passes.
    ref = AgentBlockRef(block="team-codex")
    profile = load_agent_profile(ref, AgentBlock.load)
    resolved = resolve_agent(ref, profile=profile)
    assert resolved.agent.model == "gpt-5.1-codex"
    assert resolved.agent.config == {"model_reasoning_effort": "medium"}
    assert resolved.codex_path == Path("/opt/team/codex")
    assert resolved.secret_env_names == ("OPENAI_API_KEY",)
    for text in (resolved.model_dump_json(), resolved.agent.model_dump_json(),
                 " ".join(codex_argv(Path("/opt/team/codex"), resolved.agent))):
        assert KEY not in text

    secret = agent_secret_env(resolved.block)
    assert secret == {"OPENAI_API_KEY": KEY}
    env = agent_environment({"PATH": os.environ["PATH"]}, secret, resolved.agent)
    assert env["OPENAI_API_KEY"] == KEY


def test_precedence_with_a_saved_block(server: str) -> None:
    AgentBlock(model="block-model", profile="team", env={"MODE": "block"}).save(
        "layered", overwrite=True
    )
    machine = AgentfleetSettings(_env_file=None, model="settings-model")  # type: ignore[call-arg]
    plan = AgentBlockRef(block="layered", env={"MODE": "plan"})
    profile = load_agent_profile(plan, AgentBlock.load)
    no_task = resolve_agent(plan, profile=profile, settings=machine).agent
    assert (no_task.model, no_task.profile) == ("block-model", "team")
    assert no_task.env == {"MODE": "plan"}
    task = AgentOverride(model="task-model")
    assert resolve_agent(plan, task, profile=profile, settings=machine).agent.model == "task-model"
    AgentBlock(profile="team").save("no-model", overwrite=True)
    bare = AgentBlockRef(block="no-model")
    fallback = resolve_agent(bare, profile=load_agent_profile(bare, AgentBlock.load),
                             settings=machine)
    assert fallback.agent.model == "settings-model"


def test_the_key_reaches_a_real_agent_through_its_environment_only(
    server: str, make_repo: MakeRepo
) -> None:
    AgentBlock(
        kind="command", run='printf %s "$OPENAI_API_KEY" > .seen-key; echo done', api_key=KEY
    ).save("keyed-command", overwrite=True)
    ref = AgentBlockRef(block="keyed-command")
    resolved = resolve_agent(ref, profile=load_agent_profile(ref, AgentBlock.load))
    worktree = make_repo("keyed")
    base = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    request = AgentRequest(
        worktree=worktree, prompt="p", agent=resolved.agent, timeout_s=60,
        env=agent_environment(base, agent_secret_env(resolved.block), resolved.agent),
    )  # fmt: skip
    outcome = run_agent(request)
    assert outcome.final_message == "done", outcome.error
    assert (worktree / ".seen-key").read_text() == KEY
    assert KEY not in resolved.agent.model_dump_json() and KEY not in (resolved.agent.run or "")
    assert KEY not in outcome.model_dump_json()


def test_a_saved_repository_block_loads_masked_and_converts(server: str, tmp_path: Path) -> None:
    RepositoryBlock(
        url="https://github.com/org/orders.git", base_branch="main", token=TOKEN
    ).save("orders-service", overwrite=True)
    RepositoryBlock(path=str(tmp_path), base_branch="develop").save("local-orders", overwrite=True)

    loaded = RepositoryBlock.load("orders-service")
    assert TOKEN not in repr(loaded) and TOKEN not in json.dumps(loaded.model_dump(mode="json"))
    assert loaded.token is not None and loaded.token.get_secret_value() == TOKEN
    env = loaded.git_env()
    assert env["GIT_CONFIG_KEY_0"] == "http.https://github.com/.extraHeader"

    ref = RepositoryBlockRef(block="orders-service")
    source = load_repository_source(ref, RepositoryBlock.load)
    remote = resolve_repository(ref, None, plan_folder=tmp_path, source=source)
    assert (remote.url, remote.base, remote.has_token) == (
        "https://github.com/org/orders.git", "main", True,
    )
    assert TOKEN not in remote.model_dump_json()

    local_ref = RepositoryBlockRef(block="local-orders")
    local_source = load_repository_source(local_ref, RepositoryBlock.load)
    local = resolve_repository(local_ref, "release", plan_folder=Path("/x"), source=local_source)
    assert (local.path, local.base) == (tmp_path, "release")


def test_naming_a_block_nobody_saved_is_a_configuration_error(server: str) -> None:
    with pytest.raises(ConfigError, match="agent.block: cannot load the agentfleet-agent block "
                       "'nobody-saved-this'") as caught:
        load_agent_profile(AgentBlockRef(block="nobody-saved-this"), AgentBlock.load)
    assert not caught.value.retryable
