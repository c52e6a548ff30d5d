"""`prefect.yaml` deployed to a real server, run by a process worker, as CI would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_git
from tests.e2e.conftest import ROOT

pytestmark = [pytest.mark.codex, pytest.mark.server]

PREFECT = [sys.executable, "-m", "prefect"]


def prefect(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [*PREFECT, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    output = done.stdout[-2000:] + done.stderr[-2000:]
    assert done.returncode == 0, f"prefect {' '.join(args)}: {output}"
    return done


def test_sprint_deployment_runs_on_a_process_worker(sample, sprint_env, model, tmp_path: Path):
    repo, plan = sample()
    env = {**sprint_env, "PREFECT_WORKER_QUERY_SECONDS": "1", "PWD": str(ROOT)}
    prefect("work-pool", "create", "agentfleet", "--type", "process", "--overwrite", env=env)
    prefect("--no-prompt", "deploy", "--all", env=env)
    worker = subprocess.Popen(
        [*PREFECT, "worker", "start", "--pool", "agentfleet", "--limit", "1"],
        env=env, cwd=tmp_path, stdout=open(tmp_path / "worker.log", "w"),
        stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        run = subprocess.run(
            [*PREFECT, "deployment", "run", "sprint/sprint", "--param", f"plan={plan}",
             "--watch", "--watch-timeout", "240"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
    log = (tmp_path / "worker.log").read_text()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:] + log[-3000:]
    assert "Completed" in run.stdout
    tasks = run_git(repo, "log", "--format=%(trailers:key=Agentfleet-Task,valueonly)",
                    "main..agentfleet/orders-v2").split()
    assert sorted(tasks) == sorted(
        ["db-indexes", "orders-endpoint", "validation", "auth-strict", "utils-docstrings",
         "integration-tests", "openapi-spec", "docs"]
    )
    assert json.loads(json.dumps(len(model.requests))) > 0
