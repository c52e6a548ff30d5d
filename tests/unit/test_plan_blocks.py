"""A plan naming saved blocks, checked with loaders standing in for the server: the blocks'
values in place, precedence task > plan > block > settings, a missing block named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agentfleet.block_refs import AgentProfile, RepositorySource
from agentfleet.checking import load_and_check
from agentfleet.errors import ConfigError, PlanError
from agentfleet.plan_blocks import BlockLoaders
from agentfleet.requests import check_sprint_request, plan_name_of
from agentfleet.settings import AgentfleetSettings
from tests.conftest import MakeRepo

PROFILES = {
    "team-codex": AgentProfile(model="block-model", profile="team", env={"MODE": "block"},
                               codex_path=Path("/opt/team/codex"), reasoning_effort="high",
                               secret_env_names=("OPENAI_API_KEY",)),
    "no-model": AgentProfile(kind="command", run="make it"),
}


def loaders(repos: dict[str, RepositorySource] | None = None, **settings: object) -> BlockLoaders:
    def agent(name: str) -> AgentProfile:
        if name not in PROFILES:
            raise ValueError(f"Unable to find block document named {name} for block type "
                             "agentfleet-agent")
        return PROFILES[name]

    def repository(name: str) -> RepositorySource:
        if name not in (repos or {}):
            raise ValueError(f"Unable to find block document named {name}")
        return (repos or {})[name]

    machine = AgentfleetSettings(_env_file=None, **settings)  # type: ignore[call-arg]
    return BlockLoaders(agent=agent, repository=repository, settings=machine)


def write(folder: Path, plan: dict[str, object]) -> Path:
    path = folder / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def test_a_plan_naming_blocks_checks_with_their_values(make_repo: MakeRepo, tmp_path) -> None:
    repo = make_repo(branch="develop")
    repos = {"orders-service": RepositorySource(path=repo, base_branch="develop")}
    path = write(tmp_path, {
        "name": "orders-v2", "repo": {"block": "orders-service"},
        "agent": {"block": "team-codex", "env": {"MODE": "plan"}},
        "tasks": [{"id": "a", "prompt": "do a"},
                  {"id": "b", "prompt": "do b", "agent": {"model": "task-model"}}],
    })
    checked = load_and_check(path, loaders(repos, model="settings-model"))
    plan = checked.plan
    assert checked.repo.root == repo and checked.repo.base == "develop"
    a, b = plan.task_agent("a"), plan.task_agent("b")
    # task > plan > block > settings
    assert (a.model, b.model) == ("block-model", "task-model")
    assert a.env == {"MODE": "plan"} and a.profile == "team"
    assert a.config == {"model_reasoning_effort": "high"}
    assert checked.blocks.agent_block == "team-codex"
    assert checked.blocks.codex_path == Path("/opt/team/codex")
    assert checked.blocks.repository_block == "orders-service"


def test_settings_are_the_lowest_layer_with_or_without_a_block(make_repo, tmp_path) -> None:
    make_repo()
    inline = write(tmp_path, {"name": "s", "repo": "repo",
                              "tasks": [{"id": "a", "prompt": "x"}]})
    assert load_and_check(inline, loaders(model="m1")).plan.task_agent("a").model == "m1"
    (tmp_path / "b").mkdir()
    blocked = write(tmp_path / "b", {"name": "s", "repo": "../repo", "agent": {"block": "no-model"},
                                     "tasks": [{"id": "a", "prompt": "x"}]})
    agent = load_and_check(blocked, loaders(model="m1")).plan.task_agent("a")
    assert (agent.kind, agent.run, agent.model) == ("command", "make it", "m1")


def test_the_plans_base_wins_over_the_blocks(make_repo: MakeRepo, tmp_path, git) -> None:
    repo = make_repo()
    git(repo, "branch", "release")
    repos = {"svc": RepositorySource(path=repo, base_branch="develop")}
    path = write(tmp_path, {"name": "s", "repo": {"block": "svc"}, "base": "release",
                            "tasks": [{"id": "a", "prompt": "x"}]})
    assert load_and_check(path, loaders(repos)).repo.base == "release"


def test_missing_blocks_are_plan_problems_naming_key_and_block(tmp_path) -> None:
    path = write(tmp_path, {"name": "s", "repo": {"block": "gone-repo"},
                            "agent": {"block": "gone-agent"},
                            "tasks": [{"id": "a", "prompt": "x", "timeout": "soon"}]})
    with pytest.raises(PlanError) as caught:
        load_and_check(path, loaders())
    lines = [str(p) for p in caught.value.problems]
    assert any("agent.block: cannot load the agentfleet-agent block 'gone-agent'" in line
               for line in lines), lines
    assert any("repo.block: cannot load the agentfleet-repository block 'gone-repo'" in line
               for line in lines), lines
    assert any("tasks[a].timeout" in line for line in lines), lines  # every problem at once
    assert caught.value.exit_code == 2


def test_a_block_without_a_server_a_bad_name_or_a_url_is_refused(tmp_path) -> None:
    path = write(tmp_path, {"name": "s", "agent": {"block": "team-codex"},
                            "tasks": [{"id": "a", "prompt": "x"}]})
    with pytest.raises(PlanError, match="agent.block: names the saved agentfleet-agent block "
                                        "'team-codex', but no Prefect server"):
        load_and_check(path)
    bad = write(tmp_path, {"name": "s", "agent": {"block": "Team Codex"},
                           "tasks": [{"id": "a", "prompt": "x"}]})
    with pytest.raises(PlanError, match="agent.block: 'Team Codex' is not a block name"):
        load_and_check(bad, loaders())
    url = {"remote": RepositorySource(url="https://example.com/org/svc.git")}
    remote = write(tmp_path, {"name": "s", "repo": {"block": "remote"},
                              "tasks": [{"id": "a", "prompt": "x"}]})
    # A URL is a remote; only a caller that can fetch it (a mirror) takes it.
    with pytest.raises(PlanError, match="repo: a remote repository is fetched only by"):
        load_and_check(remote, loaders(url))


def test_a_repository_block_s_url_is_a_remote_fetched_with_that_block(
    tmp_path: Path, make_repo: MakeRepo
) -> None:
    from agentfleet.remote import GitAccess, mirrors
    from tests.conftest import run_git

    bare = tmp_path / "svc.git"
    run_git(tmp_path, "clone", "-q", "--bare", str(make_repo("seed")), str(bare))
    repos = {"svc": RepositorySource(url=f"file://{bare}", base_branch="main")}
    path = write(tmp_path, {"name": "s", "repo": {"block": "svc"},
                            "tasks": [{"id": "a", "prompt": "x"}]})
    asked: list[tuple[str, str | None]] = []

    def access(location: str, block: str | None) -> GitAccess:
        asked.append((location, block))  # the edge loads this block's token (tasks/remote.py)
        return GitAccess.of({})

    checked = load_and_check(path, loaders(repos), mirror=mirrors(tmp_path / "work", access))
    assert asked == [(f"file://{bare}", "svc")]
    assert checked.remote is not None and checked.remote.block == "svc"
    assert checked.repo.base == "main" and checked.repo.root == checked.remote.mirror


def test_unknown_keys_beside_a_block_are_named(tmp_path, make_repo) -> None:
    make_repo()
    path = write(tmp_path, {"name": "s", "repo": "repo",
                            "agent": {"block": "team-codex", "modle": "x"},
                            "tasks": [{"id": "a", "prompt": "x"}]})
    with pytest.raises(PlanError, match="agent: unknown key 'modle'; did you mean 'model'"):
        load_and_check(path, loaders())


# -- the sprint's parameters ----------------------------------------------------------------


def test_plan_path_relative_to_the_repository(make_repo: MakeRepo, tmp_path) -> None:
    repo = make_repo(files={"plans/nightly.yaml": yaml.safe_dump(
        {"name": "nightly", "repo": "..", "tasks": [{"id": "a", "prompt": "x"}]}),
        "README.md": "hi\n"})
    checked = check_sprint_request(None, "plans/nightly.yaml", str(repo), blocks=loaders(),
                                   cwd=tmp_path / "nowhere")
    assert checked.plan.name == "nightly" and checked.repo.root == repo
    by_block = check_sprint_request(
        None, "plans/nightly.yaml", {"block": "svc"},
        blocks=loaders({"svc": RepositorySource(path=repo)}), cwd=tmp_path)
    assert by_block.repo.root == repo
    assert plan_name_of(None, repo / "plans/nightly.yaml") == "nightly"


def test_a_plan_given_as_data(make_repo: MakeRepo, tmp_path) -> None:
    repo = make_repo()
    data = {"name": "form", "tasks": [{"id": "a", "prompt": "x", "paths": ["a.txt"]}]}
    checked = check_sprint_request(data, None, str(repo), blocks=loaders(), cwd=tmp_path)
    assert checked.repo.root == repo and checked.plan.tasks[0].paths == ["a.txt"]
    assert plan_name_of(data, None) == "form"
    with pytest.raises(PlanError, match="plan: repo: say which repository"):
        check_sprint_request(data, None, None, blocks=loaders(), cwd=tmp_path)
    bad = {"name": "Bad Name", "repo": str(repo),
           "tasks": [{"id": "a", "prompt": ""}, {"id": "a", "prompt": "y", "stage": "late"}]}
    with pytest.raises(PlanError) as caught:
        check_sprint_request(bad, None, None, blocks=loaders(), cwd=tmp_path)
    text = str(caught.value)
    for expected in ("plan: name:", "empty prompt", "duplicate id 'a'", "tasks[1].stage"):
        assert expected in text


@pytest.mark.parametrize(
    ("plan", "plan_path", "message"),
    [
        (None, None, "give either plan_path .* or plan"),
        ({"name": "x"}, "p.yaml", "not both"),
        ("/abs/plan.yaml", None, "a plan file on the worker goes in plan_path"),
    ],
)
def test_one_of_plan_and_plan_path(plan, plan_path, message, tmp_path) -> None:
    with pytest.raises(ConfigError, match=message):
        check_sprint_request(plan, plan_path, None, blocks=loaders(), cwd=tmp_path)


def test_a_plan_as_the_form_sends_it_every_key_filled_or_null(make_repo, tmp_path) -> None:
    """The UI's form sends each field, an empty one as null: null means unset."""
    from agentfleet.plan import Plan, Task

    def filled(model: type) -> dict[str, object]:
        out: dict[str, object] = {}
        for name, info in model.model_fields.items():
            value = info.default_factory() if info.default_factory else info.default
            out[name] = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
        return out

    repo = make_repo()
    data = {**filled(Plan), "name": "form", "tasks": [
        {**filled(Task), "id": "a", "prompt": "x", "timeout": None}]}
    checked = check_sprint_request(data, None, str(repo), blocks=loaders(), cwd=tmp_path)
    assert checked.plan.task_ids == ["a"] and checked.plan.task_timeout("a") == 1800


def test_a_missing_repository_parameter_block_is_named(tmp_path) -> None:
    with pytest.raises(ConfigError, match="^repository.block: cannot load the "
                       "agentfleet-repository block 'gone'"):
        check_sprint_request(None, "plan.yaml", {"block": "gone"}, blocks=loaders(),
                             cwd=tmp_path)
