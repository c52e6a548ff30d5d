"""Per-run state of a running sprint: each flow run's ``RunControl``, found by its id.

A flow opens its control (``open_run``); its task runs, in threads of the same
process, find it through their flow run id (``run_control``). An interrupt (Ctrl-C)
or a cancelled flow run stops that run's agents only; another flow run in the same
process keeps running.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping
from uuid import UUID

from prefect.context import FlowRunContext, TaskRunContext

from agentfleet.control import AttemptControl, RunControl

_lock = threading.Lock()
_runs: dict[UUID | None, RunControl] = {}


def _flow_run_id() -> UUID | None:
    task_ctx = TaskRunContext.get()
    if task_ctx is not None:
        return task_ctx.task_run.flow_run_id
    flow_ctx = FlowRunContext.get()
    if flow_ctx is not None and flow_ctx.flow_run is not None:
        return flow_ctx.flow_run.id
    return None


@contextlib.contextmanager
def open_run(name: str) -> Iterator[RunControl]:
    """The current flow run's control, for as long as the block runs."""
    key = _flow_run_id()
    control = RunControl(name)
    with _lock:
        _runs[key] = control
    try:
        yield control
    finally:
        with _lock:
            if _runs.get(key) is control:
                del _runs[key]


def run_control() -> RunControl:
    """The control of the flow run this task run belongs to (a fresh one outside a sprint)."""
    key = _flow_run_id()
    with _lock:
        control = _runs.get(key)
    # A task called on its own (a test, ``.fn``, a flow without a control): nobody else
    # can stop it, and nothing is kept for it.
    return control if control is not None else RunControl("standalone")


def attempt_control(name: str) -> AttemptControl:
    """The stop switch of attempt ``name`` in the current flow run."""
    return run_control().attempt(name)


def agent_env(secret: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The agent's environment, read at the last moment: ours, the agent block's secrets,
    then the plan's ``agent.env`` (``block_refs.agent_environment``)."""
    return {**os.environ, **secret, **extra}
