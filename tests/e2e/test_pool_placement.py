"""`placement: pool`: a sprint's attempts as flow runs of the `attempt` deployment on workers.

The issue's proof on one machine: a real `prefect server`, three process workers each
started from its own folder (its own work dir, Codex home and temp dir), a bare
repository as the remote and one result storage folder standing for a bucket; of the
test's folder each worker sees only its own folder, the remote and the bucket, not the
others' folders nor the sprint's (`tests.support.walls`). A sprint of nine Codex tasks
(the scripted model) runs in `agentfleet run` with attempts on all three workers; one
worker is killed with -9 while its agent waits on the model: the agent stops within
seconds and another worker finishes the attempt; the target on the remote holds all
nine; a rerun reuses every result (no model request). Then a sprint is stopped twice,
with Ctrl-C on `agentfleet run` and, deployed and run by a process worker, cancelled as
the UI's button does it: each time its attempt's run is cancelled and the worker stops
the agent.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from agentfleet.testing import Script, ScriptedModelServer
from tests.conftest import MakeRepo, run_git
from tests.e2e.conftest import AGENTFLEET, ROOT, run_agentfleet
from tests.support.attempt_pool import PREFECT, Worker, attempt_pool, deploy, flow_runs
from tests.support.prefect_server import PrefectServer, api
from tests.support.waiting import cmdline, processes_under, wait_for

# 55 s on this machine at its fastest, 182 s in CI and 213 s with the CPU halved: the
# default 300 s is too close.
pytestmark = [pytest.mark.server, pytest.mark.codex, pytest.mark.timeout(600)]

POOL = "agentfleet-attempts-e2e"
TASKS = [f"t{k}" for k in range(1, 10)]
VICTIM = "t2"  # its first model request never gets an answer: its worker is killed then
WORKERS = ("w1", "w2", "w3")


def _script() -> Script:
    """Each task: a patch adding ``<task>.txt``, then the final message."""
    return Script.model_validate({"rules": [
        {"name": t, "match": f"[{t}]",
         "faults": [{"kind": "silent"}] if t == VICTIM else [],
         "responses": [
             {"delay_s": 0.2, "steps": [{"do": "patch", "patch": (
                 f"*** Begin Patch\n*** Add File: {t}.txt\n+{t}\n*** End Patch\n")}]},
             {"steps": [{"do": "message", "text": f"Added {t}.txt."}]},
         ]}
        for t in TASKS
    ]})


def _took(worker: Worker, run: str) -> bool:
    return f"Flow run '{run}' submitted to infrastructure" in worker.text()


def test_a_pool_sprint_spreads_over_three_workers_survives_a_killed_one_and_reruns_cached(
    make_repo: MakeRepo, tmp_path: Path, prefect_server: PrefectServer
) -> None:
    seed = make_repo("seed")
    remote = tmp_path / "remote.git"
    run_git(tmp_path, "clone", "-q", "--bare", str(seed), str(remote))
    with ScriptedModelServer(_script()) as model, attempt_pool(
        prefect_server, tmp_path, POOL, list(WORKERS),
        # The sprint's machine names the workers' Codex provider (its metering proxy).
        model.agent_env(model.write_codex_home(tmp_path / "codex-home")),
        # Each worker its own Codex home; the bucket and the remote are all they share, and
        # all they see of tmp_path besides their own folder.
        own=lambda home: model.agent_env(model.write_codex_home(home / "codex-home")),
        shared=[remote],
    ) as (env, started):
        workers = {w.name: w for w in started}
        for w in started:
            wait_for(lambda w=w: f"Worker '{w.name}' started" in w.text(), 90,
                     f"worker {w.name} to start")
        _walled_in(tmp_path, workers)
        victim = _nine_tasks(tmp_path, remote, env, model, workers, prefect_server.api_url)
        survivors = {n: w for n, w in workers.items() if n != victim}
        _ctrl_c_cancels(tmp_path, remote, env, survivors, prefect_server.api_url)
        _cancelled_in_prefect(tmp_path, remote, env, survivors, prefect_server.api_url)


def _walled_in(tmp_path: Path, workers: dict[str, Worker]) -> None:
    """What a worker sees of tmp_path (as do its warm engine, its runs and their agents,
    its children): its own folder, the remote and the bucket, not the other workers'."""
    for name, worker in workers.items():
        seen = sorted(os.listdir(f"/proc/{worker.process.pid}/root{tmp_path}"))
        assert seen == sorted([name, "bucket", "remote.git"]), (name, seen)
    assert len(os.listdir(tmp_path)) > 3 + len(workers)  # the test's folder holds more


