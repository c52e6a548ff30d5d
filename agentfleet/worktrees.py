"""Worktrees for attempts and verification, and the small diffs and commits made in them.

Every attempt runs in a worktree of its own (one branch per attempt) under a root
folder outside the repository. ``git worktree add/remove`` from parallel threads or
processes race on ``.git/worktrees``, so both are serialized per repository by a
thread lock and an ``fcntl`` lock in the git common dir. A failed add is undone
completely: no registered worktree, no folder, no branch it created.

An agent controls its worktree's folder, and without a sandbox also the ``.git`` file
in it. So agentfleet never lets git discover a repository from that folder: when a
worktree is created its admin dir (``<common dir>/worktrees/<name>``) is recorded in a
:class:`Worktree`, and every git command in or about it names that admin dir and the
folder explicitly (``--git-dir``/``--work-tree``), after checking that the ``.git``
pointer is still the one git wrote (:class:`~agentfleet.errors.WorktreeTampered`).
Commits are built from the worktree's files onto a given parent (``commit-tree``) and
the branch moved with a compare-and-swap, whatever the agent did to HEAD or refs.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import os
import posixpath
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agentfleet.errors import ConfigError, GitError, WorktreeTampered
from agentfleet.gitcmd import (
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


# Without a sandbox an agent can write the repository's config and hooks; nothing it
# planted there runs in agentfleet's own git commands (ref updates run the
# reference-transaction hook, `add` an fsmonitor).
_SAFE_CONFIG = ("-c", "core.fsmonitor=false", "-c", f"core.hooksPath={os.devnull}")


@dataclass(frozen=True)
class Worktree:
    """A linked worktree as agentfleet created it: folder, admin dir and ``.git`` pointer.

    Recorded when the worktree is added; every git command about it is pinned to these
    paths (:meth:`git`), never discovered from the folder an agent may have changed.
    """

    path: Path  # the folder (resolved)
    git_dir: Path  # its admin dir, <common dir>/worktrees/<name>
    common_dir: Path  # the repository's shared .git
    pointer: bytes  # the .git file's bytes, as git wrote them
    branch: str | None = None  # the branch it was created on; None: detached
    start: str | None = None  # the commit it was created at

    def check(self) -> None:
        """Raise ``WorktreeTampered`` unless folder, ``.git`` file and admin dir are as made."""
        if self.path.is_symlink() or not self.path.is_dir():
            raise WorktreeTampered(f"{self.path} is no longer a folder")
        dot_git = self.path / ".git"
        if dot_git.is_symlink() or not dot_git.is_file():
            raise WorktreeTampered(f"{dot_git} is no longer a file")
        if dot_git.read_bytes() != self.pointer:
            raise WorktreeTampered(f"{dot_git} no longer points at {self.git_dir}")
        try:
            back = (self.git_dir / "gitdir").read_text().strip()
            common = (self.git_dir / "commondir").read_text().strip()
        except OSError as e:
            raise WorktreeTampered(f"its admin dir {self.git_dir} is gone ({e})") from e
        # Relative with worktree.useRelativePaths (git 2.48): relative to the admin dir.
        if (self.git_dir / back).resolve() != dot_git.resolve():
            raise WorktreeTampered(f"{self.git_dir / 'gitdir'} no longer names {dot_git}")
        if (self.git_dir / common).resolve() != self.common_dir:
            raise WorktreeTampered(f"{self.git_dir / 'commondir'} no longer names the repository")

    def run(
        self, *args: str, input: str | None = None, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run git on this worktree, repository pinned; the finished process, any status."""
        self.check()
        return run_git(
            self.path,
            f"--git-dir={self.git_dir}",
            f"--work-tree={self.path}",
            *_SAFE_CONFIG,
            *args,
            input=input,
            env=env,
        )

    def git(
        self, *args: str, input: str | None = None, env: Mapping[str, str] | None = None
    ) -> str:
        """Run git on this worktree, repository pinned; stdout, ``GitError`` on failure."""
        done = self.run(*args, input=input, env=env)
        if done.returncode != 0:
            raise git_error(self.path, args, done.returncode, done.stderr)
        return done.stdout


