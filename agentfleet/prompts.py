"""What an agent is told: the task's prompt plus what it needs to know of others.

Agents do not share context (the seed's "Inconsistent results"): a task that
waits for others starts from a tree holding their results, and its prompt says
what they did, so agent B knows what agent A did.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentfleet.codex.outcome import AttemptOutcome


@dataclass(frozen=True)
class Predecessor:
    """A finished task whose result the new attempt starts from."""

    task_id: str
    relation: str  # "depends_on" or "paths overlap"
    final_message: str | None
    diffstat: str


def compose_prompt(prompt: str, predecessors: list[Predecessor], paths: list[str] | None) -> str:
    """The prompt as sent: the task's own text, then the context agentfleet adds."""
    parts = [prompt.strip()]
    if paths:
        parts.append(
            "Only change files matching these patterns (gitignore style): "
            + ", ".join(paths)
            + ". Changes outside them will be rejected."
        )
    if predecessors:
        lines = [
            "Context from agentfleet: this worktree already contains the results of "
            "the tasks below; build on them, do not redo them."
        ]
        for p in predecessors:
            lines.append(f"\n## Task {p.task_id} ({p.relation})")
            lines.append(f"Final message: {(p.final_message or '(none)').strip()}")
            if p.diffstat.strip():
                lines.append("Files changed:\n" + p.diffstat.rstrip())
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


# A continuation prompt must not fill the fresh context window it is meant to free.
_MAX_COMMANDS = 40
_MAX_TEXT = 2000


def _clip(text: str, limit: int = _MAX_TEXT) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def continuation_prompt(prompt: str, sessions: list[AttemptOutcome]) -> str:
    """A fresh session's prompt: what ``sessions`` did until the context filled, then ``prompt``.

    The seed's "start a new one and reference the previous thread's output": the
    worktree keeps their changes, the prompt says what they were.
    """
    lines = [
        "Context from agentfleet: earlier Codex sessions on this task ran out of room in the "
        "model's context window. Their changes are in this worktree, not committed: continue "
        "from there, do not redo them. What they did:"
    ]
    for number, session in enumerate(sessions, start=1):
        lines.append(f"\n## Session {number}")
        commands = session.commands[-_MAX_COMMANDS:]
        if len(session.commands) > len(commands):
            lines.append(f"({len(session.commands) - len(commands)} earlier commands left out)")
        if commands:
            lines.append("Commands (exit code):")
            for command in commands:
                code = "still running" if command.exit_code is None else str(command.exit_code)
                lines.append(f"- `{_clip(command.command, 300)}` -> {code}")
        else:
            lines.append("Commands: none")
        files = ", ".join(session.files_changed) if session.files_changed else "none"
        lines.append(f"Files changed: {_clip(files)}")
        lines.append(f"Last message: {_clip(session.final_message or '(none)')}")
    return "\n".join(lines) + "\n\n# The task\n\n" + prompt.strip() + "\n"
