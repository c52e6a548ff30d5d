"""Plans naming saved blocks, and the precedence task > plan > block > settings > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from agentfleet.agent_config import AgentConfig, AgentOverride
from agentfleet.block_refs import (
    AgentBlockRef,
    AgentProfile,
    PlanAgent,
    PlanRepo,
    RepositoryBlockRef,
    RepositorySource,
    agent_environment,
    api_key_env_problem,
    block_name_problem,
    load_agent_profile,
    load_repository_source,
    merge_layers,
    resolve_agent,
    resolve_repository,
)
from agentfleet.errors import ConfigError
from agentfleet.settings import AgentfleetSettings

AGENT = TypeAdapter(PlanAgent)


def settings(**values: object) -> AgentfleetSettings:
    return AgentfleetSettings(_env_file=None, **values)  # type: ignore[call-arg]


# -- what a plan writes ---------------------------------------------------------------------


def test_a_plan_agent_is_a_block_reference_exactly_when_it_says_block() -> None:
    ref = AGENT.validate_python({"block": "team-codex", "model": "gpt-5"})
    assert isinstance(ref, AgentBlockRef)
    assert (ref.block, ref.model) == ("team-codex", "gpt-5")
    inline = AGENT.validate_python({"kind": "command", "run": "make"})
    assert isinstance(inline, AgentConfig) and inline.run == "make"
    assert isinstance(AGENT.validate_python({}), AgentConfig)


def test_a_block_reference_rejects_bad_names_and_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="not a block name"):
        AGENT.validate_python({"block": "Team Codex"})
    with pytest.raises(ValidationError, match="extra"):
        AGENT.validate_python({"block": "team-codex", "modle": "gpt-5"})
    with pytest.raises(ValidationError, match="not a block name"):
        RepositoryBlockRef(block="orders/service")
    assert block_name_problem("orders-service-2") is None


def test_a_plan_model_takes_refs_in_yaml_shape_and_as_a_form_schema() -> None:
    """What the plan's ``agent``/``repo`` become: the same data from a file or the UI form."""

    class MiniPlan(BaseModel):
        repo: PlanRepo = None
        agent: PlanAgent = AgentConfig()

    plan = MiniPlan.model_validate(
        {"repo": {"block": "orders-service"}, "agent": {"block": "team-codex"}}
    )
    assert plan.repo == RepositoryBlockRef(block="orders-service")
    assert isinstance(plan.agent, AgentBlockRef)
    assert MiniPlan.model_validate({"repo": "../svc"}).repo == "../svc"
    # A round trip through JSON (the form, a deployment parameter) keeps its meaning.
    again = MiniPlan.model_validate_json(plan.model_dump_json())
    assert again == plan
    schema = MiniPlan.model_json_schema()
    assert "AgentBlockRef" in schema["$defs"] and "RepositoryBlockRef" in schema["$defs"]


# -- precedence -----------------------------------------------------------------------------


def test_merge_layers_lowest_first_none_never_overrides_dicts_merge_per_key() -> None:
    merged = merge_layers(
        {"model": "s", "env": {"A": "1", "B": "1"}},
        None,
        {"model": None, "env": {"B": "2"}, "sandbox": "read-only"},
        {"env": {"C": "3"}},
    )
    assert merged == {"model": "s", "env": {"A": "1", "B": "2", "C": "3"}, "sandbox": "read-only"}


def test_precedence_task_over_plan_over_block_over_settings_over_defaults() -> None:
    machine = settings(model="settings-model")
    block = AgentProfile(model="block-model", sandbox="read-only")
    plan = AgentBlockRef(block="team-codex", model="plan-model")
    task = AgentOverride(model="task-model")

    def model(plan_agent, task_over, profile) -> str | None:  # noqa: ANN001
        return resolve_agent(plan_agent, task_over, profile=profile, settings=machine).agent.model

    assert model(plan, task, block) == "task-model"
    assert model(plan, None, block) == "plan-model"
    assert model(AgentBlockRef(block="team-codex"), None, block) == "block-model"
    assert model(AgentBlockRef(block="team-codex"), None, AgentProfile()) == "settings-model"
    bare = resolve_agent(AgentConfig(), None, settings=settings())
    assert bare.agent == AgentConfig()  # the built-in defaults: codex, workspace-write
    # Keys the upper layers leave alone come from below.
    assert resolve_agent(plan, task, profile=block, settings=machine).agent.sandbox == "read-only"


