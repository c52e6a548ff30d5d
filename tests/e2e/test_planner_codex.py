"""``agentfleet decompose``: the real Codex CLI as the planner, against the scripted model.

The scripted model answers the planner's prompt with a final message holding the JSON
plan (Codex writes it to ``-o FILE``); a re-ask is a fresh Codex thread whose prompt
lists the problems, answered by its own rule.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from agentfleet.plan_blocks import PlanBlocks
from agentfleet.testing import Rule, Script, ScriptedModelServer
from tests.conftest import run_git

pytestmark = pytest.mark.codex

ROOT = Path(__file__).resolve().parents[2]
AGENTFLEET = str(Path(sys.executable).parent / "agentfleet")
GOAL = "Add an orders endpoint backed by an index, and document it"
REASK = "Your previous answer was refused"

if not (ROOT / "node_modules" / ".bin" / "codex").exists():
    pytest.fail("the pinned Codex CLI is not installed: run `make setup`", pytrace=False)


def task(tid: str, paths: list[str] | None, *, depends_on: list[str] | None = None,
         stage: str | None = None, verify: str | None = None, why: str = "") -> dict:
    return {"id": tid, "prompt": f"Do the {tid} part of the goal.", "paths": paths,
            "depends_on": depends_on, "stage": stage, "verify": verify,
            "why": why or f"{tid} has files of its own"}


VALID = {"tasks": [
    task("db-index", ["src/db/"], stage="foundation", why="only the schema folder"),
    task("orders-api", ["src/api/"], depends_on=["db-index"], verify="python3 -m pytest -q",
         why="needs the index the first task adds"),
    task("docs", ["docs/orders.md"], stage="docs", why="only its own page"),
]}
# A cycle (api <-> db) and 'src/api' given as a bare folder name.
BROKEN = {"tasks": [
    task("db-index", ["src/db/"], depends_on=["orders-api"]),
    task("orders-api", ["src/api"], depends_on=["db-index"]),
]}


def answer(plan: dict) -> list[dict]:
    return [{"steps": [{"do": "message", "text": json.dumps(plan)}]}]


@pytest.fixture
def planner_model() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer(Script(rules=[])) as server:
        yield server


@pytest.fixture
def project(make_repo) -> Path:
    return make_repo("orders", files={
        "README.md": "# orders\n",
        "src/api/orders.py": "def list_orders():\n    return []\n",
        "src/db/schema.sql": "create table orders (id int);\n",
        "tests/test_orders.py": "def test_nothing():\n    pass\n",
    })


def env_for(server: ScriptedModelServer, tmp_path: Path) -> dict[str, str]:
    home = server.write_codex_home(tmp_path / "codex-home", request_max_retries=0,
                                   stream_max_retries=0)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTFLEET_", "PREFECT_"))}
    env.update(server.agent_env(home), AGENTFLEET_WORK_DIR=str(tmp_path / "work"),
               GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", HOME=str(tmp_path))
    return env


def agentfleet(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AGENTFLEET, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=180, stdin=subprocess.DEVNULL)


def script(server: ScriptedModelServer, first: dict, again: dict | None = None) -> None:
    rules = []
    if again is not None:  # first match wins: the re-ask's prompt also holds the goal
        rules.append(Rule(name="reask", match=REASK, responses=answer(again)))
    rules.append(Rule(name="plan", match="GOAL:", responses=answer(first)))
    server.set_script(Script(rules=rules))


def no_leftovers(repo: Path, tmp_path: Path) -> None:
    assert run_git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    left = [p for p in (tmp_path / "work").rglob("*")] if (tmp_path / "work").exists() else []
    assert not [p for p in left if p.is_file()], left


def test_decompose_writes_a_checked_plan_with_reasons_and_shows_the_waves(
    planner_model, project, tmp_path
):
    script(planner_model, VALID)
    env = env_for(planner_model, tmp_path)
    out = tmp_path / "plan.yaml"
    before = run_git(project, "for-each-ref")

    run = agentfleet("decompose", GOAL, "--repo", str(project), "-o", str(out), env=env,
                     cwd=tmp_path)

    assert run.returncode == 0, run.stdout + run.stderr
    assert "wave 1 (may run together):\n  db-index" in run.stdout
    assert "wave 2:\n  orders-api" in run.stdout
    assert "planner: 1 ask, tokens: 100 in (0 cached), 20 out" in run.stderr
    text = out.read_text()
    data = yaml.safe_load(text)
    assert data["name"] == "add-an-orders-endpoint-backed-by-an-index-a"[:40].strip("-")
    assert data["repo"] == "orders"
    assert [t["id"] for t in data["tasks"]] == ["db-index", "orders-api", "docs"]
    assert data["tasks"][1] == {
        "id": "orders-api", "prompt": "Do the orders-api part of the goal.",
        "paths": ["src/api/"], "depends_on": ["db-index"], "verify": "python3 -m pytest -q"}
    # A comment per task: why it runs in parallel or waits.
    assert "  # wave 1: waits for nothing" in text
    assert "  # runs in parallel with docs" in text
    assert "  # wave 2: waits for db-index (orders-api depends on db-index)" in text
    assert "  # planner: needs the index the first task adds" in text
    assert f"# goal: {GOAL}" in text
    # Ordinary plan: `agentfleet plan` shows the same waves.
    shown = agentfleet("plan", str(out), env=env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "wave 2:" in shown.stdout
    # Codex ran read-only with the derived schema as its response format.
    (request,) = planner_model.requests_for("plan")
    body = request.body
    fmt = body["text"]["format"]
    assert fmt["type"] == "json_schema"
    assert fmt["schema"]["properties"]["tasks"]["items"]["additionalProperties"] is False
    assert "read-only" in json.dumps(body["input"][:2])
    assert GOAL in request.prompt and "Parallelize when:" in request.prompt
    assert run_git(project, "for-each-ref") == before
    no_leftovers(project, tmp_path)


def test_a_cycle_and_a_bare_folder_are_fixed_on_the_second_ask(planner_model, project, tmp_path):
    script(planner_model, BROKEN, VALID)
    env = env_for(planner_model, tmp_path)
    out = tmp_path / "plan.yaml"

    run = agentfleet("decompose", GOAL, "--repo", str(project), "-o", str(out), env=env,
                     cwd=tmp_path)

    assert run.returncode == 0, run.stdout + run.stderr
    assert [r.rule for r in planner_model.requests] == ["plan", "reask"]
    second = planner_model.requests_for("reask")[0].prompt
    assert "answer 1: tasks[db-index].depends_on: dependency cycle: db-index -> orders-api " \
           "-> db-index" in second
    assert "answer 1: tasks[orders-api].paths: 'src/api' names the folder 'src/api'" in second
    assert json.dumps(BROKEN) in second  # the previous answer, to correct
    assert "planner: 2 asks, tokens: 200 in (0 cached), 40 out" in run.stderr
    assert [t["id"] for t in yaml.safe_load(out.read_text())["tasks"]] == [
        "db-index", "orders-api", "docs"]
    no_leftovers(project, tmp_path)


def test_an_answer_still_invalid_after_two_reasks_exits_1_with_the_problems(
    planner_model, project, tmp_path
):
    script(planner_model, BROKEN, BROKEN)
    env = env_for(planner_model, tmp_path)
    out = tmp_path / "plan.yaml"

    run = agentfleet("decompose", GOAL, "--repo", str(project), "-o", str(out), env=env,
                     cwd=tmp_path)

    assert run.returncode == 1, run.stdout + run.stderr
    assert [r.rule for r in planner_model.requests] == ["plan", "reask", "reask"]
    assert "still has problems after 3 asks" in run.stderr
    assert "error: answer 3: tasks[db-index].depends_on: dependency cycle" in run.stderr
    assert "error: answer 3: tasks[orders-api].paths: 'src/api' names the folder" in run.stderr
    assert "planner: 3 asks" in run.stderr
    assert not out.exists()
    no_leftovers(project, tmp_path)


def test_a_bad_base_costs_no_tokens(planner_model, project, tmp_path):
    script(planner_model, VALID)
    run = agentfleet("decompose", GOAL, "--repo", str(project), "--base", "nope",
                     env=env_for(planner_model, tmp_path), cwd=tmp_path)
    assert run.returncode == 2
    assert "branch 'nope' does not exist" in run.stderr
    assert planner_model.requests == []


def test_plan_for_goal_gives_the_sprint_a_checked_plan_with_the_plans_own_keys(
    planner_model, project, tmp_path
):
    from agentfleet.cli import load_and_check
    from agentfleet.planner import plan_for_goal, proposal_markdown

    script(planner_model, VALID)
    env = env_for(planner_model, tmp_path)
    plan_file = tmp_path / "sprint.yaml"
    plan_file.write_text(yaml.safe_dump({
        "name": "orders", "repo": "orders", "goal": GOAL, "verify": "true",
        "limits": {"concurrency": 2}, "planner": {"model": "gpt-5.5"},
    }))
    # As if the plan named a saved agent block: its name reaches the sprint's attempts.
    checked = replace(load_and_check(plan_file), blocks=PlanBlocks(agent_block="team-codex"))

    proposal = plan_for_goal(checked, env=env, work_root=tmp_path / "work" / "planner",
                             codex_path=ROOT / "node_modules" / ".bin" / "codex")

    assert proposal.accepted and proposal.asks == 1
    assert proposal.usage.input_tokens == 100 and proposal.usage.output_tokens == 20
    sprint = proposal.checked
    assert sprint.plan.goal is None and sprint.plan.limits.concurrency == 2
    assert sprint.blocks.agent_block == "team-codex"
    assert sprint.plan.task_ids == ["db-index", "orders-api", "docs"]
    assert sprint.plan.task_verify("docs") == "true"  # the plan's keys apply to its tasks
    assert sprint.decomposition.waves == [["db-index", "docs"], ["orders-api"]]
    markdown = proposal_markdown(proposal, GOAL)
    assert "## Wave 2" in markdown and "| `orders-api` | feature | src/api/ |" in markdown
    (request,) = planner_model.requests_for("plan")
    assert request.body["model"] == "gpt-5.5"
    no_leftovers(project, tmp_path)


def test_decompose_a_plan_with_goal_keeps_its_keys_and_uses_its_planner(
    planner_model, project, tmp_path
):
    script(planner_model, VALID)
    env = env_for(planner_model, tmp_path)
    goal_plan = tmp_path / "goal.yaml"
    goal_plan.write_text(yaml.safe_dump({
        "name": "orders", "repo": "orders", "goal": GOAL, "verify": "true",
        "planner": {"model": "gpt-5.6-terra"},
    }, sort_keys=False))
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "plan.yaml"

    run = agentfleet("decompose", "--plan", str(goal_plan), "-o", str(out), env=env,
                     cwd=tmp_path)

    assert run.returncode == 0, run.stdout + run.stderr
    data = yaml.safe_load(out.read_text())
    assert {k: data[k] for k in ("name", "repo", "verify", "planner")} == {
        "name": "orders", "repo": "../orders", "verify": "true",
        "planner": {"model": "gpt-5.6-terra"}}
    assert "goal" not in data and len(data["tasks"]) == 3
    (request,) = planner_model.requests_for("plan")
    assert request.body["model"] == "gpt-5.6-terra"
    assert agentfleet("plan", str(out), env=env, cwd=tmp_path).returncode == 0
