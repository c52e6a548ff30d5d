"""The ``select`` task run of a task with more than one attempt: ``<task>:select``.

It judges the candidates (``agentfleet.best_of_n``), publishes their table as the
artifact ``agentfleet-<sprint>-<task>-candidates`` with the sentence saying which
criterion decided, and returns the selection.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from agentfleet.best_of_n import select
from agentfleet.results import AttemptResult
from agentfleet.selection import ScoreGoal, Selection, candidates_table
from tasks.observe import _best_effort


def candidates_key(sprint: str, task_id: str) -> str:
    """The candidates table's artifact key (lowercase letters, digits and dashes)."""
    return f"agentfleet-{sprint}-{task_id}-candidates".lower()


@task(name="select", task_run_name="{task_id}:select", cache_policy=NO_CACHE,
      persist_result=False)
def select_candidate(
    sprint: str, task_id: str, results: list[AttemptResult], scored: bool, goal: ScoreGoal
) -> Selection:
    """Choose among a task's attempts and publish the candidates table."""
    selection = select(results, scored=scored, goal=goal)
    logger = get_run_logger()
    (logger.info if selection.winner is not None else logger.warning)(
        f"{task_id}: {selection.sentence}"
    )
    _best_effort(
        "the candidates table",
        lambda: create_table_artifact(
            table=candidates_table(selection),
            key=candidates_key(sprint, task_id),
            description=selection.sentence,
        ),
    )
    return selection
