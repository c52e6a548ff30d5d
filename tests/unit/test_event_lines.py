"""One readable log line per agent event: recorded real Codex streams and edge cases."""

from __future__ import annotations

from pathlib import Path

from agentfleet.codex.events import (
    CommandExecutionItem,
    FileChangeItem,
    FileUpdateChange,
    ItemCompleted,
    ItemStarted,
    OutputLine,
    TurnStarted,
    parse_event,
)
from agentfleet.codex.lines import LineCap, describe, relative_path, shown_command

STREAMS = Path(__file__).parents[1] / "fixtures" / "codex_streams"
# The recorded happy path ran in this worktree (see its file_change paths).
RECORDED_ROOT = "/tmp/pytest-of-root/pytest-24/test_exec_patch_and_message_la0"


def test_a_recorded_codex_run_reads_as_plain_lines_with_relative_paths() -> None:
    lines = [
        describe(parse_event(raw), RECORDED_ROOT)
        for raw in (STREAMS / "happy_path.jsonl").read_text().splitlines()
    ]
    shown = [line for line in lines if line]
    assert shown == [
        "codex thread 01a220a3-c0c2-7043-b5a3-7707ecef773e",
        "thinking: Look first.",
        "$ git status --short && echo checked",
        "$ git status --short && echo checked  -> exit 0",
        "files changed: add greet.py",
        "$ python3 -c 'import greet; print(greet.greet(1))'",
        "$ python3 -c 'import greet; print(greet.greet(1))'  -> exit 0",
        "$ exit 3",
        "$ exit 3  -> exit 3",
        "agent: Added greet.py.",
        "turn completed: 6,000 input (3,100 cached), 290 output tokens",
    ]
    assert not any("{" in line and '"type"' in line for line in shown)  # no raw JSON


def test_codex_start_up_noise_on_stderr_is_dropped_other_stderr_kept() -> None:
    noise = "WARNING: proceeding, even though we could not create PATH aliases: Read-only fs"
    assert describe(OutputLine(stream="stderr", text=noise)) is None
    assert describe(OutputLine(stream="stderr", text="Error loading config.toml")) == (
        "Error loading config.toml"
    )
    # A command agent may print the same words on stdout: its own output is kept.
    assert describe(OutputLine(stream="stdout", text=noise)) == noise
    assert describe(OutputLine(stream="stdout", text="   ")) is None
    assert describe(TurnStarted()) is None


def test_paths_are_relative_to_their_worktree_under_the_root(tmp_path: Path) -> None:
    root = tmp_path / "worktrees"
    (root / "docs-1").mkdir(parents=True)
    inside = str(root / "docs-1" / "docs" / "index.md")
    assert relative_path(inside, root) == "docs/index.md"
    assert relative_path("/elsewhere/x.py", root) == "/elsewhere/x.py"
    assert relative_path(inside, None) == inside
    # Codex may report the resolved path of a root reached through a symlink.
    link = tmp_path / "link"
    link.symlink_to(root)
    assert relative_path(inside, link) == "docs/index.md"
    event = ItemCompleted(item=FileChangeItem(
        changes=[FileUpdateChange(path=inside, kind="update")], status="failed",
    ))
    assert describe(event, root) == "files failed: update docs/index.md"


def test_commands_shown_as_the_agent_wrote_them() -> None:
    assert shown_command("/bin/bash -lc 'cat app/db.py'") == "cat app/db.py"
    assert shown_command('/bin/zsh -lc "echo \'hi there\'"') == "echo 'hi there'"
    assert shown_command("pytest -q") == "pytest -q"
    assert shown_command("/bin/bash -lc 'unbalanced") == "/bin/bash -lc 'unbalanced"
    running = ItemStarted(item=CommandExecutionItem(command="/bin/bash -lc 'sleep 9'"))
    assert describe(running) == "$ sleep 9"
    declined = ItemCompleted(item=CommandExecutionItem(command="rm -rf /", status="declined"))
    assert describe(declined) == "$ rm -rf /  -> declined"
    long = describe(ItemStarted(item=CommandExecutionItem(command="echo " + "x" * 500)))
    assert long is not None and len(long) <= 302 and long.endswith("…")


def test_line_cap_lets_the_first_lines_through_then_only_a_count_per_interval() -> None:
    now = [0.0]
    cap = LineCap(first=3, every_s=10, clock=lambda: now[0])
    logged = [out for i in range(3) for out in cap.admit(f"line {i}")]
    assert logged == ["line 0", "line 1", "line 2"]
    [announce] = cap.admit("line 3")
    assert announce.startswith("… more than 3 lines of output: from now on only their count")
    assert [out for _ in range(10_000) for out in cap.admit("x")] == []  # within the interval
    now[0] = 10.0
    assert cap.admit("x") == ["… 10,002 more lines (10,005 in all)"]
    assert cap.admit("x") == []
    assert cap.close() == ["… 1 more line (10,006 in all)"]
    assert cap.close() == []


def test_line_cap_under_the_cap_says_nothing_at_the_end() -> None:
    cap = LineCap(first=5)
    assert cap.admit("only") == ["only"] and cap.close() == []
