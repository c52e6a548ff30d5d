"""A flow run left Running on its server by a run that ended without telling Prefect.

``kill -9``, the OOM killer or a reboot end ``agentfleet run`` with no word to Prefect;
a server that went away while the run worked leaves it unable to record its end. Either
way its flow run stays Running in the UI for ever. The next run of the same sprint on
the same repository takes the lock and finds the last holder's record
(``agentfleet.locks``): a holder that died is marked Crashed, one that ended and said
how (``SprintLock.ending``) gets that end, each saying why.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.context import FlowRunContext
from prefect.states import Completed, Crashed, Failed, State

from agentfleet.locks import Ending, LockHolder, SprintLock
from agentfleet.process import pid_alive
from tasks.api_url import api_url

# Not final, and not waiting for someone to start it: only a live process moves it on.
_UNDER_WAY = frozenset({StateType.RUNNING, StateType.PENDING, StateType.CANCELLING})


def sprint_lock(lock_dir: Path, repo: Path, sprint: str) -> SprintLock:
    """The sprint's lock, recording this flow run and its server for a later holder."""
    ctx = FlowRunContext.get()
    flow_run = str(ctx.flow_run.id) if ctx is not None and ctx.flow_run is not None else None
    return SprintLock(lock_dir, repo, sprint, flow_run=flow_run,
                      api_url=api_url())


def mend_abandoned(lock: SprintLock, log: Callable[[str], None]) -> None:
    """Give the flow run of the last holder of ``lock`` the end it never recorded, when
    that run is on this server and still under way: Crashed for a holder that died
    holding the lock, the end it said for one that ended; best effort (a failure is
    logged)."""
    previous: LockHolder | None = lock.previous
    if previous is None or previous.flow_run is None or previous.flow_run == lock.flow_run:
        return
    if previous.api_url != lock.api_url:
        return  # its run is on another server
    here = previous.hostname == socket.gethostname()
    if previous.ended is not None and (not here or pid_alive(previous.pid)):
        return  # it let go and may be telling Prefect its end right now
    host = "" if here else f" on {previous.hostname}"
    who = f"pid {previous.pid}{host}, started at {previous.started_at}"
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(previous.flow_run))
            if run.state is None or run.state.type not in _UNDER_WAY:
                return
            was = run.state.name
            client.set_flow_run_state(run.id, _end(previous.ended, who), force=True)
    except Exception as exc:  # noqa: BLE001 - the new run goes on; the old one stays as it is
        log(f"could not record the end of the flow run {previous.flow_run} of an earlier "
            f"run of this sprint: {exc}")
        return
    if previous.ended is None:
        log(f"flow run '{run.name}' of a run of this sprint that died ({who}) was still "
            f"{was}: marked Crashed")
    else:
        log(f"flow run '{run.name}' of a run of this sprint that ended ({who}), its end never "
            f"recorded, was still {was}: marked {previous.ended.state.title()}, as it ended")


def _end(ended: Ending | None, who: str) -> State:
    if ended is None:
        return Crashed(message=f"its process ({who}) ended without telling Prefect "
                               f"(killed?); found by the next run of this sprint")
    message = (f"{ended.message} (recorded by the next run of this sprint: the end of its "
               f"process ({who}) never reached Prefect's server)")
    return Completed(message=message) if ended.state == "COMPLETED" else Failed(message=message)
