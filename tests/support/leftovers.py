"""What a killed run leaves behind, made for real: a dead owner, worktrees, leases, orphans."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

from agentfleet.leases import Lease, LeasedProcess, Owner, _start_ticks, lease_dir, write_lease
from agentfleet.locks import repo_key
from agentfleet.process import MARKER_VAR, find_processes
from agentfleet.worktrees import WorktreeManager, resolve_commit


def dead_owner() -> Owner:
    """The owner record of a process that really ran and is gone now."""
    proc = subprocess.Popen(["sleep", "1000"])
    try:
        ticks = _start_ticks(proc.pid)
        assert ticks is not None
    finally:
        proc.kill()
        proc.wait()
    owner = Owner.current()
    return owner.model_copy(update={"pid": proc.pid, "start_ticks": ticks})


def orphan(command: str = "setsid sleep 1000 & sleep 1000", count: int = 3) -> LeasedProcess:
    """A process group of our own doing ``command``, marked as an agent is; waits for ``count``."""
    marker = uuid.uuid4().hex
    proc = subprocess.Popen(
        ["bash", "-c", command], start_new_session=True, stdin=subprocess.DEVNULL,
        env={**os.environ, MARKER_VAR: marker},
    )
    deadline = time.monotonic() + 10
    while len(find_processes(marker=marker)) < count:
        assert time.monotonic() < deadline, "the orphan's processes never started"
        time.sleep(0.02)
    # Leave reaping its zombie to the test process's exit; it is excluded from every scan.
    return LeasedProcess(pid=proc.pid, pgid=proc.pid, marker=marker, argv0="bash")


def leftover(
    work_dir: Path,
    repo: Path,
    task: str,
    *,
    owner: Owner,
    sprint: str = "s1",
    state: str = "active",
    processes: list[LeasedProcess] | None = None,
    dirty: bool = False,
) -> Lease:
    """A worktree of ``task`` with its lease, as a run of ``sprint`` left it."""
    key = repo_key(repo)
    manager = WorktreeManager(repo, work_dir / "worktrees" / key / sprint)
    branch = f"agentfleet-attempts/{sprint}/{task}/1"
    start = resolve_commit(repo, "HEAD")
    path = manager.add(branch, start, f"{task}-1")
    if dirty:
        (path / "half-done.txt").write_text("work in progress\n")
    lease = Lease(
        sprint=sprint, task_id=task, attempt=1, repo=repo.resolve(), worktree=path,
        branch=branch, start_sha=start, owner=owner, state=state,  # type: ignore[arg-type]
        processes=processes or [],
    )
    write_lease(lease_dir(work_dir, key, sprint) / f"{task}-1.json", lease)
    return lease
