"""From a task's finished attempts to its candidates, the selection and the result landed.

Pure: the attempts' results carry what judging needs (the stored patch, verify's
and score's output); ``agentfleet.selection`` applies the criteria.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agentfleet.checking import CheckedPlan, check_plan_data
from agentfleet.control import EARLY_STOP
from agentfleet.naming import attempt_branch
from agentfleet.plan import SyncMirror
from agentfleet.plan_blocks import BlockLoaders
from agentfleet.remote import remote_location
from agentfleet.requests import plain
from agentfleet.results import AttemptResult
from agentfleet.selection import Candidate, ScoreGoal, Selection, apply_score, choose

TASK_ID = "task"  # the one task of a best-of-n run


def candidates_of(results: Iterable[AttemptResult], *, scored: bool) -> list[Candidate]:
    """One candidate per attempt, by k; with ``scored``, each passing one's score read."""
    out: list[Candidate] = []
    for result in sorted(results, key=lambda r: r.attempt):
        candidate = Candidate.from_attempt(result)
        if scored and result.succeeded:
            candidate = apply_score(candidate, result.score.output_tail if result.score else "")
        out.append(candidate)
    return out


def select(results: Iterable[AttemptResult], *, scored: bool, goal: ScoreGoal) -> Selection:
    """The selection among a task's attempts (``choose`` over their candidates)."""
    return choose(candidates_of(results, scored=scored), goal)


def chosen(selection: Selection, results: Iterable[AttemptResult], *, sprint: str,
           task_id: str) -> AttemptResult:
    """The result that stands for the task: the winner's, or a failure naming every reason."""
    by_k = {r.attempt: r for r in results}
    if selection.winner is not None:
        return by_k[selection.winner.k]
    first = min(by_k) if by_k else 1
    start = by_k[first].start_sha if by_k else ""
    return AttemptResult(
        task_id=task_id,
        attempt=first,
        branch=by_k[first].branch if by_k else attempt_branch(sprint, task_id, first),
        start_sha=start,
        succeeded=False,
        reason=selection.sentence,
    )


def stopped_result(task_id: str, k: int, branch: str, start_sha: str,
                   *, started: bool = True) -> AttemptResult:
    """An attempt stopped because a sibling passed first (``early_stop: first_pass``)."""
    return AttemptResult(
        task_id=task_id, attempt=k, branch=branch, start_sha=start_sha, succeeded=False,
        reason=f"stopped: {EARLY_STOP}" + ("" if started else " (not started)"),
    )


def best_of_n_plan(
    prompt: str,
    *,
    repo: Any = ".",
    base: str | None = None,
    attempts: int = 3,
    verify: str | None = None,
    score: str | None = None,
    score_goal: str = "min",
    paths: list[str] | None = None,
    variants: Sequence[Mapping[str, Any] | BaseModel] | None = None,
    agent: Mapping[str, Any] | BaseModel | None = None,
    target: str | None = None,
    name: str = "best-of-n",
    blocks: BlockLoaders | None = None,
    mirror: SyncMirror | None = None,
) -> CheckedPlan:
    """The one-task plan of a best-of-n run, checked; ``PlanError`` lists every problem.

    ``repo``, ``agent`` and ``variants`` may be mappings or their models (a flow's form);
    ``repo`` and ``agent`` may name a saved block (``{block: NAME}``), loaded through
    ``blocks``; a remote ``repo`` is fetched by ``mirror`` (as ``load_and_check``'s).
    """
    # A folder on this machine, a remote (fetched by ``mirror``: a git URL, a bare
    # repository) or a saved repository block ({block: NAME}).
    repo = plain(repo)
    remote = remote_location(str(repo), Path.cwd()) if not isinstance(repo, dict) else None
    folder = Path.cwd() if isinstance(repo, dict) or remote else Path(repo).resolve()
    where = repo if isinstance(repo, dict) else remote or str(folder)
    raw: dict[str, Any] = {"name": name, "repo": where,
                           "attempts": attempts, "score_goal": score_goal,
                           "tasks": [{"id": TASK_ID, "prompt": prompt}]}
    optional = {"base": base, "verify": verify, "score": score, "variants": plain(variants),
                "agent": plain(agent), "target": target}
    raw.update({k: v for k, v in optional.items() if v is not None})
    if paths:
        raw["tasks"][0]["paths"] = list(paths)
    return check_plan_data(raw, folder / "best-of-n.yaml", source="best-of-n",
                           blocks=blocks, mirror=mirror)
