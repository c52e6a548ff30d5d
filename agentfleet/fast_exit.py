"""``agentfleet run`` leaves at once when its work is done, skipping interpreter teardown.

Once the run has printed its report, Python's exit still runs the atexit handlers
(Prefect drains its log and event workers, stops its embedded server) and then tears
down every module and object of Prefect's large import graph: 1 to 2 s on a busy
2-core machine, after everything of value is done. ``arm`` registers a handler before
Prefect registers its own, so it runs after them (atexit is last in, first out), and
ends the process with ``os._exit`` once logging is flushed.

Only in the ``agentfleet`` console script, and only after ``settle`` gave the exit
status: in any other process (a test calling ``cli.main``) it does nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import weakref

_status: int | None = None
_armed = False


def arm() -> None:
    """Register the fast exit (once), when this process is the ``agentfleet`` command."""
    global _armed
    if _armed or os.path.basename(sys.argv[0]) != "agentfleet":
        return
    atexit.register(_leave)
    _armed = True


def settle(status: int) -> int:
    """Record the run's exit status for the fast exit; returns it."""
    global _status
    if _armed:
        _status = status
    return status


def abandon(status: int) -> int:
    """Leave now when Prefect's server is gone: before Prefect's exit drains its log and
    event workers, which would retry every batch against the dead server for minutes.
    Anything else: returns ``status``."""
    if not _armed:
        return status
    _flush_streams()
    os._exit(status)


def _leave() -> None:
    if _status is None:
        return  # the run did not end normally: Python's own exit, whatever it takes
    # What Python's exit would still run before the teardown, had it been registered
    # before this handler: weakref finalizers marked for exit (temporary folders), logging.
    with contextlib.suppress(Exception):
        weakref.finalize._exitfunc()  # type: ignore[attr-defined]
    logging.shutdown()
    _flush_streams()
    os._exit(_status)


def _flush_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
