"""Applying branches made elsewhere (by hand, by the Codex app, by other tools).

The ``apply`` flow's domain: each branch becomes a candidate as if an attempt had made
it (its own change: ``merge-base(target, branch)..branch``), then landing as for a sprint.
"""

from __future__ import annotations

import re
from pathlib import Path

from agentfleet import apply as gitapply
from agentfleet.errors import ConfigError
from agentfleet.gitcmd import git
from agentfleet.results import AttemptResult

# The "sprint" of standalone applies: names the scratch ref, the trailers and the lock.
APPLY_SPRINT = "apply"
STRATEGIES = ("resolve", "overwrite", "skip")


def task_id_of(branch: str) -> str:
    """A task id for a branch: lowercase, runs of other characters as one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", branch.lower()).strip("-") or "branch"


def check_apply(on_conflict: str, resolver: object | None) -> None:
    """Refuse what the standalone apply cannot do; ``ConfigError`` (exit 2)."""
    if on_conflict == "rerun":
        raise ConfigError(
            "on_conflict: rerun needs a task's prompt, which a branch made elsewhere has not: "
            "use resolve (with a resolver agent), overwrite or skip"
        )
    if on_conflict not in STRATEGIES:
        raise ConfigError(f"on_conflict: {on_conflict!r} is not one of {', '.join(STRATEGIES)}")
    if on_conflict == "resolve" and resolver is None:
        raise ConfigError("on_conflict: resolve needs a resolver agent (an `agent` mapping)")


def branch_candidates(
    repo: Path, target: str, branches: list[str]
) -> tuple[str, list[str], dict[str, AttemptResult]]:
    """The target's commit, the apply order (task ids) and each branch as a result."""
    target_sha = gitapply.rev_parse(repo, f"refs/heads/{target}")
    if target_sha is None:
        raise ConfigError(f"the target branch {target!r} does not exist in {repo}")
    order: list[str] = []
    results: dict[str, AttemptResult] = {}
    for branch in branches:
        head = gitapply.rev_parse(repo, f"refs/heads/{branch}") or gitapply.rev_parse(repo, branch)
        if head is None:
            raise ConfigError(f"no branch {branch!r} in {repo}")
        task_id = task_id_of(branch)
        if task_id in results:
            raise ConfigError(f"{branch!r} is given twice (or two branches read as {task_id})")
        start = git(repo, "merge-base", target_sha, head).strip()
        files = git(repo, "diff", "--name-only", "-z", start, head).split("\0")
        order.append(task_id)
        results[task_id] = AttemptResult(
            task_id=task_id, attempt=1, branch=branch, start_sha=start, head_sha=head,
            succeeded=True, files=[f for f in files if f], prompt=f"the branch {branch}",
        )  # fmt: skip
    return target_sha, order, results
