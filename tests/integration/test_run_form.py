"""The run form and saved blocks under the harness: each deployment's parameter schema as
the server holds it, a sprint given as data in the form's shape, a plan naming saved blocks
(precedence task > plan > block), a missing block, and the block's key nowhere but in the
agent's environment."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter
from prefect.settings import PREFECT_API_URL, PREFECT_RESULTS_LOCAL_STORAGE_PATH

from agentfleet.plan import Plan
from agentfleet.results import SprintReport
from blocks import AgentBlock, RepositoryBlock
from flows.apply import apply
from flows.best_of_n import best_of_n
from flows.sprint import sprint
from tests.conftest import GIT_ENV, MakeRepo, run_git
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-form-test-0123456789abcdef0123"


def schema_of(flow: object, name: str) -> dict:
    """The deployment's parameter schema as the server returns it (what the UI renders)."""
    deployment_id = flow.to_deployment(name=name).apply()  # type: ignore[attr-defined]
    with get_client(sync_client=True) as client:
        return client.read_deployment(deployment_id).parameter_openapi_schema


def test_each_deployments_form_has_typed_fields(harness) -> None:
    form = schema_of(sprint, "form")
    fields, defs = form["properties"], form["definitions"]
    assert {"plan", "plan_path", "repository", "no_cache", "redo"} <= set(fields)
    assert {"$ref": "#/definitions/Plan"} in fields["plan"]["anyOf"]
    assert {"$ref": "#/definitions/RepositoryBlockRef"} in fields["repository"]["anyOf"]
    plan = defs["Plan"]["properties"]
    assert {"name", "repo", "agent", "verify", "tasks", "limits", "attempts"} <= set(plan)
    assert defs["Plan"]["required"] == ["name"]
    task = defs["Task"]["properties"]
    assert {"id", "prompt", "paths", "depends_on", "stage", "attempts", "agent"} <= set(task)
    assert task["stage"]["enum"] == ["foundation", "feature", "tests", "docs"]
    assert "What the agent should do" in task["prompt"]["description"]
    refs = json.dumps(plan["agent"]) + json.dumps(plan["repo"])
    assert "AgentBlockRef" in refs and "RepositoryBlockRef" in refs  # {block: NAME} in the form
    assert "block" in defs["AgentBlockRef"]["properties"]

    best = schema_of(best_of_n, "form")
    fields = best["properties"]
    assert best["required"] == ["prompt"]
    assert fields["score_goal"]["enum"] == ["min", "max"]
    assert "Variant" in json.dumps(fields["variants"]) and "AgentBlockRef" in json.dumps(
        fields["agent"])

    landing = schema_of(apply, "form")
    fields = landing["properties"]
    assert set(landing["required"]) == {"repo", "target", "branches"}
    assert fields["on_conflict"]["enum"] == ["resolve", "overwrite", "skip"]
    assert "AgentConfig" in json.dumps(fields["resolver"])


def flow_run(state) -> object:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id)


def test_a_sprint_given_as_data_lands_and_is_named_for_its_plan(
    harness, make_repo: MakeRepo, work_dir
) -> None:
    repo = make_repo()
    plan = Plan.model_validate({
        "name": "orders-v2", "agent": {"kind": "command"},
        "tasks": [
            {"id": "db", "prompt": "index", "paths": ["db.txt"], "stage": "foundation",
             "agent": {"run": "echo db > db.txt"}},
            {"id": "api", "prompt": "endpoint", "paths": ["api.txt"], "depends_on": ["db"],
             "agent": {"run": "cat db.txt > api.txt"}},
        ],
    })
    state = sprint(plan=plan, repository=str(repo), no_cache=True, return_state=True)
    assert state.is_completed(), state.message
    report = state.result()
    assert isinstance(report, SprintReport) and report.exit_status == 0
    assert state.message == report.summary_line()
    assert run_git(repo, "show", "agentfleet/orders-v2:api.txt") == "db\n"
    run = flow_run(state)
    assert run.name == "sprint orders-v2"
    assert run.state.message == report.summary_line()


