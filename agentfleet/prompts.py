"""What an agent is told: the task's prompt plus what it needs to know of others.

Agents do not share context (the seed's "Inconsistent results"): a task that
waits for others starts from a tree holding their results, and its prompt says
what they did, so agent B knows what agent A did.
"""

from __future__ import annotations

from dataclasses import dataclass


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
