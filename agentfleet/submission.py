"""What an attempt starts from and what it is given: pure decisions of the fan-out.

The sprint flow asks git for the facts (which tasks are on the target, what each
finished one left) and calls these functions to decide the rest: which results a
task's start combines, what its prompt says about them, which waited-for tasks
are left out, and the attempt's whole ``AttemptSpec``. No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agentfleet.agent_config import merge
from agentfleet.attempt import AttemptSpec
from agentfleet.guardrails import task_model
from agentfleet.naming import attempt_branch
from agentfleet.plan import Plan
from agentfleet.prompts import Predecessor, compose_prompt


@dataclass(frozen=True)
class Prior:
    """A waited-for task's result usable as part of a start: its commit and what it did."""

    task_id: str
    sha: str
    final_message: str | None
    diffstat: str


@dataclass(frozen=True)
class StartDecision:
    """The commits a task's start combines, the context its prompt gets, what is missing."""

    heads: list[str] = field(default_factory=list)
    predecessors: list[Predecessor] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # waited for, but failed

    @property
    def used(self) -> list[str]:
        """The tasks whose results are in the start, in the order waited for."""
        return [p.task_id for p in self.predecessors]


@dataclass(frozen=True)
class RunPlace:
    """Where and how this run's attempts run: the same for every attempt of the run."""

    repo: Path
    worktree_root: Path
    codex_path: Path | None = None
    grace_s: float = 5.0
    backoff_initial_s: float = 2.0
    lease_dir: Path | None = None
    agent_block: str | None = None  # the saved agent block whose secrets agents get
    # The model of each task complexity when the plan's `models` names none (settings).
    models: Mapping[str, str] = field(default_factory=dict)


def decide_start(
    plan: Plan, task_id: str, waits_on: list[str], priors: Mapping[str, Prior]
) -> StartDecision:
    """Which priors a task's start holds: every waited-for task that has one, in order.

    ``priors`` holds the tasks applied on the target before this run and those that
    succeeded in it; a waited-for task missing from it failed and is left out.
    """
    task = plan.task(task_id)
    heads: list[str] = []
    predecessors: list[Predecessor] = []
    left_out: list[str] = []
    for prior_id in waits_on:
        prior = priors.get(prior_id)
        if prior is None:
            left_out.append(prior_id)
            continue
        relation = "depends_on" if prior_id in task.depends_on else "paths overlap"
        heads.append(prior.sha)
        predecessors.append(
            Predecessor(prior_id, relation, prior.final_message, prior.diffstat)
        )
    return StartDecision(heads=heads, predecessors=predecessors, left_out=left_out)


def attempt_spec(
    plan: Plan,
    task_id: str,
    k: int,
    *,
    start_sha: str,
    predecessors: list[Predecessor],
    place: RunPlace,
) -> AttemptSpec:
    """Attempt ``k`` of a task: its branch, prompt, agent and limits from the plan.

    Its variant (entry (k-1) mod len of ``variants``) changes the agent and appends
    its hint to the prompt.
    """
    task = plan.task(task_id)
    variant = plan.task_variant(task, k)
    agent = plan.task_agent(task)
    if agent.kind == "codex" and agent.model is None:
        agent = agent.model_copy(update={"model": task_model(plan, task_id, place.models)})
    prompt = compose_prompt(task.prompt, predecessors, task.paths)
    if variant is not None:
        agent = merge(agent, variant.agent_override())
        if variant.hint and variant.hint.strip():
            prompt += "\n\n" + variant.hint.strip()
    return AttemptSpec(
        sprint=plan.name,
        task_id=task_id,
        attempt=k,
        branch=attempt_branch(plan.name, task_id, k),
        repo=place.repo,
        worktree_root=place.worktree_root,
        start_sha=start_sha,
        prompt=prompt,
        paths=task.paths,
        agent=agent,
        setup=plan.task_setup(task),
        verify=plan.task_verify(task),
        score=plan.task_score(task),
        timeout_s=plan.task_timeout(task),
        retries=plan.task_retries(task),
        codex_path=place.codex_path,
        grace_s=place.grace_s,
        backoff_initial_s=place.backoff_initial_s,
        idle_timeout_s=plan.task_idle_timeout(task),
        keep_failed_worktree=plan.keep_failed_worktrees,
        keep_setup_products=plan.keep_setup_products,
        allow_external_symlinks=plan.allow_external_symlinks,
        lease_dir=place.lease_dir,
        agent_block=place.agent_block,
        max_tokens=plan.effective(task, "max_tokens"),
    )


def start_line(start: str, used: list[str], failed: list[str]) -> str:
    """What an attempt starts from, in words: base or the results it builds on, and which
    results it waited for in vain."""
    where = (f"starts from {start[:10]} with the results of {', '.join(used)}" if used
             else f"starts from base {start[:10]}")
    if failed:
        where += f"; waited for {', '.join(failed)}, which failed: not in its start"
    return where
