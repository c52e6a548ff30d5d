"""Reviews on Prefect: the flow's pause with one typed form, and the ways to answer it.

``ReviewDesk`` holds a sprint's reviewed tasks (``agentfleet.review`` decides what is
asked and what an answer means). ``pause_for`` pauses the flow run with
``pause_flow_run(wait_for_input=...)``: the Prefect UI shows the form; ``agentfleet
review`` (``find_waiting`` + ``answer``) and the terminal prompt of ``agentfleet run``
resume the run with the answers. A pause that times out is ended here: the run is
set back to Running (Prefect would fail it), and ``on_review_timeout`` decides.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import os
import select
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, cast

import pydantic

from agentfleet.best_of_n import select as judge
from agentfleet.files import write_atomically
from agentfleet.plan import Plan
from agentfleet.process import pid_alive
from agentfleet.results import AttemptResult
from agentfleet.review import (
    Decision,
    ReviewItem,
    Reviews,
    answer_fields,
    decided,
    form_markdown,
    is_pause_of,
    locator_path,
    pause_key,
    read_choice,
    task_item,
)
from agentfleet.selection import Selection

# Set by ``agentfleet run`` when its stdin is a terminal: a pause also asks there.
_TERMINAL: contextvars.ContextVar[bool] = contextvars.ContextVar("agentfleet_terminal",
                                                                 default=False)
POLL_S = 1  # how often a paused run looks for its answer (Prefect's default is 10 s)


@contextlib.contextmanager
def terminal_prompt(enabled: bool) -> Iterator[None]:
    """Within this context a review pause also prompts on this process's terminal."""
    token = _TERMINAL.set(enabled)
    try:
        yield
    finally:
        _TERMINAL.reset(token)


class ReviewDesk:
    """A sprint's tasks whose choice waits for a person, and what their reviews decided."""

    def __init__(self, plan: Plan, work_dir: Path, logger: Any) -> None:
        self.plan = plan
        self.work_dir = work_dir
        self.logger = logger
        self.reviews = Reviews()
        self.selections: dict[str, Selection] = {}

    def hold(self, task_id: str, selection: Selection | None,
             results: Mapping[int, AttemptResult]) -> bool:
        """Keep a judged task for review; False when it has none (or nothing passed)."""
        if not self.plan.task_review(task_id):
            return False
        if selection is None:  # one attempt: judged here, without a select task run
            selection = judge(results.values(), scored=bool(self.plan.task_score(task_id)),
                              goal=self.plan.task_score_goal(task_id))
        timeout_s = self.plan.task_review_timeout(task_id)
        on_timeout = self.plan.task_on_review_timeout(task_id)
        item = task_item(task_id, selection, timeout_s=timeout_s, on_timeout=on_timeout,
                         now=time.monotonic())
        if item is None:
            self.logger.warning(f"{task_id}: no candidate passed: nothing to review")
            return False
        self.selections[task_id] = selection
        self.reviews.hold(item)
        self.logger.info(f"{task_id}: waits for review (automatic choice {item.default}; "
                         f"on_review_timeout: {on_timeout}); tasks not waiting on it go on")
        return True

    @property
    def waiting(self) -> bool:
        """Whether any review is pending."""
        return bool(self.reviews.pending)

    def seconds_left(self) -> float | None:
        """Until the nearest review deadline; None when nothing waits."""
        return self.reviews.seconds_left(time.monotonic())

    def expired(self) -> list[Decision]:
        """Reviews whose time ran out, decided by ``on_review_timeout`` (logged)."""
        out = self.reviews.expired(time.monotonic())
        for decision in out:
            self.logger.warning(decision.line)
        return out

    def wait(self) -> list[Decision]:
        """Pause the flow run for every pending review; the decisions it ended in."""
        due = self.expired()
        if due:  # a deadline passed on the way here: no pause for these
            return due
        items = list(self.reviews.pending.values())
        answers = pause_for(items, self.plan.name, self.work_dir, self.logger)
        if answers is None:
            return self.expired()
        out = self.reviews.answer(answers)
        for decision in out:
            self.logger.info(decision.line)
        return out

    def outcome(self, decision: Decision,
                results: Mapping[int, AttemptResult]) -> tuple[AttemptResult, Selection]:
        """The reviewed task's result and selection."""
        return decided(decision, results, self.selections[decision.key])


