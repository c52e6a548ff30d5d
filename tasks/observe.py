"""The Prefect side of watching a sprint: artifacts, progress and events.

The content comes from ``agentfleet.artifacts`` (pure); this module only hands it
to Prefect. Publishing is best effort: an artifact or event the API refuses is
logged as a warning and never fails an attempt or a sprint.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Mapping
from typing import TypeVar, cast
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.events import emit_event
from prefect.exceptions import MissingContextError

from agentfleet import artifacts
from agentfleet.attempt import AttemptSpec
from agentfleet.results import AttemptResult, SprintReport

T = TypeVar("T")


def _best_effort(what: str, publish: Callable[[], T]) -> T | None:
    try:
        return publish()
    except Exception as exc:  # noqa: BLE001 - observability must not fail the work
        try:
            logger: logging.Logger | logging.LoggerAdapter = get_run_logger()
        except MissingContextError:  # called outside a run (e.g. a test of the task's fn)
            logger = logging.getLogger("agentfleet")
        logger.warning(f"could not publish {what}: {exc}")
        return None


def emit(spec: artifacts.EventSpec) -> None:
    """Emit one event; Prefect relates it to the current flow and task run."""
    _best_effort(
        f"event {spec.event}",
        lambda: emit_event(
            event=spec.event, resource=spec.resource, related=spec.related, payload=spec.payload
        ),
    )


def attempt_finished(spec: AttemptSpec, result: AttemptResult) -> None:
    """Publish an attempt's markdown artifact and its event (call inside its task run)."""
    _best_effort(
        "the attempt's artifact",
        lambda: create_markdown_artifact(
            markdown=artifacts.attempt_markdown(result, sprint=spec.sprint),
            key=artifacts.attempt_key(spec.sprint, spec.task_id, spec.attempt),
            description=artifacts.attempt_description(result),
        ),
    )
    emit(artifacts.attempt_event(result, sprint=spec.sprint))


class SprintProgress:
    """The sprint's progress artifact, one per run under the sprint's stable key.

    Published from a thread of its own, latest state first: the scheduler hands over
    each state and goes on (an API call per finished task cost it 30 to 250 ms on a busy
    machine); states that arrive while one is being sent are merged into the next send.
    ``close`` waits for the last one, so the artifact ends at the sprint's final count.
    """

    def __init__(self, sprint: str, states: Mapping[str, str]) -> None:
        self.sprint = sprint
        # The metering proxy's live count ("tokens: 2,200 of 5,000"), when the sprint is metered.
        self.tokens_line: Callable[[], str] = lambda: ""
        self._states = dict(states)
        self.artifact_id: UUID | None = None
        self._cond = threading.Condition()
        self._pending: tuple[float, str] | None = self._shown(states)
        self._sending = True  # the artifact is created first, by the thread
        self._closed = False
        # The flow run's context (API URL, run logger) goes with the thread.
        context = contextvars.copy_context()
        threading.Thread(target=context.run, args=(self._publish,), daemon=True,
                         name=f"progress {sprint}").start()

    def _shown(self, states: Mapping[str, str]) -> tuple[float, str]:
        percent, line = artifacts.progress(states)
        if tokens := self.tokens_line():
            line = f"{line}; {tokens}"
        return percent, line

    def update(self, states: Mapping[str, str]) -> None:
        """Show the scheduler's current states (call as attempts finish); returns at once."""
        self._states = dict(states)
        shown = self._shown(states)
        with self._cond:
            if not self._closed:
                self._pending = shown
                self._cond.notify_all()

    def refresh(self) -> None:
        """Show the latest tokens spent (called by the metering proxy as they grow)."""
        self.update(self._states)

    def close(self, timeout_s: float = 10.0) -> None:
        """Publish the last state handed over and wait for it (at most ``timeout_s``)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._pending is None and not self._sending, timeout_s)

    def _publish(self) -> None:
        with self._cond:
            percent, line = self._pending or (0.0, "")
            self._pending = None
        self.artifact_id = _best_effort(
            "the progress artifact",
            lambda: cast(UUID, create_progress_artifact(  # sync here: not a coroutine
                progress=percent, key=artifacts.progress_key(self.sprint), description=line
            )),
        )
        while True:
            with self._cond:
                self._sending = False
                self._cond.notify_all()
                self._cond.wait_for(lambda: self._pending is not None or self._closed)
                if self._pending is None or self.artifact_id is None:
                    self._pending = None
                    self._cond.notify_all()
                    return
                (percent, line), self._pending = self._pending, None
                self._sending = True
            _best_effort("progress", lambda a=self.artifact_id, p=percent, d=line: (
                update_progress_artifact(artifact_id=a, progress=p, description=d)))


def conflicts_predicted(sprint: str, rows: list[dict[str, str]]) -> None:
    """Publish the predicted conflicts (task, files, what became of it) as a table."""
    if rows:
        _best_effort(
            "the conflicts artifact",
            lambda: create_table_artifact(
                table=rows, key=artifacts.conflicts_key(sprint),
                description=f"{len(rows)} predicted conflicts",
            ),
        )


def sprint_finished(report: SprintReport, results: Mapping[str, AttemptResult]) -> None:
    """Publish the sprint's table artifact and its applied/failed event."""
    _best_effort(
        "the summary artifact",
        lambda: create_table_artifact(
            table=artifacts.summary_rows(report, results),
            key=artifacts.summary_key(report.sprint),
            description=artifacts.summary_description(report),
        ),
    )
    emit(artifacts.sprint_event(report))


class _TaskRunNamePrefix(logging.Filter):
    """Starts every task run's log line with ``<task run name>:``, Prefect's own lines too.

    ``prefect flow-run logs`` prints a flow run's lines without the task run each came
    from; with the prefix a reader still knows which attempt said what.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        name = getattr(record, "task_run_name", None)
        if name:
            prefix = f"{name}:"
            message = record.getMessage()
            if not message.startswith(prefix):
                record.msg, record.args = f"{prefix} {message}", ()
        if record.exc_info == (None, None, None):
            # Prefect logs a returned Failed state with exc_info=True and no exception,
            # which prints a bare "NoneType: None" line under it.
            record.exc_info = None
        return True


def name_task_run_lines() -> None:
    """Install the prefix on Prefect's task run logger (once per process)."""
    logger = logging.getLogger("prefect.task_runs")
    if not any(isinstance(f, _TaskRunNamePrefix) for f in logger.filters):
        logger.addFilter(_TaskRunNamePrefix())
