"""Reused attempt worktrees: on a large repository an attempt does not check out every file.

``git worktree add`` writes every file of the start commit (seconds on 50,000 files). A
run's pool keeps the worktrees its finished attempts released, idle under
``<root>/.pool/``, and gives the next attempt one of them reset to its start commit:

    check the recorded .git pointer and admin dir (``WorktreeTampered``: discarded)
    -> the admin dir emptied of all but gitdir, commondir, HEAD and index: no reflog,
       per-worktree ref (refs/worktree, refs/bisect), ORIG_HEAD, merge or rebase state,
       config.worktree or sparse-checkout of the previous attempt survives
    -> moved to the attempt's own folder (``<root>/<task>-<k>``), HEAD on its new branch
    -> ``read-tree --reset -u`` of the start commit with agentfleet's own copy of the
       index, taken when the worktree was last made ready: the stat data an agent could
       have forged in the worktree's index is never trusted, so every file it touched
       (its ctime moved) is written anew; then ``clean -ffdx``: untracked, ignored and
       nested repositories go (with ``keep_setup_products`` and the same ``setup``: all
       but the unchanged ignored files that ``setup`` made, ``setup_products.py``)
    -> that index copied into the worktree's admin dir.

Only git's own checks of file stat data stand between two attempts, with the config that
could weaken them (``core.trustctime``, ``core.checkStat``, ``core.ignoreStat``, sparse
checkout, untracked cache, fsmonitor) forced to git's safe defaults for these commands.

Anything that fails on the way discards the worktree and makes a fresh one. A pool lives
for one run (``worktree_pool``) and removes its idle worktrees at the end, so a finished
run leaves nothing behind; a killed run's ``.pool`` folder is a stale folder that the next
run's orphan reaping (or ``agentfleet clean``) removes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from agentfleet import setup_products
from agentfleet.errors import GitError, WorktreeTampered
from agentfleet.gitcmd import git
from agentfleet.setup_products import SetupProducts
from agentfleet.worktrees import (
    Worktree,
    WorktreeManager,
    _ref,
    repo_lock,
    resolve_commit,
)

POOL_DIR = ".pool"
# What a fresh `git worktree add` leaves in the admin dir, and all a reused one keeps.
_ADMIN_KEEP = frozenset({"gitdir", "commondir", "HEAD", "index"})
# Git's defaults, whatever the repository's config (which an unsandboxed agent can write)
# says: a file changed since agentfleet's index copy is always seen as changed.
_SOUND_CONFIG = (
    "-c", "core.trustctime=true", "-c", "core.checkStat=default",
    "-c", "core.ignoreStat=false", "-c", "core.sparseCheckout=false",
    "-c", "core.untrackedCache=false", "-c", "index.sparse=false",
)  # fmt: skip


@dataclass(frozen=True)
class _Idle:
    """An idle worktree (its record as made, now under ``.pool``) and its index copy."""

    worktree: Worktree
    index: Path


@dataclass
class PoolStats:
    """How the pool's worktrees were come by, for logs and the bench."""

    created: int = 0
    reused: int = 0
    discarded: int = 0
    kept_setup: int = 0  # reuses that kept ``setup``'s products


