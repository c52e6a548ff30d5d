"""Responses-API wire shapes: SSE frames, output items, error bodies.

Pure functions, so the unit tests can check shapes without a socket. The shapes
are the ones Codex 0.169's Responses client accepts (verified against the real
binary by ``tests/e2e/test_scripted_with_codex.py``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

from agentfleet.testing.script import (
    ExecStep,
    MessageStep,
    PatchStep,
    ReasoningStep,
    Response,
    Step,
    Usage,
)

CONTEXT_WINDOW_MESSAGE = (
    "Your input exceeds the context window of this model. Please adjust your input and try again."
)

# What api.openai.com answers for each status; codex only shows `message`, but it
# branches on `code`/`type` (e.g. 503 + server_is_overloaded, 429 + usage_limit_reached),
# so the defaults keep those neutral.
_DEFAULT_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: (
        "Incorrect API key provided: scripted-***-key. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        "invalid_api_key",
    ),
    403: ("You are not allowed to sample from this model.", "invalid_request_error", None),
    404: ("The model does not exist or you do not have access to it.", "invalid_request_error",
          "model_not_found"),
    429: (
        "Rate limit reached for requests. Please try again in 1s.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
    504: ("Gateway timeout.", "server_error", None),
}


def new_id(prefix: str) -> str:
    """A fresh id in the API's style (``resp_…``, ``msg_…``, ``call_…``)."""
    return f"{prefix}_{uuid.uuid4().hex}"


def error_body(status: int, message: str | None = None) -> dict[str, object]:
    """A realistic ``{"error": {...}}`` body for an HTTP error status."""
    default_message, kind, code = _DEFAULT_ERRORS.get(
        status, (f"Scripted error {status}.", "server_error" if status >= 500 else
                 "invalid_request_error", None)
    )
    return {
        "error": {"message": message or default_message, "type": kind, "param": None, "code": code}
    }


def frame(event: dict[str, object]) -> bytes:
    """One SSE frame: ``event:`` line, one ``data:`` line of JSON, a blank line."""
    data = json.dumps(event, separators=(",", ":"))
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


def output_item(step: Step, *, last: bool) -> dict[str, object]:
    """The finished output item for one scripted step."""
    if isinstance(step, ExecStep):
        args: dict[str, object] = {"cmd": step.cmd}
        if step.workdir is not None:
            args["workdir"] = step.workdir
        if step.yield_time_ms is not None:
            args["yield_time_ms"] = step.yield_time_ms
        return {
            "type": "function_call",
            "id": new_id("fc"),
            "call_id": new_id("call"),
            "name": "exec_command",
            "arguments": json.dumps(args),
            "status": "completed",
        }
    if isinstance(step, PatchStep):
        return {
            "type": "custom_tool_call",
            "id": new_id("ctc"),
            "call_id": new_id("call"),
            "name": "apply_patch",
            "input": step.patch,
            "status": "completed",
        }
    if isinstance(step, MessageStep):
        return {
            "type": "message",
            "id": new_id("msg"),
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": step.text, "annotations": []}],
            # Newer models label messages; a message followed by tool calls is commentary.
            "phase": "final_answer" if last else "commentary",
        }
    if isinstance(step, ReasoningStep):
        return {
            "type": "reasoning",
            "id": new_id("rs"),
            "summary": [{"type": "summary_text", "text": step.text}],
        }
    raise TypeError(f"unknown step {step!r}")


def _in_progress(item: dict[str, object]) -> dict[str, object]:
    """The ``output_item.added`` form of an item: same id, nothing produced yet."""
    added = dict(item)
    if item["type"] == "message":
        added["content"] = []
        added["status"] = "in_progress"
    elif item["type"] == "function_call":
        added["arguments"] = ""
        added["status"] = "in_progress"
    elif item["type"] == "custom_tool_call":
        added["input"] = ""
        added["status"] = "in_progress"
    elif item["type"] == "reasoning":
        added["summary"] = []
    return added


def response_object(
    response_id: str, model: str, status: str, output: list[dict[str, object]],
    usage: Usage | None = None, error: dict[str, object] | None = None,
) -> dict[str, object]:
    """The ``response`` object carried by ``response.*`` lifecycle events."""
    obj: dict[str, object] = {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": output,
        "error": error,
        "usage": usage.to_api() if usage is not None else None,
    }
    return obj


class EventStream:
    """Numbers the events of one streamed response (``sequence_number``)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.response_id = new_id("resp")
        self._seq = 0

    def event(self, kind: str, **fields: object) -> dict[str, object]:
        """One event of this stream, with its sequence number."""
        event: dict[str, object] = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def created(self) -> list[dict[str, object]]:
        """``response.created`` and ``response.in_progress``, the opening pair."""
        return [
            self.event("response.created",
                       response=response_object(self.response_id, self.model, "in_progress", [])),
            self.event("response.in_progress",
                       response=response_object(self.response_id, self.model, "in_progress", [])),
        ]

    def items(self, response: Response) -> Iterator[tuple[dict[str, object], list[dict]]]:
        """For each step: its finished item and the events announcing and finishing it."""
        for index, step in enumerate(response.steps):
            item = output_item(step, last=index == len(response.steps) - 1)
            events = [self.event("response.output_item.added", output_index=index,
                                 item=_in_progress(item))]
            if item["type"] == "message":
                text = step.text  # type: ignore[union-attr]
                events.append(self.event("response.output_text.delta", item_id=item["id"],
                                         output_index=index, content_index=0, delta=text))
                events.append(self.event("response.output_text.done", item_id=item["id"],
                                         output_index=index, content_index=0, text=text))
            events.append(self.event("response.output_item.done", output_index=index, item=item))
            yield item, events

    def completed(self, output: list[dict[str, object]], usage: Usage) -> dict[str, object]:
        """``response.completed`` with the whole output and its usage."""
        return self.event(
            "response.completed",
            response=response_object(self.response_id, self.model, "completed", output, usage),
        )

    def failed(self, code: str, message: str) -> dict[str, object]:
        """``response.failed`` carrying an API error (how context overflow is reported)."""
        error: dict[str, object] = {"type": "invalid_request_error", "code": code,
                                    "message": message, "param": None}
        return self.event(
            "response.failed",
            response=response_object(self.response_id, self.model, "failed", [], error=error),
        )
