"""Agent events as one readable log line each (for the task run's live log)."""

from __future__ import annotations

from agentfleet.codex_events import (
    AgentMessageItem,
    CommandExecutionItem,
    ErrorEvent,
    ErrorItem,
    FileChangeItem,
    ItemCompleted,
    ItemStarted,
    ItemUpdated,
    NonJsonLine,
    OutputLine,
    ReasoningItem,
    ThreadStarted,
    TodoListItem,
    TurnCompleted,
    TurnFailed,
    UnknownEvent,
)

_MAX = 300


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX else text[: _MAX - 1] + "…"


def describe(event: object) -> str | None:
    """A log line for an event, or None for events not worth a line."""
    match event:
        case ThreadStarted(thread_id=thread_id):
            return f"codex thread {thread_id}"
        case ItemStarted(item=CommandExecutionItem(command=command)):
            return f"$ {_cut(command)}"
        case ItemCompleted(item=CommandExecutionItem(command=command, exit_code=code)):
            return f"$ {_cut(command)}  -> exit {code}"
        case ItemCompleted(item=FileChangeItem(changes=changes, status=status)):
            files = ", ".join(f"{c.kind} {c.path}" for c in changes)
            return f"files {status}: {_cut(files)}"
        case ItemCompleted(item=AgentMessageItem(text=text)):
            return f"agent: {_cut(text)}"
        case ItemCompleted(item=ReasoningItem(text=text)):
            return f"thinking: {_cut(text)}"
        case ItemCompleted(item=ErrorItem(message=message)):
            return f"warning from codex: {_cut(message)}"
        case ItemUpdated(item=TodoListItem(items=items)) | ItemCompleted(
            item=TodoListItem(items=items)
        ):
            done = sum(i.completed for i in items)
            return f"todo {done}/{len(items)}: " + _cut("; ".join(i.text for i in items))
        case TurnCompleted(usage=usage):
            return (
                f"turn completed: {usage.input_tokens:,} input ({usage.cached_input_tokens:,} "
                f"cached), {usage.output_tokens:,} output tokens"
            )
        case TurnFailed(error=error):
            return f"turn failed: {_cut(error.message)}"
        case ErrorEvent(message=message):
            return f"codex error: {_cut(message)}"
        case OutputLine(text=text) | NonJsonLine(text=text) if text.strip():
            return _cut(text)
        case UnknownEvent(type=kind):
            return f"(codex event {kind})"
    return None
