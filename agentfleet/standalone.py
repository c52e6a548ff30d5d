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


def apply_start(repo: Path, target: str, base: str | None = None) -> tuple[str, str | None]:
    """The commit the branches land on: the target's, or (no target yet) ``base``'s.

    A missing target is created from ``base`` (default: the repository's HEAD) when the
    first branch lands; the second value says so (None when the target exists).
    """
    target_sha = gitapply.rev_parse(repo, f"refs/heads/{target}")
    if target_sha is not None:
        return target_sha, None
    start = base or "HEAD"
    sha = gitapply.rev_parse(repo, start)
    if sha is None:
        raise ConfigError(
            f"the target branch {target!r} does not exist in {repo} and its base {start!r} "
            "names no commit: create the target, or pass a base (--base) to create it from"
        )
    return sha, (
        f"the target branch {target} does not exist: it is created from {start} "
        f"({sha[:10]}) when a branch lands"
    )


def branch_candidates(
    repo: Path, target: str, branches: list[str], base: str | None = None
) -> tuple[str, list[str], dict[str, AttemptResult]]:
    """The commit to land on (:func:`apply_start`), the order (task ids), each branch's result."""
    target_sha, _ = apply_start(repo, target, base)
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
