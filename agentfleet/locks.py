"""One live run per sprint and repository, by an ``fcntl`` lock the kernel drops on exit.

The lock file ``<lock_dir>/<repo key>/<sprint>.lock`` holds the holder's pid, host and
start time, for the message a second run gets. Because the kernel releases the lock
when its process dies, a ``kill -9`` leaves no stale lock behind: the content of an
unlocked file is overwritten by the next holder, which first reads it as ``previous``:
a holder that let go cleanly emptied it, so a record found there is a run that died
(its flow run, left Running on its server, is then marked Crashed by the new one).
A holder may say how its run ended before it lets go (``ending``): that record stays, so
that the next holder can record the end on the server should Prefect's server have been
unreachable when the run ended (its flow run, again, left Running).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from agentfleet.errors import SprintLocked
from agentfleet.worktrees import git_common_dir


@dataclass(frozen=True)
class LockHolder:
    """Who holds a sprint lock."""

    pid: int
    hostname: str
    started_at: str
    repo: str
    flow_run: str | None = None  # the holder's Prefect flow run, and the server it is on
    api_url: str | None = None
    ended: Ending | None = None  # how the holder's run ended, when it said so


@dataclass(frozen=True)
class Ending:
    """How a holder's run ended: the final state's type (``COMPLETED``, ``FAILED``) and
    message its flow run was to get."""

    state: str
    message: str


def repo_key(repo: Path) -> str:
    """A folder name for one repository: its name plus a hash of its git common dir.

    The common dir, not the worktree, so that runs started from two worktrees of one
    repository (which share branches and refs) exclude each other.
    """
    common = git_common_dir(repo)
    name = common.parent.name if common.name == ".git" else common.name.removesuffix(".git")
    digest = hashlib.sha256(str(common).encode()).hexdigest()[:10]
    return f"{name or 'repo'}-{digest}"


def lock_path(lock_dir: Path, repo: Path, sprint: str) -> Path:
    """The lock file of ``sprint`` on ``repo``."""
    return lock_file(lock_dir, repo_key(repo), sprint)


def lock_file(lock_dir: Path, key: str, sprint: str) -> Path:
    """The lock file of ``sprint`` on the repository whose ``repo_key`` is ``key``."""
    return Path(lock_dir) / key / f"{sprint}.lock"


def is_held(path: Path) -> bool:
    """Whether a live process holds the lock file ``path`` right now (never waits)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class SprintLock:
    """Hold the lock of one sprint on one repository for a ``with`` block; never waits."""

    def __init__(self, lock_dir: Path, repo: Path, sprint: str, *, flow_run: str | None = None,
                 api_url: str | None = None, probe: bool = False) -> None:
        """``flow_run``, ``api_url``: the holder's flow run, recorded for a later holder
        should this one die. ``probe``: only check that the lock is free (taken and let go
        at once), leaving the record of a dead holder for the run that follows."""
        self.path = lock_path(lock_dir, repo, sprint)
        self.repo = Path(repo).resolve()
        self.sprint = sprint
        self.flow_run, self.api_url, self.probe = flow_run, api_url, probe
        self.previous: LockHolder | None = None  # a holder that died or said its ending
        self._fd: int | None = None
        self._record: dict[str, object] = {}
        self._ending: Ending | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``SprintLocked`` naming the live holder."""
        if self._fd is not None:
            raise RuntimeError("this SprintLock is already held")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_TRUNC would wipe the holder's record before we know we may write.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SprintLocked(self._locked_message()) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        if self.probe:
            return
        self.previous = _read(self.path)
        self._record = record = {
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "repo": str(self.repo),
            "flow_run": self.flow_run,
            "api_url": self.api_url,
        }
        _write(fd, record)

    def ending(self, completes: bool, message: str) -> None:
        """Say how this holder's flow run ends (Completed or Failed, with ``message``),
        kept in the record after ``release`` for the next holder (``previous.ended``)."""
        self._ending = Ending("COMPLETED" if completes else "FAILED", message)

    def release(self) -> None:
        """Let the lock go; the file stays (deleting it would race with a new holder)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._ending is not None:
                _write(fd, {**self._record, "ended": {"state": self._ending.state,
                                                      "message": self._ending.message}})
            elif not self.probe:
                os.ftruncate(fd, 0)  # let go cleanly: nothing for the next holder to mend
        finally:
            os.close(fd)  # closing releases the flock

    def __enter__(self) -> SprintLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def _locked_message(self) -> str:
        holder = _read(self.path)
        if holder is None:
            who = "by another process"
        else:
            host = "" if holder.hostname == socket.gethostname() else f" on {holder.hostname}"
            who = f"(pid {holder.pid}{host}, started at {holder.started_at})"
        return (
            f"sprint '{self.sprint}' is already running on {self.repo} {who}; "
            "wait for it or stop it"
        )


def read_holder(lock_dir: Path, repo: Path, sprint: str) -> LockHolder | None:
    """Who holds the lock of ``sprint`` on ``repo`` right now, or None if nobody does."""
    path = lock_path(lock_dir, repo, sprint)
    # Only a held lock's record is the live holder's; a free one's content is stale.
    return _read(path) if is_held(path) else None


def _write(fd: int, record: dict[str, object]) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)


def _read(path: Path) -> LockHolder | None:
    try:
        data = json.loads(path.read_text())
        ended = data.get("ended")
        return LockHolder(
            pid=int(data["pid"]),
            hostname=str(data["hostname"]),
            started_at=str(data["started_at"]),
            repo=str(data["repo"]),
            flow_run=data.get("flow_run"),
            api_url=data.get("api_url"),
            ended=Ending(str(ended["state"]), str(ended["message"])) if ended else None,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not written yet, or not ours