def _nine_tasks(tmp_path: Path, remote: Path, env: dict[str, str], model: ScriptedModelServer,
                workers: dict[str, Worker], api_url: str) -> str:
    """The sprint of nine, a worker killed in it, and its rerun; the killed worker's name."""
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({
        "name": "spread", "repo": f"file://{remote}", "placement": "pool",
        "limits": {"concurrency": 3}, "retries": 1,
        "tasks": [{"id": t, "prompt": f"[{t}] add {t}.txt", "paths": [f"{t}.txt"],
                   # t9 starts from a commit holding t1's result, made on the sprint's
                   # machine: its worker gets it from the remote (a start ref).
                   **({"depends_on": ["t1"]} if t == "t9" else {})}
                  for t in TASKS],
    }))
    sprint_env = {**env, "PWD": str(tmp_path)}
    sprint = subprocess.Popen([AGENTFLEET, "run", str(plan)], env=sprint_env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # The victim's agent waits on the model: kill its worker outright.
        wait_for(lambda: model.requests_for(VICTIM), 120, f"{VICTIM}'s agent to ask the model")
        victim = next(n for n, w in workers.items() if _took(w, f"{VICTIM}#1"))
        victim_home = tmp_path / victim
        assert processes_under(victim_home / "work"), "the agent runs in the worker's work dir"
        killed_at = time.monotonic()
        os.kill(workers[victim].process.pid, signal.SIGKILL)
        # Its flow run notices, stops its agent (Codex in its own session) and ends.
        wait_for(lambda: not processes_under(victim_home), 30,
                 lambda: f"the killed worker's processes to end: {processes_under(victim_home)}")
        stopped_s = time.monotonic() - killed_at
        out, _ = sprint.communicate(timeout=240)
    finally:
        if sprint.poll() is None:
            sprint.kill()
    assert sprint.returncode == 0, out[-3000:]
    assert stopped_s < 20, f"the killed worker's agent took {stopped_s:.1f}s to stop"
    # The target on the remote holds all nine.
    assert set(run_git(remote, "ls-tree", "--name-only", "agentfleet/spread").split()) == {
        "README.md", *(f"{t}.txt" for t in TASKS)}
    # Attempts ran on all three workers (each took at least one run, from its log) ...
    taken = {n: {t for t in TASKS if _took(w, f"{t}#1")} for n, w in workers.items()}
    assert all(taken.values()), taken
    assert set().union(*taken.values()) == set(TASKS)
    # ... the killed one's attempt was run again and finished on another.
    runs = flow_runs(api_url, [f"{VICTIM}#1"])
    assert sorted(r["state"]["type"] for r in runs) == ["COMPLETED", "CRASHED"], runs
    assert any(VICTIM in tasks for n, tasks in taken.items() if n != victim)
    assert "running it again" in out, out[-3000:]
    # The sprint's table names the worker (and host) whose run finished each task.
    host = socket.gethostname()
    rows = {line.split()[0]: line for line in out.splitlines()
            if line.split() and line.split()[0] in TASKS and line.endswith(f"({host})")}
    finished_by = {t: rows[t].removesuffix(f" ({host})").split()[-1] for t in TASKS}
    assert all(t in taken[finished_by[t]] for t in TASKS), finished_by
    assert finished_by[VICTIM] != victim, finished_by
    assert "t1.txt" in run_git(remote, "ls-tree", "--name-only", "agentfleet-attempts/spread/t9/1")
    # There, each agent held a slot of the pool every sprint on the server shares.
    held = "its agent holds a slot of the shared pool agentfleet-agents while it runs"
    assert all(held in w.text() for w in workers.values())
    # Every worker worked in its own work dir; the sprint's machine ran no agent.
    for name in workers:
        assert (tmp_path / name / "work" / "remotes").is_dir()
    assert not any((tmp_path / "sprint-work").rglob("t*.txt"))
    # The start refs the sprint pushed for the workers are gone again.
    assert not run_git(remote, "for-each-ref", "refs/agentfleet")
    model.assert_complete()  # the victim's unanswered request included

    # The same nine again (onto another target): every result comes from the shared
    # storage, whichever worker computed it, looked up on the sprint's side: no attempt
    # flow run starts, no agent asks the model.
    asked = len(model.requests)
    attempt_runs = len(flow_runs(api_url, [f"{t}#1" for t in TASKS]))
    # One branch gone from the remote: restored from the cached result's patch, pushed.
    run_git(remote, "branch", "-D", "agentfleet-attempts/spread/t3/1")
    plan.write_text(yaml.safe_dump({**yaml.safe_load(plan.read_text()), "target": "again"}))
    done = run_agentfleet("run", str(plan), env=sprint_env)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert len(model.requests) == asked
    assert len(flow_runs(api_url, [f"{t}#1" for t in TASKS])) == attempt_runs
    assert set(run_git(remote, "ls-tree", "--name-only", "again").split()) == {
        "README.md", *(f"{t}.txt" for t in TASKS)}
    assert out.count("cached (succeeded") == len(TASKS), out[-3000:]
    assert not any("cached (succeeded" in w.text() for w in workers.values())
    assert "t3.txt" in run_git(remote, "ls-tree", "--name-only", "agentfleet-attempts/spread/t3/1")
    return victim


def _sleeper(tmp_path: Path, remote: Path, name: str, task: str) -> Path:
    """A pool plan ``name`` of one task whose agent sleeps for five minutes."""
    plan = tmp_path / f"{name}.yaml"
    plan.write_text(yaml.safe_dump({
        "name": name, "repo": f"file://{remote}", "placement": "pool",
        "agent": {"kind": "command"},
        "tasks": [{"id": task, "prompt": f"do {task}", "paths": [f"{task}.txt"],
                   "agent": {"run": "sleep 300"}}],
    }))
    return plan


def _sleeping_on(tmp_path: Path, workers: dict[str, Worker]) -> str | None:
    """The worker whose work dir the sleeping agent runs in."""
    return next((n for n in workers if any(
        "sleep 300" in cmdline(p) for p in processes_under(tmp_path / n / "work"))), None)


def _ctrl_c_cancels(tmp_path: Path, remote: Path, env: dict[str, str],
                    workers: dict[str, Worker], api_url: str) -> None:
    """Ctrl-C on the sprint cancels its attempt's flow run; the worker stops the agent."""
    plan = _sleeper(tmp_path, remote, "stop", "delta")
    sprint = subprocess.Popen([AGENTFLEET, "run", str(plan)], env={**env, "PWD": str(tmp_path)},
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    where = wait_for(lambda: _sleeping_on(tmp_path, workers), 120, "the agent to start")
    assert _took(workers[where], "delta#1")
    sprint.send_signal(signal.SIGINT)
    out, _ = sprint.communicate(timeout=180)
    assert sprint.returncode == 130, out[-3000:]
    wait_for(lambda: flow_runs(api_url, ["delta#1"])[0]["state"]["type"] == "CANCELLED", 90,
             "the attempt's flow run to be cancelled")
    wait_for(lambda: not processes_under(tmp_path / where / "work"), 60, "the agent to stop")


def _cancelled_in_prefect(tmp_path: Path, remote: Path, env: dict[str, str],
                          workers: dict[str, Worker], api_url: str) -> None:
    """The sprint deployed and run by a process worker, cancelled as the UI's button does
    it: its attempt's flow run is cancelled on the pool and that worker stops the agent."""
    deploy(env, tmp_path, "sprints", "sprint")
    log = tmp_path / "sprint-worker.log"
    worker = subprocess.Popen([*PREFECT, "worker", "start", "--pool", "sprints"], env=env,
                              cwd=tmp_path, stdout=log.open("w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        plan = _sleeper(tmp_path, remote, "halt", "omega")
        # Through the API, as the UI does (the CLI's imports cost seconds of the suite).
        deployment = api(api_url, "/deployments/name/sprint/sprint")
        run = api(api_url, f"/deployments/{deployment['id']}/create_flow_run",
                  {"parameters": {"plan_path": str(plan)}})
        where = wait_for(lambda: _sleeping_on(tmp_path, workers), 150,
                         lambda: f"the agent to start: {log.read_text()[-2000:]}")
        api(api_url, f"/flow_runs/{run['id']}/set_state",
            {"state": {"type": "CANCELLING", "name": "Cancelling"}, "force": True})
        wait_for(lambda: [r["state"]["type"] for r in flow_runs(api_url, ["sprint halt"])]
                 == ["CANCELLED"], 90, "the sprint's flow run to be cancelled")
        wait_for(lambda: flow_runs(api_url, ["omega#1"])[0]["state"]["type"] == "CANCELLED",
                 90, "its attempt's flow run to be cancelled")
        wait_for(lambda: not processes_under(tmp_path / where / "work"), 60, "the agent to stop")
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
