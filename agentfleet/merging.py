"""A resolver's worktree: a literal ``git merge`` in progress, and the check of its result.

The resolver agent (Codex or a command) gets what a person gets from ``git merge``:
HEAD at the stack, ``MERGE_HEAD`` at the conflicting task's commit, the conflicted
files with their markers and unmerged index entries (``git status`` says "both
modified"). Whatever it does then (edit, ``git add``, even ``git commit``), agentfleet
commits the worktree's files onto the start as for any attempt, and the result must
hold no conflict marker in the conflicted files and change, against the merge as git
left it, only those files (or files within the task's ``paths``).

Which change is merged: only the task's own (``start..head``, as landing applies it).
Landing starts the resolver from the stack's head when the task's start is on it; else
from a stand-in commit whose parents are the head and the task's start, so that git's
merge base is the task's start.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from agentfleet import apply as gitapply
from agentfleet.errors import GitError
from agentfleet.gitcmd import identity_args
from agentfleet.patterns import matches
from agentfleet.worktrees import Worktree, tree_changes


class MergeInProgress(BaseModel):
    """A merge left in progress in an attempt's worktree before its agent starts."""

    commit: str  # merged into the start commit: MERGE_HEAD
    label: str  # how the conflict markers name it (a branch name, else the commit)
    files: list[str]  # the files landing found conflicting


def merge_start(repo: Path, head: str, task_start: str, task_id: str) -> str:
    """The commit a resolver's worktree starts from: ``head``, or a stand-in (module doc)."""
    if gitapply.is_ancestor(repo, task_start, head):
        return head
    return gitapply.commit_tree(
        repo, gitapply.tree_of(repo, head), [head, task_start],
        f"agentfleet: the stack {head[:10]} with {task_id}'s start {task_start[:10]} as a "
        f"parent\n\nSo that merging {task_id} takes only its own change "
        f"({task_start[:10]}..).\n",
    )  # fmt: skip


def label_for(repo: Path, branch: str, commit: str) -> str:
    """``branch`` when it names ``commit`` (the markers then say whose side it is)."""
    for ref in (f"refs/heads/{branch}", branch):
        try:
            if gitapply.rev_parse(repo, ref) == commit:
                return branch
        except GitError:
            pass
    return commit


def begin_merge(worktree: Worktree, merge: MergeInProgress) -> list[str]:
    """Run ``git merge --no-commit`` in ``worktree``, conflicts left in place; their files.

    A merge that goes through cleanly is left uncommitted too (still in progress). The
    snapshots between agent sessions keep this state (``worktrees.snapshot_worktree``).
    """
    label = merge.label  # git's markers name the side by what was merged: this name
    done = worktree.run(
        *identity_args(), "-c", "merge.autoStash=false", "-c", "rerere.enabled=false",
        "merge", "--no-ff", "--no-commit", "--no-edit", "--no-verify", "--no-stat",
        "--no-verify-signatures",
        "-m", f"Merge {label}", label,
    )  # fmt: skip
    merging = worktree.run("rev-parse", "--verify", "--quiet", "MERGE_HEAD").stdout.strip()
    if merging != merge.commit:
        raise GitError(
            f"could not start merging {label} in {worktree.path} (exit {done.returncode}): "
            + " ".join((done.stderr or done.stdout).split())[-400:]
        )
    out = worktree.git("diff", "--name-only", "-z", "--diff-filter=U")
    return [p for p in out.split("\0") if p]


def resolution_problems(
    repo: Path, start: str, head: str, merge: MergeInProgress, paths: list[str] | None
) -> list[str]:
    """What is wrong with a resolver's commit ``head`` (on ``start``): markers, stray files."""
    problems = []
    left = gitapply.has_conflict_markers(repo, head, merge.files)
    if left:
        problems.append(f"conflict markers left in {', '.join(left)}")
    # The merge as git left it (markers in place): only conflicted files may differ from it.
    merged, _ = gitapply.merge_trees(repo, start, merge.commit)
    stray = [
        c.path for c in tree_changes(repo, merged, head)
        if c.path not in merge.files and not any(matches(p, c.path) for p in paths or ())
    ]  # fmt: skip
    if stray:
        problems.append(
            "the resolver changed files that were not in conflict: " + ", ".join(stray)
        )
    return problems