def pin_worktree(
    repo: Path, path: Path, branch: str | None = None, start: str | None = None
) -> Worktree:
    """``repo``'s linked worktree at ``path``, found from the repository's own registry.

    The admin dir is the one whose ``gitdir`` names ``path/.git``; the folder's ``.git``
    must point back at it. The main worktree is refused: agentfleet never resets,
    snapshots or commits in the user's own checkout.
    """
    path = Path(path).parent.resolve() / Path(path).name  # the last part not followed
    common = git_common_dir(repo)
    if path.resolve() == common.parent or (path / ".git").resolve() == common:
        raise GitError(f"{path} is a repository's main worktree; agentfleet will not touch it")
    admins = sorted((common / "worktrees").iterdir()) if (common / "worktrees").is_dir() else []
    for admin in admins:
        try:
            named = admin / (admin / "gitdir").read_text().strip()
        except OSError:
            continue
        if named.parent.resolve() == path.resolve():
            break
    else:
        raise GitError(f"{path} is not a registered worktree of {common.parent}")
    worktree = Worktree(
        path=path,
        git_dir=admin.resolve(),
        common_dir=common,
        pointer=_read_pointer(path),
        branch=branch,
        start=start,
    )
    text = worktree.pointer.decode("utf-8", "surrogateescape").removeprefix("gitdir:").strip()
    if Path(path, text).resolve() != worktree.git_dir:
        raise WorktreeTampered(f"{path / '.git'} does not point at {worktree.git_dir}")
    worktree.check()
    return worktree


def _read_pointer(path: Path) -> bytes:
    dot_git = path / ".git"
    if dot_git.is_symlink() or not dot_git.is_file():
        raise WorktreeTampered(f"{dot_git} is not a file")
    return dot_git.read_bytes()


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
        self._pinned: dict[Path, Worktree] = {}

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
                # --no-deref throughout: an agent may have left this branch a symbolic ref
                # to the user's branch, and writing through it would move theirs.
                git(self.repo, "update-ref", "--no-deref", "-m", f"agentfleet: attempt at {sha}",
                    f"refs/heads/{branch}", sha)
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                git(self.repo, "worktree", "add", str(path), branch)
                # Recorded now, while the folder is only git's: later it is the agent's.
                self._pinned[path] = pin_worktree(self.repo, path, branch, sha)
            except BaseException:
                self._undo_add(path)
                if old is None:
                    git(self.repo, "update-ref", "--no-deref", "-d", f"refs/heads/{branch}",
                        check=False)
                elif old != sha:
                    git(self.repo, "update-ref", "--no-deref", f"refs/heads/{branch}", old,
                        check=False)
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
                self._pinned[path] = pin_worktree(self.repo, path, start=sha)
            except BaseException:
                self._undo_add(path)
                raise
        return path

    def pinned(self, path: Path) -> Worktree:
        """The worktree at ``path`` as recorded when this manager added it.

        One it did not add is found from the repository's registry (``pin_worktree``).
        """
        path = Path(path).parent.resolve() / Path(path).name
        found = self._pinned.get(path)
        return found if found is not None else pin_worktree(self.repo, path)

    def remove(self, path: Path) -> None:
        """Remove the worktree at ``path`` (even with changes, even if its folder is gone).

        Its scratch folder ``<name>.tmp`` goes too, and so do the root and its parent once
        they are empty: a finished sprint leaves no empty folders in the work dir.
        """
        # The last part is not followed: an agent may have replaced its folder by a link.
        path = Path(path).parent.resolve() / Path(path).name
        self._check_under_root(path)
        with repo_lock(self.repo):
            self._remove_locked(path)
            self._pinned.pop(path, None)
            scratch = path.with_name(path.name + ".tmp")
            if scratch.is_dir() and not scratch.is_symlink():
                shutil.rmtree(scratch, ignore_errors=True)
            # Under the lock: an add on this repository creates the root under it too.
            for folder in (self.root, self.root.parent):
                with contextlib.suppress(OSError):  # not empty: other worktrees still there
                    folder.rmdir()

    def delete_branch(self, branch: str) -> None:
        """Delete ``branch`` if it exists (an attempt branch no longer wanted)."""
        with repo_lock(self.repo):
            old = _ref(self.repo, f"refs/heads/{branch}")
            if old is not None:
                # --no-deref: a symbolic ref an agent made goes, never the branch it names.
                git(self.repo, "update-ref", "--no-deref", "-d", f"refs/heads/{branch}", old)

    def list(self) -> builtins.list[WorktreeInfo]:
        """The registered worktrees under this manager's root."""
        return [w for w in list_worktrees(self.repo) if _is_under(w.path, self.root)]

    def _path(self, name: str) -> Path:
        if not name or name in (".", "..") or "/" in name or os.sep in name:
            raise ValueError(f"a worktree name must be one path component, got {name!r}")
        return self.root / name

    def _check_under_root(self, path: Path) -> None:
        # Its last part not followed: a link there is removed, not what it points at.
        if not (path.parent.resolve() / path.name).is_relative_to(self.root):
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
        if path.is_symlink():
            path.unlink()  # an agent's link in place of its folder: never followed
        elif path.exists():
            done = run_git(self.repo, "worktree", "remove", "--force", "--force", str(path))
            if done.returncode != 0 and path.exists():
                # Not (or no longer) a registered worktree, or its .git changed so that git
                # refuses: the folder is ours, under root.
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
def temporary_worktree(
    repo: Path, commit: str, root: Path, *, prefix: str = "verify"
) -> Iterator[Path]:
    """A detached worktree at ``commit`` under ``root``, removed afterwards whatever happens
    (given back to the run's pool when one is open for ``root``).

    Named ``<prefix>-<random>``: what it is for, when one is left behind.
    """
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    from agentfleet.worktree_pool import pool_for  # the pool builds on this module

    pool = pool_for(root)
    if pool is not None:  # a run's: one of its idle worktrees, reset to commit
        worktree = pool.acquire(None, commit, name)
        try:
            yield worktree.path
        finally:
            pool.release(worktree)
        return
    manager = WorktreeManager(repo, root)
    path = manager.add_detached(commit, name)
    try:
        yield path
    finally:
        manager.remove(path)