def test_env_and_config_merge_per_key_across_block_plan_and_task() -> None:
    block = AgentProfile(
        env={"LANG": "C", "MODE": "block"}, config={"a": 1, "b": 1}, reasoning_effort="high"
    )
    plan = AgentBlockRef(block="b", env={"MODE": "plan"}, config={"b": 2})
    task = AgentOverride(config={"model_reasoning_effort": "low"})
    agent = resolve_agent(plan, task, profile=block).agent
    assert agent.env == {"LANG": "C", "MODE": "plan"}
    assert agent.config == {"model_reasoning_effort": "low", "a": 1, "b": 2}
    # Without the task's change the block's reasoning effort is a Codex -c key.
    assert resolve_agent(plan, profile=block).agent.config["model_reasoning_effort"] == "high"


def test_an_inline_plan_agent_counts_only_the_keys_it_wrote() -> None:
    machine = settings(model="settings-model")
    written = AgentConfig.model_validate({"sandbox": "read-only"})
    assert resolve_agent(written, settings=machine).agent.model == "settings-model"
    assert resolve_agent(AgentConfig(model="mine"), settings=machine).agent.model == "mine"


def test_a_form_round_trip_of_a_block_reference_does_not_override_the_block() -> None:
    block = AgentProfile(sandbox="danger-full-access", kind="command", run="make")
    ref = AgentBlockRef.model_validate_json(AgentBlockRef(block="b").model_dump_json())
    agent = resolve_agent(ref, profile=block).agent
    assert (agent.sandbox, agent.kind, agent.run) == ("danger-full-access", "command", "make")


def test_codex_path_comes_from_the_block_then_settings() -> None:
    machine = settings(codex_path="/opt/codex-machine")
    ref = AgentBlockRef(block="b")
    from_block = resolve_agent(ref, profile=AgentProfile(codex_path="/opt/codex-team"),
                               settings=machine)
    assert from_block.codex_path == Path("/opt/codex-team")
    assert resolve_agent(ref, profile=AgentProfile(), settings=machine).codex_path == Path(
        "/opt/codex-machine"
    )
    assert resolve_agent(AgentConfig()).codex_path is None


def test_the_resolved_agent_names_its_block_and_secret_variables_only() -> None:
    profile = AgentProfile(secret_env_names=("OPENAI_API_KEY",))
    resolved = resolve_agent(AgentBlockRef(block="team-codex"), profile=profile)
    assert (resolved.block, resolved.secret_env_names) == ("team-codex", ("OPENAI_API_KEY",))
    assert resolve_agent(AgentConfig()).block is None


def test_profile_and_reference_must_go_together() -> None:
    with pytest.raises(ValueError, match="names a block"):
        resolve_agent(AgentBlockRef(block="b"))
    with pytest.raises(ValueError, match="names no block"):
        resolve_agent(AgentConfig(), profile=AgentProfile())


def test_agent_environment_layers_machine_then_secret_then_agent_env() -> None:
    agent = AgentConfig(env={"MODE": "plan"})
    env = agent_environment(
        {"PATH": "/bin", "OPENAI_API_KEY": "machine"}, {"OPENAI_API_KEY": "block"}, agent
    )
    assert env == {"PATH": "/bin", "OPENAI_API_KEY": "block", "MODE": "plan"}
    override = AgentConfig(env={"OPENAI_API_KEY": "plan"})
    assert agent_environment({}, {"OPENAI_API_KEY": "block"}, override)["OPENAI_API_KEY"] == "plan"


# -- the block layer's own rules ------------------------------------------------------------


def test_profile_rejects_contradictions() -> None:
    with pytest.raises(ValidationError, match="contradicts"):
        AgentProfile(reasoning_effort="high", config={"model_reasoning_effort": "low"})
    AgentProfile(reasoning_effort="high", config={"model_reasoning_effort": "high"})
    with pytest.raises(ValidationError, match="carries the block's secret"):
        AgentProfile(env={"OPENAI_API_KEY": "x"}, secret_env_names=("OPENAI_API_KEY",))


