"""Attempts on many workers: a `placement: pool` sprint on one worker against three.

Nine tasks (``command`` agents that take ``delay_s`` each, standing for a model answering
after 5 s) on a bare repository as the remote, with one result storage folder standing for
a bucket. Baseline: one process worker taking one run at a time (``--limit 1``) and the
sprint at ``limits.concurrency: 1``. agentfleet: three workers, each from its own folder
with its own work dir, at ``--limit 1`` each, the sprint at concurrency 3. Goal: a speed-up
of at least 2.7 (ratio ≤ 0.37). The fixed cost of a flow run on a worker (a new Python
process, Prefect's imports, the fetch) is part of both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from bench.common import PROJECT_ROOT, Goal, Row, commit_all, git, init_repo, say
from bench.sprints import Context, agentfleet_env, run_agentfleet, write_plan

ROWS = ("pool-speedup",)
FULL = (9, 5.0)
SMOKE = (3, 0.1)
POOL = "bench-attempts"
PREFECT = [sys.executable, "-m", "prefect"]


def _prefect(env: dict[str, str], *args: str) -> None:
    done = subprocess.run([*PREFECT, *args], env=env, cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"prefect {' '.join(args)}: {done.stdout[-1500:]}{done.stderr[-1500:]}")


def _deploy(ctx: Context, work: Path) -> None:
    env = {**agentfleet_env(ctx, work), **ctx.prefect().env(), "PWD": str(PROJECT_ROOT)}
    _prefect(env, "work-pool", "create", POOL, "--type", "process", "--overwrite")
    config = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    config["deployments"] = [d for d in config["deployments"] if d["name"] == "attempt"]
    config["deployments"][0]["work_pool"]["name"] = POOL
    pinned = work / "prefect-attempt.yaml"
    pinned.write_text(yaml.safe_dump(config))
    _prefect(env, "--no-prompt", "deploy", "--all", "--prefect-file", str(pinned))


def _run(ctx: Context, work: Path, remote: Path, name: str, workers: int, tasks: int,
         delay: float) -> float:
    run_dir = work / name
    run_dir.mkdir(parents=True)
    env = {**agentfleet_env(ctx, run_dir), **ctx.prefect().env(),
           "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(run_dir / "bucket"),
           "PREFECT_WORKER_QUERY_SECONDS": "1", "AGENTFLEET_ATTEMPT_POOL": POOL}
    started: list[subprocess.Popen] = []
    try:
        for i in range(1, workers + 1):
            home = run_dir / f"worker-{i}"
            home.mkdir()
            started.append(subprocess.Popen(
                [*PREFECT, "worker", "start", "--pool", POOL, "--limit", "1",
                 "--name", f"{name}-{i}"],
                env={**env, "AGENTFLEET_WORK_DIR": str(home / "work"), "PWD": str(home)},
                cwd=home, stdout=(home / "worker.log").open("w"), stderr=subprocess.STDOUT,
                start_new_session=True,
            ))
        plan = write_plan(run_dir / "plan.yaml", {
            "name": name, "repo": f"file://{remote}", "placement": "pool",
            "limits": {"concurrency": workers}, "agent": {"kind": "command"},
            "tasks": [{"id": f"t{k}", "prompt": f"task {k}", "paths": [f"t{k}.txt"],
                       "agent": {"run": f"sleep {delay}; echo {k} > t{k}.txt"}}
                      for k in range(1, tasks + 1)],
        })
        say(f"pool: {tasks} tasks on {workers} worker(s)")
        return run_agentfleet(ctx, plan, env).seconds
    finally:
        for proc in started:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in started:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def measure(ctx: Context, work: Path) -> list[Row]:
    """Nine tasks on one worker, then on three; the time ratio."""
    tasks, delay = SMOKE if ctx.smoke else FULL
    ctx.warm_server()
    _deploy(ctx, work)
    seed = init_repo(work / "seed")
    (seed / "README.md").write_text("pool bench\n")
    commit_all(seed, "seed")
    remote = work / "remote.git"
    git(work, "clone", "-q", "--bare", str(seed), str(remote))
    one = _run(ctx, work, remote, "pool-one", 1, tasks, delay)
    three = _run(ctx, work, remote, "pool-three", 3, tasks, delay)
    return [Row(
        "pool-speedup", f"{tasks} tasks of {delay:g} s, placement: pool", "one worker",
        one, three, three / one, ratio_of="three workers / one worker",
        notes=f"speed-up {one / three:.2f}x (command agents stand for the model's {delay:g} s)",
    ).judge(Goal("≤ 0.37 (speed-up ≥ 2.7)", lambda r: r.ratio <= 0.37))]