def pause_for(items: list[ReviewItem], sprint: str, work_dir: Path,
              logger: Any) -> dict[str, str] | None:
    """Pause the flow run with one form for ``items``; the answers, or None on timeout."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run
    from prefect.input import RunInput

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise RuntimeError("a review pause needs a flow run")
    flow_run_id = context.flow_run.id
    model = pydantic.create_model("AgentfleetReview", __base__=RunInput,
                                  **answer_fields(items))
    form = model.with_initial_data(description=form_markdown(items, sprint))
    key = pause_key(sprint, uuid.uuid4().hex[:8])
    seconds = max(1, math.ceil(min(i.deadline for i in items) - time.monotonic()))
    with get_client(sync_client=True) as client:
        api_url = client.api_url
    locator = locator_path(work_dir, sprint)
    # Whole or not at all: `agentfleet review` may read it at any moment.
    write_atomically(locator, json.dumps({"api_url": str(api_url).rstrip("/"),
                                          "flow_run_id": str(flow_run_id), "pause_key": key,
                                          "pid": os.getpid()}) + "\n")
    logger.warning(f"waiting for review of {', '.join(i.key for i in items)}: answer in the "
                   f"Prefect UI or with `agentfleet review {sprint}` (times out in {seconds}s)")
    stop = threading.Event()
    if _TERMINAL.get():
        ctx = contextvars.copy_context()  # the thread needs this run's Prefect settings
        threading.Thread(target=ctx.run, args=(ask_in_terminal, items, sprint, flow_run_id, stop),
                         daemon=True, name="agentfleet-review-prompt").start()
    try:
        answer = pause_flow_run(wait_for_input=form, timeout=seconds, poll_interval=POLL_S,
                                key=key)
        return answer.model_dump()
    except FlowPauseTimeout:
        return _after_timeout(flow_run_id, form, key)
    finally:
        stop.set()
        locator.unlink(missing_ok=True)


def _after_timeout(flow_run_id: Any, form: Any, key: str) -> dict[str, str] | None:
    """Back to Running after an unanswered pause (None), or the answer that just came."""
    from prefect.client.orchestration import get_client
    from prefect.input.run_input import keyset_from_base_key
    from prefect.states import Running

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
        if state is not None and state.is_running():  # answered at the last moment
            return form.load(keyset_from_base_key(f"paused-{key}")).model_dump()
        if state is None or not state.is_paused():
            raise KeyboardInterrupt(f"the flow run left its review pause: {state}")
        # Forced: Prefect fails a run whose pause expired; ours goes on by on_review_timeout.
        client.set_flow_run_state(flow_run_id, Running(message="review timed out"), force=True)
    return None


def ask_in_terminal(items: list[ReviewItem], sprint: str, flow_run_id: Any,
                    stop: threading.Event, out: TextIO | None = None,
                    inp: TextIO | None = None) -> None:
    """``agentfleet run``'s prompt: ask each review on the terminal, then resume the run."""
    from prefect.flow_runs import resume_flow_run

    out = out or sys.stderr
    inp = inp or sys.stdin
    out.write("\n" + form_markdown(items, sprint) + "\n")
    answers: dict[str, str] = {}
    for item in items:
        while True:
            out.write(f"{item.key} [{'/'.join(item.choices)}] (Enter: {item.default}): ")
            out.flush()
            line = _readline(inp, stop)
            if line is None:
                return  # answered elsewhere, or timed out
            choice = read_choice(line, item.choices, item.default)
            if choice is not None:
                answers[item.key] = choice
                break
            out.write(f"  not one of {', '.join(item.choices)}\n")
    # The answer may come before the pause is in place (typed ahead): retry until it is.
    error: Exception | None = None
    while not stop.is_set():
        try:
            resume_flow_run(flow_run_id, run_input=answers)
            return
        except Exception as exc:  # noqa: BLE001 - not paused yet, or answered elsewhere
            error = exc
            stop.wait(0.3)
    if error is not None:
        out.write(f"review not sent: {error}\n")


def _readline(inp: TextIO, stop: threading.Event) -> str | None:
    while not stop.is_set():
        ready, _, _ = select.select([inp], [], [], 0.5)
        if ready:
            line = inp.readline()
            return None if line == "" else line
    return None


# ---------------------------------------------------------------- agentfleet review


@dataclass
class Waiting:
    """A paused run of a sprint waiting for review: where it is and its form."""

    api_url: str
    flow_run_id: Any
    description: str
    fields: dict[str, tuple[list[str], str]]  # key -> (choices, automatic choice)


def find_waiting(sprint: str, work_dir: Path, api_url: str | None) -> Waiting | None:
    """The newest paused run of ``sprint`` waiting for review, or None.

    Looked for where the run noted it (a run on the embedded server), then on ``api_url``.
    """
    places: list[tuple[str, str | None]] = []
    locator = locator_path(work_dir, sprint)
    if locator.exists():
        with contextlib.suppress(ValueError, KeyError, OSError):
            noted = json.loads(locator.read_text())
            # A note left by a killed run names a server that is gone: skip it.
            if noted.get("pid") is None or pid_alive(int(noted["pid"])):
                places.append((noted["api_url"], noted["flow_run_id"]))
    if api_url:
        places.append((api_url, None))
    for url, run_id in places:
        try:
            found = _find_at(url, run_id, sprint)
        except Exception:  # noqa: BLE001 - a server that is gone: look in the next place
            found = None
        if found is not None:
            return found
    return None


def _find_at(url: str, run_id: str | None, sprint: str) -> Waiting | None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.input.actions import read_flow_run_input
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        if run_id is not None:
            runs = [client.read_flow_run(uuid.UUID(run_id))]
        else:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.PAUSED]))),
                sort=FlowRunSort.START_TIME_DESC, limit=50,
            )
        for run in runs:
            state = run.state
            if state is None or not state.is_paused():
                continue
            details = state.state_details
            if not is_pause_of(details.pause_key, sprint) or not details.run_input_keyset:
                continue
            keyset = details.run_input_keyset
            # Called from sync code: values, not coroutines.
            schema = cast(dict, read_flow_run_input(keyset["schema"], flow_run_id=run.id)) or {}
            description = cast(
                str, read_flow_run_input(keyset["description"], flow_run_id=run.id)) or ""
            fields = {
                key: (list(prop.get("enum", [])), prop.get("default"))
                for key, prop in (schema.get("properties") or {}).items()
            }
            return Waiting(url, run.id, description, fields)
    return None


def answer(waiting: Waiting, answers: dict[str, str]) -> None:
    """Resume the paused run with the answers (raises if it no longer waits)."""
    from prefect.flow_runs import resume_flow_run
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: waiting.api_url}):
        resume_flow_run(waiting.flow_run_id, run_input=answers)