@dataclass(frozen=True)
class Staged:
    """A worktree's files as a tree object, and what of them could not be in it."""

    tree: str
    nested: list[str]  # folders holding a repository of their own ("vendor/lib/")


def stage_files(worktree: Worktree, base: str) -> Staged:
    """The worktree's files (ignored ones aside) as a tree over ``base``; nothing committed.

    Whatever the agent did to the worktree's index (assume-unchanged bits, staged
    content, a HEAD moved elsewhere) is dropped: the index is rebuilt from ``base``
    and the files. Nested repositories are left out and listed; ``git add`` would
    otherwise record a gitlink to a commit that exists only in them.
    """
    _reset_index(worktree, base)
    others = worktree.git("ls-files", "-z", "--others", "--exclude-standard")
    # Git shows an untracked nested repository as its folder, never the files in it.
    nested = sorted(p for p in others.split("\0") if p.endswith("/"))
    excluded = [f":(exclude,literal){p}" for p in nested]
    worktree.git("add", "-A", "--", ".", *excluded)
    return Staged(tree=worktree.git("write-tree").strip(), nested=nested)


def _reset_index(worktree: Worktree, base: str) -> None:
    """Make the worktree's index ``base``'s tree, with nothing of what an agent did to it.

    ``read-tree -m`` keeps git's cached file stats (``add -A`` then hashes only what
    changed: seconds saved on a large tree) but also an entry's assume-unchanged and
    skip-worktree bits, with which a change can hide from ``add``. When any is set, or
    the index is unreadable or mid-merge, it is rebuilt from nothing: it is agentfleet's.
    """
    if worktree.run("read-tree", "-m", base).returncode == 0:
        tags = worktree.git("ls-files", "-v", "-z").split("\0")
        # ls-files -v: a lower-case tag is assume-unchanged, "S" is skip-worktree.
        if not any(t[:1].islower() or t[:1] == "S" for t in tags if t):
            return
    (worktree.git_dir / "index").unlink(missing_ok=True)
    worktree.git("read-tree", base)


