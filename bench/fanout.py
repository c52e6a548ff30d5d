"""Fan-out: N real Codex runs through `agentfleet run` against the seed's `xargs -P` loop.

Each task asks the scripted model twice (a patch adding one file, then the final
message); the model answers each request after ``delay_s``. The baseline is the
seed's shell loop: `xargs -P C` running `codex exec` and `git commit` in worktrees
made beforehand (not timed). agentfleet runs the same tasks as one sprint of
independent tasks with ``limits.concurrency: C``, timed from spawning `agentfleet
run` to its exit: plan check, Prefect, worktrees, agents, landing, all of it.

The order is shell, embedded (cold: its database made by a throwaway flow first),
shell again, running server (warm: a throwaway flow ran on it first), so each
agentfleet run is compared with a shell run minutes from it.

From the same runs: the idle gap between one agent's last response and the next
agent's first request (the scripted model's request log), and the run's fixed costs
at start and end (agentfleet's own output lines, stamped as they arrived).
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from agentfleet.testing import RecordedRequest, Script
from bench.common import (
    CODEX,
    Goal,
    Row,
    commit_all,
    git,
    init_repo,
    median,
    ratio_le,
    say,
)
from bench.sprints import (
    AgentfleetRun,
    Context,
    embedded_env,
    idle_gaps,
    run_agentfleet,
    sessions,
    throwaway_run,
    write_plan,
)

ROWS = ("fanout-cold", "fanout-warm", "idle-gap", "fixed-start-cold", "fixed-end-cold",
        "fixed-start-warm", "fixed-end-warm")


@dataclass(frozen=True)
class Size:
    """How big the fan-out is."""

    tasks: int
    concurrency: int
    delay_s: float


FULL = Size(tasks=24, concurrency=4, delay_s=5.0)
SMOKE = Size(tasks=4, concurrency=2, delay_s=0.2)


def task_ids(size: Size) -> list[str]:
    """``t01`` … ``tNN``."""
    return [f"t{i:02d}" for i in range(1, size.tasks + 1)]


def prompt(task_id: str) -> str:
    """The task's prompt; its ``[tNN]`` tag picks the scripted model's rule."""
    return f"[{task_id}] Add the file {task_id}.txt saying which task wrote it."


def script(size: Size) -> Script:
    """Two model requests per task, each answered after ``delay_s``."""
    return Script.model_validate({"rules": [
        {"name": tid, "match": f"[{tid}]", "responses": [
            {"delay_s": size.delay_s, "steps": [{"do": "patch", "patch": (
                f"*** Begin Patch\n*** Add File: {tid}.txt\n+written by {tid}\n*** End Patch\n")}]},
            {"delay_s": size.delay_s, "steps": [{"do": "message", "text": f"Added {tid}.txt."}]},
        ]}
        for tid in task_ids(size)
    ]})


def make_repo(path: Path) -> Path:
    """A small repository the tasks add files to."""
    init_repo(path)
    (path / "README.md").write_text("fan-out bench\n")
    (path / "src").mkdir()
    for i in range(20):
        (path / "src" / f"m{i}.py").write_text(f"VALUE = {i}\n")
    commit_all(path, "fan-out bench")
    return path


def make_plan(run_dir: Path, size: Size) -> Path:
    """A sprint of independent tasks, one new file each."""
    make_repo(run_dir / "repo")
    return write_plan(run_dir / "plan.yaml", {
        "name": "bench-fanout", "repo": "repo", "timeout": "10m", "retries": 0,
        "limits": {"concurrency": size.concurrency},
        "tasks": [{"id": t, "prompt": prompt(t), "paths": [f"{t}.txt"]} for t in task_ids(size)],
    })


# ------------------------------------------------------------------ the shell loop

SHELL_LOOP = (
    'xargs -P "$CONCURRENCY" -I{} sh -c \''
    'cd "$WORKTREES/{}" && "$CODEX" exec --json -s workspace-write - '
    '< "$PROMPTS/{}.txt" > "$LOGS/{}.jsonl" 2>&1 '
    '&& git add -A && git commit -q --no-verify -m "task {}"\' < "$IDS"'
)


@dataclass
class ShellRun:
    """One timed shell loop and the model requests it made."""

    seconds: float
    started_at: float
    exited_at: float
    requests: list[RecordedRequest]


def shell_run(ctx: Context, run_dir: Path, size: Size) -> ShellRun:
    """The seed's loop over pre-made worktrees; checks that every task committed its file."""
    repo = make_repo(run_dir / "repo")
    ids = task_ids(size)
    for d in ("wt", "prompts", "logs"):
        (run_dir / d).mkdir(parents=True, exist_ok=True)
    for tid in ids:  # not timed: the seed made its worktrees by hand beforehand
        git(repo, "worktree", "add", "-q", "-b", f"shell/{tid}", str(run_dir / "wt" / tid), "main")
        (run_dir / "prompts" / f"{tid}.txt").write_text(prompt(tid) + "\n")
    (run_dir / "ids.txt").write_text("\n".join(ids) + "\n")
    env = {
        **os.environ, **ctx.codex_env(),
        "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Seed", "GIT_AUTHOR_EMAIL": "seed@example.com",
        "GIT_COMMITTER_NAME": "Seed", "GIT_COMMITTER_EMAIL": "seed@example.com",
        "CONCURRENCY": str(size.concurrency), "WORKTREES": str(run_dir / "wt"),
        "PROMPTS": str(run_dir / "prompts"), "LOGS": str(run_dir / "logs"),
        "IDS": str(run_dir / "ids.txt"), "CODEX": str(CODEX),
    }
    before = len(ctx.model().requests)
    started_at = time.time()
    started = time.perf_counter()
    done = subprocess.run(["sh", "-c", SHELL_LOOP], env=env, capture_output=True, text=True,
                          timeout=1800)
    seconds = time.perf_counter() - started
    exited_at = time.time()
    missing = [t for t in ids
               if git(repo, "rev-list", "--count", f"main..shell/{t}").strip() != "1"]
    if done.returncode != 0 or missing:
        raise RuntimeError(f"the shell loop failed (exit {done.returncode}, no commit for "
                           f"{missing}): {done.stderr[-2000:]}")
    return ShellRun(seconds, started_at, exited_at, ctx.model().requests[before:])


