"""Leases: what a running attempt holds, written down so a killed run can be cleaned up.

Each attempt keeps one small JSON file from just before its worktree is added until
the worktree is released::

    <work_dir>/leases/<repo key>/<sprint>/<task>-<k>.json
    {"sprint", "task_id", "attempt", "repo", "worktree", "branch", "start_sha",
     "owner": {"pid", "start_ticks", "boot_id", "hostname"},
     "state": "active" | "kept",
     "processes": [{"pid", "pgid", "marker", "argv0"}, ...],
     "slot": {"limit", "lease_id", "api_url"} | null}

The owner is the agentfleet process running the attempt. A pid alone can be reused
by an unrelated process, so an owner is alive only while a process with its pid has
the same start time (``/proc/<pid>/stat`` field 22) in the same boot. An owner on
another host cannot be checked and always counts as alive: nothing of it is touched.

``slot`` is the shared pool's slot (a Prefect concurrency lease) while the agent holds
it: the reaper of a killed run gives it back at once instead of after the lease expires.

Every file is replaced atomically (write a temporary file, ``fsync``, ``rename``), so
a ``kill -9`` at any moment leaves either the old lease or the new one.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from agentfleet.files import write_atomically
from agentfleet.process import ProcessInfo, find_processes, kill_all, stat_fields

LEASES_DIR = "leases"
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def leases_root(work_dir: Path) -> Path:
    """The folder holding every lease under a work dir."""
    return Path(work_dir) / LEASES_DIR


def lease_dir(work_dir: Path, repo_key: str, sprint: str) -> Path:
    """The folder of one sprint's leases on one repository."""
    return leases_root(work_dir) / repo_key / sprint


# -- owners ---------------------------------------------------------------------------


def _start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot; None if there is no such process."""
    fields = stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):  # gone, or a zombie: its program is over
        return None
    return int(fields[19])  # field 22 of the whole line


def _boot_id() -> str:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return ""


class Owner(BaseModel):
    """The agentfleet process that holds a lease."""

    pid: int
    start_ticks: int = Field(description="/proc/<pid>/stat starttime: tells a reused pid apart")
    boot_id: str = ""
    hostname: str

    @classmethod
    def current(cls) -> Owner:
        """This process."""
        pid = os.getpid()
        return cls(
            pid=pid,
            start_ticks=_start_ticks(pid) or 0,
            boot_id=_boot_id(),
            hostname=socket.gethostname(),
        )

    @property
    def on_this_host(self) -> bool:
        """Whether this owner can be checked here at all."""
        return self.hostname == socket.gethostname()

    def is_alive(self) -> bool:
        """Still running; an owner on another host counts as alive (it cannot be checked)."""
        if not self.on_this_host:
            return True
        if self.boot_id and self.boot_id != _boot_id():
            return False  # the machine rebooted since: every pid of then is gone
        return _start_ticks(self.pid) == self.start_ticks

    def describe(self) -> str:
        """``pid 123`` (plus the host when it is another one)."""
        return f"pid {self.pid}" + ("" if self.on_this_host else f" on {self.hostname}")


# -- leases -----------------------------------------------------------------------------


class LeasedProcess(BaseModel):
    """A process an attempt started: its group and its marker find it and its children."""

    pid: int | None = Field(None, description="None while it is being started")
    pgid: int | None = None
    marker: str
    argv0: str = ""


class PoolSlot(BaseModel):
    """A slot of the shared pool an attempt's agent holds: a lease on a Prefect server."""

    limit: str = Field(description="the global concurrency limit's name (limits.pool)")
    lease_id: str
    api_url: str | None = Field(None, description="the Prefect API; None: the embedded server")


class Lease(BaseModel):
    """One attempt's hold on a worktree, a branch and the processes working there."""

    sprint: str
    task_id: str
    attempt: int
    repo: Path
    worktree: Path
    branch: str | None = Field(None, description="None: a detached worktree (final_verify)")
    start_sha: str
    owner: Owner
    state: Literal["active", "kept"] = "active"
    processes: list[LeasedProcess] = Field(default_factory=list)
    slot: PoolSlot | None = Field(None, description="the pool slot its agent holds, if any")
    created_at: str = Field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds")
    )

    @property
    def label(self) -> str:
        """``<sprint>/<task>#<k>``."""
        return f"{self.sprint}/{self.task_id}#{self.attempt}"


