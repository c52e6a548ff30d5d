"""Test support: a scripted OpenAI Responses-API server that the real Codex CLI can talk to.

What a test, ``make demo`` and the bench stand in for the model with (there is no
internet here): rules that match a prompt and answer with queued steps (``script.py``),
the Responses API's SSE events, usage, 429s, 5xx and cut streams (``sse.py``,
``server.py``), every request recorded, and ``assert_complete()`` when a scripted step
was never asked for. ``python -m agentfleet.testing`` serves a script from the shell.
"""

from __future__ import annotations

from agentfleet.testing.script import (
    ExecStep,
    Fault,
    MessageStep,
    PatchStep,
    ReasoningStep,
    Response,
    Rule,
    Script,
    Step,
    Usage,
)
from agentfleet.testing.server import RecordedRequest, ScriptedModelServer, prompt_of

__all__ = [
    "ExecStep",
    "Fault",
    "MessageStep",
    "PatchStep",
    "ReasoningStep",
    "RecordedRequest",
    "Response",
    "Rule",
    "Script",
    "ScriptedModelServer",
    "Step",
    "Usage",
    "prompt_of",
]
