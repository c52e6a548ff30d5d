"""Agent events as one readable log line each (for the task run's live log).

Codex reports commands wrapped in ``/bin/bash -lc '...'`` and files by absolute
path; a person watching a run wants ``$ cat app/db.py -> exit 0`` and
``add migrations/002.sql``. ``LineWriter`` keeps the worktree folder so paths
come out relative, and drops stderr lines that are Codex's start-up noise.
"""

from __future__ import annotations

import re
import shlex
import threading
import time
from collections.abc import Callable
from pathlib import Path, PurePath

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
    OutputLine,
    ReasoningItem,
    ThreadStarted,
    TodoListItem,
    TurnCompleted,
    TurnFailed,
    UnknownEvent,
)

_MAX = 300

# Codex prints these on stderr at every start in a sandbox without a writable PATH
# folder; they say nothing about the attempt.
_STDERR_NOISE = re.compile(r"^\s*WARNING: proceeding, even though we could not create PATH aliases")
_SHELL_WRAPPER = re.compile(r"^(?:/usr)?/bin/(?:ba|z)?sh -l?c (?P<script>.+)$", re.DOTALL)


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX else text[: _MAX - 1] + "…"


def shown_command(command: str) -> str:
    """The command as the agent meant it: ``/bin/bash -lc 'cat x'`` becomes ``cat x``."""
    wrapped = _SHELL_WRAPPER.match(command.strip())
    if not wrapped:
        return command
    try:
        parts = shlex.split(wrapped.group("script"))
    except ValueError:
        return command
    return parts[0] if len(parts) == 1 else command


def relative_path(path: str, root: str | PurePath | None) -> str:
    """``path`` relative to its worktree when it lies in a worktree under ``root``.

    ``root`` is the folder holding the attempts' worktrees (one folder each), so
    ``<root>/<worktree>/app/db.py`` becomes ``app/db.py``; other paths stay as they are.
    """
    if root is None:
        return path
    candidates = {PurePath(root)}
    try:
        candidates.add(Path(root).resolve())
    except OSError:
        pass
    for base in candidates:
        try:
            parts = PurePath(path).relative_to(base).parts
        except ValueError:
            continue
        if len(parts) > 1:
            return str(PurePath(*parts[1:]))
    return path


def is_noise(line: str) -> bool:
    """Whether a stderr line is Codex's start-up noise, not worth a log line."""
    return bool(_STDERR_NOISE.match(line))


def describe(event: object, root: str | PurePath | None = None) -> str | None:
    """A log line for an event, or None for events not worth a line.

    ``root`` is the folder holding the worktrees; file paths under it are shown
    relative to their worktree.
    """
    match event:
        case ThreadStarted(thread_id=thread_id):
            return f"codex thread {thread_id}"
        case ItemStarted(item=CommandExecutionItem(command=command)):
            return f"$ {_cut(shown_command(command))}"
        case ItemCompleted(item=CommandExecutionItem(command=command, exit_code=code, status=s)):
            ending = f"exit {code}" if code is not None else s
            return f"$ {_cut(shown_command(command))}  -> {ending}"
        case ItemCompleted(item=FileChangeItem(changes=changes, status=status)):
            files = ", ".join(f"{c.kind} {relative_path(c.path, root)}" for c in changes)
            verb = "changed" if status == "completed" else status
            return f"files {verb}: {_cut(files)}"
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
        case OutputLine(stream="stderr", text=text) if is_noise(text):
            return None
        case OutputLine(text=text) | NonJsonLine(text=text) if text.strip():
            return _cut(text)
        case UnknownEvent(type=kind):
            return f"(codex event {kind})"
    return None


class LineCap:
    """Rate-limits an attempt's agent lines: the first ``first`` pass, then a count now and then.

    An agent printing 100 MB would otherwise make 100,000 log rows and slow its own run
    (and the end of the process) to a crawl. Past the cap, one line per ``every_s`` says
    how many lines were left out; ``close`` says how many remain unsaid. Thread-safe:
    stdout and stderr are read by two threads.
    """

    def __init__(
        self,
        first: int = 1000,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        where: str = "the attempt's artifact has the output's tail, its branch the files",
    ) -> None:
        self.first = first
        self.every_s = every_s
        self.clock = clock
        self.where = where
        self.seen = 0
        self.left_out = 0  # past the cap, since the last count was said
        self._next_count = 0.0
        self._lock = threading.Lock()

    def admit(self, line: str) -> list[str]:
        """The lines to log for one more agent line: it, a count, or nothing."""
        with self._lock:
            self.seen += 1
            if self.seen <= self.first:
                return [line]
            now = self.clock()
            if self.seen == self.first + 1:
                self.left_out = 1
                self._next_count = now + self.every_s
                return [f"… more than {self.first:,} lines of output: from now on only their "
                        f"count, every {self.every_s:g}s ({self.where})"]
            self.left_out += 1
            if now < self._next_count:
                return []
            self._next_count = now + self.every_s
            return [self._count()]

    def close(self) -> list[str]:
        """The last count, if lines were left out since the one before."""
        with self._lock:
            return [self._count()] if self.left_out else []

    def _count(self) -> str:
        n, self.left_out = self.left_out, 0
        return f"… {n:,} more line{'' if n == 1 else 's'} ({self.seen:,} in all)"
