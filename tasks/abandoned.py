"""A flow run whose process died holding its sprint's lock, left Running on its server.

``kill -9``, the OOM killer or a reboot end ``agentfleet run`` with no word to Prefect:
its flow run stays Running in the UI for ever. The next run of the same sprint on the
same repository takes the lock, finds the dead holder's record (``agentfleet.locks``)
and marks that flow run Crashed, saying why.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.context import FlowRunContext
from prefect.states import Crashed

from agentfleet.locks import LockHolder, SprintLock
from tasks.api_url import api_url

# Not final, and not waiting for someone to start it: only a live process moves it on.
_UNDER_WAY = frozenset({StateType.RUNNING, StateType.PENDING, StateType.CANCELLING})


def sprint_lock(lock_dir: Path, repo: Path, sprint: str) -> SprintLock:
    """The sprint's lock, recording this flow run and its server for a later holder."""
    ctx = FlowRunContext.get()
    flow_run = str(ctx.flow_run.id) if ctx is not None and ctx.flow_run is not None else None
    return SprintLock(lock_dir, repo, sprint, flow_run=flow_run,
                      api_url=api_url())


def crash_abandoned(lock: SprintLock, log: Callable[[str], None]) -> None:
    """Mark Crashed the flow run of a holder of ``lock`` that died holding it, when that
    run is on this server and still under way; best effort (a failure is logged)."""
    previous: LockHolder | None = lock.previous
    if previous is None or previous.flow_run is None or previous.flow_run == lock.flow_run:
        return
    if previous.api_url != api_url():
        return  # its run is on another server
    host = "" if previous.hostname == socket.gethostname() else f" on {previous.hostname}"
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(previous.flow_run))
            if run.state is None or run.state.type not in _UNDER_WAY:
                return
            was = run.state.name
            client.set_flow_run_state(run.id, Crashed(message=(
                f"its process (pid {previous.pid}{host}, started at {previous.started_at}) "
                f"ended without telling Prefect (killed?); found by the next run of this "
                f"sprint")), force=True)
    except Exception as exc:  # noqa: BLE001 - the new run goes on; the old one stays as it is
        log(f"could not mark the flow run {previous.flow_run} of a dead run of this sprint "
            f"Crashed: {exc}")
        return
    log(f"flow run '{run.name}' of a run of this sprint that died (pid {previous.pid}{host}, "
        f"started at {previous.started_at}) was still {was}: marked Crashed")