def commit_staged(
    worktree: Worktree, tree: str, parent: str, message: str,
    *, trailers: Mapping[str, str] | None = None,
) -> str:
    """Commit ``tree`` on ``parent`` as agentfleet and move the worktree's branch to it.

    The branch moves from wherever it is now (an agent may have committed or reset it)
    with a compare-and-swap; HEAD is pointed back at it. A detached worktree's HEAD moves.
    """
    commit = worktree.git(
        *identity_args(), "commit-tree", tree, "-p", parent, "-F", "-",
        input=compose_message(message, trailers),
    ).strip()  # fmt: skip
    if worktree.branch is None:
        worktree.git("update-ref", "--no-deref", "HEAD", commit)
        return commit
    ref = f"refs/heads/{worktree.branch}"
    seen = worktree.run("rev-parse", "--verify", "--quiet", "--end-of-options", ref)
    old = seen.stdout.strip() if seen.returncode == 0 else None
    # "" as the old value: the branch must not exist (the agent deleted it).
    # --no-deref: an agent may have made the branch a symbolic ref to another one.
    worktree.git("update-ref", "--no-deref", "-m", "agentfleet: commit", ref, commit, old or "")
    worktree.git("symbolic-ref", "HEAD", ref)
    return commit


def commit_all(
    worktree: Worktree,
    message: str,
    *,
    parent: str | None = None,
    trailers: Mapping[str, str] | None = None,
) -> str | None:
    """Commit the worktree's files onto ``parent`` (default: where it was created) as
    agentfleet; the new sha, or None when the files are ``parent``'s.

    A nested repository is refused (``GitError``): its files would be lost behind a gitlink.
    """
    base = parent or worktree.start
    if base is None:
        raise GitError(f"no commit to commit {worktree.path} onto: pass parent")
    staged = stage_files(worktree, base)
    if staged.nested:
        raise GitError(
            "nested git repositories are not committed: " + ", ".join(staged.nested)
        )
    if staged.tree == worktree.git("rev-parse", f"{base}^{{tree}}").strip():
        return None
    return commit_staged(worktree, staged.tree, base, message, trailers=trailers)


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


def reset_worktree(worktree: Worktree, sha: str) -> None:
    """Put an attempt's worktree back to ``sha``: no changes, no untracked or ignored files."""
    _point_head_home(worktree)
    worktree.git("reset", "--quiet", "--hard", sha)
    # -ff: also nested repositories an agent may have created with `git init`.
    worktree.git("clean", "-ffdxq")


def _point_head_home(worktree: Worktree) -> None:
    """HEAD back on the worktree's own branch, wherever an agent switched it, and that
    branch a plain ref (so that ``reset --hard`` moves it and nothing it might name)."""
    if worktree.branch is None:
        return
    ref = f"refs/heads/{worktree.branch}"
    if worktree.run("symbolic-ref", "--quiet", ref).returncode == 0:
        worktree.git("update-ref", "--no-deref", ref, worktree.start or "HEAD")
    worktree.git("symbolic-ref", "HEAD", ref)


# What ``git merge`` leaves in a worktree's admin dir, besides the index.
MERGE_STATE_FILES = ("MERGE_HEAD", "MERGE_MSG", "MERGE_MODE", "AUTO_MERGE")


@dataclass(frozen=True)
class Snapshot:
    """A worktree's state between agent runs: its HEAD and a tree of its files.

    During a merge in progress (a resolver's worktree) also its index, unmerged entries
    and all, and the merge's files: a retry finds the merge as ``git merge`` left it.
    """

    head: str
    tree: str
    index: bytes | None = None
    merge_files: tuple[tuple[str, bytes], ...] = ()


def snapshot_worktree(worktree: Worktree) -> Snapshot:
    """Record ``worktree``'s files (ignored ones aside) as a tree object; nothing is committed."""
    _point_head_home(worktree)
    head = worktree.git("rev-parse", "--verify", "HEAD^{commit}").strip()
    index = worktree.git_dir / "index"
    merge_files = tuple(
        (name, (worktree.git_dir / name).read_bytes())
        for name in MERGE_STATE_FILES
        if (worktree.git_dir / "MERGE_HEAD").is_file() and (worktree.git_dir / name).is_file()
    )
    saved = index.read_bytes() if merge_files and index.is_file() else None
    # The index of an attempt's worktree holds nothing of value (agentfleet rebuilds it
    # when it commits), so it may carry the snapshot; then it goes back to HEAD, or to
    # the merge's unmerged index.
    tree = stage_files(worktree, head).tree
    if saved is not None:
        index.write_bytes(saved)
    else:
        _reset_index(worktree, head)
    return Snapshot(head=head, tree=tree, index=saved, merge_files=merge_files)


