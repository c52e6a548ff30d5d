"""What the scripted model does, per prompt: rules of responses and faults.

A ``Script`` is plain data (YAML or JSON), so a demo can ship one::

    rules:
      - name: add-greeting
        match: "greeting"
        faults: [{kind: http, status: 429, retry_after: 1}]
        responses:
          - steps:
              - {do: exec, cmd: "ls"}
          - steps:
              - do: patch
                patch: |
                  *** Begin Patch
                  *** Add File: hi.py
                  +print(1)
                  *** End Patch
          - steps:
              - {do: message, text: "Added hi.py."}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Model(BaseModel):
    # A typo in a script should fail loudly, not be ignored.
    model_config = ConfigDict(extra="forbid")


class Usage(_Model):
    """Token figures reported in ``response.completed`` for one response."""

    input_tokens: int = Field(default=100, ge=0, description="Prompt tokens, cached ones included.")
    cached_input_tokens: int = Field(default=0, ge=0, description="Of those, served from cache.")
    output_tokens: int = Field(default=20, ge=0, description="Completion tokens, reasoning too.")
    reasoning_tokens: int = Field(default=0, ge=0, description="Of those, spent on reasoning.")

    @property
    def total_tokens(self) -> int:
        """Input plus output, as the Responses API reports it."""
        return self.input_tokens + self.output_tokens

    def to_api(self) -> dict[str, object]:
        """The ``usage`` object of a Responses-API ``response``."""
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_input_tokens},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.total_tokens,
        }


class ExecStep(_Model):
    """Run a shell command: a ``function_call`` to Codex's ``exec_command`` tool."""

    do: Literal["exec"] = "exec"
    cmd: str = Field(description="The shell command line.")
    workdir: str | None = Field(default=None, description="Directory to run in; default the cwd.")
    yield_time_ms: int | None = Field(
        default=None, description="How long Codex waits for output before reporting back."
    )


class PatchStep(_Model):
    """Edit files: a ``custom_tool_call`` to Codex's freeform ``apply_patch`` tool."""

    do: Literal["patch"] = "patch"
    patch: str = Field(description="The patch, from '*** Begin Patch' to '*** End Patch'.")


class MessageStep(_Model):
    """An assistant message; as the last step of a response, the turn's final answer."""

    do: Literal["message"] = "message"
    text: str


class ReasoningStep(_Model):
    """A reasoning item with a summary text (Codex shows it as a ``reasoning`` item)."""

    do: Literal["reasoning"] = "reasoning"
    text: str


Step = Annotated[ExecStep | PatchStep | MessageStep | ReasoningStep, Field(discriminator="do")]


class Response(_Model):
    """One model response: its output items in order, how long it takes, what it costs."""

    steps: list[Step] = Field(default_factory=list)
    delay_s: float = Field(
        default=0, ge=0, description="Seconds between response.created and the first item."
    )
    after: str | None = Field(
        default=None,
        description="Then also hold it until the test opens the latch of this name "
        "(ScriptedModelServer.open_latch): an answer timed by an event, not a guess.",
    )
    usage: Usage | None = Field(default=None, description="Default: the rule's, else Usage().")
    fault: Fault | None = Field(
        default=None,
        description="Answer this position of a conversation with a fault instead of steps "
        "(every time it is reached), e.g. a context window exhausted after some work.",
    )

    @model_validator(mode="after")
    def _steps_or_fault(self) -> Response:
        if bool(self.steps) == (self.fault is not None):
            raise ValueError("a response has either steps or a fault")
        return self


FaultKind = Literal["http", "cut", "silent", "context_window", "failed"]


class Fault(_Model):
    """How one or more requests fail instead of being answered."""

    kind: FaultKind = Field(
        description="http: an error status with a JSON body; cut: some events, then the "
        "connection breaks; silent: headers, then nothing; context_window: a response.failed "
        "with code context_length_exceeded; failed: a response.failed with `code`/`message`."
    )
    status: int = Field(default=500, ge=400, le=599, description="For http.")
    # Whole seconds: Codex 0.169 ignores a fractional `retry-after` (and then fails a 429 at
    # once), so a fraction here would silently script a different behaviour.
    retry_after: int | None = Field(
        default=None, ge=0, description="For http: send `retry-after` with these whole seconds."
    )
    times: int = Field(default=1, ge=1, description="How many consecutive requests it answers.")
    body: dict | None = Field(
        default=None, description="For http: the error JSON; default a realistic one per status."
    )
    events_before_cut: int = Field(
        default=1, ge=0, description="For cut: SSE events sent before the connection breaks."
    )
    hold_s: float | None = Field(
        default=None, ge=0, description="For silent: close after this long (default: never)."
    )
    code: str | None = Field(default=None, description="For failed: the error code.")
    message: str | None = Field(default=None, description="For failed: the error message.")


Response.model_rebuild()  # its `fault` refers to Fault, defined after it


class Rule(_Model):
    """How the model answers prompts containing ``match``."""

    name: str = Field(description="Label in the request log; tests group requests by it.")
    match: str = Field(description="A substring of the user's prompt.")
    responses: list[Response] = Field(
        default_factory=list,
        description="The i-th successful request of a thread gets responses[i]; past the end, "
        "a final message 'done'.",
    )
    faults: list[Fault] = Field(
        default_factory=list,
        description="Applied in order to this rule's first requests (across all threads).",
    )
    usage: Usage | None = Field(default=None, description="Default usage of its responses.")

    @property
    def fault_count(self) -> int:
        """How many requests the faults answer in all."""
        return sum(f.times for f in self.faults)

    def fault_for(self, attempt: int) -> Fault | None:
        """The fault answering this rule's ``attempt``-th request (0-based), if any."""
        for fault in self.faults:
            if attempt < fault.times:
                return fault
            attempt -= fault.times
        return None

    def response_for(self, position: int) -> Response:
        """The response at a conversation's ``position`` (a final 'done' past the end)."""
        if position < len(self.responses):
            return self.responses[position]
        return Response(steps=[MessageStep(text="done")])

    def usage_for(self, response: Response) -> Usage:
        """The usage a response reports: its own, else the rule's, else the default."""
        return response.usage or self.usage or Usage()


class Script(_Model):
    """Rules answering prompts; the first rule whose ``match`` occurs in the prompt wins."""

    rules: list[Rule] = Field(default_factory=list)
    default: Rule | None = Field(default=None, description="For prompts no rule matches.")

    @model_validator(mode="after")
    def _names_are_unique(self) -> Script:
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique; repeated: {', '.join(dupes)}")
        return self

    def rule_for(self, prompt: str) -> Rule | None:
        """The rule answering ``prompt``: the first that matches, else the default."""
        for rule in self.rules:
            if rule.match in prompt:
                return rule
        return self.default

    @classmethod
    def from_file(cls, path: Path | str) -> Script:
        """Load a script from a ``.yaml``/``.yml`` or ``.json`` file."""
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        return cls.model_validate(data or {})
