"""`placement: pool` when Prefect's server goes away while an attempt runs on a worker.

The sprint dispatches and watches its attempts through the server: without it, the sprint
cannot know what became of them. It says so (not "crashed": the attempt goes on on its
worker), prints its report and exits 2 at once. Once the server is back, the next run
records the first run's end on its flow run (left Running) and lands the attempt the
worker finished meanwhile from the shared result storage: the agent does not run again.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import MakeRepo, run_git
from tests.e2e.conftest import run_agentfleet
from tests.support.attempt_pool import attempt_pool
from tests.support.prefect_server import api, own_prefect_server
from tests.support.sprint_process import sprint_process
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.server, pytest.mark.timeout(400)]

POOL = "agentfleet-attempts-gone"


def test_a_pool_sprint_whose_server_goes_away_says_so_and_its_rerun_reuses_the_attempt(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    seed = make_repo("seed")
    remote = tmp_path / "remote.git"
    run_git(tmp_path, "clone", "-q", "--bare", str(seed), str(remote))
    # The agent: marks each start (the worker sees this folder), then waits for the flag.
    signals = tmp_path / "signals"
    signals.mkdir()
    flag, runs = signals / "server-gone", signals / "agent-runs"
    agent = (f"echo run >> {runs}; while [ ! -f {flag} ]; do sleep 0.1; done; "
             "echo a > a.txt")
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({
        "name": "gone", "repo": f"file://{remote}", "placement": "pool",
        "agent": {"kind": "command"},
        "tasks": [{"id": "a", "prompt": "do a", "paths": ["a.txt"], "agent": {"run": agent}}],
    }))
    # No retry of a request to the dead server (Prefect makes five: a minute each).
    with (
        own_prefect_server(tmp_path / "own-server") as server,
        attempt_pool(server, tmp_path, POOL, ["w1"], {"PREFECT_CLIENT_MAX_RETRIES": "0"},
                     shared=[remote, signals]) as (env, _),
        sprint_process(plan, env, stderr=subprocess.PIPE) as sprint,
    ):
        wait_for(lambda: runs.exists() or sprint.poll() is not None, 120,
                 "the agent to start on the worker")
        server.halt()
        flag.touch()
        out, err = sprint.communicate(timeout=120)
        assert sprint.returncode == 2, out[-3000:] + err[-3000:]
        assert "lost sight of: cannot reach the Prefect API" in out
        assert "crashed" not in out
        assert "error: the sprint ended as above, but Prefect could not record its run" \
            in err
        # The worker finishes the attempt meanwhile: its branch reaches the remote.
        branch = "agentfleet-attempts/gone/a/1"
        wait_for(lambda: run_git(remote, "branch", "--list", branch).strip(), 60,
                 "the worker to push the attempt's branch")

        server.start_again()
        [first] = api(server.api_url, "/flow_runs/filter",
                      {"flow_runs": {"name": {"any_": ["sprint gone"]}}})
        assert first["state_type"] == "RUNNING"
        done = run_agentfleet("run", str(plan), env=env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "a#1: cached" in done.stderr and runs.read_text() == "run\n"  # no agent again
        assert run_git(remote, "show", "agentfleet/gone:a.txt") == "a\n"
        first = api(server.api_url, f"/flow_runs/{first['id']}")
        assert first["state_type"] == "FAILED"
        assert "recorded by the next run of this sprint" in first["state"]["message"]
