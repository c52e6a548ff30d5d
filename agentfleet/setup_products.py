"""What ``setup`` left in a worktree, kept for the next attempt that reuses it (opt-in).

With ``keep_setup_products: true`` a reused worktree keeps the ignored files its last
``setup`` made (``node_modules``, ``.venv``, build caches), so the next ``setup`` finds
them and has little to do. Nothing else an attempt left may survive, so the record is
taken right after ``setup`` passed, before the agent starts, and a file is kept only if
it is still the very file recorded:

- files and symlinks: same inode, mode and ctime. The ctime is set by the kernel on
  every write, chmod, rename onto or link of the inode, and no process can set it back,
  so an agent that changed a kept file (even restoring its mtime) makes it go;
- folders: same inode and mode (their ctime moves whenever an entry is added, which
  is what the walk inside them looks at anyway);
- anything not recorded (a file the agent added inside ``node_modules``, a nested
  repository, a symlink in place of a recorded folder) is removed; symlinks are never
  followed.

The next ``setup`` runs as always and makes again whatever was removed.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

Identity = tuple[int, int, int]


@dataclass(frozen=True)
class SetupProducts:
    """The ignored files of a worktree right after ``command`` ran there, by relative path."""

    command: str
    entries: dict[str, Identity] = field(default_factory=dict)


def _identity(st: os.stat_result) -> Identity:
    ctime = 0 if stat.S_ISDIR(st.st_mode) else st.st_ctime_ns
    return (st.st_ino, st.st_mode, ctime)


def _children(folder: Path, rel: str) -> list[tuple[Path, str]]:
    try:
        with os.scandir(folder) as found:
            return [(Path(e.path), f"{rel}/{e.name}") for e in found]
    except OSError:
        return []


def _listed(root: Path, listing: Iterable[str]) -> list[tuple[Path, str]]:
    """git's listing of paths under ``root`` (folders end with ``/``) as (path, rel) pairs."""
    return [(root / rel.rstrip("/"), rel.rstrip("/")) for rel in listing if rel.strip("/")]


def record(root: Path, command: str, ignored: Iterable[str]) -> SetupProducts:
    """Record every path under ``ignored`` (git's listing, relative to ``root``; folders end
    with ``/``) with its identity."""
    entries: dict[str, Identity] = {}
    todo = _listed(root, ignored)
    while todo:
        path, rel = todo.pop()
        try:
            st = os.lstat(path)
        except OSError:
            continue
        entries[rel] = _identity(st)
        if stat.S_ISDIR(st.st_mode):
            todo += _children(path, rel)
    return SetupProducts(command, entries)


def prune(root: Path, products: SetupProducts, untracked: Iterable[str]) -> int:
    """Remove what is untracked under ``root`` (git's ``--others --directory`` listing)
    except the unchanged ``products``; returns how many paths went."""
    # Folders holding recorded paths without being recorded themselves (untracked now,
    # tracked when recorded, e.g. at another start commit): walked, not kept whole.
    parents = {rel.rsplit("/", i)[0]
               for rel in products.entries for i in range(1, rel.count("/") + 1)}
    removed = 0
    todo = _listed(root, untracked)
    while todo:
        path, rel = todo.pop()
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        is_dir = stat.S_ISDIR(st.st_mode)
        recorded = products.entries.get(rel)
        if (recorded == _identity(st) if recorded is not None else is_dir and rel in parents):
            if is_dir:
                todo += _children(path, rel)
            continue
        if is_dir:
            shutil.rmtree(path)
        else:
            path.unlink()
        removed += 1
    return removed
