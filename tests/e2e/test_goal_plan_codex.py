"""A plan with ``goal``: ``agentfleet run`` runs the planner (the real Codex CLI against the
scripted model), then the proposed tasks; with ``review_plan`` a person approves or
rejects the proposal first.

The approval goes through ``agentfleet review`` (which finds the run by the note the
paused run leaves in the work dir); the rejection through the Prefect API.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prefect.flow_runs import resume_flow_run
from prefect.settings import PREFECT_API_URL, temporary_settings

from agentfleet.testing import Rule, Script, ScriptedModelServer
from tests.conftest import run_git
from tests.e2e.conftest import AGENTFLEET, ROOT

pytestmark = pytest.mark.codex

GOAL = "Write one note per part, the second after the first"
ANSWER = {"tasks": [
    {"id": "alpha", "prompt": "Write alpha.txt.", "paths": ["alpha.txt"], "depends_on": None,
     "stage": "foundation", "verify": None, "why": "its own file"},
    {"id": "beta", "prompt": "Write beta.txt.", "paths": ["beta.txt"], "depends_on": ["alpha"],
     "stage": None, "verify": "test -f alpha.txt", "why": "needs alpha's note"},
]}


@pytest.fixture
def planner_model() -> Iterator[ScriptedModelServer]:
    script = Script(rules=[Rule(name="plan", match="GOAL:", responses=[
        {"steps": [{"do": "message", "text": json.dumps(ANSWER)}]}])])
    with ScriptedModelServer(script) as server:
        yield server


def goal_plan(tmp_path: Path, make_repo, *, review_plan: bool) -> Path:
    make_repo("notes", files={"README.md": "# notes\n"})
    plan = tmp_path / "goal.yaml"
    plan.write_text(yaml.safe_dump({
        "name": "notes", "repo": "notes", "goal": GOAL, "review_plan": review_plan,
        "agent": {"kind": "command", "run": 'echo "$AGENTFLEET_TASK" > "$AGENTFLEET_TASK.txt"'},
        "planner": {"kind": "codex"},
    }, sort_keys=False))
    return plan


def base_env(model: ScriptedModelServer, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTFLEET_", "PREFECT_"))}
    env.update(model.agent_env(model.write_codex_home(tmp_path / "codex-home")),
               AGENTFLEET_WORK_DIR=str(tmp_path / "work"), GIT_CONFIG_GLOBAL=os.devnull,
               GIT_CONFIG_NOSYSTEM="1", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(tmp_path / "results"))
    return env


def start_run(plan: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([AGENTFLEET, "run", str(plan)], env=env, cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)


def wait_for_pause(tmp_path: Path, run: subprocess.Popen[str]) -> dict[str, str]:
    """The run's note of its review pause (written when it pauses)."""
    note = tmp_path / "work" / "reviews" / "notes.json"
    deadline = time.monotonic() + 180
    while not note.exists():
        if run.poll() is not None or time.monotonic() > deadline:
            out, err = run.communicate(timeout=30)
            raise AssertionError(f"no review pause: {out}\n{err}")
        time.sleep(0.2)
    return json.loads(note.read_text())


def test_a_goal_plan_runs_the_planner_then_the_tasks_once_approved(
    planner_model, make_repo, tmp_path, prefect_server
):
    plan = goal_plan(tmp_path, make_repo, review_plan=True)
    env = {**base_env(planner_model, tmp_path), **prefect_server.env(),
           "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(tmp_path / "results")}
    run = start_run(plan, env)
    try:
        wait_for_pause(tmp_path, run)
        approved = subprocess.run([AGENTFLEET, "review", "notes", "--answer", "plan=approve"],
                                  env=env, cwd=ROOT, text=True, capture_output=True,
                                  timeout=120, stdin=subprocess.DEVNULL)
        out, err = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            run.kill()
    # It lists the proposal (the form's description), then answers.
    assert "# Proposed plan" in approved.stdout and "## Wave 2" in approved.stdout
    assert "| `beta` | feature | beta.txt |" in approved.stdout
    assert "Choices: `approve`, `reject`" in approved.stdout
    assert approved.returncode == 0 and "answered: plan=approve" in approved.stdout, approved
    assert run.returncode == 0, out + err
    assert run_git(tmp_path / "notes", "show", "agentfleet/notes:alpha.txt") == "alpha\n"
    assert run_git(tmp_path / "notes", "show", "agentfleet/notes:beta.txt") == "beta\n"
    assert "plan: approve by review" in out + err
    assert "2/2 tasks applied" in out and "120 tokens" in out  # the planner's count
    (request,) = planner_model.requests_for("plan")
    assert GOAL in request.prompt


def test_a_rejected_proposal_runs_nothing_and_exits_1(
    planner_model, make_repo, tmp_path, prefect_server
):
    plan = goal_plan(tmp_path, make_repo, review_plan=True)
    env = {**base_env(planner_model, tmp_path), **prefect_server.env(),
           "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(tmp_path / "results")}
    run = start_run(plan, env)
    try:
        note = wait_for_pause(tmp_path, run)
        assert note["api_url"] == prefect_server.api_url
        with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
            resume_flow_run(note["flow_run_id"], run_input={"plan": "reject"})
        out, err = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 1, out + err
    assert "error: sprint notes: the proposed plan was not run (rejected in review); no task " \
           "ran" in err
    refs = run_git(tmp_path / "notes", "for-each-ref", "--format=%(refname)").split()
    assert refs == ["refs/heads/main"]  # no attempt, no target


def test_ctrl_c_while_the_planner_thinks_leaves_no_codex_behind(
    make_repo, tmp_path, prefect_server
):
    import signal

    slow = Script(rules=[Rule(name="plan", match="GOAL:", responses=[
        {"delay_s": 120, "steps": [{"do": "message", "text": json.dumps(ANSWER)}]}])])
    with ScriptedModelServer(slow) as model:
        plan = goal_plan(tmp_path, make_repo, review_plan=False)
        env = {**base_env(model, tmp_path), **prefect_server.env(),
               "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(tmp_path / "results")}
        run = start_run(plan, env)
        work = str(tmp_path / "work")

        def planners() -> list[int]:
            found = []
            for proc in Path("/proc").iterdir():
                try:
                    if proc.name.isdigit() and work in (proc / "cmdline").read_text():
                        found.append(int(proc.name))
                except OSError:
                    pass
            return found

        try:
            deadline = time.monotonic() + 120
            while not model.requests_for("plan"):
                assert run.poll() is None and time.monotonic() < deadline, run.communicate()
                time.sleep(0.2)
            assert planners()  # Codex is waiting for the model's answer
            run.send_signal(signal.SIGINT)
            out, err = run.communicate(timeout=60)
        finally:
            if run.poll() is None:
                run.kill()
    assert run.returncode == 130, out + err
    assert planners() == []
    assert run_git(tmp_path / "notes", "worktree", "list", "--porcelain").count("worktree ") == 1
