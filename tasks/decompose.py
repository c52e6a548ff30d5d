"""The ``decompose`` task run: the sprint's waves, serializations and apply order, visible.

Its markdown artifact holds what ``agentfleet plan`` prints (``render_plan``): the
waves of tasks that may run together, each serialization with its reason, the
apply order.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks.observe import _best_effort


def decompose_key(sprint: str) -> str:
    """The decomposition's artifact key (lowercase letters, digits and dashes)."""
    return f"agentfleet-{sprint}-decompose".lower()


def decompose_markdown(rendered: str) -> str:
    """``agentfleet plan``'s text as a markdown artifact."""
    return "## Decomposition\n\n```text\n" + rendered.rstrip() + "\n```\n"


@task(name="decompose", cache_policy=NO_CACHE, persist_result=False)
def decompose_stage(sprint: str, rendered: str) -> str:
    """Publish the decomposition (``render_plan``'s text) of the sprint's checked plan."""
    get_run_logger().info("\n" + rendered.rstrip())
    _best_effort(
        "the decomposition",
        lambda: create_markdown_artifact(
            markdown=decompose_markdown(rendered), key=decompose_key(sprint),
            description=f"sprint {sprint}: waves, serializations, apply order",
        ),
    )
    return rendered
