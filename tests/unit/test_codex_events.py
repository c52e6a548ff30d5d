"""Parsing Codex's JSONL stream: recorded real streams and hand-written edge cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentfleet.codex.events import (
    AgentMessageItem,
    CommandExecutionItem,
    ErrorEvent,
    ErrorItem,
    FileChangeItem,
    ItemCompleted,
    ItemStarted,
    ItemUpdated,
    NonJsonLine,
    ThreadStarted,
    TodoListItem,
    Transcript,
    TurnCompleted,
    TurnFailed,
    TurnStarted,
    UnknownEvent,
    UnknownItem,
    parse_event,
)
from agentfleet.codex.outcome import Usage

STREAMS = Path(__file__).parents[1] / "fixtures" / "codex_streams"


def _fold(lines: list[str]) -> Transcript:
    transcript = Transcript()
    for line in lines:
        transcript.add(parse_event(line))
    return transcript


def _recorded(name: str) -> list[str]:
    path = STREAMS / name
    if not path.exists():
        pytest.skip(f"{name} is not recorded yet")
    return [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def _j(**event: object) -> str:
    return json.dumps(event)


def test_every_recorded_line_parses_to_a_known_type() -> None:
    files = sorted(STREAMS.glob("*.jsonl"))
    if not files:
        pytest.skip("no recorded streams yet")
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                event = parse_event(line)
                assert not isinstance(event, UnknownEvent | NonJsonLine), (path.name, line)
                if isinstance(event, ItemStarted | ItemCompleted | ItemUpdated):
                    assert not isinstance(event.item, UnknownItem), (path.name, line)


def test_happy_path_stream() -> None:
    lines = _recorded("happy_path.jsonl")
    events = [parse_event(ln) for ln in lines]
    assert isinstance(events[0], ThreadStarted) and isinstance(events[1], TurnStarted)
    assert isinstance(events[-1], TurnCompleted)
    t = _fold(lines)
    assert t.thread_id == events[0].thread_id
    assert [(c.exit_code, c.status) for c in t.commands] == [
        (0, "completed"), (0, "completed"), (3, "failed")
    ]
    assert t.commands[2].command == "/bin/bash -lc 'exit 3'"
    assert t.open_commands == [] and not t.is_busy()
    assert [Path(p).name for p in t.files_changed] == ["greet.py"]
    assert list(t.files_changed.values()) == ["add"]
    assert t.final_message == "Added greet.py."
    assert t.reasoning == ["Look first."]
    assert t.usage == Usage(input_tokens=6000, cached_input_tokens=3100, output_tokens=290,
                            reasoning_output_tokens=32)
    assert t.usage.total == 6290
    assert t.turn_completed and t.turn_failed is None and t.warnings == []


@pytest.mark.parametrize(
    ("name", "failed"),
    [
        ("rate_limited_no_retry_after.jsonl", "exceeded retry limit, last status: 429"),
        ("server_error_exhausted.jsonl", "experiencing high demand"),
        ("stream_cut.jsonl", "stream disconnected before completion"),
        ("context_window.jsonl", "context window"),
        ("unauthorized.jsonl", "401 Unauthorized"),
    ],
)
def test_failed_streams(name: str, failed: str) -> None:
    t = _fold(_recorded(name))
    assert t.turn_failed is not None and failed in t.turn_failed
    assert not t.turn_completed
    assert t.last_error == t.turn_failed
    assert t.final_message is None


def test_recovered_streams_keep_the_reconnect_as_a_warning() -> None:
    t = _fold(_recorded("stream_cut_recovered.jsonl"))
    assert t.turn_completed and t.turn_failed is None
    assert t.warnings and t.warnings[0].startswith("Reconnecting... 1/1")
    assert t.final_message == "All good."


def test_a_command_still_running_is_open_and_busy() -> None:
    started = _j(type="item.started", item={
        "id": "item_0", "type": "command_execution", "command": "sleep 1000",
        "aggregated_output": "", "exit_code": None, "status": "in_progress"})
    t = _fold([_j(type="thread.started", thread_id="t1"), _j(type="turn.started"), started])
    assert t.is_busy()
    assert [c.command for c in t.open_commands] == ["sleep 1000"]
    assert t.commands[0].exit_code is None


def test_unknown_events_and_items_are_kept() -> None:
    lines = [
        _j(type="thread.started", thread_id="t"),
        _j(type="item.plan.delta", item_id="x", delta="..."),
        _j(type="item.completed", item={"id": "i9", "type": "collab_tool_call", "tool": "wait"}),
        _j(type="turn.completed", usage={"input_tokens": 1, "output_tokens": 2,
                                         "brand_new_tokens": 5}),
    ]
    events = [parse_event(ln) for ln in lines]
    assert isinstance(events[1], UnknownEvent) and events[1].type == "item.plan.delta"
    assert events[1].raw["delta"] == "..."
    assert isinstance(events[2], ItemCompleted) and isinstance(events[2].item, UnknownItem)
    assert events[2].item.type == "collab_tool_call" and events[2].item.raw["tool"] == "wait"
    t = _fold(lines)
    assert len(t.unknown) == 2
    assert t.usage.total == 3


def test_malformed_known_types_degrade_to_unknown() -> None:
    assert isinstance(parse_event(_j(type="thread.started")), UnknownEvent)  # no thread_id
    event = parse_event(_j(type="item.completed", item={"type": "file_change", "changes": 3}))
    assert isinstance(event, ItemCompleted) and isinstance(event.item, UnknownItem)
    assert isinstance(parse_event(_j(type="item.completed", item="oops")), UnknownEvent)


def test_non_json_lines() -> None:
    for text in ["WARNING: proceeding, even though...", "[1, 2]", "", "{not json"]:
        event = parse_event(text + "\n")
        assert isinstance(event, NonJsonLine) and event.text == text
    t = _fold(["Reading prompt from stdin...", ""])
    assert list(t.non_json) == ["Reading prompt from stdin..."]


def test_usage_sums_turns_and_cumulative_usage_can_be_subtracted() -> None:
    def done(i: int, o: int) -> str:
        return _j(type="turn.completed", usage={
            "input_tokens": i, "cached_input_tokens": 0, "cache_write_input_tokens": 0,
            "output_tokens": o, "reasoning_output_tokens": 0})

    t = _fold([done(100, 10), done(250, 30)])
    assert t.usage == Usage(input_tokens=350, output_tokens=40)
    # A resumed thread reports cumulative figures: its own cost is the difference.
    assert t.turn_usages[1] - t.turn_usages[0] == Usage(input_tokens=150, output_tokens=20)


def test_items_of_every_documented_type() -> None:
    lines = [
        _j(type="item.started", item={"id": "f", "type": "file_change",
                                      "changes": [{"path": "/w/a.py", "kind": "add"}],
                                      "status": "in_progress"}),
        _j(type="item.completed", item={"id": "f", "type": "file_change",
                                        "changes": [{"path": "/w/a.py", "kind": "add"}],
                                        "status": "completed"}),
        _j(type="item.completed", item={"id": "g", "type": "file_change",
                                        "changes": [{"path": "/w/a.py", "kind": "update"},
                                                    {"path": "/w/b.py", "kind": "delete"}],
                                        "status": "completed"}),
        _j(type="item.completed", item={"id": "h", "type": "file_change",
                                        "changes": [{"path": "/w/c.py", "kind": "add"}],
                                        "status": "failed"}),
        _j(type="item.started", item={"id": "td", "type": "todo_list",
                                      "items": [{"text": "a", "completed": False}]}),
        _j(type="item.updated", item={"id": "td", "type": "todo_list",
                                      "items": [{"text": "a", "completed": True}]}),
        _j(type="item.started", item={"id": "m", "type": "mcp_tool_call", "server": "s",
                                      "tool": "t", "arguments": {}, "status": "in_progress"}),
        _j(type="item.completed", item={"id": "w", "type": "web_search", "query": "q",
                                        "action": {"type": "search"}}),
        _j(type="item.completed", item={"id": "e", "type": "error",
                                        "message": "Model metadata for `x` not found."}),
        _j(type="item.completed", item={"id": "a1", "type": "agent_message", "text": "first"}),
        _j(type="item.completed", item={"id": "a2", "type": "agent_message", "text": "last"}),
        _j(type="error", message="Reconnecting... 1/5 (...)"),
        _j(type="turn.failed", error={"message": "boom"}),
    ]
    events = [parse_event(ln) for ln in lines]
    assert isinstance(events[0].item, FileChangeItem)
    assert isinstance(events[4].item, TodoListItem)
    assert isinstance(events[8].item, ErrorItem)
    assert isinstance(events[9].item, AgentMessageItem)
    assert isinstance(events[11], ErrorEvent) and isinstance(events[12], TurnFailed)
    t = _fold(lines)
    assert t.files_changed == {"/w/a.py": "update", "/w/b.py": "delete"}  # failed patch ignored
    assert t.files_failed == ["/w/c.py"]
    assert [[e.completed for e in todo] for todo in t.todo_lists] == [[True]]
    assert t.is_busy()  # the MCP call has not completed
    assert t.messages == ["first", "last"] and t.final_message == "last"
    assert t.warnings == ["Model metadata for `x` not found.", "Reconnecting... 1/5 (...)"]
    assert t.errors == ["Reconnecting... 1/5 (...)"]
    assert t.turn_failed == "boom"


def test_command_item_fields() -> None:
    event = parse_event(_j(type="item.completed", item={
        "id": "c", "type": "command_execution", "command": "ls", "aggregated_output": "x\n",
        "exit_code": 2, "status": "failed", "new_field": 1}))
    assert isinstance(event, ItemCompleted)
    item = event.item
    assert isinstance(item, CommandExecutionItem)
    assert (item.command, item.aggregated_output, item.exit_code, item.status) == (
        "ls", "x\n", 2, "failed")
