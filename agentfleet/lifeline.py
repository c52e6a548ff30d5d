"""Run a command that dies with its parent: ``python -m agentfleet.lifeline PID -- ARGV...``.

Linux's ``PR_SET_PDEATHSIG`` asks the kernel to send SIGKILL to a process when the
thread that started it ends, however it ends (``kill -9`` included, where no handler
of the parent runs). It is set here, then ``ARGV`` is exec'd and keeps it. ``PID`` is
the parent: if it died before the lifeline was tied, ``ARGV`` never starts. Used for
Prefect's embedded server (``flows/embedded.py``): started from the main thread, it
cannot outlive ``agentfleet run``.

The other way round, ``watch_parent`` is for a process that must notice its parent's end
and wind down itself (an attempt's flow run whose worker was killed: its agents run in
their own sessions, which no signal of the kernel reaches).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import sys
import threading
from collections.abc import Callable, Iterator

PR_SET_PDEATHSIG = 1


def tie_to_parent(parent: int) -> bool:
    """Ask for SIGKILL when the parent ends; False if it already has (or no such call)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return False
    return os.getppid() == parent


@contextlib.contextmanager
def watch_parent(on_gone: Callable[[int], None], poll_s: float = 0.5,
                 parent: int | None = None) -> Iterator[None]:
    """Call ``on_gone(parent_pid)`` once, from a thread, if this process's parent ends while
    the block runs (the process is then re-parented: ``getppid`` changes); or, given
    ``parent``, when that process ends (a forebear further up: ``flows.warm``'s worker)."""
    direct = parent is None or parent == os.getppid()
    parent = os.getppid() if parent is None else parent
    watched = None if direct else process_handle(parent)
    stop = threading.Event()

    def gone() -> bool:
        return os.getppid() != parent if watched is None else ended(watched)

    def watch() -> None:
        try:
            while not stop.wait(poll_s):
                if gone():
                    on_gone(parent)
                    return
        finally:
            if watched is not None:
                os.close(watched)

    thread = threading.Thread(target=watch, name="agentfleet-parent-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()


def process_handle(pid: int) -> int:
    """A pidfd for ``pid``: readable once the process has ended, even while a zombie its
    own parent has not reaped yet (where ``kill(pid, 0)`` still finds it)."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return os.open(os.devnull, os.O_RDONLY)  # always readable: ended already


def ended(handle: int) -> bool:
    """Whether the process behind ``process_handle`` has ended."""
    return bool(select.select([handle], [], [], 0)[0])


def main(argv: list[str]) -> int:
    """``PID -- ARGV...``: exec ``ARGV`` tied to ``PID``; exit 1 when ``PID`` is gone."""
    if len(argv) < 3 or argv[1] != "--" or not argv[0].isdigit():
        print("usage: python -m agentfleet.lifeline PARENT_PID -- COMMAND...", file=sys.stderr)
        return 2
    if not tie_to_parent(int(argv[0])):
        return 1
    os.execvp(argv[2], argv[2:])
    return 1  # not reached: exec replaces this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