# ------------------------------------------------------------------ phases


def agentfleet_phases(run: AgentfleetRun) -> dict[str, float | None]:
    """Start and end of a run split at the lines agentfleet and Prefect log, in seconds."""
    first_request = min(r.started_at for r in run.requests)
    last_response = max(r.finished_at or r.started_at for r in run.requests)
    flow_began = run.first(r"Beginning flow run")
    # "<task>: starts from ..." (the flow's line); task runs' lines start with their name.
    first_submit = run.first(r" - [^ ]+: starts from")
    last_attempt = run.last(r"Task run '[^']*#\d+' - (\S+: )?Finished in state")
    landed = run.last(r"Task run 'sequential-apply[^']*' - (\S+: )?Finished in state")
    flow_done = run.last(r"Flow run '[^']*' - Finished in state")

    def span(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else b - a

    return {
        "start_total": first_request - run.spawned_at,
        "start_process_to_flow_run": span(run.spawned_at, flow_began),
        "start_flow_run_to_first_attempt": span(flow_began, first_submit),
        "start_first_attempt_to_first_request": span(first_submit, first_request),
        "end_total": run.exited_at - last_response,
        "end_last_response_to_last_attempt_done": span(last_response, last_attempt),
        "end_landing": span(last_attempt, landed),
        "end_landing_to_flow_run_done": span(landed, flow_done),
        "end_flow_run_done_to_exit": span(flow_done, run.exited_at),
    }


def shell_phases(run: ShellRun) -> dict[str, float]:
    """The shell loop's start (to its first request) and end (after its last response)."""
    first_request = min(r.started_at for r in run.requests)
    last_response = max(r.finished_at or r.started_at for r in run.requests)
    return {"start_total": first_request - run.started_at,
            "end_total": run.exited_at - last_response}


def _rounded(d: dict[str, float | None]) -> dict[str, float | None]:
    return {k: None if v is None else round(v, 3) for k, v in d.items()}


# ------------------------------------------------------------------ the measure


def measure(ctx: Context, work: Path) -> list[Row]:
    """Run shell, cold, shell, warm; the fan-out, idle-gap and fixed-cost rows."""
    size = SMOKE if ctx.smoke else FULL
    model = ctx.model()
    model.set_script(script(size))
    cold_home = work / "prefect-home-embedded"
    if not ctx.smoke:  # at smoke size the measured run creates the database
        throwaway_run(ctx, work / "warmup-embedded", lambda d: embedded_env(ctx, d, cold_home))

    say(f"fan-out: shell loop, {size.tasks} Codex runs at {size.concurrency}")
    shell_cold = shell_run(ctx, work / "shell-1", size)
    say(f"fan-out: agentfleet on the embedded server ({shell_cold.seconds:.1f} s for the shell)")
    cold_dir = work / "agentfleet-embedded"
    cold_dir.mkdir()
    cold = run_agentfleet(ctx, make_plan(cold_dir, size), embedded_env(ctx, cold_dir, cold_home))

    ctx.warm_server()
    say(f"fan-out: shell loop again ({cold.seconds:.1f} s for agentfleet cold)")
    shell_warm = shell_run(ctx, work / "shell-2", size)
    say("fan-out: agentfleet against the running prefect server")
    warm_dir = work / "agentfleet-server"
    warm_dir.mkdir()
    warm = run_agentfleet(ctx, make_plan(warm_dir, size), ctx.server_env(warm_dir))

    for run, name in ((cold, "embedded"), (warm, "server")):
        got = sessions(run.requests)
        if len(got) != size.tasks or any(s.requests != 2 for s in got):
            raise RuntimeError(f"agentfleet ({name}) made {[s.requests for s in got]} requests "
                               f"in {len(got)} sessions, expected 2 in each of {size.tasks}")

    where = f"{size.tasks} Codex runs × 2 requests, model {size.delay_s:g} s, at {size.concurrency}"
    rows = [
        Row("fanout-cold", f"fan-out, embedded server (cold): {where}", "xargs -P",
            shell_cold.seconds, cold.seconds, cold.seconds / shell_cold.seconds,
            details={"shell_s": shell_cold.seconds, "agentfleet_s": cold.seconds,
                     **size.__dict__}).judge(ratio_le(1.10)),
        Row("fanout-warm", f"fan-out, running prefect server (warm): {where}", "xargs -P",
            shell_warm.seconds, warm.seconds, warm.seconds / shell_warm.seconds,
            details={"shell_s": shell_warm.seconds, "agentfleet_s": warm.seconds,
                     **size.__dict__}).judge(ratio_le(1.02)),
    ]

    gaps = {
        "shell-1": idle_gaps(sessions(shell_cold.requests), size.concurrency),
        "embedded": idle_gaps(sessions(cold.requests), size.concurrency),
        "shell-2": idle_gaps(sessions(shell_warm.requests), size.concurrency),
        "server": idle_gaps(sessions(warm.requests), size.concurrency),
    }
    shell_gap = median(gaps["shell-2"])
    warm_gap = median(gaps["server"])
    rows.append(Row(
        "idle-gap", "idle gap within a sprint, agent's last response → next agent's first "
        "request (median; running server)", "shell's gap", shell_gap, warm_gap,
        warm_gap / shell_gap if shell_gap > 0 else None, ratio_of="agentfleet / shell (medians)",
        details={"medians_s": {k: median(v) for k, v in gaps.items()},
                 "gaps_s": {k: [round(g, 3) for g in v] for k, v in gaps.items()}},
    ).judge(Goal("≤ the shell's", lambda r: r.agentfleet_s <= r.baseline_s)))

    for label, run, shell in (("cold", cold, shell_cold), ("warm", warm, shell_warm)):
        ours, theirs = agentfleet_phases(run), shell_phases(shell)
        rows.append(Row(
            f"fixed-start-{label}",
            f"start ({label}): spawn → first model request; process → flow run (imports, plan "
            "check, Prefect), flow run → first attempt (plan check, Codex version, orphan "
            "reaping), → first request (worktree, Codex start-up)",
            "shell's start", theirs["start_total"], ours["start_total"],
            ours["start_total"] / theirs["start_total"], ratio_of="agentfleet / shell",
            notes="split in details, from agentfleet's output lines as they arrived",
            details=_rounded({k: v for k, v in ours.items() if k.startswith("start")}),
        ))
        rows.append(Row(
            f"fixed-end-{label}",
            f"end ({label}): last model response → exit; → last attempt done (Codex exit, "
            "commit, worktree removal), landing, → flow run done (artifacts, report), → exit",
            "shell's end", theirs["end_total"], ours["end_total"],
            ours["end_total"] / theirs["end_total"], ratio_of="agentfleet / shell",
            notes="split in details, from agentfleet's output lines as they arrived",
            details=_rounded({k: v for k, v in ours.items() if k.startswith("end")}),
        ))
    return rows
