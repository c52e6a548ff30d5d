"""How one agent attempt ended, what it did and what it cost, from Codex's own words.

``classify`` is pure: it reads the exit status, the parsed event stream and the
stderr tail, and names the ending. Codex (0.169) words its failures as below; the
texts come from ``codex-rs/core/src/error.rs`` (``CodexErr``'s messages) and from
runs of the real CLI against the scripted model server::

    completed         exit 0 and a ``turn.completed``; commands inside may have failed
    failed_transient  "exceeded retry limit, last status: 429 Too Many Requests"
                      "unexpected status 502 Bad Gateway: ..." / 503 / 504
                      "We're currently experiencing high demand, ..."   (a 500)
                      "stream disconnected before completion: ..."
                      "Connection failed: error sending request ..."
    failed_fatal      "unexpected status 401 Unauthorized: ..." / 403 / 400 / 404
                      "The model does not exist or you do not have access to it."
                      "Quota exceeded. Check your plan and billing details."
                      "Missing environment variable: `KEY`."
                      "Error loading config.toml: ..."   (stderr, no events)
                      anything else that is not recognised
    context_window    "Codex ran out of room in the model's context window. ..."
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from agentfleet.text import JsonSafeModel

if TYPE_CHECKING:
    from agentfleet.codex.events import Transcript


class Ending(StrEnum):
    """How an attempt ended; only ``completed`` may be committed."""

    COMPLETED = "completed"
    FAILED_TRANSIENT = "failed_transient"
    FAILED_FATAL = "failed_fatal"
    CONTEXT_WINDOW = "context_window"
    TIMED_OUT = "timed_out"
    STUCK = "stuck"
    KILLED = "killed"


class Usage(BaseModel):
    """Token figures of one attempt (Codex's ``turn.completed`` usage, summed)."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_output_tokens: int = 0

    @property
    def total(self) -> int:
        """Input plus output tokens (cached and reasoning tokens are already inside those)."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{k: getattr(self, k) + getattr(other, k) for k in Usage.model_fields})

    def __sub__(self, other: Usage) -> Usage:
        """The figures since ``other``: a resumed thread reports cumulative usage."""
        return Usage(
            **{k: max(0, getattr(self, k) - getattr(other, k)) for k in Usage.model_fields}
        )


class CommandRun(BaseModel):
    """One shell command the agent ran; ``exit_code`` is None while it still runs."""

    command: str
    exit_code: int | None = None
    status: str = "in_progress"


class AttemptOutcome(JsonSafeModel):
    """One agent attempt: how it ended, what it did, what it cost."""

    ending: Ending
    final_message: str | None = None
    commands: list[CommandRun] = Field(default_factory=list)
    files_changed: list[str] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    duration_s: float = 0.0
    exit_status: int | None = None
    error: str | None = Field(None, description="Codex's own message for a failure.")
    warnings: list[str] = Field(default_factory=list)
    thread_id: str | None = None
    stderr_tail: str = ""
    sandbox_refused: str | None = Field(
        None, description="Why Codex's sandbox cannot start here, in its own words: asked "
        "(`codex sandbox -- true`) only when a change of the agent failed in a completed turn.")

    @property
    def ok(self) -> bool:
        """Whether the agent finished its turn (its changes may be committed)."""
        return self.ending is Ending.COMPLETED

    @property
    def retryable(self) -> bool:
        """Whether running the same attempt again can help (a 429, a 5xx, a dropped stream)."""
        return self.ending is Ending.FAILED_TRANSIENT


# Codex puts the HTTP status in "unexpected status 503 Service Unavailable: ..." and
# "exceeded retry limit, last status: 429 Too Many Requests".
_STATUS = re.compile(r"(?:unexpected status|last status:?)\s+(\d{3})\b", re.IGNORECASE)
_TRANSIENT_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}

_CONTEXT = re.compile(r"context window|context_length_exceeded|maximum context length", re.I)
# Checked before the transient texts: a quota 429 must not be retried.
_FATAL = re.compile(
    r"insufficient_quota|quota exceeded|usage limit|unauthorized|forbidden|invalid_api_key"
    r"|incorrect api key|does not exist|model_not_found|not found|not supported"
    r"|missing environment variable|error loading config|invalid request|upgrade to plus"
    r"|invalid_request_error|unknown variant|refresh token",
    re.IGNORECASE,
)
_TRANSIENT = re.compile(
    r"too many requests|rate limit|exceeded retry limit|stream disconnected"
    r"|error sending request|connection failed|connection refused|connection reset"
    r"|error while reading the server response|error decoding response body"
    r"|experiencing high demand|internal server error|bad gateway|service unavailable"
    r"|gateway timeout|overloaded|timed out|timeout",
    re.IGNORECASE,
)
# stderr lines that say nothing about why codex failed.
_STDERR_NOISE = re.compile(r"^(WARNING: proceeding, even though|\s*\d+: <unknown>|Stack backtrace)")


def classify_message(message: str) -> Ending:
    """The ending a Codex failure message stands for (fatal when unrecognised)."""
    if _CONTEXT.search(message):
        return Ending.CONTEXT_WINDOW
    status = _STATUS.search(message)
    if status:
        return (
            Ending.FAILED_TRANSIENT if int(status.group(1)) in _TRANSIENT_STATUS
            else Ending.FAILED_FATAL
        )
    if _FATAL.search(message):
        return Ending.FAILED_FATAL
    if _TRANSIENT.search(message):
        return Ending.FAILED_TRANSIENT
    return Ending.FAILED_FATAL


def stderr_message(stderr_tail: str) -> str | None:
    """The meaningful part of codex's stderr ("Error loading config.toml: ..."), if any."""
    lines = [ln for ln in stderr_tail.splitlines() if ln.strip() and not _STDERR_NOISE.match(ln)]
    for i, line in enumerate(lines):
        if line.startswith(("Error", "error:")):
            # Codex prints the cause on the following lines (e.g. a TOML parse error).
            return "\n".join(lines[i : i + 6]).strip()
    return "\n".join(lines[-10:]).strip() or None


def classify(
    exit_status: int | None,
    transcript: Transcript,
    *,
    timed_out: bool = False,
    stuck: bool = False,
    killed: bool = False,
    stderr_tail: str = "",
) -> tuple[Ending, str | None]:
    """The ending of a Codex run and its error message (None when it completed)."""
    if killed:
        return Ending.KILLED, "stopped"
    if timed_out:
        # The last warning says why it never finished, e.g. "Reconnecting... waiting for network".
        return Ending.TIMED_OUT, transcript.last_warning
    if stuck:
        return Ending.STUCK, transcript.last_warning
    if exit_status == 0 and transcript.turn_completed and transcript.turn_failed is None:
        return Ending.COMPLETED, None
    message = transcript.turn_failed or transcript.last_error or stderr_message(stderr_tail)
    if message:
        return classify_message(message), message
    if exit_status is not None and exit_status < 0:
        return Ending.FAILED_FATAL, f"codex was killed by signal {-exit_status}"
    if exit_status == 0:
        return Ending.FAILED_FATAL, "codex exited without completing its turn"
    return Ending.FAILED_FATAL, f"codex exited with status {exit_status}"
