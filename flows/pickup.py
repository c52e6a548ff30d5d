"""Workers that take a run the moment it is scheduled, not at their next poll.

A Prefect worker looks for scheduled runs every ``PREFECT_WORKER_QUERY_SECONDS``: each
attempt of a ``placement: pool`` sprint waits half that interval on average before a
worker takes it; and idle workers that poll together all propose the same first run,
the losers (their Pending refused) waiting a whole interval more with work queued.
``install()`` makes a worker (``agentfleet worker``) also look at once when

- the server's events stream shows a ``prefect.flow-run.Scheduled`` event of its pool,
- one of its slots frees up: a run ended here, or a proposal lost such a race;

and once more a moment later when a look found nothing to take.

Its polls go on as before, and cover any time without the events stream (a server that
serves none, or one restarting: the stream is sought again, a minute apart at most).
A run whose proposal fails here wakes the worker once; one refused again waits for the
polls, so a run the server keeps refusing (a deployment's concurrency limit) never
becomes a loop of reads.
"""

from __future__ import annotations

import collections
import logging
from typing import Any
from uuid import UUID

import anyio

SCHEDULED = "prefect.flow-run.Scheduled"
WAKE_ATTR = "_agentfleet_wake"
REMEMBERED = 256  # runs whose freed slot already woke the worker
MAX_PAUSE_S = 60.0  # between attempts to get the events stream back
# A second look after a wake that found nothing: the server can send a run's Scheduled
# event before a worker's read sees the run (seen: a worker woken by three at once took
# none, and waited for its poll).
RECHECK_S = 0.3

_installed = False


class Wake:
    """One worker's pending look: coalesced (a burst of events is one poll)."""

    def __init__(self) -> None:
        self.send, self.receive = anyio.create_memory_object_stream[None](1)
        self.woken_for: collections.deque[UUID] = collections.deque(maxlen=REMEMBERED)

    def __call__(self) -> None:
        try:
            self.send.send_nowait(None)
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # a look is already due, or the worker is stopping

    def freed(self, flow_run_id: UUID) -> None:
        """A slot freed by ``flow_run_id``: look once for it, never twice."""
        if flow_run_id not in self.woken_for:
            self.woken_for.append(flow_run_id)
            self()


def install() -> None:
    """Patch Prefect's ``BaseWorker`` in this process (idempotent)."""
    global _installed
    if _installed:
        return
    from prefect.workers.base import BaseWorker

    start, release = BaseWorker.start, BaseWorker._release_limit_slot

    async def start_with_wakes(self: Any, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("run_once") or (args and args[0]):
            return await start(self, *args, **kwargs)
        wake = Wake()
        setattr(self, WAKE_ATTR, wake)
        async with anyio.create_task_group() as group:
            group.start_soon(_look_on_wake, self, wake)
            group.start_soon(_listen, self, wake)
            try:
                await start(self, *args, **kwargs)
            finally:
                group.cancel_scope.cancel()
                wake.send.close()

    def release_and_wake(self: Any, flow_run_id: UUID) -> None:
        release(self, flow_run_id)
        wake = getattr(self, WAKE_ATTR, None)
        if wake is not None:
            wake.freed(flow_run_id)

    BaseWorker.start = start_with_wakes  # type: ignore[method-assign]
    BaseWorker._release_limit_slot = release_and_wake  # type: ignore[method-assign]
    _installed = True


def _free(worker: Any) -> bool:
    limiter = getattr(worker, "_limiter", None)
    return limiter is None or limiter.available_tokens >= 1


async def _look_on_wake(worker: Any, wake: Wake) -> None:
    """Each wake: a look for scheduled runs, when the worker is synced and has room (a
    full worker is woken again as its slot frees). A look that found nothing to take is
    made again ``RECHECK_S`` later (the event can come before the run is readable), or at
    the next wake if that comes first (the run this worker freed its slot for, scheduled
    meanwhile): not up to ``RECHECK_S`` late."""
    async for _ in wake.receive:
        while await _look(worker) is False:
            woken = False
            with anyio.move_on_after(RECHECK_S):
                try:
                    await wake.receive.receive()
                    woken = True
                except anyio.EndOfStream:  # the worker is stopping
                    return
            if not woken:
                await _look(worker)  # the last of this wake
                break


async def _look(worker: Any) -> bool | None:
    """Whether a look took a run; None when no look was made or it failed."""
    if not getattr(worker, "_has_successfully_synced", False) or not _free(worker):
        return None
    try:
        return bool(await worker.get_and_submit_flow_runs())
    except Exception as exc:  # noqa: BLE001 - the polls go on; this look was extra
        worker._logger.debug("agentfleet: look on wake failed: %s", exc)
        return None


async def _listen(worker: Any, wake: Wake) -> None:
    """Wake on every Scheduled event of the worker's pool, once the pool is known; a lost
    stream (a server restarting) is sought again, the polls covering the gap."""
    from prefect.events.clients import get_events_subscriber
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    while getattr(worker, "_work_pool", None) is None:
        await anyio.sleep(0.2)
    pool = f"prefect.work-pool.{worker._work_pool.id}"
    logger: logging.Logger = worker._logger
    pause = 1.0
    while True:
        try:
            async with get_events_subscriber(filter=EventFilter(
                    event=EventNameFilter(name=[SCHEDULED]),
                    related=EventRelatedFilter(id=[pool]),
            )) as events:
                logger.info("agentfleet: this worker takes runs of its pool as they are "
                            "scheduled (events stream), and at its polls")
                pause = 1.0
                async for _ in events:
                    wake()
                    pause = 1.0
        except Exception as exc:  # noqa: BLE001 - without events the polls still find runs
            logger.warning(f"agentfleet: no events stream from the server ({exc}): this "
                           f"worker finds runs at its polls until it is back (again in "
                           f"{pause:.0f}s)")
        wake()  # whatever was scheduled while the stream was down
        await anyio.sleep(pause)
        pause = min(pause * 2, MAX_PAUSE_S)
