"""The ``decompose`` task run: the sprint's waves, serializations and apply order, visible.

Its markdown artifact holds what ``agentfleet plan`` prints (``render_plan``): the
waves of tasks that may run together, each serialization with its reason, the
apply order. A goal plan first runs the planner (``planned``): its proposal is the
artifact ``agentfleet-<sprint>-proposal``, and with ``review_plan`` a person approves
or rejects it before any task runs.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from agentfleet.checking import CheckedPlan
from agentfleet.codex.outcome import Usage
from agentfleet.durations import parse_duration
from agentfleet.errors import PlanRejected, ProposalRejected
from agentfleet.locks import repo_key
from agentfleet.planner import Proposal, plan_for_goal, proposal_markdown, usage_line
from agentfleet.process import tracked_in
from agentfleet.review import Reviews, plan_item
from agentfleet.settings import AgentfleetSettings
from blocks.agent import agent_secret_env
from tasks.observe import _best_effort
from tasks.review import pause_for
from tasks.runtime import agent_env, attempt_control


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


def proposal_key(sprint: str) -> str:
    """The planner's proposal artifact key (a goal plan)."""
    return f"agentfleet-{sprint}-proposal".lower()


@task(name="planner", cache_policy=NO_CACHE, persist_result=False)
def propose_tasks(checked: CheckedPlan, codex: Path | None, work_dir: Path,
                  grace_s: float) -> Proposal:
    """Run the planner for a goal plan and publish its proposal (the tasks and their waves)."""
    logger = get_run_logger()
    goal = checked.plan.goal or ""
    control = attempt_control("planner")
    try:
        with tracked_in(control.processes):
            proposal = plan_for_goal(
                # The agent block's key, as a task's agent gets it (the planner is Codex too).
                checked, env=agent_env(agent_secret_env(checked.blocks.agent_block), {}),
                work_root=work_dir / "planner" / repo_key(checked.repo.root),
                codex_path=codex, grace_s=grace_s, log=logger.info,
            )
    except BaseException:
        # Ctrl-C or a cancelled run unwinds through here: Codex must not outlive it.
        control.stop("interrupted", grace_s)
        raise
    logger.info(usage_line(proposal))
    _best_effort(
        "the proposed plan",
        lambda: create_markdown_artifact(
            markdown=proposal_markdown(proposal, goal), key=proposal_key(checked.plan.name),
            description=f"sprint {checked.plan.name}: the planner's proposed tasks",
        ),
    )
    if not proposal.accepted or proposal.checked is None:
        raise ProposalRejected(proposal.problems, proposal.asks)
    return proposal


def planned(checked: CheckedPlan, codex: Path | None,
            settings: AgentfleetSettings) -> tuple[CheckedPlan, Usage]:
    """A goal plan's tasks (the planner's proposal, approved by a person with ``review_plan``)
    and the planner's tokens."""
    proposal = propose_tasks(checked, codex, settings.work_dir, settings.stop_grace_s)
    assert proposal.checked is not None  # propose_tasks raises otherwise
    plan = checked.plan
    if plan.review_plan:
        item = plan_item(proposal_markdown(proposal, plan.goal or ""),
                         timeout_s=parse_duration(plan.review_timeout),
                         on_timeout=plan.on_review_timeout, now=time.monotonic())
        reviews = Reviews()
        reviews.hold(item)
        logger = get_run_logger()
        answers = pause_for([item], plan.name, settings.work_dir, logger)
        decisions = (reviews.answer(answers) if answers is not None
                     else reviews.expired(math.inf))
        for decision in decisions:
            (logger.info if decision.by == "review" else logger.warning)(decision.line)
            if decision.rejected:
                why = "rejected in review" if decision.by == "review" else decision.line
                raise PlanRejected(f"sprint {plan.name}: the proposed plan was not run "
                                   f"({why}); no task ran")
    return proposal.checked, proposal.usage
