"""Attempts on many workers: a `placement: pool` sprint on one worker against three.

Nine Codex tasks against the scripted model, which answers each task's first request
(a patch) after ``delay_s`` and its second (the final message) at once, on a bare
repository as the remote with one result storage folder standing for a bucket.
Baseline: one process worker taking one run at a time (``--limit 1``) and the sprint at
``limits.concurrency: 1``. agentfleet: three workers at ``--limit 1`` each, the sprint at
concurrency 3. Each worker starts from its own folder with its own work dir, Codex home
and Prefect home, and sees of the bench's folder only that, the remote and the bucket (a
mount namespace: ``tests.support.walls``). Workers are started (``agentfleet worker``)
and ready, their warm engines too, and idle before the clock starts (they are
long-lived); they take each run as it is scheduled
(``flows/pickup.py``), their polls at Prefect's default interval (10 s) only the
fallback. Goal: a speed-up of at least 2.7 (ratio ≤ 0.37).

Also, from the same runs: what a pool attempt costs before its agent works (the
sprint's "flow run ... on the attempt pool" line to the agent's first model request:
the worker's pick-up, the flow-run process's start, the fetch, the worktree, Codex's
start), one worker and three; and, from the workers' logs, how long a flow-run process
takes to start (spawned → its flow run begins) alone and with three starting at once.

And where the machine's CPU went while each run's clock ran (``cpu``): the Prefect
server, the sprint's process with what it started, this process (the scripted model),
the rest (the workers, their runs, Codex, git, PostgreSQL: a warm engine's forked runs
are reaped without a trace in its times, so they are not told apart); ``busy_s`` against
``capacity_s`` (cores × the run's time). On 2 cores the three workers' run is bound by
the CPU, not by the dispatch.
"""

from __future__ import annotations

import os
import re
import resource
import sys
import time
from pathlib import Path

from agentfleet.process import stat_fields
from agentfleet.testing import Script
from bench.common import PROJECT_ROOT, Goal, Row, commit_all, git, init_repo, median, say
from bench.sprints import AgentfleetRun, Context, agentfleet_env, run_agentfleet, write_plan
from tests.support.attempt_pool import Worker, deploy_attempt, start_worker, stop_workers

ROWS = ("pool-speedup", "pool-dispatch")
FULL = (9, 5.0)
SMOKE = (3, 0.2)
POOL = "bench-attempts"
READY_S = 120  # how long a worker may take to start
_TICK = os.sysconf("SC_CLK_TCK")


def _deploy(ctx: Context, work: Path) -> None:
    env = {**agentfleet_env(ctx, work), **ctx.prefect().env(), "PWD": str(PROJECT_ROOT)}
    deploy_attempt(env, work, POOL)


def script(tasks: int, delay: float) -> Script:
    """Per task: a patch adding ``t<k>.txt`` after ``delay`` seconds, then the message."""
    return Script.model_validate({"rules": [
        {"name": f"t{k}", "match": f"[t{k}]", "responses": [
            {"delay_s": delay, "steps": [{"do": "patch", "patch": (
                f"*** Begin Patch\n*** Add File: t{k}.txt\n+{k}\n*** End Patch\n")}]},
            {"steps": [{"do": "message", "text": f"Added t{k}.txt."}]},
        ]}
        for k in range(1, tasks + 1)
    ]})


def _start_workers(ctx: Context, work: Path, run_dir: Path, name: str, count: int,
                   env: dict[str, str], remote: Path) -> list[Worker]:
    """``count`` process workers (``agentfleet worker``: each its warm engine first), each
    from its own folder with its own work dir, Codex home and Prefect home, seeing of
    ``work`` only that folder, the remote and the bucket (``tests.support.walls``), started
    at once; when all listen for runs and are idle."""
    model = ctx.model()
    started = [start_worker(
        f"{name}-{i}", run_dir, env, POOL, shared=[remote], root=work,
        own=lambda home: model.agent_env(model.write_codex_home(home / "codex-home")),
    ) for i in range(1, count + 1)]
    deadline = time.monotonic() + READY_S
    for worker in started:
        # Started, and listening for its pool's scheduled runs (its last start-up step).
        while "as they are scheduled" not in worker.text():
            if worker.process.poll() is not None or time.monotonic() > deadline:
                stop_workers(started, run_dir)
                raise RuntimeError(f"worker {worker.name} did not start: "
                                   f"{worker.text()[-1500:]}")
            time.sleep(0.2)
    _settle([w.process.pid for w in started])
    return started


