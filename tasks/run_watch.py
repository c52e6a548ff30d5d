"""One read a tick for every attempt run a sprint waits on, not one read each.

A ``placement: pool`` sprint waits on each attempt's flow run by looking at it every
``interval_s`` (its state, its heartbeat label). Read one by one, that is a request a
quarter second per attempt in flight, each a few milliseconds of the server's time: with
three attempts in flight, twelve a second, on the same server that is starting the next
attempts. ``RunWatch`` reads all the runs waited on in this process with one filtered
read a tick, from a thread of its own that ends when nothing is waited on.

Given ``listen`` (the server's events stream), a run's end is not waited for at all: an
event saying a watched run ended wakes the reads at once, and while the stream is up the
reads slow to ``quiet_s``, what the liveness check needs, instead of several a second
for every sprint. Without the stream (none yet, or lost) they keep ``interval_s``.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from uuid import UUID

from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import ObjectNotFound

Reader = Callable[[Sequence[UUID]], Sequence[FlowRun]]
Session = Callable[[], contextlib.AbstractContextManager[Reader]]  # e.g. one API client
# Runs until its stop is set or its stream is lost, calling back None once connected and
# then the id of each run an event says has ended.
Listen = Callable[[Callable[[UUID | None], None], threading.Event], None]
STOP_CHECK_S = 0.05  # how soon a reader sees its ``stop`` set
MAX_PAUSE_S = 30.0  # between attempts to get a lost events stream back


class RunWatch:
    """Snapshots of the flow runs being watched, one read of them all every tick."""

    def __init__(self, session: Session, interval_s: float, listen: Listen | None = None,
                 quiet_s: float | None = None) -> None:
        self._session = session
        self._interval_s = interval_s
        self._listen = listen
        self._quiet_s = max(interval_s, quiet_s or interval_s)
        self._streaming = False  # the events stream is up: reads at ``quiet_s``
        # Runs an event said had ended, not yet read so: reads at ``interval_s`` till
        # then (at most until ``_hurry_until``).
        self._announced: set[UUID] = set()
        self._hurry_until = 0.0
        self._listener: threading.Thread | None = None
        self._stop_listening = threading.Event()
        self._changed = threading.Condition()
        self._watched: Counter[UUID] = Counter()
        self._latest: dict[UUID, FlowRun] = {}
        self._failed: dict[UUID, Exception] = {}
        self._tick = 0
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    @contextlib.contextmanager
    def watching(self, run_id: UUID) -> Iterator[None]:
        """While the block runs, ``run_id`` is read every tick."""
        with self._changed:
            self._watched[run_id] += 1
            # A new run: read now, not at the end of the pause (set before a new thread
            # starts: its first read covers the run, and no second one follows at once).
            self._wake.set()
            self._ensure_thread()
        try:
            yield
        finally:
            with self._changed:
                self._watched[run_id] -= 1
                if self._watched[run_id] <= 0:
                    del self._watched[run_id]
                    self._announced.discard(run_id)
                    self._latest.pop(run_id, None)
                    self._failed.pop(run_id, None)

    def read(self, run_id: UUID, stop: threading.Event | None = None,
             timeout_s: float = 60.0) -> FlowRun | None:
        """The run as the next tick reads it; None when ``stop`` is set first. Raises
        what the read raised (``ObjectNotFound`` for a run the server does not have), or
        ``TimeoutError`` past ``timeout_s``."""
        with self._changed:
            self._ensure_thread()  # one that ended on an error is started again
            after = self._tick

            def ready() -> bool:
                if stop is not None and stop.is_set():
                    return True
                return self._tick > after and (run_id in self._latest
                                                or run_id in self._failed)

            deadline = time.monotonic() + timeout_s
            while not ready():  # in slices: ``stop`` is set by others, unannounced
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no read of flow run {run_id} in {timeout_s:.0f}s")
                self._changed.wait(min(left, STOP_CHECK_S))
                self._ensure_thread()
            if stop is not None and stop.is_set() and self._tick <= after:
                return None
            if run_id in self._failed:
                raise self._failed[run_id]
            if run_id not in self._latest:  # stopped, and no read of it yet
                return None
            return self._latest[run_id]

    def _ensure_thread(self) -> None:
        """Under the lock: a reading thread, and a listening one, while runs are watched."""
        if self._thread is None and self._watched:
            # The reads use the caller's Prefect settings (its API URL): copied.
            context = contextvars.copy_context()
            self._thread = threading.Thread(target=context.run, args=(self._loop,),
                                            name="agentfleet-run-watch", daemon=True)
            self._thread.start()
        if self._listen is not None and self._listener is None and self._watched:
            self._stop_listening = threading.Event()
            context = contextvars.copy_context()
            self._listener = threading.Thread(
                target=context.run, args=(self._listen_loop, self._stop_listening),
                name="agentfleet-run-watch-events", daemon=True)
            self._listener.start()

    def _pause_s(self) -> float:
        hurried = bool(self._announced) and time.monotonic() < self._hurry_until
        return self._quiet_s if self._streaming and not hurried else self._interval_s

    def _loop(self) -> None:
        try:
            with self._session() as read:
                while True:
                    self._wake.clear()  # a run watched from now on wakes the next pause
                    if not self._tick_once(read):
                        return
                    self._wake.wait(self._pause_s())
        except Exception as exc:  # noqa: BLE001 - no session: each waiter raises it
            self._publish({}, exc)
            time.sleep(self._interval_s)  # a waiter's read starts the next one: not at once
        finally:
            with self._changed:
                if self._thread is threading.current_thread():
                    self._thread = None
                if self._thread is None and not self._watched:
                    self._stop_listening.set()

    def _listen_loop(self, stop: threading.Event) -> None:
        """The events stream while runs are watched; sought again when lost (the reads go
        back to ``interval_s`` meanwhile)."""
        assert self._listen is not None
        pause = 1.0
        try:
            while not stop.is_set():
                with contextlib.suppress(Exception):  # the reads cover the gap
                    self._listen(self._heard, stop)
                if self._streaming:  # it was up, then lost (or stopped): the next try soon
                    pause = 1.0
                self._streaming = False
                self._wake.set()  # back to ``interval_s`` now, not after a quiet pause
                stop.wait(pause)
                pause = min(pause * 2, MAX_PAUSE_S)
        finally:
            self._streaming = False
            with self._changed:
                if self._listener is threading.current_thread():
                    self._listener = None

    def _heard(self, run_id: UUID | None) -> None:
        """From the events stream: connected (None), or ``run_id`` ended."""
        if run_id is None:
            self._streaming = True
            return
        with self._changed:
            if run_id not in self._watched:
                return
            # The event can come before a read sees the end: read at ``interval_s`` a
            # little while, not once; the read that sees it ends the hurry.
            self._announced.add(run_id)
            self._hurry_until = time.monotonic() + 4 * self._interval_s
        self._wake.set()

    def _tick_once(self, read: Reader) -> bool:
        """One read of every watched run; False when none is watched any more."""
        with self._changed:
            ids = list(self._watched)
            if not ids:  # decided under the lock: a run watched from now starts a thread
                self._thread = None
                return False
        try:
            runs = {run.id: run for run in read(ids)}
        except Exception as exc:  # noqa: BLE001 - each waiter raises it, as its read would
            self._publish({}, exc, ids)
            return True
        self._publish(runs, None, ids)
        return True

    def _publish(self, runs: dict[UUID, FlowRun], error: Exception | None,
                 ids: Sequence[UUID] | None = None) -> None:
        with self._changed:
            ids = list(self._watched) if ids is None else ids
            self._latest.update(runs)
            self._announced -= {run_id for run_id, run in runs.items()
                                if run.state is not None and run.state.is_final()}
            for run_id in ids:
                if run_id in runs:
                    self._failed.pop(run_id, None)
                else:
                    self._failed[run_id] = error or ObjectNotFound(
                        http_exc=Exception(f"flow run {run_id} not found"))
            self._tick += 1
            self._changed.notify_all()