class WorktreePool:
    """The reusable attempt worktrees of one repository under one root, for one run."""

    def __init__(self, repo: Path, root: Path) -> None:
        self.manager = WorktreeManager(repo, root)
        self.repo = self.manager.repo
        self.root = self.manager.root
        self.dir = self.root / POOL_DIR
        self.stats = PoolStats()
        self._idle: list[_Idle] = []
        self._index: dict[Path, Path] = {}  # admin dir -> agentfleet's copy of its index
        self._products: dict[Path, SetupProducts] = {}  # admin dir -> its last setup's
        self._lock = threading.Lock()
        self._closed = False

    def acquire(self, branch: str | None, start: str, name: str, *,
                setup: str | None = None) -> Worktree:
        """A worktree at ``root/name`` on ``branch`` (made or moved to ``start``; None:
        detached at ``start``), exactly ``start``'s files: an idle one reset, or a new one.

        ``setup``: the attempt's command, when it keeps setup products: an idle worktree
        whose last ``setup`` was this command keeps the ignored files it made, unchanged."""
        with self._lock:
            idle = self._idle.pop() if self._idle else None
        if idle is not None:
            products = self._products.pop(idle.worktree.git_dir, None)
            if products is not None and (setup is None or products.command != setup):
                products = None
            try:
                worktree = self._reuse(idle, branch, start, name, products)
                self.stats.reused += 1
                self.stats.kept_setup += products is not None
                return worktree
            except (GitError, WorktreeTampered, OSError):
                self._discard(idle.worktree.path, idle.worktree.git_dir)
                self._discard(self.root / name, idle.worktree.git_dir)
        if branch is None:
            path = self.manager.add_detached(start, name)
        else:
            path = self.manager.add(branch, start, name, reset=True)
        worktree = self.manager.pinned(path)
        try:
            self._keep_index(worktree)
        except OSError:
            self.manager.remove(path)
            raise
        self.stats.created += 1
        return worktree

    def record_setup(self, worktree: Worktree, command: str) -> None:
        """Record the ignored files ``command`` (``setup``, just passed) left in a worktree
        of this pool: kept when the next attempt with the same ``setup`` reuses it."""
        listed = worktree.git(*_SOUND_CONFIG, "ls-files", "-z", "--others", "--ignored",
                              "--exclude-standard", "--directory")
        self._products[worktree.git_dir] = setup_products.record(
            worktree.path, command, listed.split("\0"))

    def release(self, worktree: Worktree) -> None:
        """Take back an attempt's worktree (its agent gone): idle until the next acquire;
        removed when it was tampered with or the pool is closed."""
        path = worktree.path
        index = self._index.get(worktree.git_dir)
        try:
            if index is None or self._closed:
                raise GitError("not a worktree of this pool")
            scratch = path.with_name(path.name + ".tmp")
            if scratch.is_dir() and not scratch.is_symlink():
                shutil.rmtree(scratch, ignore_errors=True)
            idle_path = self.dir / worktree.git_dir.name
            with repo_lock(self.repo):
                worktree.check()
                # Detached: the attempt's branch is no longer checked out anywhere, so git
                # lets the user (and landing) move or delete it.
                worktree.git("update-ref", "--no-deref", "HEAD", worktree.start or "HEAD")
                self.dir.mkdir(parents=True, exist_ok=True)
                git(self.repo, "worktree", "move", str(path), str(idle_path))
                self.manager._pinned.pop(path, None)
            idle = _Idle(replace(worktree, path=idle_path, branch=None), index)
        except (GitError, WorktreeTampered, OSError):
            self._discard(path, worktree.git_dir)
            return
        with self._lock:
            self._idle.append(idle)

    def close(self) -> None:
        """Remove every idle worktree and the pool's folder; later releases remove theirs."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        # Idle worktrees are only agentfleet's (no agent, detached, under .pool): their
        # folders go, then one prune unregisters them all.
        with contextlib.suppress(GitError, OSError), repo_lock(self.repo):
            shutil.rmtree(self.dir, ignore_errors=True)
            git(self.repo, "worktree", "prune")
        for item in idle:
            if item.worktree.git_dir.exists():  # prune kept it (e.g. git's own lock on it)
                self._discard(item.worktree.path, item.worktree.git_dir)
        self._index.clear()
        self._products.clear()
        for folder in (self.root, self.root.parent):
            with contextlib.suppress(OSError):  # not empty: kept worktrees, other sprints
                folder.rmdir()

    def _reuse(self, idle: _Idle, branch: str | None, start: str, name: str,
               products: SetupProducts | None = None) -> Worktree:
        old = idle.worktree
        target = self.manager._path(name)
        ref = f"refs/heads/{branch}" if branch is not None else None
        with repo_lock(self.repo):
            old.check()
            sha = resolve_commit(self.repo, start)
            self.manager._clear_path(target, reset=True)
            _scrub_admin_dir(old.git_dir)
            git(self.repo, "worktree", "move", str(old.path), str(target))
            worktree = replace(old, path=target, branch=branch, start=sha)
            worktree.check()
            if ref is not None and _ref(self.repo, ref) != sha:
                # --no-deref: an agent may have left this branch a symbolic ref.
                git(self.repo, "update-ref", "--no-deref", "-m",
                    f"agentfleet: attempt at {sha}", ref, sha)
            self.manager._pinned[target] = worktree
        if ref is None:
            worktree.git("update-ref", "--no-deref", "HEAD", sha)
        else:
            worktree.git("symbolic-ref", "HEAD", ref)
        env = {**os.environ, "GIT_INDEX_FILE": str(idle.index)}
        worktree.git(*_SOUND_CONFIG, "read-tree", "--reset", "-u", sha, env=env)
        if products is not None:
            # Every untracked path, ignored or not (no exclude rules: an agent may have
            # changed them); all go but the setup products still as recorded.
            listed = worktree.git(*_SOUND_CONFIG, "ls-files", "-z", "--others", "--directory",
                                  env=env)
            setup_products.prune(worktree.path, products, listed.split("\0"))
        else:
            # -ff: also nested repositories; -x: ignored files too (setup's products included).
            worktree.git(*_SOUND_CONFIG, "clean", "-ffdxq", env=env)
        shutil.copy2(idle.index, worktree.git_dir / "index")
        return worktree

    def _keep_index(self, worktree: Worktree) -> None:
        """Copy a ready worktree's index out of the agent's reach (mtime kept: git's racy
        entry check keeps working)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        index = self.dir / f"{worktree.git_dir.name}.index"
        shutil.copy2(worktree.git_dir / "index", index)
        self._index[worktree.git_dir] = index

    def _discard(self, path: Path, git_dir: Path) -> None:
        """Remove a worktree that will not be reused; never raises (clean finds leftovers)."""
        self.stats.discarded += path.exists() or path.is_symlink()
        self._products.pop(git_dir, None)
        index = self._index.pop(git_dir, None)
        with contextlib.suppress(GitError, OSError):
            if path.exists() or path.is_symlink():
                self.manager.remove(path)
        if index is not None:
            index.unlink(missing_ok=True)


def _scrub_admin_dir(git_dir: Path) -> None:
    """Everything of the previous attempt in a worktree's admin dir goes (see the module)."""
    for entry in list(git_dir.iterdir()):
        if entry.name in _ADMIN_KEEP:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


_pools: dict[Path, WorktreePool] = {}
_pools_lock = threading.Lock()


@contextmanager
def worktree_pool(repo: Path, root: Path) -> Iterator[WorktreePool]:
    """A pool for the attempts under ``root`` while the block runs; emptied at its end."""
    pool = WorktreePool(repo, root)
    with _pools_lock:
        if pool.root in _pools:
            raise GitError(f"a worktree pool for {pool.root} is already open")
        _pools[pool.root] = pool
    try:
        yield pool
    finally:
        with _pools_lock:
            _pools.pop(pool.root, None)
        pool.close()


def pool_for(root: Path) -> WorktreePool | None:
    """The open pool of the attempts under ``root``, if a run opened one."""
    with _pools_lock:
        return _pools.get(Path(root).resolve())
