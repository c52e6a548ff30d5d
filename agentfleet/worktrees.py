"""Worktrees for attempts and verification, and the small diffs and commits made in them.

Every attempt runs in a worktree of its own (one branch per attempt) under a root
folder outside the repository. ``git worktree add/remove`` from parallel threads or
processes race on ``.git/worktrees``, so both are serialized per repository by a
thread lock and an ``fcntl`` lock in the git common dir. A failed add is undone
completely: no registered worktree, no folder, no branch it created.
"""

from __future__ import annotations

import builtins
import fcntl
import os
import shutil
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import git as gitpython

from agentfleet.errors import ConfigError, GitError, NotARepository
from agentfleet.gitcmd import (
    AGENTFLEET_IDENTITY,
    compose_message,
    git,
    git_error,
    identity_args,
    run_git,
)

LOCK_FILE_NAME = "agentfleet-worktrees.lock"


@dataclass(frozen=True)
class WorktreeInfo:
    """One registered worktree: where it is, its branch (None when detached), its commit."""

    path: Path
    branch: str | None
    head: str | None


def git_common_dir(repo: Path) -> Path:
    """The directory shared by all worktrees of ``repo`` (``.git`` of the main one)."""
    out = git(repo, "rev-parse", "--path-format=absolute", "--git-common-dir")
    return Path(out.strip()).resolve()


def list_worktrees(repo: Path) -> list[WorktreeInfo]:
    """Every worktree registered in ``repo``, the main one first."""
    out = git(repo, "worktree", "list", "--porcelain", "-z")
    result: list[WorktreeInfo] = []
    # -z: attributes end in NUL, records end in an empty attribute.
    for record in out.split("\0\0"):
        fields = [f for f in record.split("\0") if f]
        if not fields:
            continue
        attrs: dict[str, str] = {}
        for field in fields:
            key, _, value = field.partition(" ")
            attrs[key] = value
        if "worktree" not in attrs:
            continue
        branch = attrs.get("branch")
        result.append(
            WorktreeInfo(
                path=Path(attrs["worktree"]),
                branch=branch.removeprefix("refs/heads/") if branch else None,
                head=attrs.get("HEAD"),
            )
        )
    return result


_guard = threading.Lock()
_thread_locks: dict[Path, threading.Lock] = {}