def test_a_bad_plan_as_data_fails_at_once_with_every_problem(
    harness, make_repo: MakeRepo, work_dir
) -> None:
    repo = make_repo()
    data = {"name": "bad", "agent": {"kind": "command"},
            "tasks": [{"id": "a", "prompt": "", "agent": {"run": "true"}},
                      {"id": "b", "prompt": "x", "depends_on": ["c"], "agent": {"run": "true"},
                       "timeout": "soon"}]}
    state = sprint(plan=data, repository=str(repo), return_state=True)
    assert state.is_failed()
    for problem in ("plan: tasks[a].prompt: empty prompt", "plan: tasks[b].depends_on: unknown "
                    "task 'c'", "plan: tasks[b].timeout: bad duration"):
        assert problem in state.message, state.message
    assert run_git(repo, "branch", "--list").split() == ["*", "main"]  # nothing created


def logs_of(state, line: str) -> str:
    """The flow run's logs once ``line`` arrived (the API receives logs in batches)."""

    def read() -> str:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(
                LogFilter(flow_run_id={"any_": [state.state_details.flow_run_id]}), limit=200)
        text = "\n".join(log.message for log in logs)
        return text if line in text else ""

    return wait_for(read, 60, f"{line!r} in the logs")


def test_a_plan_naming_saved_blocks_runs_with_their_values_and_hides_the_key(
    harness, make_repo: MakeRepo, work_dir, tmp_path, monkeypatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    repo = make_repo()
    run_git(repo, "branch", "develop")
    # The agent proves it got the key (its digest) and says it, as a careless agent would.
    AgentBlock(
        kind="command", api_key=KEY, env={"MODE": "block"},
        run='echo "my key is $OPENAI_API_KEY"; printf %s "$OPENAI_API_KEY" | sha256sum '
            '| cut -c1-16 > "$AGENTFLEET_TASK.key"; echo "$MODE" > "$AGENTFLEET_TASK.mode"',
    ).save("form-agent", overwrite=True)
    RepositoryBlock(path=str(repo), base_branch="develop").save("form-repo", overwrite=True)
    plan = tmp_path / "blocks.yaml"
    plan.write_text(json.dumps({
        "name": "with-blocks", "repo": {"block": "form-repo"},
        "agent": {"block": "form-agent", "env": {"MODE": "plan"}},
        "tasks": [{"id": "a", "prompt": "do a", "paths": ["a.*"]},
                  {"id": "b", "prompt": "do b", "paths": ["b.*"],
                   "agent": {"env": {"MODE": "task"}}}],
    }))
    state = sprint(plan_path=str(plan), no_cache=True, return_state=True)
    assert state.is_completed(), state.message
    report = state.result()
    digest = hashlib.sha256(KEY.encode()).hexdigest()[:16]
    target = "agentfleet/with-blocks"
    assert report.base == "develop"
    assert run_git(repo, "show", f"{target}:a.key").strip() == digest
    assert run_git(repo, "show", f"{target}:a.mode") == "plan\n"  # plan over block
    assert run_git(repo, "show", f"{target}:b.mode") == "task\n"  # task over plan
    logs = logs_of(state, "my key is")
    assert KEY not in logs
    assert KEY not in report.model_dump_json()
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[run.id])))
    assert KEY not in run.model_dump_json() and all(KEY not in t.model_dump_json() for t in tasks)
    for folder in (work_dir, Path(PREFECT_RESULTS_LOCAL_STORAGE_PATH.value())):
        for file in folder.rglob("*"):
            if file.is_file():
                assert KEY.encode() not in file.read_bytes(), file


