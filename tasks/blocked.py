"""A task run for a task that never ran: blocked by failed dependencies.

Without it a blocked task would have no trace in the Prefect UI at all; its Failed
state (named ``Blocked``) says every task whose failure blocked it.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed, State

from agentfleet.landing import blocked_detail


@task(name="blocked", task_run_name="{task_id}", cache_policy=NO_CACHE, persist_result=False)
def blocked(task_id: str, blocked_by: list[str]) -> State:
    """Record that ``task_id`` did not run because ``blocked_by`` failed."""
    message = f"not run: {blocked_detail(blocked_by)}"
    get_run_logger().warning(f"{task_id}: {message}")
    return Failed(name="Blocked", message=message)