@contextmanager
def repo_lock(repo: Path) -> Iterator[None]:
    """Hold this repository's worktree lock: one thread, then one process, at a time."""
    common = git_common_dir(repo)
    with _guard:
        thread_lock = _thread_locks.setdefault(common, threading.Lock())
    with thread_lock:
        fd = os.open(common / LOCK_FILE_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            # Blocking: the holder only runs a short git command, and the kernel
            # releases the lock if it dies.
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock


class WorktreeManager:
    """Creates and removes the worktrees of one repository under one root folder."""

    def __init__(self, repo: Path, root: Path) -> None:
        self.repo = Path(repo)
        self.root = Path(root).resolve()
        toplevel = run_git(self.repo, "rev-parse", "--show-toplevel")
        if "not a git repository" in toplevel.stderr or "cannot change to" in toplevel.stderr:
            raise git_error(self.repo, ("rev-parse",), toplevel.returncode, toplevel.stderr)
        if toplevel.returncode == 0 and toplevel.stdout.strip():
            top = Path(toplevel.stdout.strip()).resolve()
            # Worktrees inside the repository would show up in the user's `git status`.
            if self.root == top or self.root.is_relative_to(top):
                raise ConfigError(f"the worktree folder {self.root} is inside the repository {top}")

    def add(self, branch: str, start: str, name: str, *, reset: bool = False) -> Path:
        """Create ``branch`` at ``start`` and a worktree for it at ``root/name``."""
        path = self._path(name)
        with repo_lock(self.repo):
            git(self.repo, "worktree", "prune")
            sha = resolve_commit(self.repo, start)
            old = _ref(self.repo, f"refs/heads/{branch}")
            if old is not None and not reset:
                raise GitError(
                    f"branch {branch} already exists (at {old[:10]}) in {self.repo}; "
                    "pass reset=True to move it to the start commit"
                )
            self._clear_path(path, reset=reset)
            if old != sha:
                git(self.repo, "branch", "--no-track", "--force", branch, sha)
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                git(self.repo, "worktree", "add", str(path), branch)
            except BaseException:
                self._undo_add(path)
                if old is None:
                    git(self.repo, "update-ref", "-d", f"refs/heads/{branch}", check=False)
                elif old != sha:
                    git(self.repo, "update-ref", f"refs/heads/{branch}", old, check=False)
                raise
        return path

    def add_detached(self, commit: str, name: str) -> Path:
        """A worktree at ``root/name`` with ``commit`` checked out, on no branch."""
        path = self._path(name)
        with repo_lock(self.repo):
            git(self.repo, "worktree", "prune")
            sha = resolve_commit(self.repo, commit)
            self._clear_path(path, reset=False)
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                git(self.repo, "worktree", "add", "--detach", str(path), sha)
            except BaseException:
                self._undo_add(path)
                raise
        return path

    def remove(self, path: Path) -> None:
        """Remove the worktree at ``path`` (even with changes, even if its folder is gone)."""
        path = Path(path).resolve()
        self._check_under_root(path)
        with repo_lock(self.repo):
            self._remove_locked(path)

    def delete_branch(self, branch: str) -> None:
        """Delete ``branch`` if it exists (an attempt branch no longer wanted)."""
        with repo_lock(self.repo):
            old = _ref(self.repo, f"refs/heads/{branch}")
            if old is not None:
                git(self.repo, "update-ref", "-d", f"refs/heads/{branch}", old)

    def list(self) -> builtins.list[WorktreeInfo]:
        """The registered worktrees under this manager's root."""
        return [w for w in list_worktrees(self.repo) if _is_under(w.path, self.root)]

    def _path(self, name: str) -> Path:
        if not name or name in (".", "..") or "/" in name or os.sep in name:
            raise ValueError(f"a worktree name must be one path component, got {name!r}")
        return self.root / name

    def _check_under_root(self, path: Path) -> None:
        if not _is_under(path, self.root):
            raise GitError(f"{path} is not under this sprint's worktree folder {self.root}")

    def _clear_path(self, path: Path, *, reset: bool) -> None:
        """Make room at ``path``: a stale worktree there goes only when resetting."""
        if not path.exists():
            return
        registered = any(_same(w.path, path) for w in list_worktrees(self.repo))
        if registered and reset:
            self._remove_locked(path)
            return
        what = "a worktree" if registered else "a folder that is not a worktree of the repository"
        raise GitError(f"{path} already exists ({what}); remove it or pass reset=True")

    def _remove_locked(self, path: Path) -> None:
        if path.exists():
            done = run_git(self.repo, "worktree", "remove", "--force", "--force", str(path))
            if done.returncode != 0 and path.exists():
                # Not (or no longer) a registered worktree: the folder is ours, under root.
                shutil.rmtree(path)
        git(self.repo, "worktree", "prune")

    def _undo_add(self, path: Path) -> None:
        """Leave nothing of a failed ``worktree add``: registration, admin dir, folder."""
        if any(_same(w.path, path) for w in list_worktrees(self.repo)):
            run_git(self.repo, "worktree", "remove", "--force", "--force", str(path))
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        run_git(self.repo, "worktree", "prune")


@contextmanager
def temporary_worktree(repo: Path, commit: str, root: Path) -> Iterator[Path]:
    """A detached worktree at ``commit`` under ``root``, removed afterwards whatever happens."""
    manager = WorktreeManager(repo, root)
    path = manager.add_detached(commit, f"verify-{uuid.uuid4().hex[:10]}")
    try:
        yield path
    finally:
        manager.remove(path)


def commit_all(
    worktree: Path, message: str, *, trailers: Mapping[str, str] | None = None
) -> str | None:
    """Commit every change in ``worktree`` as agentfleet; the new sha, or None if none."""
    git(worktree, "add", "-A")
    staged = run_git(worktree, "diff", "--cached", "--quiet", "HEAD")
    if staged.returncode == 0:
        return None
    if staged.returncode != 1:
        git(worktree, "diff", "--cached", "--quiet", "HEAD")  # raises with git's message
    name, email = AGENTFLEET_IDENTITY
    git(
        worktree,
        *identity_args(),
        # Many agents commit in parallel; a background gc now would only slow them down.
        "-c", "gc.auto=0",
        "commit",
        "--quiet",
        # The user's pre-commit hooks need their tools; the task's `verify` is our gate.
        "--no-verify",
        # The default cleanup would drop lines starting with '#' (markdown headings).
        "--cleanup=whitespace",
        # --author beats GIT_AUTHOR_* in the environment; the config above covers the rest.
        f"--author={name} <{email}>",
        "-F", "-",
        input=compose_message(message, trailers),
    )  # fmt: skip
    return git(worktree, "rev-parse", "HEAD").strip()


def changed_files(repo: Path, a: str, b: str) -> list[str]:
    """Paths that differ between commits ``a`` and ``b`` (a rename lists both names)."""
    out = git(repo, "diff", "--name-only", "-z", "--no-renames", a, b, "--")
    return [p for p in out.split("\0") if p]


def diffstat(repo: Path, a: str, b: str) -> str:
    """``git diff --stat`` from ``a`` to ``b``: a line per file and the summary line."""
    return git(repo, "diff", "--stat=100", "--no-color", a, b, "--").rstrip("\n")


def numstat(repo: Path, a: str, b: str) -> list[tuple[int | None, int | None, str]]:
    """(added, deleted, path) per changed file; None counts for binary files."""
    out = git(repo, "diff", "--numstat", "-z", "--no-renames", a, b, "--")
    rows: list[tuple[int | None, int | None, str]] = []
    for entry in out.split("\0"):
        if not entry:
            continue
        added, deleted, path = entry.split("\t", 2)
        rows.append(
            (None if added == "-" else int(added), None if deleted == "-" else int(deleted), path)
        )
    return rows


def reset_worktree(worktree: Path, sha: str) -> None:
    """Put an attempt's worktree back to ``sha``: no changes, no untracked or ignored files."""
    git_dir = Path(git(worktree, "rev-parse", "--path-format=absolute", "--git-dir").strip())
    if git_dir.resolve() == git_common_dir(worktree):
        # Only agentfleet's linked worktrees are ever reset, never the user's own.
        raise GitError(f"{worktree} is a repository's main worktree; agentfleet will not reset it")
    git(worktree, "reset", "--quiet", "--hard", sha)
    # -ff: also nested repositories an agent may have created with `git init`.
    git(worktree, "clean", "-ffdxq")


@dataclass(frozen=True)
class Snapshot:
    """A worktree's state between agent runs: its HEAD and a tree of its files."""

    head: str
    tree: str


def snapshot_worktree(worktree: Path) -> Snapshot:
    """Record ``worktree``'s files (ignored ones aside) as a tree object; nothing is committed."""
    _refuse_main_worktree(worktree)
    head = resolve_commit(worktree, "HEAD")
    # The index of an attempt's worktree holds nothing of value (the agent cannot write
    # .git; agentfleet stages everything when it commits), so it may carry the snapshot.
    git(worktree, "add", "-A")
    tree = git(worktree, "write-tree").strip()
    git(worktree, "reset", "--quiet")
    return Snapshot(head=head, tree=tree)


def restore_worktree(worktree: Path, snapshot: Snapshot) -> None:
    """Put ``worktree`` back to ``snapshot`` (a try's leftovers go; ignored files stay).

    Ignored files stay because ``setup`` typically puts its products there
    (``node_modules``, ``.venv``) and runs only once per attempt.
    """
    _refuse_main_worktree(worktree)
    git(worktree, "reset", "--quiet", "--hard", snapshot.head)
    git(worktree, "clean", "-ffdq")
    # Index and files become the snapshot's; then the index goes back to HEAD, so the
    # snapshot's changes are uncommitted again, as they were.
    git(worktree, "read-tree", "--reset", "-u", snapshot.tree)
    git(worktree, "reset", "--quiet")


def _refuse_main_worktree(worktree: Path) -> None:
    git_dir = Path(git(worktree, "rev-parse", "--path-format=absolute", "--git-dir").strip())
    if git_dir.resolve() == git_common_dir(worktree):
        raise GitError(f"{worktree} is a repository's main worktree; agentfleet will not reset it")


def is_dirty(worktree: Path) -> bool:
    """Whether ``worktree`` has staged, unstaged or untracked changes."""
    try:
        with gitpython.Repo(worktree) as repo:
            return repo.is_dirty(index=True, working_tree=True, untracked_files=True)
    except (gitpython.InvalidGitRepositoryError, gitpython.NoSuchPathError) as e:
        raise NotARepository(f"{worktree} is not a git worktree") from e
    except gitpython.GitCommandError as e:
        raise GitError(f"`{e.command}` failed in {worktree}: {str(e.stderr).strip()}") from e


def uncommitted_files(worktree: Path) -> list[str]:
    """Paths with staged, unstaged or untracked changes in ``worktree``."""
    out = git(
        worktree,
        # Looking must not take index.lock from under someone working in this tree.
        "--no-optional-locks",
        "status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames",
    )  # fmt: skip
    files = [entry[3:] for entry in out.split("\0") if len(entry) > 3]
    return sorted(set(files))


def resolve_commit(repo: Path, rev: str) -> str:
    """The full sha of the commit ``rev`` names; GitError when there is none."""
    done = run_git(
        repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"
    )
    if done.returncode != 0:
        if done.stderr.strip():
            raise git_error(repo, ("rev-parse", "--verify", rev), done.returncode, done.stderr)
        raise GitError(f"{rev!r} does not name a commit in {repo}")
    return done.stdout.strip()


def _ref(repo: Path, ref: str) -> str | None:
    done = run_git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", ref)
    return done.stdout.strip() if done.returncode == 0 else None


def _same(a: Path, b: Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def _is_under(path: Path, root: Path) -> bool:
    return Path(path).resolve().is_relative_to(root.resolve())
