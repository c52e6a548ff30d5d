"""Codex's ``exec --json`` stream as typed events, parsed line by line as it arrives.

    CodexEvent
    ├── ThreadStarted {thread_id}          ├── TurnCompleted {usage}
    ├── TurnStarted                        ├── TurnFailed {error.message}
    ├── ItemStarted / ItemUpdated / ItemCompleted {item}
    │     item: CommandExecutionItem, FileChangeItem, AgentMessageItem, ReasoningItem,
    │           TodoListItem, McpToolCallItem, WebSearchItem, ErrorItem, PlanItem, UnknownItem
    ├── ErrorEvent {message}               (top level: a reconnect, or the failure itself)
    ├── UnknownEvent {type, raw}           (a newer Codex: kept, never fatal)
    └── NonJsonLine {text}                 (Codex prints some things that are not JSON)

Types from ``codex-rs/exec/src/exec_events.rs``. ``Transcript`` folds the events
into what the attempt did. ``OutputLine`` is a line of a plain command agent.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentfleet.codex.outcome import CommandRun, Usage


class _Lenient(BaseModel):
    # Codex adds fields between versions; unknown ones are kept, not rejected.
    model_config = ConfigDict(extra="allow", frozen=True)


# -- items -------------------------------------------------------------------------


class CommandExecutionItem(_Lenient):
    """A shell command; ``exit_code`` is None until it completes."""

    id: str = ""
    type: Literal["command_execution"] = "command_execution"
    command: str = ""
    aggregated_output: str = ""
    exit_code: int | None = None
    status: str = "in_progress"  # in_progress | completed | failed | declined


class FileUpdateChange(_Lenient):
    """One file of a patch: its path (absolute, as Codex reports it) and the kind of change."""

    path: str
    kind: str = "update"  # add | delete | update


class FileChangeItem(_Lenient):
    """A patch Codex applied (or failed to apply)."""

    id: str = ""
    type: Literal["file_change"] = "file_change"
    changes: list[FileUpdateChange] = Field(default_factory=list)
    status: str = "completed"  # in_progress | completed | failed


class AgentMessageItem(_Lenient):
    """A message of the agent; the last one is its final answer."""

    id: str = ""
    type: Literal["agent_message"] = "agent_message"
    text: str = ""


class ReasoningItem(_Lenient):
    """A reasoning summary."""

    id: str = ""
    type: Literal["reasoning"] = "reasoning"
    text: str = ""


class PlanItem(_Lenient):
    """A proposed plan (plan mode)."""

    id: str = ""
    type: Literal["plan"] = "plan"
    text: str = ""


class TodoEntry(_Lenient):
    """One step of the agent's to-do list."""

    text: str = ""
    completed: bool = False


class TodoListItem(_Lenient):
    """The agent's running to-do list (the one item that gets ``item.updated``)."""

    id: str = ""
    type: Literal["todo_list"] = "todo_list"
    items: list[TodoEntry] = Field(default_factory=list)


class McpToolCallItem(_Lenient):
    """A call to an MCP tool."""

    id: str = ""
    type: Literal["mcp_tool_call"] = "mcp_tool_call"
    server: str = ""
    tool: str = ""
    arguments: Any = None
    result: Any = None
    error: Any = None
    status: str = "in_progress"


class WebSearchItem(_Lenient):
    """A web search."""

    id: str = ""
    type: Literal["web_search"] = "web_search"
    query: str = ""


class ErrorItem(_Lenient):
    """A non-fatal error Codex reports as an item (e.g. unknown model metadata): a warning."""

    id: str = ""
    type: Literal["error"] = "error"
    message: str = ""


class UnknownItem(BaseModel):
    """An item type this version does not know; kept whole."""

    model_config = ConfigDict(frozen=True)

    id: str = ""
    type: str
    raw: dict[str, Any]


CodexItem = (
    CommandExecutionItem | FileChangeItem | AgentMessageItem | ReasoningItem | PlanItem
    | TodoListItem | McpToolCallItem | WebSearchItem | ErrorItem | UnknownItem
)

_ITEM_TYPES: dict[str, type[BaseModel]] = {
    m.model_fields["type"].default: m
    for m in (
        CommandExecutionItem, FileChangeItem, AgentMessageItem, ReasoningItem, PlanItem,
        TodoListItem, McpToolCallItem, WebSearchItem, ErrorItem,
    )
}


