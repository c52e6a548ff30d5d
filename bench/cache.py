"""Cached rerun: the demo's eight-task sprint run again, warm, against its first run.

First run: the sample sprint on a running ``prefect server`` (warm), with the real
Codex and the scripted model answering each request after ``delay_s``. Then the
target branch is deleted (the attempt branches and the result storage stay), so
the rerun of the same plan finds nothing applied and every attempt comes from
Prefect's cache: it is applied, verified and lands again with no agent run. The
rerun's model requests are counted in the scripted model's log: the goal is zero.

The rerun's time is split in its details (from its output lines as they arrived):
process start to the flow run (imports, plan check, Prefect's flow run), to the first
attempt, the cached attempts, landing (with ``final_verify``, or its reused pass), the
flow run's end (report, artifacts) and the process's exit.
"""

from __future__ import annotations

from pathlib import Path

from agentfleet.sample import build_sample_repo, sample_plan, sample_script
from bench.common import Goal, Row, configure_repo, git, say
from bench.sprints import AgentfleetRun, Context, run_agentfleet, write_plan

ROWS = ("cached-rerun",)
FULL_DELAY_S = 5.0
SMOKE_DELAY_S = 0.1


def measure(ctx: Context, work: Path) -> list[Row]:
    """First run, delete the target, rerun; the time ratio and the rerun's model requests."""
    delay = SMOKE_DELAY_S if ctx.smoke else FULL_DELAY_S
    model = ctx.model()
    model.set_script(sample_script(delay_s=delay))
    ctx.warm_server()
    run_dir = work / "sample"
    run_dir.mkdir(parents=True)
    repo = build_sample_repo(run_dir / "orders-service")
    configure_repo(repo)  # the bench identity and gc.auto=0, as in the other repositories
    plan_data = sample_plan(repo="orders-service")
    plan = write_plan(run_dir / "sprint.yaml", plan_data)
    env = ctx.server_env(run_dir)

    say(f"cached rerun: first run of the sample sprint (model {delay:g} s a request)")
    first = run_agentfleet(ctx, plan, env)
    git(repo, "branch", "-D", f"agentfleet/{plan_data['name']}")
    say(f"cached rerun: rerun ({first.seconds:.1f} s for the first)")
    rerun = run_agentfleet(ctx, plan, env)
    cached = sum(1 for line in (ln for _, ln in rerun.lines) if ": cached (" in line)
    tasks = len(plan_data["tasks"])
    return [Row(
        "cached-rerun", f"cached rerun of the {tasks}-task sample sprint, warm "
        f"(model {delay:g} s a request)", "first run", first.seconds, rerun.seconds,
        rerun.seconds / first.seconds, ratio_of="rerun / first run",
        notes=f"rerun: {len(rerun.requests)} model requests, {cached} of {tasks} attempts cached",
        details={"first_run_requests": len(first.requests),
                 "rerun_requests": len(rerun.requests), "cached_attempts": cached,
                 "final_verify_reused": any("final_verify passed (reused" in ln
                                            for _, ln in rerun.lines),
                 **rerun_phases(rerun)},
    ).judge(Goal("≤ 0.05, 0 requests",
                 lambda r: r.ratio <= 0.05 and r.details["rerun_requests"] == 0))]


def rerun_phases(run: AgentfleetRun) -> dict[str, float | None]:
    """Where the rerun's time went, in seconds, split at the lines agentfleet and Prefect log."""
    marks = [
        run.spawned_at,
        run.first(r"Beginning flow run"),
        run.first(r" - [^ ]+: starts from"),
        run.last(r": cached \("),
        run.last(r"Task run 'sequential-apply[^']*' - (\S+: )?Finished in state"),
        run.last(r"Flow run '[^']*' - Finished in state"),
        run.exited_at,
    ]
    names = ["rerun_process_to_flow_run", "rerun_flow_run_to_first_attempt",
             "rerun_cached_attempts", "rerun_landing", "rerun_landing_to_flow_run_done",
             "rerun_flow_run_done_to_exit"]
    spans = zip(marks, marks[1:])  # noqa: B905 - one shorter by design
    return {name: None if a is None or b is None else round(b - a, 3)
            for name, (a, b) in zip(names, spans, strict=True)}