def _cpu_s(pids: list[int]) -> float:
    """CPU time so far of ``pids`` and their children (a worker's warm engine)."""
    family = set(pids)
    stats = {int(entry): fields for entry in os.listdir("/proc")
             if entry.isdigit() and (fields := stat_fields(int(entry))) is not None}
    family |= {pid for pid, fields in stats.items() if int(fields[1]) in family}
    return sum(int(stats[p][11]) + int(stats[p][12]) for p in family if p in stats) / _TICK


def _busy_s() -> float:
    """The machine's CPU time spent so far, all cores (``/proc/stat``: not idle, not iowait)."""
    times = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (sum(times) - times[3] - times[4]) / _TICK


def _cpu_snapshot(server: int | None) -> dict[str, float]:
    """CPU so far: the Prefect server's process (when it is this bench's), this process, its
    reaped children (the sprint's ``agentfleet run`` once it exited: not the workers, still
    running), the machine."""
    own, reaped = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return {**({"server": _cpu_s([server])} if server is not None else {}),
            "sprint": reaped.ru_utime + reaped.ru_stime,
            "bench": own.ru_utime + own.ru_stime, "busy": _busy_s()}


def _cpu_spent(before: dict[str, float], after: dict[str, float],
               seconds: float) -> dict[str, float]:
    """Where the CPU went between two snapshots, in seconds; ``rest``: the machine's other
    processes (the workers and all they start, PostgreSQL, a server run elsewhere)."""
    spent = {f"{role}_s": round(after[role] - before[role], 2) for role in before}
    spent["rest_s"] = round(spent["busy_s"] - sum(
        v for k, v in spent.items() if k != "busy_s"), 2)
    spent["capacity_s"] = round((os.cpu_count() or 1) * seconds, 2)
    return spent


def _settle(pids: list[int], idle_s: float = 0.05, window_s: float = 0.5,
            timeout_s: float = 60.0) -> None:
    """Until the workers (long-lived, waiting for work) are idle: the clock then measures
    the sprint, not the workers finishing their own start-up."""
    deadline = time.monotonic() + timeout_s
    before = _cpu_s(pids)
    while time.monotonic() < deadline:
        time.sleep(window_s)
        now = _cpu_s(pids)
        if now - before < idle_s:
            return
        before = now


