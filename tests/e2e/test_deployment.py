"""`prefect.yaml` deployed to a real server and run by a process worker, as CI would."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agentfleet.sample import build_sample_repo, sample_plan, write_plan
from tests.conftest import run_git
from tests.e2e.conftest import ROOT
from tests.e2e.test_sprint import APPLY_ORDER
from tests.support.prefect_server import api
from tests.support.waiting import processes_under, wait_for

pytestmark = [pytest.mark.codex, pytest.mark.server]

PREFECT = [sys.executable, "-m", "prefect"]


def prefect(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [*PREFECT, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    output = done.stdout[-2000:] + done.stderr[-2000:]
    assert done.returncode == 0, f"prefect {' '.join(args)}: {output}"
    return done


def flow_run_state(api_url: str, flow_run_id: str) -> str:
    return api(api_url, f"/flow_runs/{flow_run_id}")["state"]["type"]


def test_sprint_deployment_runs_on_a_process_worker_and_cancels_cleanly(
    sample, sprint_env, model, tmp_path: Path, prefect_server
):
    repo, plan = sample()
    env = {**sprint_env, "PREFECT_WORKER_QUERY_SECONDS": "1", "PWD": str(ROOT)}
    prefect("work-pool", "create", "agentfleet", "--type", "process", "--overwrite", env=env)
    prefect("--no-prompt", "deploy", "--all", env=env)
    worker_log = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [*PREFECT, "worker", "start", "--pool", "agentfleet", "--limit", "2"],
        env=env, cwd=tmp_path, stdout=worker_log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        # As CI does it: run the deployment and watch it to the end.
        run = prefect("deployment", "run", "sprint/sprint", "--param", f"plan_path={plan}",
                      "--watch", "--watch-timeout", "240", env={**env, "PWD": str(tmp_path)})
        assert "Completed" in run.stdout
        applied = run_git(repo, "log", "--format=%(trailers:key=Agentfleet-Task,valueonly)",
                          "main..agentfleet/orders-v2").split()
        assert sorted(applied) == sorted(APPLY_ORDER)

        # Cancelling a run (the UI's button) stops every agent and removes their worktrees.
        second = build_sample_repo(tmp_path / "second")
        second_plan = write_plan(tmp_path / "second.yaml", sample_plan(repo=str(second)))
        script = model.script.model_copy(deep=True)
        next(r for r in script.rules if r.name == "validation").responses[0].delay_s = 600
        model.set_script(script)
        seen = len(model.requests_for("validation"))
        # The second repository has the same trees and prompts, so its attempts would come
        # from the cache (the key is what decides a result, not where); run them afresh.
        started = prefect("deployment", "run", "sprint/sprint",
                          "--param", f"plan_path={second_plan}", "--param", "no_cache=true",
                          env=env)
        flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", started.stdout).group(1)
        wait_for(lambda: len(model.requests_for("validation")) > seen, 120,
                 "the slow ticket to start")
        work = Path(env["AGENTFLEET_WORK_DIR"])
        assert processes_under(work)
        prefect("flow-run", "cancel", flow_run_id, env=env)
        wait_for(lambda: flow_run_state(prefect_server.api_url, flow_run_id) == "CANCELLED",
                 90, "the flow run to be cancelled")
        wait_for(lambda: not processes_under(work), 30, "no agent process left")
        assert run_git(second, "worktree", "list", "--porcelain").count("worktree ") == 1
        assert "validation/1" not in run_git(second, "branch", "--list", "agentfleet-attempts/*")
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)


def test_a_failed_sprint_on_a_worker_ends_failed_with_the_summary_and_no_engine_error(
    make_repo, sprint_env, tmp_path: Path, prefect_server
):
    repo = make_repo()
    plan = tmp_path / "failing.yaml"
    plan.write_text(yaml.safe_dump({
        "name": "deployed-failure", "repo": str(repo),
        "tasks": [
            {"id": "good", "prompt": "good", "paths": ["good.txt"],
             "agent": {"kind": "command", "run": "echo ok > good.txt"}},
            {"id": "bad", "prompt": "bad", "paths": ["bad.txt"],
             "agent": {"kind": "command", "run": "echo cannot >&2; exit 7"}},
        ],
    }))
    env = {**sprint_env, "PREFECT_WORKER_QUERY_SECONDS": "1", "PWD": str(ROOT)}
    prefect("work-pool", "create", "agentfleet-failing", "--type", "process", "--overwrite",
            env=env)
    deploy = ROOT / "prefect.yaml"
    config = yaml.safe_load(deploy.read_text())
    config["deployments"] = [d for d in config["deployments"] if d["name"] == "sprint"]
    config["deployments"][0]["work_pool"]["name"] = "agentfleet-failing"
    config["deployments"][0]["name"] = "sprint-failing"
    pinned = tmp_path / "prefect-failing.yaml"
    pinned.write_text(yaml.safe_dump(config))
    prefect("--no-prompt", "deploy", "--all", "--prefect-file", str(pinned), env=env)
    worker_log = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [*PREFECT, "worker", "start", "--pool", "agentfleet-failing", "--limit", "1"],
        env=env, cwd=tmp_path, stdout=worker_log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        run = subprocess.run(
            [*PREFECT, "deployment", "run", "sprint/sprint-failing", "--param", f"plan_path={plan}",
             "--watch", "--watch-timeout", "240"],
            env={**env, "PWD": str(tmp_path)}, cwd=ROOT, capture_output=True, text=True,
            timeout=300, stdin=subprocess.DEVNULL,
        )
        flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", run.stdout).group(1)
        state = api(prefect_server.api_url, f"/flow_runs/{flow_run_id}")["state"]
        assert state["type"] == "FAILED", run.stdout[-2000:]
        assert state["message"].startswith(
            "sprint deployed-failure: 1/2 tasks applied (not applied: bad failed), "
        ), state["message"]
        # The worker's log holds the run's log; Prefect no longer chokes on the state.
        wait_for(lambda: "deployed-failure: 1/2 tasks applied" in worker_log.read_text(), 30,
                 "the run's summary in the worker's log")
        log = worker_log.read_text()
        assert "Unexpected result for failed state" not in log, log[-3000:]
        assert "cannot be resolved into an exception" not in log
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
