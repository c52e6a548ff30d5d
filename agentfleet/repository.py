"""Checking the repository a plan runs on, without changing anything in it.

Every git command here is a read: no branch, ref, worktree or file is created,
and ``git status`` runs with ``--no-optional-locks`` so it does not even
refresh the index (which would take ``.git/index.lock``).
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import git
from git.exc import GitCommandError, InvalidGitRepositoryError, NoSuchPathError
from pydantic import BaseModel, ConfigDict, Field

from agentfleet.errors import GitError, NotARepository, Problem
from agentfleet.naming import is_attempt_branch
from agentfleet.patterns import matches, validate_pattern

_MAX_BRANCHES_SHOWN = 5


class RepoFacts(BaseModel):
    """What a plan needs to know about its repository, and what is wrong with it."""

    model_config = ConfigDict(frozen=False)

    path: Path = Field(description="The folder the plan names.")
    root: Path | None = Field(None, description="The top of the working tree.")
    current_branch: str | None = Field(
        None, description="The checked-out branch; None if detached."
    )
    base: str | None = Field(None, description="The branch agents start from, resolved.")
    base_sha: str | None = Field(None, description="The commit agents start from.")
    target: str | None = Field(None, description="The branch results land on.")
    target_exists: bool = Field(False, description="Whether the target branch exists already.")
    target_sha: str | None = Field(None, description="The target's commit, if it exists.")
    dirty: bool = Field(False, description="Whether the working tree has uncommitted changes.")
    problems: list[Problem] = Field(default_factory=list, description="Why a sprint cannot run.")
    warnings: list[str] = Field(default_factory=list, description="What the user should know.")

    @property
    def ok(self) -> bool:
        """Whether a sprint can run on this repository."""
        return not self.problems

    def checked(self) -> CheckedRepo:
        """The facts of a repository a sprint can run on, none of them missing."""
        if not self.ok or self.root is None or self.base is None or self.base_sha is None \
                or self.target is None:
            raise ValueError(f"{self.path}: not a repository a sprint can run on")
        return CheckedRepo(
            path=self.path, root=self.root, current_branch=self.current_branch,
            base=self.base, base_sha=self.base_sha, target=self.target,
            target_exists=self.target_exists, target_sha=self.target_sha, dirty=self.dirty,
            warnings=tuple(self.warnings),
        )


@dataclass(frozen=True)
class CheckedRepo:
    """``RepoFacts`` once checked: what a sprint reads of its repository, all known."""

    path: Path  # the folder the plan names
    root: Path  # the top of its working tree (a remote's: its mirror)
    current_branch: str | None  # None if detached
    base: str
    base_sha: str
    target: str
    target_exists: bool
    target_sha: str | None  # None while the target does not exist
    dirty: bool
    warnings: tuple[str, ...] = ()


def open_repository(path: Path, *, bare: bool = False) -> git.Repo:
    """The git repository at or above ``path``; raises ``NotARepository`` naming the path.

    ``bare``: ``path`` is a remote's bare mirror (``agentfleet.remote``), worked on as it is.
    """
    try:
        repo = git.Repo(path, search_parent_directories=not bare)
    except (InvalidGitRepositoryError, NoSuchPathError) as exc:
        raise NotARepository(f"{path} is not a git repository") from exc
    if repo.bare and not bare:
        repo.close()
        raise NotARepository(f"{path} is a bare repository; agentfleet needs a working tree")
    return repo


def _branches(repo: git.Repo) -> dict[str, str]:
    """Every local branch and its commit, from one read-only ``for-each-ref``."""
    out = repo.git.for_each_ref("refs/heads", format="%(refname) %(objectname)")
    branches = {}
    for line in out.splitlines():
        ref, _, sha = line.rpartition(" ")
        branches[ref.removeprefix("refs/heads/")] = sha
    return branches


def _listed(branches: Iterable[str]) -> str:
    """Branch names for a message: the user's own first (attempt branches are many and
    rarely meant), at most ``_MAX_BRANCHES_SHOWN``."""
    names = sorted(branches, key=lambda b: (is_attempt_branch(b), b))
    more = len(names) - _MAX_BRANCHES_SHOWN
    return ", ".join(names[:_MAX_BRANCHES_SHOWN]) + (f" and {more} more" if more > 0 else "")


def is_dirty(repo: git.Repo) -> bool:
    """Whether the working tree has uncommitted changes or untracked files (read-only)."""
    out = repo.git.execute(
        ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=normal"]
    )
    return bool(str(out).strip())


def inspect_repository(
    repo_path: Path,
    base: str | None,
    target: str | None,
    *,
    source: str | None = None,
    mirror: bool = False,
    shown: str | None = None,
) -> RepoFacts:
    """Read the facts a plan needs from its repository, collecting problems instead of raising.

    ``source`` (the plan file's name) prefixes each problem's location. ``mirror``: the
    repository is a remote's bare mirror (no working tree, so nothing is uncommitted);
    ``shown``: how messages name it (the remote's URL, not its mirror's folder).
    """
    facts = RepoFacts(path=Path(repo_path), target=target)

    def problem(key: str, message: str) -> None:
        facts.problems.append(Problem(f"{source}: {key}" if source else key, message))

    path = Path(repo_path)
    if not path.exists():
        problem("repo", f"{path} does not exist")
        return facts
    if not path.is_dir():
        problem("repo", f"{path} is not a folder")
        return facts
    try:
        repo = open_repository(path, bare=mirror)
    except NotARepository as exc:
        problem("repo", f"{exc} (set repo: to the repository's folder, or run git init there)")
        return facts
    with repo:
        try:
            _inspect(repo, facts, base, problem, shown)
        except GitCommandError as exc:
            raise GitError(f"reading {path} failed: {exc.stderr.strip() or exc}") from exc
    return facts


def _inspect(
    repo: git.Repo, facts: RepoFacts, base: str | None, problem: Callable[[str, str], None],
    shown: str | None,
) -> None:
    facts.root = Path(repo.working_tree_dir or repo.git_dir).resolve()
    root = shown or str(facts.root)  # as messages name it
    detached = repo.head.is_detached
    if not detached:
        facts.current_branch = repo.head.reference.name
    branches = _branches(repo)
    unborn = not repo.head.is_valid()  # HEAD names a branch without commits
    if unborn and not branches:
        problem(
            "repo",
            f"{root} has no commits yet; commit something first (agents start from a commit)",
        )
        return
    if unborn and base is None:
        # A bare repository made with `git init --bare` keeps HEAD on its default branch
        # (often master) while only main was pushed: its branches are fine, its HEAD is not.
        problem(
            "base",
            f"HEAD of {root} names the branch '{facts.current_branch}', which has no commits, "
            f"and the plan gives no base; set base: to the branch agents should start from "
            f"(branches: {_listed(branches)})",
        )
        return

    if base is None:
        if detached:
            problem(
                "base",
                f"HEAD is detached in {root} and the plan gives no base; set base: to the "
                "branch agents should start from",
            )
        else:
            base = facts.current_branch
    elif base not in branches:
        problem(
            "base",
            f"branch '{base}' does not exist in {root}"
            + (f"; existing branches: {_listed(branches)}" if branches else ""),
        )
        base = None
    if base is not None:
        facts.base = base
        facts.base_sha = branches.get(base)

    target = facts.target
    if target is not None:
        facts.target_sha = branches.get(target)
        facts.target_exists = facts.target_sha is not None
        # git keeps refs as files: 'a' and 'a/b' cannot both be branches.
        for name in sorted(branches):
            if name.startswith(target + "/") or target.startswith(name + "/"):
                problem(
                    "target",
                    f"branch '{target}' cannot be created next to the existing branch "
                    f"'{name}'; choose another target",
                )
                break
        tags = repo.git.for_each_ref("refs/tags", format="%(refname:lstrip=2)").splitlines()
        if target in tags:
            problem(
                "target",
                f"'{target}' is already a tag in {root}; a branch of the same name would "
                "make it ambiguous: choose another target",
            )
        if base is not None and target == base:
            facts.warnings.append(
                f"target '{target}' is the base branch: results land directly on it"
            )

    facts.dirty = not repo.bare and is_dirty(repo)
    if facts.dirty and facts.base is not None:
        facts.warnings.append(
            f"uncommitted changes in {root} are not part of base '{facts.base}'; "
            "agents start from its last commit"
        )


def folder_patterns(root: Path, base_sha: str, patterns: Iterable[str]) -> dict[str, str]:
    """Patterns that name a folder of ``base`` without a trailing ``/``, with that folder.

    Such a pattern matches only files of that name (see ``patterns``), which is
    never what was meant: the agent's changes inside the folder would be refused.
    One ``git ls-tree`` for all patterns; each pattern is tried only on the folders
    whose name its last segment can match.
    """
    candidates = [
        p for p in dict.fromkeys(patterns)
        if not p.endswith("/") and not p.endswith("**") and validate_pattern(p) is None
    ]
    if not candidates:
        return {}
    listing = git.Repo(root).git.ls_tree("-r", "-d", "--name-only", "-z", base_sha)
    by_name: dict[str, list[str]] = {}
    for folder in listing.split("\0"):
        if folder:
            by_name.setdefault(folder.rpartition("/")[2], []).append(folder)
    names = sorted(by_name)
    found: dict[str, str] = {}
    for pattern in candidates:
        last = pattern.rpartition("/")[2]
        if not any(c in last for c in "*?[\\"):
            near = [last] if last in by_name else []
        else:
            # Only names starting with the glob's literal start can match it.
            start = re.split(r"[*?\[\\]", last, maxsplit=1)[0]
            near = names[bisect_left(names, start):bisect_left(names, start + "\U0010ffff")]
        hit = next(
            (f for name in near for f in by_name[name] if matches(pattern, f)), None
        )
        if hit is not None:
            found[pattern] = hit
    return found


def base_files(repo_path: Path, base: str | None) -> list[str] | None:
    """The files of ``base`` (default: HEAD), as ``foreach: {files: ...}`` matches them.

    ``git ls-tree -r`` of the commit, submodules left out (they are not files of this
    repository). None when the repository or the base cannot be read: the repository
    check reports why.
    """
    from agentfleet.gitcmd import run_git

    rev = f"refs/heads/{base}" if base else "HEAD"
    done = run_git(Path(repo_path), "ls-tree", "-r", "-z", "--full-tree", f"{rev}^{{commit}}")
    if done.returncode != 0:
        return None
    files = []
    for entry in done.stdout.split("\0"):
        meta, tab, path = entry.partition("\t")
        if tab and not meta.startswith("160000"):
            files.append(path)
    return files