def restore_worktree(worktree: Worktree, snapshot: Snapshot) -> None:
    """Put ``worktree`` back to ``snapshot`` (a try's leftovers go; ignored files stay).

    Ignored files stay because ``setup`` typically puts its products there
    (``node_modules``, ``.venv``) and runs only once per attempt.
    """
    _point_head_home(worktree)
    worktree.git("reset", "--quiet", "--hard", snapshot.head)
    worktree.git("clean", "-ffdq")
    # Index and files become the snapshot's; then the index goes back to HEAD, so the
    # snapshot's changes are uncommitted again, as they were.
    worktree.git("read-tree", "--reset", "-u", snapshot.tree)
    worktree.git("reset", "--quiet")
    # `reset --hard` ended a merge in progress: its files and unmerged index come back.
    for name, data in snapshot.merge_files:
        (worktree.git_dir / name).write_bytes(data)
    if snapshot.index is not None:
        (worktree.git_dir / "index").write_bytes(snapshot.index)


def is_dirty(worktree: Worktree) -> bool:
    """Whether ``worktree`` has staged, unstaged or untracked changes."""
    return bool(uncommitted_files(worktree))


def uncommitted_files(worktree: Worktree) -> list[str]:
    """Paths with staged, unstaged or untracked changes in ``worktree``."""
    out = worktree.git(
        # Looking must not take index.lock from under someone working in this tree.
        "--no-optional-locks",
        "status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames",
    )  # fmt: skip
    files = [entry[3:] for entry in out.split("\0") if len(entry) > 3]
    return sorted(set(files))


@dataclass(frozen=True)
class TreeChange:
    """One path that differs between two trees, with its old and new mode and object."""

    path: str
    old_mode: str
    new_mode: str
    new_object: str


def tree_changes(repo: Path, a: str, b: str) -> list[TreeChange]:
    """Every path that differs between the trees (or commits) ``a`` and ``b``."""
    out = git(repo, "diff-tree", "-r", "-z", "--no-renames", a, b, "--")
    parts = out.split("\0")
    changes = []
    for meta, path in zip(parts[0::2], parts[1::2], strict=False):
        if not meta.startswith(":"):
            continue
        old_mode, new_mode, _old, new, _status = meta[1:].split(" ")
        changes.append(TreeChange(path, old_mode, new_mode, new))
    return changes


GITLINK = "160000"
SYMLINK = "120000"


def symlinks_out(repo: Path, changes: list[TreeChange]) -> list[str]:
    """The symlinks among ``changes`` whose target leaves the repository.

    Judged on the link's own text: an absolute target, a relative one that climbs above
    the repository's root from the link's folder, or one into ``.git`` (which is no part
    of the repository's files; a write through it would change a checkout's git config).
    """
    found = []
    for change in changes:
        if change.new_mode != SYMLINK:
            continue
        target = git(repo, "cat-file", "blob", change.new_object)
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(change.path), target))
        if (target.startswith("/") or resolved == ".." or resolved.startswith("../")
                or ".git" in resolved.split("/")):
            found.append(change.path)
    return found


def gitlinks(repo: Path, changes: list[TreeChange]) -> list[str]:
    """Paths among ``changes`` that became (or changed) a gitlink: a submodule commit."""
    return [c.path for c in changes if c.new_mode == GITLINK]


def written_submodule_folders(worktree: Worktree, base: str) -> list[str]:
    """Submodules of ``base`` that are not checked out but whose folder has files now.

    Git sees nothing in such a folder (its index entry is the gitlink), so those files
    would be dropped without a word.
    """
    out = worktree.git("ls-tree", "-r", "-z", "--full-tree", base)
    found = []
    for entry in out.split("\0"):
        meta, _, path = entry.partition("\t")
        if not meta.startswith(GITLINK + " "):
            continue
        folder = worktree.path / path
        if folder.is_symlink() or not folder.is_dir() or (folder / ".git").exists():
            continue
        with os.scandir(folder) as entries:
            if any(True for _ in entries):
                found.append(path)
    return found


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
