"""`agentfleet worker` stops when told to.

Prefect's worker takes SIGTERM or SIGINT as a request to stop: its CLI cancels the main
task once, and the worker ends as soon as its runs have. That one cancel is often lost
on its way down (Python 3.11.7, Prefect 3.9; after a bench run: the worker of 5 of 7
one-worker runs, 3 of the 4 workers of one run): the worker then idles for ever with
nothing left to run, "stopped!" never printed, until a supervisor's SIGKILL 30 or 90 s
later. ``install()`` watches for the stop request and cancels the main task again every
``RECANCEL_S`` while the worker has no run in flight (a run still going is waited for,
as Prefect intends).
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from typing import Any

RECANCEL_S = 3.0

_installed = False
_main: dict[str, Any] = {}  # the worker being run here: its loop, main task and self


def install() -> None:
    """Patch Prefect's worker start-up and its CLI's signal set-up (idempotent)."""
    global _installed
    if _installed:
        return
    import prefect.utilities.processutils as processutils
    from prefect.workers.base import BaseWorker

    start, setup = BaseWorker.start, processutils.setup_signal_handlers_worker

    async def start_watched(self: Any, *args: Any, **kwargs: Any) -> None:
        _main.update(loop=asyncio.get_running_loop(), task=asyncio.current_task(),
                     worker=self)
        await start(self, *args, **kwargs)

    def setup_watched(*args: Any, **kwargs: Any) -> None:
        setup(*args, **kwargs)
        for number in (signal.SIGTERM, signal.SIGINT):
            handler = signal.getsignal(number)
            if callable(handler):
                signal.signal(number, _noting_stop(handler))

    BaseWorker.start = start_watched  # type: ignore[method-assign]
    processutils.setup_signal_handlers_worker = setup_watched
    _installed = True


def _noting_stop(handler: Any) -> Any:
    def on_signal(number: int, frame: Any) -> None:
        if not _main.get("watching"):
            _main["watching"] = True
            threading.Thread(target=_recancel, name="agentfleet-stop", daemon=True).start()
        handler(number, frame)

    return on_signal


def _in_flight(worker: Any) -> bool:
    limiter = getattr(worker, "_limiter", None)
    if limiter is not None:
        return limiter.borrowed_tokens > 0
    return bool(getattr(worker, "_submitting_flow_run_ids", None))


def _recancel() -> None:
    """Until the worker's main task is done: cancel it again whenever no run is in flight."""
    while True:
        time.sleep(RECANCEL_S)
        loop, task, worker = _main.get("loop"), _main.get("task"), _main.get("worker")
        if loop is None or task is None or task.done():
            return
        if not _in_flight(worker):
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the loop closed meanwhile: the worker is ending
                return