def parse_item(raw: Any) -> CodexItem:
    """A typed item; an unknown or malformed one becomes ``UnknownItem``."""
    if not isinstance(raw, dict):
        return UnknownItem(type="?", raw={"value": raw})
    model = _ITEM_TYPES.get(str(raw.get("type")))
    if model is not None:
        try:
            return model.model_validate(raw)  # type: ignore[return-value]
        except ValidationError:
            pass
    return UnknownItem(id=str(raw.get("id") or ""), type=str(raw.get("type")), raw=raw)


# -- events ------------------------------------------------------------------------


class ThreadStarted(_Lenient):
    """The first event: the thread id (for ``codex exec resume``)."""

    type: Literal["thread.started"] = "thread.started"
    thread_id: str


class TurnStarted(_Lenient):
    """The prompt went to the model."""

    type: Literal["turn.started"] = "turn.started"


class TurnCompleted(_Lenient):
    """The turn ended normally; usage is the sum of its model requests (cumulative per thread)."""

    type: Literal["turn.completed"] = "turn.completed"
    usage: Usage = Field(default_factory=Usage)


class ErrorInfo(_Lenient):
    """The error of a failed turn."""

    message: str = ""


class TurnFailed(_Lenient):
    """The turn failed; ``error.message`` is Codex's reason."""

    type: Literal["turn.failed"] = "turn.failed"
    error: ErrorInfo = Field(default_factory=ErrorInfo)


class ItemStarted(_Lenient):
    """An item began (commands, patches); most items only arrive completed."""

    type: Literal["item.started"] = "item.started"
    item: CodexItem


class ItemUpdated(_Lenient):
    """An item changed (in practice: the to-do list)."""

    type: Literal["item.updated"] = "item.updated"
    item: CodexItem


class ItemCompleted(_Lenient):
    """An item reached its final state."""

    type: Literal["item.completed"] = "item.completed"
    item: CodexItem


class ErrorEvent(_Lenient):
    """A top-level error: a reconnect notice, or the message of the failure that follows."""

    type: Literal["error"] = "error"
    message: str = ""


class UnknownEvent(BaseModel):
    """An event type this version does not know; kept whole."""

    model_config = ConfigDict(frozen=True)

    type: str
    raw: dict[str, Any]


class NonJsonLine(BaseModel):
    """A stdout line that is not a JSON object."""

    model_config = ConfigDict(frozen=True)

    type: Literal["non_json"] = "non_json"
    text: str


class OutputLine(BaseModel):
    """A line a process printed (a command agent's output, Codex's stderr)."""

    model_config = ConfigDict(frozen=True)

    type: Literal["output"] = "output"
    stream: Literal["stdout", "stderr"]
    text: str


CodexEvent = (
    ThreadStarted | TurnStarted | TurnCompleted | TurnFailed | ItemStarted | ItemUpdated
    | ItemCompleted | ErrorEvent | UnknownEvent | NonJsonLine
)

_EVENT_TYPES: dict[str, type[BaseModel]] = {
    m.model_fields["type"].default: m
    for m in (ThreadStarted, TurnStarted, TurnCompleted, TurnFailed, ErrorEvent)
}
_ITEM_EVENTS: dict[str, type[ItemStarted | ItemUpdated | ItemCompleted]] = {
    "item.started": ItemStarted, "item.updated": ItemUpdated, "item.completed": ItemCompleted,
}


def parse_event(line: str) -> CodexEvent:
    """One line of ``codex exec --json`` as a typed event; never raises."""
    text = line.rstrip("\r\n")
    try:
        raw = json.loads(text)
    except ValueError:
        return NonJsonLine(text=text)
    if not isinstance(raw, dict):
        return NonJsonLine(text=text)
    kind = str(raw.get("type"))
    item_event = _ITEM_EVENTS.get(kind)
    if item_event is not None and isinstance(raw.get("item"), dict):
        return item_event(item=parse_item(raw["item"]))
    model = _EVENT_TYPES.get(kind)
    if model is not None:
        try:
            return model.model_validate(raw)  # type: ignore[return-value]
        except ValidationError:
            pass
    return UnknownEvent(type=kind, raw=raw)


# -- the transcript ----------------------------------------------------------------


