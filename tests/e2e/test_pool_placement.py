"""`placement: pool`: a sprint's attempts as flow runs of the `attempt` deployment on workers.

A real `prefect server`, two process workers each started from its own folder with its
own work dir, a bare repository as the remote and one result storage folder standing
for a bucket. The sprint runs in `agentfleet run`; it lands on the remote's target.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import MakeRepo, run_git
from tests.e2e.conftest import AGENTFLEET, ROOT, run_agentfleet
from tests.support.attempt_pool import attempt_pool
from tests.support.attempt_pool import flow_runs as _flow_runs
from tests.support.prefect_server import PrefectServer
from tests.support.waiting import processes_under, wait_for

pytestmark = [pytest.mark.server]

POOL = "agentfleet-attempts-e2e"


def test_a_pool_sprint_runs_its_attempts_on_the_workers_and_lands_on_the_remote(
    make_repo: MakeRepo, tmp_path: Path, prefect_server: PrefectServer
) -> None:
    seed = make_repo("seed")
    remote = tmp_path / "remote.git"
    run_git(tmp_path, "clone", "-q", "--bare", str(seed), str(remote))
    with attempt_pool(prefect_server, tmp_path, POOL, ["w1", "w2"]) as (env, pool_workers):
        workers = [(w.process, w.log) for w in pool_workers]
        plan = tmp_path / "plan.yaml"
        plan.write_text(yaml.safe_dump({
            "name": "spread", "repo": f"file://{remote}", "placement": "pool",
            "agent": {"kind": "command"},
            "tasks": [
                {"id": t, "prompt": f"do {t}", "paths": [f"{t}.txt"],
                 # Long enough that one worker (limit 1) cannot take both.
                 "agent": {"run": f"sleep 2; echo {t} > {t}.txt"}}
                for t in ("alpha", "beta")
            ] + [
                # Starts from a commit holding alpha's result, made on the sprint's machine:
                # the worker gets it from the remote (a start ref).
                {"id": "after", "prompt": "after alpha", "paths": ["after.txt"],
                 "depends_on": ["alpha"], "agent": {"run": "cp alpha.txt after.txt"}},
            ],
        }))
        done = run_agentfleet("run", str(plan), env={**env, "PWD": str(tmp_path)})
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert set(run_git(remote, "ls-tree", "--name-only", "agentfleet/spread").split()) == {
            "README.md", "alpha.txt", "beta.txt", "after.txt"}
        assert run_git(remote, "show", "agentfleet/spread:after.txt") == "alpha\n"
        # Each attempt ran on a worker, as a subflow run of the sprint.
        runs = _flow_runs(prefect_server.api_url, ["alpha#1", "beta#1"])
        assert {r["name"] for r in runs} == {"alpha#1", "beta#1"}
        assert all(r["parent_task_run_id"] and r["state"]["type"] == "COMPLETED" for r in runs)
        # One attempt on each worker (each takes one run at a time), seen in their logs.
        taken = [{t for t in ("alpha#1", "beta#1")
                  if f"Flow run '{t}' submitted to infrastructure" in log.read_text()}
                 for _, log in workers]
        assert sorted(map(len, taken)) == [1, 1] and set.union(*taken) == {"alpha#1", "beta#1"}
        # There, each agent held a slot of the pool every sprint on the server shares.
        held = "its agent holds a slot of the shared pool agentfleet-agents while it runs"
        assert all(held in log.read_text() for _, log in workers)
        # Every worker worked in its own work dir; the sprint's machine ran no agent.
        for name in ("w1", "w2"):
            assert (tmp_path / name / "work" / "remotes").is_dir()
        assert not (tmp_path / "sprint-work" / "worktrees").exists() or not any(
            (tmp_path / "sprint-work" / "worktrees").rglob("*.txt"))
        # The start refs the sprint pushed for the workers are gone again.
        assert not run_git(remote, "for-each-ref", "refs/agentfleet")

        # The same attempts again (onto another target): every result comes from the shared
        # storage, whichever worker computed it; no agent runs.
        plan.write_text(yaml.safe_dump({**yaml.safe_load(plan.read_text()), "target": "again"}))
        before = sum(log.read_text().count("cached (succeeded") for _, log in workers)
        done = run_agentfleet("run", str(plan), env={**env, "PWD": str(tmp_path)})
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert sum(log.read_text().count("cached (succeeded") for _, log in workers) \
            == before + 3
        assert set(run_git(remote, "ls-tree", "--name-only", "again").split()) == {
            "README.md", "alpha.txt", "beta.txt", "after.txt"}

        # A worker killed mid-attempt: its flow run crashes, its agent stops, and the
        # attempt runs again on the other worker.
        marker = tmp_path / "first-try"
        plan.write_text(yaml.safe_dump({
            "name": "crash", "repo": f"file://{remote}", "placement": "pool",
            "agent": {"kind": "command"}, "retries": 1,
            "tasks": [{"id": "gamma", "prompt": "do gamma", "paths": ["gamma.txt"],
                       "agent": {"run": f"if [ -e {marker} ]; then echo g > gamma.txt; "
                                        f"else touch {marker}; sleep 300; fi"}}],
        }))
        # A worker silent for 8 s is taken for gone (default 30 s).
        sprint_env = {**env, "PWD": str(tmp_path), "AGENTFLEET_ATTEMPT_STALE_S": "8"}
        sprint = subprocess.Popen([AGENTFLEET, "run", str(plan)], env=sprint_env,
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
        wait_for(marker.exists, 120, "the first try's agent to start")
        victim = next(i for i, (_, log) in enumerate(workers)
                      if "Flow run 'gamma#1' submitted" in log.read_text())
        os.killpg(workers[victim][0].pid, signal.SIGTERM)
        out, _ = sprint.communicate(timeout=240)
        assert sprint.returncode == 0, out[-3000:]
        assert run_git(remote, "show", "agentfleet/crash:gamma.txt") == "g\n"
        assert "has not beaten" in out and "running it again" in out, out[-3000:]
        survivor = workers[1 - victim][1].read_text()
        assert "Flow run 'gamma#1' submitted" in survivor
        runs = _flow_runs(prefect_server.api_url, ["gamma#1"])
        assert sorted(r["state"]["type"] for r in runs) == ["COMPLETED", "CRASHED"]

        # Ctrl-C on the sprint cancels its attempt's flow run; the worker stops the agent.
        started = tmp_path / "delta-started"
        plan.write_text(yaml.safe_dump({
            "name": "stop", "repo": f"file://{remote}", "placement": "pool",
            "agent": {"kind": "command"},
            "tasks": [{"id": "delta", "prompt": "do delta", "paths": ["delta.txt"],
                       "agent": {"run": f"touch {started}; sleep 300"}}],
        }))
        sprint = subprocess.Popen([AGENTFLEET, "run", str(plan)], env=sprint_env, cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_for(started.exists, 120, "the agent to start")
        survivor_work = tmp_path / ("w1", "w2")[1 - victim] / "work"
        assert processes_under(survivor_work)
        sprint.send_signal(signal.SIGINT)
        out, _ = sprint.communicate(timeout=180)
        assert sprint.returncode == 130, out[-3000:]
        wait_for(lambda: _flow_runs(prefect_server.api_url, ["delta#1"])[0]["state"]["type"]
                 == "CANCELLED", 90, "the attempt's flow run to be cancelled")
        wait_for(lambda: not processes_under(survivor_work), 60, "the agent to stop")