def _run(ctx: Context, work: Path, remote: Path, name: str, workers: int, tasks: int,
         delay: float) -> tuple[AgentfleetRun, dict[str, float]]:
    run_dir = work / name
    run_dir.mkdir(parents=True)
    env = {**agentfleet_env(ctx, run_dir), **ctx.prefect().env(),
           "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(run_dir / "bucket"),
           "PREFECT_WORKER_QUERY_SECONDS": "10", "AGENTFLEET_ATTEMPT_POOL": POOL,
           # The deployment runs `python -m flows.engine`: agentfleet's Python first.
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    say(f"pool: starting {workers} worker(s)")
    started = _start_workers(ctx, work, run_dir, name, workers, env, remote)
    try:
        plan = write_plan(run_dir / "plan.yaml", {
            "name": name, "repo": f"file://{remote}", "placement": "pool",
            "limits": {"concurrency": workers},
            "tasks": [{"id": f"t{k}", "prompt": f"[t{k}] add t{k}.txt", "paths": [f"t{k}.txt"]}
                      for k in range(1, tasks + 1)],
        })
        say(f"pool: {tasks} tasks on {workers} worker(s)")
        server = getattr(ctx.prefect(), "process", None)  # None: a server run elsewhere
        pid = server.pid if server is not None else None
        before = _cpu_snapshot(pid)
        run = run_agentfleet(ctx, plan, env)
        return run, _cpu_spent(before, _cpu_snapshot(pid), run.seconds)
    finally:
        stop_workers(started, run_dir)


def dispatch_s(run: AgentfleetRun) -> list[float]:
    """Per attempt: its flow run created (the sprint's line) → its agent's first request."""
    created: dict[str, float] = {}
    for at, line in run.lines:
        found = re.search(r"(t\d+)#1: flow run .* on the attempt pool", line)
        if found:
            created.setdefault(found[1], at)
    first: dict[str, float] = {}
    for request in run.requests:
        if request.rule is not None:
            first.setdefault(request.rule, request.started_at)
    return [first[t] - created[t] for t in created if t in first]


_STAMP = r"^(\d\d):(\d\d):(\d\d\.\d+) \| "


def process_start_s(run_dir: Path) -> list[float]:
    """Per attempt, from its workers' logs: "submitted to infrastructure" (the worker
    spawned the flow-run process) → "Beginning subflow run" (Prefect imported, the flow
    loaded, the run set Running). Alone on one worker against three starting at once,
    this shows the workers' contention for the cores."""
    def at(match: re.Match[str]) -> float:
        return int(match[1]) * 3600 + int(match[2]) * 60 + float(match[3])

    spans: list[float] = []
    for log in sorted(run_dir.glob("*/worker.log")):
        submitted: dict[str, float] = {}
        for line in log.read_text().splitlines():
            stamp = re.match(_STAMP, line)
            if stamp is None:
                continue
            if found := re.search(r"Flow run '([^']+)' submitted to infrastructure", line):
                submitted[found[1]] = at(stamp)
            elif (found := re.search(r"Flow run '([^']+)' - Beginning", line)) and (
                    found[1] in submitted):
                spans.append((at(stamp) - submitted.pop(found[1])) % 86400)
    return spans


def _started(run_dir: Path) -> dict[str, float]:
    spans = process_start_s(run_dir)
    return {"process_start_s": round(median(spans), 2) if spans else -1.0}


def fixed_s(run: AgentfleetRun) -> dict[str, float]:
    """The run's own start (process spawned → its first attempt's flow run created) and end
    (its last model answer → the process's exit: the last attempt's end, landing, exit),
    which three workers do not share out."""
    created = run.first(r"#1: flow run .* on the attempt pool")
    answered = max((r.finished_at or r.started_at for r in run.requests), default=None)
    return {
        "start_s": round(created - run.spawned_at, 2) if created is not None else -1.0,
        "end_s": round(run.exited_at - answered, 2) if answered is not None else -1.0,
    }


def _share(cpu: dict[str, float]) -> str:
    return f"{cpu['busy_s'] / cpu['capacity_s']:.0%}" if cpu["capacity_s"] else "?"


def measure(ctx: Context, work: Path) -> list[Row]:
    """Nine tasks on one worker, then on three; the time ratio, and the dispatch cost."""
    tasks, delay = SMOKE if ctx.smoke else FULL
    ctx.warm_server()
    ctx.model().set_script(script(tasks, delay))
    _deploy(ctx, work)
    seed = init_repo(work / "seed")
    (seed / "README.md").write_text("pool bench\n")
    commit_all(seed, "seed")
    remote = work / "remote.git"
    git(work, "clone", "-q", "--bare", str(seed), str(remote))
    one, one_cpu = _run(ctx, work, remote, "pool-one", 1, tasks, delay)
    three, three_cpu = _run(ctx, work, remote, "pool-three", 3, tasks, delay)
    one_dispatch, three_dispatch = median(dispatch_s(one)), median(dispatch_s(three))
    return [
        Row("pool-speedup", f"{tasks} Codex tasks, model {delay:g} s, placement: pool",
            "one worker", one.seconds, three.seconds, three.seconds / one.seconds,
            ratio_of="three workers / one worker",
            notes=f"speed-up {one.seconds / three.seconds:.2f}x; CPU busy "
                  f"{_share(one_cpu)} with one worker, {_share(three_cpu)} with three",
            details={"one_worker": {**fixed_s(one), **_started(work / "pool-one"),
                                    "cpu": one_cpu},
                     "three_workers": {**fixed_s(three), **_started(work / "pool-three"),
                                       "cpu": three_cpu}},
            ).judge(Goal("≤ 0.37 (speed-up ≥ 2.7)", lambda r: r.ratio <= 0.37)),
        Row("pool-dispatch", "a pool attempt's flow run created → its agent's first request "
            "(median)", "one worker", one_dispatch, three_dispatch,
            three_dispatch / one_dispatch, ratio_of="three workers / one worker",
            notes="worker pick-up, flow-run process start, fetch, worktree, Codex start",
            ).judge(Goal("—")),
    ]
