"""The Prefect task that runs one attempt: thin, the work is in ``agentfleet.attempt``."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.states import State

from agentfleet.attempt import AttemptSpec, run_attempt
from agentfleet.event_lines import describe
from tasks.cache import ATTEMPT_CACHE, finished
from tasks.observe import attempt_finished
from tasks.runtime import CANCEL, agent_env


@task(
    name="attempt",
    task_run_name="{spec.task_id}#{spec.attempt}",
    # Reused across runs when nothing that decides the result changed (tasks/cache.py);
    # JSON keeps the persisted results readable and independent of pickle versions.
    cache_policy=ATTEMPT_CACHE,
    persist_result=True,
    result_serializer="json",
)
def attempt(spec: AttemptSpec, agent_version: str | None = None) -> State:
    """One agent attempt in its own worktree, logged line by line as it happens.

    ``agent_version`` (``codex --version``, found once per run) is only part of the cache key.
    """
    logger = get_run_logger()

    def on_event(event: object) -> None:
        line = describe(event, spec.worktree_root)
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
    attempt_finished(spec, result)
    return finished(spec, result)
