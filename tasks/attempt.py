"""The Prefect task that runs one attempt: thin, the work is in ``agentfleet.attempt``."""

from __future__ import annotations

from prefect import get_run_logger, task

from agentfleet.attempt import AttemptSpec, run_attempt
from agentfleet.event_lines import describe
from agentfleet.results import AttemptResult
from tasks.runtime import CANCEL, agent_env


@task(name="attempt", task_run_name="{spec.task_id}#{spec.attempt}")
def attempt(spec: AttemptSpec) -> AttemptResult:
    """One agent attempt in its own worktree, logged line by line as it happens."""
    logger = get_run_logger()

    def on_event(event: object) -> None:
        line = describe(event)
        if line:
            logger.info(line)

    result = run_attempt(
        spec,
        env=agent_env(spec.agent.env),
        on_event=on_event,
        log=logger.info,
        cancel=CANCEL,
    )
    if result.succeeded:
        logger.info(
            f"succeeded: {len(result.files)} files, {result.tokens:,} tokens, "
            f"{result.duration_s:.1f}s, branch {result.branch}"
        )
    else:
        logger.warning(f"failed: {result.reason}")
    return result
