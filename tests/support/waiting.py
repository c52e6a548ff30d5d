"""Waiting on observable state (never on bare sleeps), and finding leftover processes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentfleet.process import stat_fields


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 60,
    what: str | Callable[[], str] = "condition",
    interval: float = 0.1,
) -> Any:
    """Poll until ``predicate`` returns something true; return it, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        time.sleep(interval)


def processes_under(folder: Path) -> list[int]:
    """Processes whose working directory lies under ``folder`` (agents of a work dir)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/cwd").startswith(str(folder)):
                found.append(int(pid))
        except OSError:
            continue
    return found


def cmdline(pid: int) -> str:
    """A process's command line, its arguments joined by spaces ("" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, over but not yet reaped, does not)."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def parent(pid: int) -> int | None:
    """``pid``'s parent; None once it is gone."""
    fields = stat_fields(pid)
    return None if fields is None else int(fields[1])
