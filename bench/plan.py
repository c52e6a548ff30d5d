"""`agentfleet plan` on a plan of many independent tasks with globs: time and memory.

The plan's tasks each own one module's files through globs (``src/mNNNN/**``,
``tests/test_mNNNN_*.py``), so none overlap and all may run together: the check
still compares every pair. Timed as a user runs it, a subprocess from spawn to exit;
its peak memory is the child's maximum resident set, from ``os.wait4``.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from bench.common import AGENTFLEET, Goal, Row, clean_env, commit_all, init_repo, say
from bench.sprints import write_plan

ROWS = ("plan",)
FULL_TASKS = 1000
SMOKE_TASKS = 50
LIMIT_S = 5.0
LIMIT_MB = 300.0
# Stop a plan check that runs this long: the row then says "did not finish".
FULL_CAP_S = 120.0
SMOKE_CAP_S = 120.0


def make(work: Path, tasks: int) -> Path:
    """A repository with one module per task and the plan over it."""
    repo = init_repo(work / "repo")
    for i in range(tasks):
        (repo / "src" / f"m{i:04d}").mkdir(parents=True)
        (repo / "src" / f"m{i:04d}" / "__init__.py").write_text(f"N = {i}\n")
    (repo / "tests").mkdir()
    (repo / "tests" / "README.md").write_text("tests\n")
    commit_all(repo, "modules")
    return write_plan(work / "plan.yaml", {
        "name": "bench-plan", "repo": "repo", "limits": {"concurrency": 8},
        "tasks": [{"id": f"m{i:04d}", "prompt": f"[m{i:04d}] Improve module m{i:04d}.",
                   "paths": [f"src/m{i:04d}/**", f"tests/test_m{i:04d}_*.py"]}
                  for i in range(tasks)],
    })


def measure(ctx, work: Path) -> list[Row]:  # noqa: ANN001 - bench.sprints.Context
    """The plan row: seconds against the 5 s limit, and peak memory."""
    tasks = SMOKE_TASKS if ctx.smoke else FULL_TASKS
    plan = make(work, tasks)
    say(f"plan: agentfleet plan on {tasks} independent tasks")
    cap = SMOKE_CAP_S if ctx.smoke else FULL_CAP_S
    errors = work / "plan.stderr"
    finished = True
    with errors.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen([str(AGENTFLEET), "plan", str(plan)], env=clean_env(),
                                stdout=subprocess.DEVNULL, stderr=err)
        # wait4 gives this child's own peak memory (RUSAGE_CHILDREN is the max of all).
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - started > cap:
                finished = False
                proc.kill()
                _pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = errors.read_text(errors="replace")
    if finished and proc.returncode != 0:
        raise RuntimeError(f"agentfleet plan exited {proc.returncode}: {stderr[-2000:]}")
    peak_mb = usage.ru_maxrss / 1024  # kilobytes on Linux
    notes = f"peak memory {peak_mb:.0f} MB"
    if not finished:
        # Not a failure of the bench: a result, and the ratio is a lower bound.
        notes = f"did not finish: stopped after {seconds:.0f} s (ratio a lower bound); " + notes
    return [Row(
        "plan", f"agentfleet plan on {tasks:,} independent tasks with globs", "— (limit 5 s)",
        None, seconds, seconds / LIMIT_S,
        ratio_of="seconds / the 5 s limit" + ("" if finished else " (at least: stopped)"),
        notes=notes, details={"tasks": tasks, "max_rss_mb": peak_mb, "finished": finished,
                              "cap_s": cap},
    ).judge(Goal("< 5 s, < 300 MB", lambda r: r.details["finished"]
                 and r.agentfleet_s < LIMIT_S and r.details["max_rss_mb"] < LIMIT_MB))]