def write_lease(path: Path, lease: Lease) -> None:
    """Write ``lease`` to ``path`` atomically: readers see the old file or the new one."""
    write_atomically(path, lease.model_dump_json(indent=2) + "\n")


def read_lease(path: Path) -> Lease | None:
    """The lease in ``path``, or None if it is gone or not a lease."""
    try:
        return Lease.model_validate_json(Path(path).read_bytes())
    except (OSError, ValidationError, ValueError):
        return None


def list_leases(work_dir: Path) -> list[tuple[Path, Lease | None]]:
    """Every lease file under a work dir (None for one that does not read as a lease)."""
    root = leases_root(work_dir)
    if not root.is_dir():
        return []
    return [(p, read_lease(p)) for p in sorted(root.glob("*/*/*.json"))]


def remove_lease(path: Path) -> None:
    """Delete a lease file, and its sprint's and repository's folders once they are empty."""
    path = Path(path)
    path.unlink(missing_ok=True)
    for folder in (path.parent, path.parent.parent):
        with contextlib.suppress(OSError):  # not empty, or already gone
            folder.rmdir()


class AttemptLease:
    """The lease of one running attempt: taken, grown with each process, then released."""

    def __init__(self, path: Path, lease: Lease) -> None:
        self.path = Path(path)
        self.lease = lease
        self._lock = threading.Lock()

    @classmethod
    def take(cls, path: Path, **fields: object) -> AttemptLease:
        """Write a new lease owned by this process (``fields``: the ``Lease`` fields)."""
        held = cls(path, Lease(owner=Owner.current(), **fields))  # type: ignore[arg-type]
        write_lease(held.path, held.lease)
        return held

    def add_process(self, info: ProcessInfo) -> None:
        """Record a process the attempt starts (a ``process.observe_spawns`` callback).

        Called with pid 0 just before the start, then with the ids: one entry per marker.
        """
        entry = LeasedProcess(
            pid=info.pid or None, pgid=info.pgid or None, marker=info.marker, argv0=info.argv0
        )
        with self._lock:
            procs = self.lease.processes
            same = [i for i, p in enumerate(procs) if p.marker == info.marker]
            if same:
                procs[same[0]] = entry
            else:
                procs.append(entry)
            write_lease(self.path, self.lease)

    def hold_slot(self, slot: PoolSlot | None) -> None:
        """Record the pool slot the agent took (None: it gave it back)."""
        with self._lock:
            self.lease.slot = slot
            write_lease(self.path, self.lease)

    def keep(self) -> None:
        """Mark the worktree as kept for inspection: no process of it runs any more."""
        with self._lock:
            self.lease.state = "kept"
            self.lease.processes = []
            write_lease(self.path, self.lease)

    def release(self) -> None:
        """The worktree is gone: so is the lease."""
        with self._lock:
            remove_lease(self.path)


# -- what a lease left running ----------------------------------------------------------------


def _own_group(proc: LeasedProcess, marked: set[int]) -> int | None:
    """The recorded group id, but only while a process of our marker is still in it.

    A group id is a pid and is reused once the group is empty: signalling it blindly
    could hit a stranger's processes.
    """
    if proc.pgid is None or proc.pgid <= 0:  # never killpg(0): that is our own group
        return None
    group = set(find_processes(pgid=proc.pgid))
    return proc.pgid if group & marked else None


def live_processes(lease: Lease) -> list[int]:
    """The processes of ``lease`` still alive: its marked processes and their groups."""
    found: set[int] = set()
    for proc in lease.processes:
        marked = set(find_processes(marker=proc.marker))
        found |= marked
        pgid = _own_group(proc, marked)
        if pgid is not None:
            found |= set(find_processes(pgid=pgid))
    return sorted(found)


def stop_processes(lease: Lease, grace_s: float = 5.0) -> list[int]:
    """Stop every process of ``lease`` (SIGTERM, SIGKILL after ``grace_s``); the pids it found."""
    stopped: set[int] = set()
    for proc in lease.processes:
        marked = set(find_processes(marker=proc.marker))
        stopped |= set(kill_all(_own_group(proc, marked), proc.marker, grace_s))
    return sorted(stopped)


def process_name(pid: int) -> str:
    """A process's command line, shortened, for a listing ('?' once it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    text = raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()
    return text if len(text) <= 60 else text[:57] + "..."
