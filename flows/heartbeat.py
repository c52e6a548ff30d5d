"""The heartbeat of the flow run ``agentfleet run`` starts, beaten by a thread that stops at once.

Prefect's sync flow engine emits ``prefect.flow-run.heartbeat`` from a thread that
sleeps in one-second steps, and joins that thread when the flow function returns:
every run waited up to a second (half a second on average) after its work was done,
about a tenth of a cached rerun. For the flow run that ``agentfleet run`` runs in its
own process, ``beaten_here`` turns Prefect's heartbeat off for that call only, and
``heartbeat`` (in the flow body) emits the same event at the same interval (the
``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` setting), with the same resource and related
resources, from a thread that needs no join. So does the ``attempt`` deployment's run
(``python -m flows.engine``), whose same thread also beats its liveness label; other
deployment runs keep Prefect's own.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import threading
import time
from collections.abc import Callable, Iterator

from prefect import __version__ as prefect_version
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext, SettingsContext, get_settings_context
from prefect.events import emit_event
from prefect.events.related import tags_as_related_resources
from prefect.events.schemas.events import RelatedResource
from prefect.settings import get_current_settings

# Prefect's floor for the interval (prefect.flow_engine.MINIMUM_HEARTBEAT_INTERVAL).
MIN_INTERVAL_S = 30
EVENT = "prefect.flow-run.heartbeat"

# Set by ``beaten_here`` for the flow call it wraps: the interval the flow body beats at.
_INTERVAL: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "agentfleet_heartbeat_interval", default=None
)


@contextlib.contextmanager
def beaten_here() -> Iterator[None]:
    """Around the flow call: Prefect's heartbeat off, the flow body's on, same interval.

    Nothing changes when heartbeats are off in Prefect's settings.
    """
    seconds = get_current_settings().flows.heartbeat_frequency
    if seconds is None:
        yield
        return
    token = _INTERVAL.set(max(seconds, MIN_INTERVAL_S))
    # A copy with that one value changed: ``temporary_settings`` would validate every
    # setting again (a fifth of a forked attempt run's CPU) for a value that needs none.
    context = get_settings_context()
    current = context.settings
    settings = current.model_copy(
        update={"flows": current.flows.model_copy(update={"heartbeat_frequency": None})})
    try:
        with SettingsContext(profile=context.profile, settings=settings):
            yield
    finally:
        _INTERVAL.reset(token)


@contextlib.contextmanager
def heartbeat(label: str | None = None, label_every_s: float = 1.0) -> Iterator[None]:
    """In the flow body: beat while it runs, from one thread that needs no join.

    Prefect's heartbeat event, when ``beaten_here`` turned Prefect's own off; and with
    ``label``, a counter in that label of the flow run every ``label_every_s`` (a pool
    attempt's liveness, ``agentfleet.liveness``)."""
    seconds = _INTERVAL.get()
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None or (seconds is None and label is None):
        yield
        return
    flow_run_id = ctx.flow_run.id
    beats: list[tuple[float, Callable[[], object]]] = []
    if seconds is not None:
        resource, related = _template(ctx)
        beats.append((seconds, lambda: emit_event(event=EVENT, resource=resource,
                                                  related=related)))
    stop = threading.Event()

    def beat() -> None:
        with contextlib.ExitStack() as stack:
            if label is not None:  # one client for every beat of the run
                client = stack.enter_context(get_client(sync_client=True))
                count = itertools.count(1)
                beats.insert(0, (label_every_s, lambda: client.update_flow_run_labels(
                    flow_run_id, {label: str(next(count))})))
            due = [0.0] * len(beats)
            while True:
                for i, (every, call) in enumerate(beats):
                    if time.monotonic() >= due[i]:
                        with contextlib.suppress(Exception):  # missed; the next may pass
                            call()
                        due[i] = time.monotonic() + every
                if stop.wait(max(0.0, min(due) - time.monotonic())):
                    return

    # The flow run's context (API URL, related flow run) goes with the thread.
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(beat,), daemon=True,
                     name="flow-run heartbeat").start()
    try:
        yield
    finally:
        stop.set()  # the thread ends at once; nothing waits for it


def _template(ctx: FlowRunContext) -> tuple[dict[str, str], list[RelatedResource]]:
    """The event's resource and related resources, as Prefect's engine builds them."""
    run = ctx.flow_run
    assert run is not None
    resource = {
        "prefect.resource.id": f"prefect.flow-run.{run.id}",
        "prefect.resource.name": run.name or "",
        "prefect.version": prefect_version,
    }
    related: list[RelatedResource] = []
    if run.flow_id:
        related.append(RelatedResource.model_validate({
            "prefect.resource.id": f"prefect.flow.{run.flow_id}",
            "prefect.resource.role": "flow",
            "prefect.resource.name": ctx.flow.name if ctx.flow else "",
        }))
    if run.deployment_id:
        related.append(RelatedResource.model_validate({
            "prefect.resource.id": f"prefect.deployment.{run.deployment_id}",
            "prefect.resource.role": "deployment",
        }))
    related += tags_as_related_resources(set(run.tags or []))
    return resource, related
