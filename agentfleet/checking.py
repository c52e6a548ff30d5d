"""Plan loading, checking and decomposition: the one check the CLI and the flows share.

``load_and_check`` reads a plan file, inspects its repository and decomposes the
tasks into waves and an apply order; every problem comes back at once in one
``PlanError``. ``render_plan`` is what ``agentfleet plan`` prints and what the
sprint's ``decompose`` task run publishes. Prefect-free, reads only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentfleet.decompose import Decomposition, decompose
from agentfleet.durations import format_duration
from agentfleet.errors import PlanError, Problem
from agentfleet.foreach import Template
from agentfleet.git_credentials import redact_url
from agentfleet.guardrails import limits_line, model_note
from agentfleet.plan import Plan, PlanReading, SyncMirror, read_plan, read_plan_data
from agentfleet.plan_blocks import BlockLoaders, PlanBlocks
from agentfleet.remote import RemoteRepository
from agentfleet.repository import CheckedRepo, RepoFacts, folder_patterns, inspect_repository


@dataclass(frozen=True)
class CheckedPlan:
    """A plan that loaded, whose repository checked out, decided into waves and order."""

    plan: Plan
    repo: CheckedRepo
    decomposition: Decomposition
    warnings: list[str] = field(default_factory=list)
    templates: list[Template] = field(default_factory=list)  # foreach tasks, as expanded
    blocks: PlanBlocks = field(default_factory=PlanBlocks)  # what the plan's saved blocks add
    remote: RemoteRepository | None = None  # a remote repo: where it is; ``repo`` is its mirror


def load_and_check(
    plan_path: Path, blocks: BlockLoaders | None = None, *, mirror: SyncMirror | None = None
) -> CheckedPlan:
    """Load a plan, check its repository and decompose it; ``PlanError`` lists every problem.

    Reads only: nothing is created in the repository. ``blocks`` loads the saved blocks
    the plan names (without it, naming one is a problem). ``mirror`` fetches a remote
    ``repo`` into its mirror under the work dir (``agentfleet.remote.mirrors``).
    """
    return check_reading(read_plan(Path(plan_path), blocks=blocks, mirror=mirror))


def check_plan_data(
    raw: dict[str, Any],
    plan_path: Path,
    *,
    source: str,
    blocks: BlockLoaders | None = None,
    mirror: SyncMirror | None = None,
) -> CheckedPlan:
    """``load_and_check`` for plan data not read from a file (a planner's answer, a form).

    ``plan_path`` is where the plan would be written: ``repo`` is relative to its folder.
    """
    return check_reading(
        read_plan_data(raw, Path(plan_path), source=source, blocks=blocks, mirror=mirror)
    )


def check_reading(reading: PlanReading) -> CheckedPlan:
    """Check a plan reading's repository and decompose it; ``PlanError`` lists every problem."""
    problems = list(reading.problems)
    facts: RepoFacts | None = None
    # Repository problems are worth reporting next to plan problems whenever the
    # plan got far enough to say where the repository is.
    if reading.repo_path is not None:
        facts = inspect_repository(
            reading.repo_path, reading.base, reading.target, source=reading.source,
            mirror=reading.remote is not None,
            shown=redact_url(reading.remote) if reading.remote is not None else None,
        )
        problems.extend(facts.problems)
    if facts is not None and facts.root is not None and facts.base_sha:
        problems.extend(_folder_pattern_problems(reading, facts.root, facts.base_sha))
    if reading.plan is not None and reading.plan.placement == "pool" and reading.remote is None:
        problems.append(Problem(
            f"{reading.source}: placement",
            "`pool` runs attempts on workers elsewhere, which need a remote `repo` to fetch "
            "from and push to (a git URL or a bare repository), not a local folder",
        ))
    if problems or reading.plan is None or facts is None:
        raise PlanError(problems)
    repo = facts.checked()
    decomposition = decompose(reading.plan)
    return CheckedPlan(
        plan=reading.plan,
        repo=repo,
        decomposition=decomposition,
        warnings=[*repo.warnings, *decomposition.warnings],
        templates=reading.templates,
        blocks=reading.blocks,
        remote=RemoteRepository(location=reading.remote, mirror=repo.root,
                                block=reading.remote_block)
        if reading.remote is not None else None,
    )


def _folder_pattern_problems(reading: PlanReading, root: Path, base_sha: str) -> list[Problem]:
    """A `paths` pattern naming a folder must say so, or the agent's work there is refused."""
    named = folder_patterns(
        root, base_sha, (p for paths in reading.task_paths.values() for p in paths)
    )
    return [
        Problem(
            f"{reading.source}: {label}.paths",
            f"'{pattern}' names the folder '{named[pattern]}' but matches only files of that "
            f"name; write '{pattern}/' (or '{pattern}/**') for what is inside it",
        )
        for label, paths in reading.task_paths.items()
        for pattern in dict.fromkeys(paths)
        if pattern in named
    ]


def _short(sha: str | None) -> str:
    return sha[:10] if sha else "?"


def render_plan(checked: CheckedPlan, models: Mapping[str, str] | None = None) -> str:
    """The human summary ``agentfleet plan`` prints: waves, serializations, apply order.

    ``models``: the settings' model of each task complexity (when the plan names none).
    """
    plan, repo, dec = checked.plan, checked.repo, checked.decomposition
    target_state = f"exists at {_short(repo.target_sha)}" if repo.target_exists else "new"
    n = len(plan.tasks)
    lines = [
        f"plan '{plan.name}': {n} task{'s' if n != 1 else ''} in "
        + (f"{checked.remote.shown} (mirror {repo.root})" if checked.remote else f"{repo.root}"),
        f"base {repo.base} ({_short(repo.base_sha)}) -> target {plan.target_branch} "
        f"({target_state})",
        f"up to {plan.limits.concurrency} agents at once; timeout "
        f"{format_duration(plan.timeout_seconds)}, retries {plan.retries}",
        limits_line(plan),
        "",
    ]
    if plan.goal is not None:
        agent = plan.planner_agent
        lines += [
            "goal (the planner proposes the tasks when the sprint runs; `agentfleet decompose` "
            "shows them now):",
            *[f"  {line}" for line in plan.goal.strip().splitlines()],
            f"planner: {agent.kind}, sandbox {agent.sandbox}"
            + (f", model {agent.model}" if agent.model else "")
            + ("; the proposed plan waits for review" if plan.review_plan else ""),
        ]
        return "\n".join(lines) + "\n"
    if plan.overlap == "merge":
        lines += ["overlap: merge (tasks whose paths overlap run together; git merges their "
                  "results at apply)", ""]
    if checked.templates:
        lines.append("templates (foreach):")
        lines += [f"  {t.describe()}" for t in checked.templates]
        lines.append("")
    width = max(len(t) for t in dec.order)
    tasks = {t.id: t for t in plan.tasks}
    for number, wave in enumerate(dec.waves, start=1):
        together = " (may run together)" if len(wave) > 1 else ""
        lines.append(f"wave {number}{together}:")
        for tid in wave:
            task = tasks[tid]
            paths = ", ".join(task.paths) if task.paths is not None else "(any file)"
            waits = f"  waits for {', '.join(dec.waits_on[tid])}" if dec.waits_on[tid] else ""
            n_attempts = plan.task_attempts(task)
            several = f"  {n_attempts} attempts" if n_attempts > 1 else ""
            several += "  review" if task.review else ""
            model = model_note(plan, tid, models)
            lines.append(f"  {tid:<{width}}  {task.stage:<10}  {paths}{waits}{several}{model}")
    lines.append("")
    reasons = dec.serialization_lines()
    if reasons:
        lines.append("serialized (a -> b: b waits for a):")
        lines += [f"  {r}" for r in reasons]
    else:
        lines.append("serialized: nothing; every task may run in parallel")
    lines += ["", f"apply order: {', '.join(dec.order)}"]
    return "\n".join(lines) + "\n"