class Transcript:
    """What a Codex run did, folded from its events; safe to read while another thread adds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.thread_id: str | None = None
        self._commands: dict[str, CommandRun] = {}  # item id -> latest state, in start order
        self._files: dict[str, str] = {}  # path -> kind of its latest change
        self._failed_files: list[str] = []  # paths of changes Codex could not apply
        self.messages: list[str] = []
        self.reasoning: list[str] = []
        self._todos: dict[str, list[TodoEntry]] = {}
        self.warnings: list[str] = []  # error items and top-level error events
        self.errors: list[str] = []  # top-level error events only
        self.turns_completed = 0
        self.turn_usages: list[Usage] = []
        self.turn_failed: str | None = None
        # The last lines only: a Codex printing megabytes of non-JSON must not fill memory.
        self.non_json: deque[str] = deque(maxlen=100)
        self.unknown: list[UnknownEvent | UnknownItem] = []
        self._open_tools: set[str] = set()  # MCP calls and web searches started, not completed

    def add(self, event: CodexEvent) -> None:
        """Fold one event in."""
        with self._lock:
            self._add(event)

    def _add(self, event: CodexEvent) -> None:
        if isinstance(event, ThreadStarted):
            self.thread_id = event.thread_id
        elif isinstance(event, TurnCompleted):
            self.turns_completed += 1
            self.turn_usages.append(event.usage)
        elif isinstance(event, TurnFailed):
            self.turn_failed = event.error.message or "turn failed"
        elif isinstance(event, ErrorEvent):
            self.errors.append(event.message)
            self.warnings.append(event.message)
        elif isinstance(event, ItemStarted | ItemUpdated | ItemCompleted):
            self._add_item(event.item, done=isinstance(event, ItemCompleted))
        elif isinstance(event, NonJsonLine):
            if event.text.strip():
                self.non_json.append(event.text)
        elif isinstance(event, UnknownEvent):
            self.unknown.append(event)

    def _add_item(self, item: CodexItem, *, done: bool) -> None:
        key = item.id or f"#{len(self._commands) + len(self._files)}"
        if isinstance(item, CommandExecutionItem):
            self._commands[key] = CommandRun(
                command=item.command, exit_code=item.exit_code,
                status=item.status if done or item.status != "completed" else "in_progress",
            )
        elif isinstance(item, FileChangeItem):
            # A file_change is started before it is applied; only a completed one counts.
            if done and item.status != "failed":
                for change in item.changes:
                    self._files[change.path] = change.kind
            elif done:
                self._failed_files.extend(change.path for change in item.changes)
        elif isinstance(item, AgentMessageItem) and done:
            self.messages.append(item.text)
        elif isinstance(item, ReasoningItem) and done:
            self.reasoning.append(item.text)
        elif isinstance(item, TodoListItem):
            self._todos[key] = list(item.items)
        elif isinstance(item, ErrorItem) and done:
            self.warnings.append(item.message)
        elif isinstance(item, McpToolCallItem | WebSearchItem):
            (self._open_tools.discard if done else self._open_tools.add)(key)
        elif isinstance(item, UnknownItem) and done:
            self.unknown.append(item)

    # -- views ---------------------------------------------------------------------

    @property
    def commands(self) -> list[CommandRun]:
        """Every command in start order, with its latest state."""
        with self._lock:
            return [c.model_copy() for c in self._commands.values()]

    @property
    def open_commands(self) -> list[CommandRun]:
        """Commands started and not (yet) completed."""
        return [c for c in self.commands if c.status == "in_progress"]

    def is_busy(self) -> bool:
        """Whether a command or tool call is running: silence then is work, not idleness."""
        with self._lock:
            return bool(self._open_tools) or any(
                c.status == "in_progress" for c in self._commands.values()
            )

    @property
    def files_changed(self) -> dict[str, str]:
        """Each changed path (as Codex reports it) with the kind of its latest change."""
        with self._lock:
            return dict(self._files)

    @property
    def files_failed(self) -> list[str]:
        """The paths of changes Codex reported as failed (a patch it could not apply)."""
        with self._lock:
            return list(self._failed_files)

    @property
    def final_message(self) -> str | None:
        """The agent's last message: its answer."""
        return self.messages[-1] if self.messages else None

    @property
    def todo_lists(self) -> list[list[TodoEntry]]:
        """The latest state of each to-do list."""
        with self._lock:
            return [list(items) for items in self._todos.values()]

    @property
    def usage(self) -> Usage:
        """The sum of the run's ``turn.completed`` usage (cumulative if the thread was resumed)."""
        total = Usage()
        for usage in self.turn_usages:
            total = total + usage
        return total

    @property
    def turn_completed(self) -> bool:
        """Whether a turn completed."""
        return self.turns_completed > 0

    @property
    def last_error(self) -> str | None:
        """The last top-level error event's message."""
        return self.errors[-1] if self.errors else None

    @property
    def last_warning(self) -> str | None:
        """The last error item or error event (why a run that never ended was stuck)."""
        return self.warnings[-1] if self.warnings else None
