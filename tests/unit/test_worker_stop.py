"""flows/worker_stop.py: a worker whose stop request was lost is cancelled again, but not
while a run of it is in flight."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import anyio
import pytest

from flows import worker_stop


async def _stubborn(swallowed: list[float]) -> None:
    """A main task that loses its first cancel (as Python 3.11 sometimes does) and idles."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        swallowed.append(time.monotonic())
    await asyncio.sleep(3600)


def _run_watched(worker: SimpleNamespace, after_first: float) -> tuple[float, float]:
    """Run a stubborn main task, cancel it once, start the watchdog; (first cancel, end)."""
    swallowed: list[float] = []

    async def main() -> float:
        task = asyncio.create_task(_stubborn(swallowed))
        worker_stop._main.update(loop=asyncio.get_running_loop(), task=task, worker=worker)
        await asyncio.sleep(0.05)
        task.cancel()
        threading.Thread(target=worker_stop._recancel, daemon=True).start()
        await asyncio.sleep(after_first)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)
        return time.monotonic()

    try:
        ended = asyncio.run(main())
    finally:
        worker_stop._main.clear()
    return swallowed[0], ended


def test_a_lost_stop_is_made_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_stop, "RECANCEL_S", 0.2)
    idle = SimpleNamespace(_limiter=anyio.CapacityLimiter(1))
    first, ended = _run_watched(idle, after_first=0)
    assert ended - first < 2


def test_a_run_in_flight_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_stop, "RECANCEL_S", 0.1)
    limiter = anyio.CapacityLimiter(1)
    busy = SimpleNamespace(_limiter=limiter)
    holder = object()

    async def hold_then_release() -> None:
        await limiter.acquire_on_behalf_of(holder)

    asyncio.run(hold_then_release())  # a run holds the worker's only slot
    released: list[float] = []

    def release_later() -> None:
        time.sleep(1.0)
        released.append(time.monotonic())
        limiter.release_on_behalf_of(holder)

    threading.Thread(target=release_later, daemon=True).start()
    _, ended = _run_watched(busy, after_first=0)
    assert released and ended >= released[0]  # not cancelled again until the run ended
