"""The ``best-of-n`` flow: one prompt, N attempts, the best candidate chosen (and shown why).

The seed's ``codex cloud exec --attempts 3 "..."``, then choosing among the three, done
by agentfleet: the prompt becomes a one-task plan with ``attempts`` (plus ``verify``,
``score``, ``paths``, ``variants``), checked like any plan and run by the sprint's own
machinery. It returns the winner's branch and the candidates table, and applies
nothing unless given a ``target``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Completed, Failed
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from agentfleet.agent_config import Variant
from agentfleet.apply import rev_parse
from agentfleet.best_of_n import TASK_ID, best_of_n_plan
from agentfleet.block_refs import PlanAgent, RepositoryBlockRef
from agentfleet.errors import AgentfleetError
from agentfleet.plan import ScoreGoal
from agentfleet.remote import RemoteRepository, push_branches
from agentfleet.results import SprintReport, TaskOutcome
from agentfleet.selection import Candidate, Selection, candidates_table
from flows.params import best_of_n_run_name, saved_blocks
from flows.sprint import MAX_POOL, run_checked
from tasks.remote import machine_mirror, remote_access


class BestOfNResult(BaseModel):
    """What ``best-of-n`` returns: the winner's branch, the candidates and why."""

    winner: int | None = Field(description="the winning k; None: no candidate passed")
    branch: str | None = Field(description="the winner's branch")
    criterion: str | None = None
    sentence: str = ""
    candidates: list[dict[str, Any]] = Field(
        default_factory=list, description="the candidates table, one row per attempt"
    )
    judged: list[Candidate] = Field(
        default_factory=list, description="every candidate with all its figures"
    )
    applied: bool = Field(False, description="landed on the target (only with a target)")
    report: SprintReport


def _push_candidates(remote: RemoteRepository, judged: list[Candidate]) -> None:
    """Nothing lands without a target: the candidates' branches go to the remote repo,
    where whoever chooses looks at them (a landing pushes the attempts it applies)."""
    made = [c.branch for c in judged if rev_parse(remote.mirror, f"refs/heads/{c.branch}")]
    try:
        push_branches(remote, made, remote_access(remote))
    except AgentfleetError as exc:  # the choice stands; the branches stay in the mirror
        get_run_logger().warning(f"the candidates' branches stay in {remote.mirror}: {exc}")
    else:
        if made:
            get_run_logger().info(f"pushed {', '.join(made)} to {remote.shown}")


def result_of(report: SprintReport) -> BestOfNResult:
    """The flow's answer, read from the run's report."""
    row = next(t for t in report.tasks if t.task == TASK_ID)
    if row.candidates:
        candidates = row.candidates
        winner = next((c for c in candidates if c.k == row.winner), None)
        sentence, criterion = row.selection, row.criterion
    else:  # one attempt: no select task run
        passed = row.outcome in (TaskOutcome.NOT_APPLIED, TaskOutcome.APPLIED,
                                 TaskOutcome.ALREADY_APPLIED)
        only = Candidate(k=1, branch=row.attempt_branch or "", passed=passed,
                         reason=row.detail, files=row.files)
        candidates, winner = [only], only if passed else None
        sentence = ("k=1 won: the only candidate that passed" if passed
                    else f"no candidate passed (k=1: {row.detail or 'failed'})")
        criterion = "passes" if passed else None
    selection = Selection(candidates=candidates, winner=winner, criterion=None,
                          sentence=sentence, votes=row.votes)
    return BestOfNResult(
        winner=winner.k if winner else None,
        branch=winner.branch if winner else None,
        criterion=criterion,
        sentence=sentence,
        candidates=candidates_table(selection),
        judged=candidates,
        applied=row.applied,
        report=report,
    )


# As ``sprint``: the annotations make the run form, the plan's checks judge the values.
# The ignore: Prefect 3.9's own annotation of task_runner rejects its ThreadPoolTaskRunner.
@flow(name="best-of-n", flow_run_name=best_of_n_run_name, validate_parameters=False,
      task_runner=ThreadPoolTaskRunner(max_workers=MAX_POOL))  # type: ignore[arg-type]
def best_of_n(
    prompt: str,
    repo: str | RepositoryBlockRef = ".",
    base: str | None = None,
    attempts: int = 3,
    verify: str | None = None,
    score: str | None = None,
    score_goal: ScoreGoal = "min",
    paths: list[str] | None = None,
    variants: list[Variant] | None = None,
    agent: PlanAgent | None = None,
    target: str | None = None,
    name: str = "best-of-n",
    no_cache: bool = False,
    answer: str | None = None,
) -> BestOfNResult:
    """Run ``attempts`` attempts of one prompt and choose the best; land it only on ``target``.

    Completed with the winner's branch; Failed when no candidate passed (or, with a
    target, when the winner did not land).

    Args:
        prompt: What every attempt should do.
        repo: The git repository: a folder on the worker, a remote (a git URL or a bare
            repository: fetched first; the winner lands there, or without a target the
            candidates' branches are pushed there), or a saved agentfleet-repository
            block as {block: NAME}.
        base: The branch to start from (default: the repository's current branch).
        attempts: How many attempts (1 to 8), each in its own worktree and branch.
        verify: Shell command a candidate must pass.
        score: Shell command whose last output line (a number) ranks passing candidates.
        score_goal: Which score is better: min or max.
        paths: Gitignore-style patterns of the only files a candidate may change.
        variants: Different approaches: attempt k uses entry (k-1) mod len.
        agent: The agent (as a plan's agent:), or a saved agentfleet-agent block as
            {block: NAME} with changes.
        target: Land the winner on this branch (default: apply nothing).
        name: Names the attempt branches (agentfleet-attempts/NAME/task/k).
        no_cache: Run every attempt afresh.
        answer: Also write the result there as JSON (agentfleet best-of-n reads it).
    """
    checked = best_of_n_plan(
        prompt, repo=repo, base=base, attempts=attempts, verify=verify, score=score,
        score_goal=score_goal, paths=paths, variants=variants, agent=agent, target=target,
        name=name, blocks=saved_blocks(), mirror=machine_mirror(),
    )
    def ending(report: SprintReport) -> tuple[bool, str]:
        result = result_of(report)
        ok = result.winner is not None and (target is None or report.exit_status == 0)
        return ok, result.sentence or report.summary_line()

    report = run_checked(checked, no_cache=no_cache, land=target is not None, ending=ending)
    result = result_of(report)
    if checked.remote is not None and target is None:
        _push_candidates(checked.remote, result.judged)
    if answer:
        Path(answer).write_text(result.model_dump_json(indent=2) + "\n")
    ok, message = ending(report)
    if not ok:
        # No data: a deployment run would turn it into its exception (see ``sprint``).
        return Failed(message=message)  # type: ignore[return-value]
    return Completed(message=message, data=result)  # type: ignore[return-value]