def test_an_api_key_variable_must_look_secret_so_it_is_masked() -> None:
    assert api_key_env_problem("OPENAI_API_KEY") is None
    assert api_key_env_problem("AZURE_OPENAI_API_KEY") is None
    assert "does not look secret" in (api_key_env_problem("OPENAI_AUTH") or "")
    assert "not an environment variable name" in (api_key_env_problem("MY-KEY") or "")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "exactly one"),
        ({"path": "/srv/a", "url": "https://h/r.git"}, "exactly one"),
        ({"path": "relative/repo"}, "must be absolute"),
        ({"path": "/srv/a", "has_token": True}, "a token is for a `url`"),
        ({"url": "https://user:tok@github.com/o/r.git"}, "put the token in the block"),
        ({"url": "git@github.com:o/r.git", "has_token": True}, "token works only with https"),
        ({"url": "ssh://git@github.com/o/r.git", "has_token": True}, "token works only with"),
        ({"url": "orders-service"}, "must be a git URL"),
        ({"path": "/srv/a", "base_branch": "bad..name"}, "base_branch"),
    ],
)
def test_repository_source_rules(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        RepositorySource.model_validate(values)
    assert "tok@" not in str(caught.value).split("input_value")[0]


def test_repository_source_accepts_paths_and_urls() -> None:
    assert RepositorySource(path="~/src/orders").location == "~/src/orders"
    assert RepositorySource(url="git@github.com:o/r.git").url == "git@github.com:o/r.git"
    assert RepositorySource(url="https://github.com/o/r.git", has_token=True).has_token


# -- resolving a repository -----------------------------------------------------------------


def test_a_plan_repo_path_resolves_against_the_plan_folder(tmp_path: Path) -> None:
    resolved = resolve_repository("svc", "dev", plan_folder=tmp_path)
    assert (resolved.path, resolved.base, resolved.block) == (tmp_path / "svc", "dev", None)
    assert resolve_repository(None, None, plan_folder=tmp_path).path == tmp_path


def test_the_plans_base_wins_over_the_blocks_base_branch(tmp_path: Path) -> None:
    ref = RepositoryBlockRef(block="orders-service")
    source = RepositorySource(path=tmp_path, base_branch="main")
    assert resolve_repository(ref, None, plan_folder=Path("/x"), source=source).base == "main"
    resolved = resolve_repository(ref, "release", plan_folder=Path("/x"), source=source)
    assert (resolved.base, resolved.path, resolved.block) == ("release", tmp_path, "orders-service")
    url = RepositorySource(url="https://github.com/o/r.git", has_token=True)
    by_url = resolve_repository(ref, None, plan_folder=Path("/x"), source=url)
    assert (by_url.path, by_url.url, by_url.has_token) == (None, url.url, True)


# -- loading through a callable -------------------------------------------------------------


def test_profiles_load_through_the_callable_once_per_reference() -> None:
    saved = {"team-codex": AgentProfile(model="gpt-5")}
    calls: list[str] = []

    def load(name: str) -> AgentProfile:
        calls.append(name)
        return saved[name]

    assert load_agent_profile(AgentConfig(), load) is None
    assert load_agent_profile(AgentBlockRef(block="team-codex"), load) == saved["team-codex"]
    assert calls == ["team-codex"]


def test_loading_an_unknown_or_unreachable_block_says_which_and_whether_to_retry() -> None:
    with pytest.raises(ConfigError, match="agent.block: no saved agentfleet-agent block named "
                       "'nope'") as missing:
        load_agent_profile(AgentBlockRef(block="nope"), {}.__getitem__)
    assert not missing.value.retryable

    def not_found(name: str) -> RepositorySource:
        raise ValueError(f"Unable to find block document named {name}")

    with pytest.raises(ConfigError, match="repo.block: cannot load .* Unable to find"):
        load_repository_source(RepositoryBlockRef(block="gone"), not_found)

    def down(name: str) -> AgentProfile:
        raise ConnectionError("connection refused")

    with pytest.raises(ConfigError, match="connection refused") as unreachable:
        load_agent_profile(AgentBlockRef(block="team-codex"), down)
    assert unreachable.value.retryable


def test_a_loader_may_return_something_that_converts_itself() -> None:
    class Saved:
        def to_source(self) -> RepositorySource:
            return RepositorySource(url="https://github.com/o/r.git")

    source = load_repository_source(RepositoryBlockRef(block="r"), lambda name: Saved())
    assert source == RepositorySource(url="https://github.com/o/r.git")
    assert load_repository_source("../svc", lambda name: Saved()) is None
