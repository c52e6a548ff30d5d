"""tasks/run_watch.py against a real (harness) server: the attempt runs a sprint waits on
are read together, once a tick, through the same reader the pool's ``_wait`` uses."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from uuid import UUID

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.exceptions import ObjectNotFound
from prefect.states import Completed, Failed, Running

from tasks.pool import _api_reader, _run_ends
from tasks.run_watch import Reader, RunWatch
from tests.support.waiting import wait_for


@flow(name="run-watch-probe")
def probe() -> None:
    """Never run: it only names the flow runs made here."""


class CountedReads:
    """``_api_reader``, each read's ids noted."""

    def __init__(self) -> None:
        self.reads: list[list[UUID]] = []

    @contextlib.contextmanager
    def session(self) -> Iterator[Reader]:
        with _api_reader() as read:
            def counted(ids: Sequence[UUID]) -> list:
                self.reads.append(list(ids))
                return list(read(ids))

            yield counted


def _running_runs(count: int) -> list[UUID]:
    with get_client(sync_client=True) as client:
        return [client.create_flow_run(probe, state=Running()).id for _ in range(count)]


def test_runs_waited_on_together_are_read_together(harness: None) -> None:
    counted = CountedReads()
    watch = RunWatch(counted.session, 0.1)
    ids = _running_runs(3)
    seen: dict[UUID, str] = {}

    def wait(run_id: UUID) -> None:
        with watch.watching(run_id):
            while True:
                run = watch.read(run_id)
                if run is not None and run.state is not None and run.state.is_final():
                    seen[run_id] = run.state.type.value
                    return

    threads = [threading.Thread(target=wait, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    with get_client(sync_client=True) as client:
        for run_id in ids:
            client.set_flow_run_state(run_id, Completed(), force=True)
    for thread in threads:
        thread.join(timeout=30)
    assert seen == {i: "COMPLETED" for i in ids}
    # One read a tick for the three, not one each.
    assert max(len(r) for r in counted.reads) == 3
    assert len(counted.reads) < sum(len(r) for r in counted.reads)
    reads = len(counted.reads)
    time.sleep(0.5)
    assert len(counted.reads) == reads  # nothing watched any more: no reads


def test_a_stop_wakes_its_reader_at_once(harness: None) -> None:
    watch = RunWatch(_api_reader, 10.0)  # ticks far apart
    (run_id,) = _running_runs(1)
    stop = threading.Event()
    with watch.watching(run_id):
        assert watch.read(run_id) is not None  # a run newly watched is read at once
        threading.Timer(0.2, stop.set).start()
        started = time.monotonic()
        assert watch.read(run_id, stop=stop) is None
        assert time.monotonic() - started < 2.0


def test_a_run_the_server_does_not_have_is_raised_to_its_reader(harness: None) -> None:
    watch = RunWatch(_api_reader, 0.1)
    missing = uuid.uuid4()
    with watch.watching(missing), pytest.raises(ObjectNotFound):
        watch.read(missing)


# The stream carries only final states' events, by name: TimedOut is a Failed of its own.
@pytest.mark.parametrize("end", [Completed, lambda: Failed(name="TimedOut")],
                         ids=["Completed", "TimedOut"])
def test_with_the_events_stream_an_end_is_seen_at_once_and_reads_are_few(
    harness: None, end: Callable[[], State],
) -> None:
    counted = CountedReads()
    watch = RunWatch(counted.session, 0.1, listen=_run_ends, quiet_s=60.0)
    (run_id,) = _running_runs(1)
    with watch.watching(run_id):
        assert watch.read(run_id) is not None
        # The stream is up: reads slow to the quiet pause (a minute here) ...
        wait_for(lambda: watch._streaming, 30, "the events stream")
        time.sleep(0.5)
        reads = len(counted.reads)
        time.sleep(1.0)
        assert len(counted.reads) == reads
        # ... and the run's end, told by its event, is read at once.
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(run_id, end(), force=True)
        started = time.monotonic()
        while True:
            run = watch.read(run_id, timeout_s=30)
            if run is not None and run.state is not None and run.state.is_final():
                break
        assert time.monotonic() - started < 10.0
        assert len(counted.reads) - reads < 20  # not a read every tenth of a second


def test_without_the_events_stream_reads_keep_their_interval(harness: None) -> None:
    def lost(heard: object, stop: threading.Event) -> None:
        raise ConnectionError("no stream")

    counted = CountedReads()
    watch = RunWatch(counted.session, 0.1, listen=lost, quiet_s=60.0)
    (run_id,) = _running_runs(1)
    with watch.watching(run_id):
        watch.read(run_id)
        reads = len(counted.reads)
        # Five more reads at 0.1 s each: waited for, not timed (a loaded machine is slower).
        wait_for(lambda: len(counted.reads) - reads >= 5, 30, "the reads to go on")


def test_the_read_that_sees_an_announced_end_ends_the_hurry(harness: None) -> None:
    counted = CountedReads()
    # Hurried reads a tenth of a second apart would run for 0.4 s after the event.
    watch = RunWatch(counted.session, 0.1, listen=_run_ends, quiet_s=60.0)
    ended, still = _running_runs(2)
    with watch.watching(still), watch.watching(ended):
        assert watch.read(ended) is not None
        wait_for(lambda: watch._streaming, 30, "the events stream")
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(ended, Completed(), force=True)
        while True:
            run = watch.read(ended, timeout_s=30)
            if run is not None and run.state is not None and run.state.is_final():
                break
        reads = len(counted.reads)
        time.sleep(1.0)
        # The other run is still watched (the reading thread lives on): at the quiet pause.
        assert len(counted.reads) == reads
