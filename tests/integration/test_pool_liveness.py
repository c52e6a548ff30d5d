"""The sprint's side of a pool attempt's liveness, against a real (harness) server.

A worker whose whole machine is gone leaves its attempt's flow run Running for ever: the
sprint watches the run's heartbeat label (``agentfleet.liveness``) and marks it Crashed
once it stops changing, so the attempt runs again elsewhere. A run that keeps beating is
left alone however long it takes. (A worker process killed on a machine that lives on is
the e2e test's: there the flow run ends itself.)
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from uuid import UUID

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.states import Completed, Running

from agentfleet.liveness import HEARTBEAT_LABEL
from tasks.pool import _wait


@flow(name="attempt-liveness-probe")
def probe() -> None:
    """Never run: it only names the flow runs made here."""


def _running_run(beat: str | None) -> UUID:
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(probe, state=Running())
        if beat is not None:
            client.update_flow_run_labels(run.id, {HEARTBEAT_LABEL: beat})
        return run.id


SPEC = SimpleNamespace(task_id="t", attempt=1)  # all ``_wait`` reads of an AttemptSpec


def test_a_run_that_stops_beating_is_marked_crashed(harness: None) -> None:
    run_id = _running_run(beat="1")
    started = time.monotonic()
    state, cancelled = _wait(run_id, SPEC, stale_s=1.0)  # type: ignore[arg-type]
    assert state.is_crashed() and not cancelled
    assert "has not beaten" in (state.message or "")
    assert time.monotonic() - started < 30
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run_id).state.is_crashed()


def test_a_run_that_keeps_beating_is_waited_for(harness: None) -> None:
    run_id = _running_run(beat="1")

    def worker() -> None:  # beats for longer than stale_s, then ends the run
        with get_client(sync_client=True) as client:
            for count in range(2, 17):
                time.sleep(0.3)
                client.update_flow_run_labels(run_id, {HEARTBEAT_LABEL: str(count)})
            client.set_flow_run_state(run_id, Completed(), force=True)

    beating = threading.Thread(target=worker)
    beating.start()
    try:
        state, cancelled = _wait(run_id, SPEC, stale_s=3.0)  # type: ignore[arg-type]
    finally:
        beating.join()
    assert state.is_completed() and not cancelled


@flow(name="attempt-liveness-beating")
def beating(beats: int, timeout_s: float) -> str:
    """The attempt flow's beat, as ``flows/attempt.py`` runs it, until the server shows
    ``beats`` of them (or ``timeout_s``: a loaded harness answers slowly, so the body waits
    on what the server shows, not for a fixed time)."""
    from prefect.context import FlowRunContext

    from flows.heartbeat import heartbeat

    run_id = FlowRunContext.get().flow_run.id  # type: ignore[union-attr]
    deadline = time.monotonic() + timeout_s
    with heartbeat(HEARTBEAT_LABEL, 0.2), get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            labels = client.read_flow_run(run_id).labels or {}
            if int(labels.get(HEARTBEAT_LABEL, 0)) >= beats:
                break
            time.sleep(0.1)
    return str(run_id)


def test_the_attempt_flows_heartbeat_counts_up_in_its_label(harness: None) -> None:
    started = time.monotonic()
    run_id = beating(3, timeout_s=60)
    with get_client(sync_client=True) as client:
        beats = int(client.read_flow_run(UUID(run_id)).labels[HEARTBEAT_LABEL])
    assert beats >= 3, f"{beats} beats in {time.monotonic() - started:.1f}s"
