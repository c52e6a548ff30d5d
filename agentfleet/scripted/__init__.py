"""A scripted OpenAI Responses-API server that the real Codex CLI can talk to."""

from __future__ import annotations

from agentfleet.scripted.script import (
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
from agentfleet.scripted.server import RecordedRequest, ScriptedModelServer, prompt_of

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
