"""`agentfleet worker` takes a run as it is scheduled, not at its next poll (flows/pickup.py).

A real server, a process pool with a small deployment, one `agentfleet worker --limit 1`
polling only every 10 minutes. Once it is listening, two runs are created at once: the
first is taken on its Scheduled event, the second as the first one's slot frees up; both
finish (their files written) long before the worker would have polled again. Then SIGTERM
stops the worker (flows/worker_stop.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.support.attempt_pool import AGENTFLEET, ROOT, Worker, flow_runs, stop_workers
from tests.support.prefect_server import PrefectServer, api
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.server]

POLL_S = 600  # the worker's own polls: none happens during the test
FLOW = '''
from pathlib import Path
from prefect import flow
from prefect.context import get_run_context


@flow
def hello() -> str:
    name = get_run_context().flow_run.name
    Path(__file__).with_name(f"ran-{name}").write_text("ok")
    return name
'''


def test_a_worker_takes_runs_as_they_are_scheduled(prefect_server: PrefectServer,
                                                  tmp_path: Path) -> None:
    pool = f"pickup-{uuid.uuid4().hex[:8]}"
    project = tmp_path / "project"
    project.mkdir()
    (project / "hello.py").write_text(FLOW)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AGENTFLEET_", "PREFECT_"))},
           **prefect_server.env(), "PREFECT_WORKER_QUERY_SECONDS": str(POLL_S),
           "PREFECT_LOGGING_LEVEL": "INFO",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    # Made through the API (the CLI's imports cost seconds): a process pool (the worker
    # fills in its default job template) and a deployment whose runs fork from the
    # worker's warm engine, as the attempt deployment's do.
    api(prefect_server.api_url, "/work_pools/", {"name": pool, "type": "process"})
    flow_id = api(prefect_server.api_url, "/flows/", {"name": "hello"})["id"]
    deployment = api(prefect_server.api_url, "/deployments/", {
        "name": f"hello-{pool}", "flow_id": flow_id, "work_pool_name": pool,
        "entrypoint": "hello.py:hello",
        "pull_steps": [{"prefect.deployments.steps.set_working_directory": {
            "directory": str(project)}}],
        "job_variables": {"command": "python -m flows.engine",
                          "env": {"PYTHONPATH": str(ROOT)}},
    })

    home = tmp_path / "worker"
    home.mkdir()
    log = home / "worker.log"
    worker = Worker("pickup", subprocess.Popen(
        [*AGENTFLEET, "worker", "--pool", pool, "--limit", "1", "--name", "pickup"],
        env={**env, "PREFECT_HOME": str(home / "prefect")}, cwd=home, stdout=log.open("w"),
        stderr=subprocess.STDOUT, start_new_session=True), home)
    try:
        wait_for(lambda: "as they are scheduled" in log.read_text(), timeout=120,
                 what=lambda: f"the worker listening: {log.read_text()[-1500:]}")
        assert worker.process.poll() is None
        names = [f"run-{k}" for k in (1, 2)]
        created = time.monotonic()
        for name in names:
            api(prefect_server.api_url, f"/deployments/{deployment['id']}/create_flow_run",
                 {"name": name})

        def done() -> bool:
            states = [r["state"]["type"] for r in flow_runs(prefect_server.api_url, names)]
            assert "FAILED" not in states and "CRASHED" not in states, log.read_text()[-3000:]
            return states == ["COMPLETED", "COMPLETED"]

        wait_for(done, timeout=120, what=lambda: f"both runs completed: {log.read_text()[-3000:]}")
        took = time.monotonic() - created
        # Told to stop (as systemd or Kubernetes would), it stops: nothing is left to run.
        os.killpg(worker.process.pid, signal.SIGTERM)
        assert worker.process.wait(timeout=30) == 0, log.read_text()[-3000:]
    finally:
        stop_workers([worker], tmp_path)
    assert took < POLL_S / 2, f"{took:.0f}s: taken at a poll, not as scheduled"
    assert sorted(p.name for p in project.glob("ran-*")) == ["ran-run-1", "ran-run-2"]
    text = log.read_text()
    assert text.count("submitted to infrastructure") == 2, text[-3000:]
    assert "Worker 'pickup' stopped!" in text, text[-3000:]
