"""What runs that are over left behind, and removing it: orphans, kept and stale worktrees.

Two callers:

- ``reap_orphans`` at the start of a sprint run, holding the sprint's lock: every
  active lease of that sprint whose owner is dead belongs to a run that was killed
  (``kill -9``). Its agents may still run and spend tokens: stop them, give back the
  shared pool's slot an agent held (``release_slot``: else it is lost until its Prefect
  lease expires, 60 s), remove their worktree (unfinished work that the new run redoes
  anyway), delete an attempt branch that holds nothing beyond its start, delete the lease.
- ``agentfleet clean`` (``survey`` then ``remove``), across every sprint and repository
  under the work dir: the same for dead runs, plus worktrees kept for inspection
  (``keep_failed_worktrees``) and worktree folders that no lease explains (a run killed
  while verifying). Never anything of a live run; never a worktree with uncommitted
  changes unless forced.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agentfleet.errors import AgentfleetError, GitError
from agentfleet.gitcmd import run_git
from agentfleet.leases import (
    Lease,
    PoolSlot,
    list_leases,
    live_processes,
    process_name,
    remove_lease,
    stop_processes,
    write_lease,
)
from agentfleet.locks import is_held, lock_file, repo_key
from agentfleet.worktrees import WorktreeManager, pin_worktree, uncommitted_files

Log = Callable[[str], None]
# Gives a killed agent's pool slot back to its Prefect server; what it did, for the log.
ReleaseSlot = Callable[[PoolSlot], str]
Kind = Literal["orphaned", "kept", "stale"]


@dataclass
class Leftover:
    """One worktree (and the processes working in it) that a finished or dead run left."""

    kind: Kind
    worktree: Path
    lease_path: Path | None = None
    lease: Lease | None = None
    repo: Path | None = None
    processes: list[int] = field(default_factory=list)
    skip: str | None = None  # why it stays; None: it may go
    keep_worktree: bool = False  # stop its processes but leave the worktree (uncommitted work)

    def describe(self) -> str:
        """One line for a listing."""
        what = {
            "orphaned": "worktree of a run that is no longer alive",
            "kept": "failed attempt's worktree kept for inspection",
            "stale": "folder no lease explains, of a run that is over",
        }[self.kind]
        who = ""
        if self.lease is not None:
            who = f" ({self.lease.label}, run {self.lease.owner.describe()}"
            who += f", repo {self.lease.repo})"
        return f"{self.worktree}: {what}{who}"

    def process_lines(self) -> list[str]:
        """One line per live process."""
        return [f"process {pid}: {process_name(pid)}" for pid in self.processes]


@dataclass
class Survey:
    """Everything under a work dir: what may be removed, what stays and why."""

    removable: list[Leftover] = field(default_factory=list)
    skipped: list[Leftover] = field(default_factory=list)


# -- looking --------------------------------------------------------------------------------


def _uncommitted(repo: Path | None, worktree: Path) -> list[str] | None:
    """Changed files of a worktree; None when git cannot tell (no longer a worktree)."""
    if not worktree.exists():
        return []
    if repo is None:
        return None
    try:
        # Pinned to the admin dir the repository registered for this folder: a .git file
        # an agent rewrote must not lead `git status` into another repository.
        return uncommitted_files(pin_worktree(repo, worktree))
    except GitError:
        return None


def _check_work(item: Leftover, force: bool) -> None:
    """Refuse to remove uncommitted work unless forced (its processes may still be stopped)."""
    if force or not (item.worktree / ".git").exists():
        return  # no checkout in it: scratch (e.g. an agent's private TMPDIR), nothing to commit
    files = _uncommitted(item.repo, item.worktree)
    if files is None:
        if item.repo is not None and (item.repo / ".git").exists():
            return  # a folder git does not know: an unfinished `worktree add`, nothing in it
        reason = "git cannot tell what in it is uncommitted (its repository is gone)"
    elif files:
        shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        reason = f"uncommitted changes ({shown})"
    else:
        return
    item.skip = f"{reason}; --force removes it"
    item.keep_worktree = True


def _repo_of(worktree: Path) -> Path | None:
    """The repository a linked worktree belongs to, from its ``.git`` file."""
    try:
        text = (worktree / ".git").read_text()
    except OSError:
        return None
    if not text.startswith("gitdir:"):
        return None
    gitdir = Path(text.removeprefix("gitdir:").strip())  # <repo>/.git/worktrees/<name>
    common = gitdir.parent.parent
    return common.parent if common.name == ".git" else common


def survey(work_dir: Path, *, force: bool = False) -> Survey:
    """What dead runs left under ``work_dir``: orphans, kept worktrees, stale folders."""
    work_dir = Path(work_dir)
    out = Survey()
    leased: set[Path] = set()
    for path, lease in list_leases(work_dir):
        if lease is None:
            continue  # not ours to judge
        leased.add(lease.worktree.resolve())
        kind: Kind = "kept" if lease.state == "kept" else "orphaned"
        item = Leftover(kind, lease.worktree, path, lease, lease.repo)
        if lease.owner.is_alive():
            item.skip = f"its run is alive ({lease.owner.describe()})"
            out.skipped.append(item)
            continue
        item.processes = live_processes(lease)
        _check_work(item, force)
        (out.skipped if item.skip else out.removable).append(item)
    root = work_dir / "worktrees"
    for folder in sorted(root.glob("*/*/*")) if root.is_dir() else []:
        if not folder.is_dir() or folder.resolve() in leased:
            continue
        key, sprint = folder.parent.parent.name, folder.parent.name
        item = Leftover("stale", folder, repo=_repo_of(folder))
        if is_held(lock_file(work_dir / "locks", key, sprint)):
            item.skip = f"sprint '{sprint}' is running"
            out.skipped.append(item)
            continue
        _check_work(item, force)
        (out.skipped if item.skip else out.removable).append(item)
    return out


# -- removing -------------------------------------------------------------------------------


def _remove_worktree(item: Leftover) -> None:
    """Unregister and delete the worktree; git keeps no half-registered entry."""
    path = item.worktree
    repo = item.repo
    if repo is not None and repo.exists():
        try:
            WorktreeManager(repo, path.parent).remove(path)
            return
        except GitError:
            pass  # the repository is no longer a repository: the folder is only ours
    if path.exists():
        shutil.rmtree(path)
    if repo is not None and repo.exists():
        run_git(repo, "worktree", "prune")


def _delete_unused_branch(lease: Lease) -> bool:
    """Delete the attempt branch if it holds no commit beyond the attempt's start."""
    if lease.branch is None or not lease.repo.exists():
        return False
    head = run_git(lease.repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{lease.branch}")
    if head.returncode != 0 or head.stdout.strip() != lease.start_sha:
        return False
    with contextlib.suppress(GitError):
        WorktreeManager(lease.repo, lease.worktree.parent).delete_branch(lease.branch)
        return True
    return False


def _give_back(lease: Lease, release_slot: ReleaseSlot | None) -> str | None:
    """Give back the pool slot a dead run's agent held; None when it held none."""
    if lease.slot is None or release_slot is None:
        return None
    try:
        return release_slot(lease.slot)
    except Exception as exc:  # noqa: BLE001 - the server unreachable, say: the lease expires
        return (f"could not give back its slot of '{lease.slot.limit}' ({exc}); it comes "
                "back when its lease expires (60 s)")


def remove(item: Leftover, *, grace_s: float = 5.0,
           release_slot: ReleaseSlot | None = None) -> list[str]:
    """Stop the item's processes and give back its pool slot, then remove its worktree,
    branch and lease; what was done."""
    done: list[str] = []
    if item.lease is not None:
        stopped = stop_processes(item.lease, grace_s)
        if stopped:
            done.append(f"stopped {len(stopped)} process(es) of {item.lease.label}: "
                        + ", ".join(str(p) for p in stopped))
        given = _give_back(item.lease, release_slot)
        if given is not None:
            done.append(given)
            if item.lease_path is not None and item.lease_path.exists():  # given back once
                item.lease = item.lease.model_copy(update={"slot": None})
                write_lease(item.lease_path, item.lease)
    if item.keep_worktree:
        return done
    what = "worktree" if (item.worktree / ".git").exists() else "folder"
    _remove_worktree(item)
    done.append(f"removed {what} {item.worktree}")
    if item.lease is not None:
        if _delete_unused_branch(item.lease):
            done.append(f"deleted branch {item.lease.branch} (nothing committed on it)")
        assert item.lease_path is not None
        remove_lease(item.lease_path)
    else:
        with contextlib.suppress(OSError):  # the sprint's folder, once empty
            item.worktree.parent.rmdir()
    return done


def reap_orphans(
    work_dir: Path,
    repo: Path,
    sprint: str,
    *,
    grace_s: float = 5.0,
    log: Log = lambda _: None,
    release_slot: ReleaseSlot | None = None,
) -> list[Leftover]:
    """Clean up after killed runs of this sprint on this repository; call holding its lock.

    Leases of live owners and worktrees kept for inspection are left alone; a worktree
    folder of the sprint that no lease explains (a verification worktree of a killed run)
    goes too. A failure is logged, never raised: the new run resets what it reuses.
    ``release_slot`` gives back the pool slots their agents held.
    """
    repo = Path(repo).resolve()
    reaped: list[Leftover] = []
    leased: set[Path] = set()
    for path, lease in list_leases(work_dir):
        if lease is None or lease.sprint != sprint or lease.repo.resolve() != repo:
            continue
        leased.add(lease.worktree.resolve())
        if lease.state != "active" or lease.owner.is_alive():
            continue
        item = Leftover("orphaned", lease.worktree, path, lease, lease.repo)
        _reap(item, grace_s, log, f"orphan of a killed run ({lease.owner.describe()})",
              release_slot)
        reaped.append(item)
    folder = Path(work_dir) / "worktrees" / repo_key(repo) / sprint
    for tree in sorted(folder.iterdir()) if folder.is_dir() else []:
        if tree.is_dir() and tree.resolve() not in leased:
            item = Leftover("stale", tree, repo=repo)
            _reap(item, grace_s, log, "left by a killed run")
            reaped.append(item)
    return reaped


def _reap(item: Leftover, grace_s: float, log: Log, why: str,
          release_slot: ReleaseSlot | None = None) -> None:
    try:
        for line in remove(item, grace_s=grace_s, release_slot=release_slot):
            log(f"{why}: {line}")
    except (AgentfleetError, OSError) as exc:
        log(f"{why}: could not clean up {item.worktree}: {exc}")


def clean(work_dir: Path, *, yes: bool, force: bool, grace_s: float = 5.0,
          release_slot: ReleaseSlot | None = None) -> list[str]:
    """``agentfleet clean``: the lines it prints; removes only with ``yes`` (and gives back
    the pool slots dead runs' agents held, with ``release_slot``)."""
    found = survey(work_dir, force=force)
    lines: list[str] = []
    if not found.removable:
        lines.append(f"nothing to remove under {work_dir}")
    for item in found.removable:
        if yes:
            lines += [f"removing {item.describe()}",
                      *(f"  {d}" for d in remove(item, grace_s=grace_s,
                                                 release_slot=release_slot))]
        else:
            lines += [f"would remove {item.describe()}",
                      *(f"  would stop {p}" for p in item.process_lines()), *_slot_line(item)]
    for item in found.skipped:
        lines.append(f"skipped {item.worktree}: {item.skip}")
        dead = item.lease is not None and not item.lease.owner.is_alive()
        if dead and (item.processes or _slot_line(item)):
            if yes:
                lines += [f"  {d}" for d in remove(item, grace_s=grace_s,
                                                   release_slot=release_slot)]
            else:
                lines += [f"  would stop {p}" for p in item.process_lines()] + _slot_line(item)
    empty = _empty_folders(work_dir)
    for folder in empty:
        if yes:
            with contextlib.suppress(OSError):  # filled again meanwhile: a run started
                folder.rmdir()
                lines.append(f"removed empty folder {folder}")
        else:
            lines.append(f"would remove empty folder {folder}")
    if (found.removable or empty) and not yes:
        lines.append("run `agentfleet clean --yes` to remove them")
    return lines


def _slot_line(item: Leftover) -> list[str]:
    """``would give back its slot ...`` for a dead run's agent that held one."""
    slot = item.lease.slot if item.lease is not None else None
    return [] if slot is None else [f"  would give back its slot of the shared pool "
                                    f"'{slot.limit}'"]


def _empty_folders(work_dir: Path) -> list[Path]:
    """Sprint and repository folders under ``worktrees/`` and ``leases/`` with nothing in
    them (or only empty folders), deepest first; never those of a running sprint."""
    found: list[Path] = []
    for top in (Path(work_dir) / "worktrees", Path(work_dir) / "leases"):
        if not top.is_dir():
            continue
        for key_dir in sorted(p for p in top.iterdir() if p.is_dir() and not p.is_symlink()):
            sprints = list(key_dir.iterdir())
            emptied = [
                p for p in sprints
                if p.is_dir() and not p.is_symlink() and not any(p.iterdir())
                and not is_held(lock_file(Path(work_dir) / "locks", key_dir.name, p.name))
            ]  # fmt: skip
            found += emptied
            if len(emptied) == len(sprints):
                found.append(key_dir)
    return found