def test_a_missing_block_fails_the_run_at_once_and_the_cli_exits_2(
    harness, make_repo: MakeRepo, work_dir, tmp_path
) -> None:
    repo = make_repo()
    plan = tmp_path / "missing.yaml"
    plan.write_text(json.dumps({"name": "missing", "repo": str(repo),
                                "agent": {"block": "nobody-saved-this"},
                                "tasks": [{"id": "a", "prompt": "x"}]}))
    state = sprint(plan_path=str(plan), return_state=True)
    assert state.is_failed()
    assert "agent.block: cannot load the agentfleet-agent block 'nobody-saved-this'" in \
        state.message
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTFLEET_", "PREFECT_"))}
    env.update(GIT_ENV, PREFECT_API_URL=str(PREFECT_API_URL.value()),
               AGENTFLEET_WORK_DIR=str(work_dir))

    def agentfleet_plan(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "agentfleet.cli", "plan", str(path)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    done = agentfleet_plan(plan)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"error: {plan}: agent.block: cannot load the agentfleet-agent block " \
           "'nobody-saved-this'" in done.stderr
    AgentBlock(kind="command", run="true").save("cli-agent", overwrite=True)
    RepositoryBlock(path=str(repo)).save("cli-repo", overwrite=True)
    saved = tmp_path / "saved.yaml"
    saved.write_text(json.dumps({"name": "saved", "repo": {"block": "cli-repo"},
                                 "agent": {"block": "cli-agent"},
                                 "tasks": [{"id": "a", "prompt": "x"}]}))
    done = agentfleet_plan(saved)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"plan 'saved': 1 task in {repo}" in done.stdout


@pytest.mark.parametrize("flow_name", ["best-of-n", "apply"])
def test_best_of_n_and_apply_runs_are_named_for_what_they_run(
    flow_name, harness, make_repo: MakeRepo, work_dir
) -> None:
    repo = make_repo()
    if flow_name == "best-of-n":
        state = best_of_n("write n", repo=str(repo), attempts=1, no_cache=True,
                          agent={"kind": "command", "run": "echo 1 > n.txt"}, return_state=True)
        expected = "best-of-n write n"
    else:
        run_git(repo, "checkout", "-q", "-b", "feature")
        (repo / "f.txt").write_text("f\n")
        run_git(repo, "add", "-A")
        run_git(repo, "commit", "-qm", "f")
        run_git(repo, "checkout", "-q", "main")
        run_git(repo, "branch", "landing")
        state = apply(repo=str(repo), target="landing", branches=["feature"], return_state=True)
        expected = "apply landing"
    assert state.is_completed(), state.message
    assert flow_run(state).name == expected


def test_best_of_n_takes_saved_blocks_for_its_repo_and_agent(
    harness, make_repo: MakeRepo, work_dir
) -> None:
    repo = make_repo()
    AgentBlock(kind="command", run='echo "$AGENTFLEET_ATTEMPT" > n.txt').save(
        "bon-agent", overwrite=True)
    RepositoryBlock(path=str(repo)).save("bon-repo", overwrite=True)
    answer = best_of_n("write n", repo={"block": "bon-repo"}, agent={"block": "bon-agent"},
                       attempts=2, score="cat n.txt", score_goal="max", no_cache=True)
    assert answer.winner == 2
    assert run_git(repo, "show", f"{answer.branch}:n.txt") == "2\n"


def test_the_agent_blocks_codex_path_wins_over_the_setting(make_repo: MakeRepo, tmp_path) -> None:
    from agentfleet.block_refs import AgentProfile
    from agentfleet.checking import load_and_check
    from agentfleet.plan_blocks import BlockLoaders
    from agentfleet.settings import AgentfleetSettings
    from flows.sprint import codex_for

    make_repo()
    tools = {}
    for name in ("block-codex", "settings-codex"):
        tools[name] = tmp_path / name
        tools[name].write_text("#!/bin/sh\n")
        tools[name].chmod(0o755)
    machine = AgentfleetSettings(_env_file=None, codex_path=tools["settings-codex"])  # type: ignore[call-arg]
    loaders = BlockLoaders(agent=lambda _: AgentProfile(codex_path=tools["block-codex"]),
                           settings=machine)
    for agent, expected in (({"block": "team"}, "block-codex"), ({}, "settings-codex")):
        plan = tmp_path / "plan.yaml"
        plan.write_text(json.dumps({"name": "s", "repo": "repo", "agent": agent,
                                    "tasks": [{"id": "a", "prompt": "x"}]}))
        assert codex_for(load_and_check(plan, loaders), machine) == tools[expected]
