"""Child processes that never outlive their attempt.

Every process starts in its own session (so its own process group, no terminal)
with a per-process marker ``AGENTFLEET_ATTEMPT_ID=<uuid>`` in its environment.
Stopping it means: SIGTERM to the group and to every process that carries the
marker (found through ``/proc/<pid>/environ``: processes that called ``setsid`` or
double-forked keep their environment), SIGKILL to whatever is left after the grace
period, and sweeping again until nothing carries the marker or the group id. The
sweep also runs after a normal exit, so ``setsid sleep 1000 &`` left behind by a
command that finished is killed too. The only escape is a process that both left
the group and cleared its environment (``setsid env -i ...``).

All live processes are in a registry: ``stop_all()`` stops every one of them at
once (the whole Python process ends), ``live_processes()`` lists them. A run keeps
its own ``ProcessSet`` per attempt (``tracked_in``): stopping one attempt or one
sprint never touches another's processes.
``observe_spawns(callback)`` tells a caller (an attempt writing its lease) about every
process started in its context, however deep the call that starts it.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from agentfleet.errors import VerificationError

MARKER_VAR = "AGENTFLEET_ATTEMPT_ID"
Stream = Literal["stdout", "stderr"]
OnLine = Callable[[Stream, str], None]

_POLL_S = 0.05
# A line longer than this reaches ``on_line`` cut to it: an agent printing 200 MB without
# a newline must not hold 200 MB here (and again in every copy made downstream).
MAX_LINE_BYTES = 64 * 1024
# What a tail keeps of each line (output tails are bounded in lines *and* in bytes).
TAIL_LINE_CHARS = 2000
_SWEEP_ROUNDS = 50  # each round kills what it finds; forks during the sweep need more rounds
_READER_JOIN_S = 2.0


@dataclass(frozen=True)
class WaitResult:
    """How a managed process ended."""

    exit_status: int | None  # negative: killed by that signal (as subprocess reports it)
    timed_out: bool
    stuck: bool
    killed: bool
    duration_s: float


@dataclass(frozen=True)
class ShellResult:
    """The result of a setup / verify shell command."""

    command: str
    exit_status: int | None
    output_tail: str
    timed_out: bool
    killed: bool
    duration_s: float

    @property
    def passed(self) -> bool:
        """Exit 0, and not stopped."""
        return self.exit_status == 0 and not self.timed_out and not self.killed


@dataclass(frozen=True)
class ProcessInfo:
    """What a lease file needs to find a live process again."""

    pid: int
    pgid: int
    marker: str
    argv0: str


# -- /proc ---------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists here (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stat_fields(pid: int) -> list[str] | None:
    """``/proc/PID/stat``'s fields after the command name (state, ppid, pgrp, ...: field
    ``n`` of the whole line is ``[n - 3]``), or None if the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces; fields follow the last ")".
    return raw[raw.rfind(b")") + 2 :].decode().split()


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, pgid) of a process, or None if it is gone."""
    fields = stat_fields(pid)
    return None if fields is None else (fields[0], int(fields[2]))


def _has_marker(pid: int, marker: bytes) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # another user's process, or gone
        return False
    return marker in environ.split(b"\0")


def find_processes(*, pgid: int | None = None, marker: str | None = None) -> list[int]:
    """Live (not zombie) processes in group ``pgid`` or carrying ``MARKER_VAR=marker``."""
    me = os.getpid()
    tag = f"{MARKER_VAR}={marker}".encode() if marker else None
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == me:
            continue
        stat = _stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            continue
        if (pgid is not None and stat[1] == pgid) or (tag is not None and _has_marker(pid, tag)):
            found.append(pid)
    return found


def _signal(pids: Sequence[int], pgid: int | None, sig: signal.Signals) -> None:
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def kill_all(
    pgid: int | None,
    marker: str | None,
    grace_s: float = 5.0,
    *,
    alive: Callable[[], bool] = lambda: False,
) -> list[int]:
    """SIGTERM a group and every marked process, SIGKILL after ``grace_s``, sweep until none.

    Also for a lease left by a crashed run: ``kill_all(lease.pgid, lease.marker)``.
    Returns the pids that were still alive at first.
    """
    first = find_processes(pgid=pgid, marker=marker)
    if not first and not alive():
        return []
    _signal(first, pgid, signal.SIGTERM)
    end = time.monotonic() + grace_s
    while time.monotonic() < end:
        if not alive() and not find_processes(pgid=pgid, marker=marker):
            return first
        time.sleep(_POLL_S)
    for _ in range(_SWEEP_ROUNDS):
        pids = find_processes(pgid=pgid, marker=marker)
        if not pids and not alive():
            break
        _signal(pids, pgid, signal.SIGKILL)
        time.sleep(0.02)
    return first


# -- the registry ----------------------------------------------------------------------

_registry_lock = threading.Lock()
_live: dict[int, ManagedProcess] = {}


def live_processes() -> list[ProcessInfo]:
    """Every managed process still alive in this Python process."""
    with _registry_lock:
        procs = list(_live.values())
    return [p.info for p in procs]


def stop_all(grace_s: float | None = None, *, wait: bool = True) -> int:
    """Stop every live managed process (an interrupt); returns how many were stopped."""
    with _registry_lock:
        procs = list(_live.values())
    threads = [
        threading.Thread(target=p.stop, kwargs={"grace_s": grace_s}, daemon=True) for p in procs
    ]
    for t in threads:
        t.start()
    if wait:
        for t in threads:
            t.join()
    return len(procs)


T = TypeVar("T")


def all_at_once(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run ``calls`` each in its own thread and wait for all: stopping N process groups
    then takes one grace period, not N. Their results, in order."""
    results: list[T | None] = [None] * len(calls)

    def run(i: int) -> None:
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results  # type: ignore[return-value]


class ProcessSet:
    """The live processes started in one context (an attempt): stopped together, alone."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: dict[int, ManagedProcess] = {}

    def add(self, proc: ManagedProcess) -> None:
        """Track a process started in this set's context."""
        with self._lock:
            self._procs[proc.pid] = proc

    def discard(self, proc: ManagedProcess) -> None:
        """Forget a process that is gone."""
        with self._lock:
            self._procs.pop(proc.pid, None)

    def live(self) -> list[ProcessInfo]:
        """The set's processes still alive."""
        with self._lock:
            procs = list(self._procs.values())
        return [p.info for p in procs]

    def stop(self, grace_s: float | None = None) -> int:
        """Stop every process of the set (and only those); returns how many."""
        with self._lock:
            procs = list(self._procs.values())
        all_at_once([functools.partial(p.stop, grace_s=grace_s) for p in procs])
        return len(procs)


_process_sets: contextvars.ContextVar[tuple[ProcessSet, ...]] = contextvars.ContextVar(
    "agentfleet_process_sets", default=()
)


@contextlib.contextmanager
def tracked_in(pset: ProcessSet) -> Iterator[ProcessSet]:
    """Every process spawned in this context until the block ends goes into ``pset``."""
    token = _process_sets.set((*_process_sets.get(), pset))
    try:
        yield pset
    finally:
        _process_sets.reset(token)


# -- spawn observers -------------------------------------------------------------------

OnSpawn = Callable[["ProcessInfo"], None]
# A context variable, not a global: each attempt runs in its own thread (or context) and
# must hear only about its own processes.
_spawn_observers: contextvars.ContextVar[tuple[OnSpawn, ...]] = contextvars.ContextVar(
    "agentfleet_spawn_observers", default=()
)


@contextlib.contextmanager
def observe_spawns(callback: OnSpawn) -> Iterator[None]:
    """Call ``callback(info)`` for every process spawned in this context until the block ends.

    Twice per process: just before it starts with ``pid == pgid == 0`` and its marker (a
    caller killed right after the start still has the marker on record), then with its ids.
    """
    token = _spawn_observers.set((*_spawn_observers.get(), callback))
    try:
        yield
    finally:
        _spawn_observers.reset(token)


# -- one process -------------------------------------------------------------------------


class ManagedProcess:
    """A child process in its own session, its output read line by line as it arrives."""

    def __init__(
        self,
        argv: Sequence[str],
        cwd: Path,
        env: Mapping[str, str],
        stdin_text: str | None = None,
        *,
        on_line: OnLine | None = None,
        grace_s: float = 5.0,
        marker: str | None = None,
        merge_stderr: bool = False,
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> None:
        self.argv = list(argv)
        self.max_line_bytes = max_line_bytes
        self.marker = marker or uuid.uuid4().hex
        self.grace_s = grace_s
        self._on_line = on_line
        self.callback_error: Exception | None = None
        self._lock = threading.Lock()
        self._stop_reason: str | None = None
        self._stopped = threading.Event()
        self._last_line = time.monotonic()
        self.started = time.monotonic()
        for observer in _spawn_observers.get():
            observer(ProcessInfo(0, 0, self.marker, self.argv[0]))
        self._popen = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env={**env, MARKER_VAR: self.marker},
            stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            start_new_session=True,  # own group, no controlling terminal
            close_fds=True,
        )
        self.pid = self._popen.pid
        self.pgid = self.pid  # a session leader leads its group
        with _registry_lock:
            _live[self.pid] = self
        self._sets = _process_sets.get()
        for pset in self._sets:
            pset.add(self)
        try:
            for observer in _spawn_observers.get():
                observer(self.info)
        except BaseException:
            # A process nobody could record (its lease not written) must not run on.
            self.stop(grace_s=0)
            raise
        self._threads = [
            threading.Thread(target=self._read, args=(pipe, name), daemon=True)
            for pipe, name in ((self._popen.stdout, "stdout"), (self._popen.stderr, "stderr"))
            if pipe is not None
        ]
        if stdin_text is not None:
            self._threads.append(
                threading.Thread(target=self._write, args=(stdin_text,), daemon=True)
            )
        for t in self._threads:
            t.start()

    @property
    def info(self) -> ProcessInfo:
        """pid, pgid and marker, for a lease file."""
        return ProcessInfo(self.pid, self.pgid, self.marker, self.argv[0])

    @property
    def last_output_at(self) -> float:
        """``time.monotonic()`` of the last line (or the start)."""
        return self._last_line

    def _write(self, text: str) -> None:
        stdin = self._popen.stdin
        assert stdin is not None
        # A child that exits without reading its stdin is not an error of ours.
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            stdin.write(text.encode())
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            stdin.close()

    def _read(self, pipe, stream: Stream) -> None:  # noqa: ANN001 - a binary pipe
        limit = self.max_line_bytes
        cut = False  # inside a line already passed on cut: drop the rest of it
        with pipe:
            # readline(limit) never holds more than one bounded chunk in memory.
            for raw in iter(lambda: pipe.readline(limit), b""):
                self._last_line = time.monotonic()
                ended = raw.endswith(b"\n")
                if cut:
                    cut = not ended
                    continue
                if not ended and len(raw) >= limit:
                    cut = True
                if self._on_line is None:
                    continue
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if cut:
                    line += f" … (line cut at {limit:,} bytes)"
                try:
                    self._on_line(stream, line)
                except Exception as exc:  # noqa: BLE001
                    # The pipe must keep draining, or the child blocks on a full pipe.
                    if self.callback_error is None:
                        self.callback_error = exc

    def poll(self) -> int | None:
        """The exit status if the process has exited."""
        return self._popen.poll()

    def restart_clock(self) -> None:
        """Count ``wait``'s timeout and idleness from now (an agent started ahead of its slot)."""
        self.started = self._last_line = time.monotonic()

    def leftovers(self) -> list[int]:
        """Processes of this attempt still alive (the group and everything with the marker)."""
        return find_processes(pgid=self.pgid, marker=self.marker)

    def wait(
        self,
        timeout_s: float | None = None,
        cancel: threading.Event | None = None,
        idle_timeout_s: float | None = None,
        is_busy: Callable[[], bool] | None = None,
    ) -> WaitResult:
        """Wait for the end, stopping it on timeout, idleness or cancel; leaves nothing alive."""
        deadline = None if timeout_s is None else self.started + timeout_s
        reason: str | None = None
        while self._popen.poll() is None:
            now = time.monotonic()
            if self._stop_reason is not None:
                reason = self._stop_reason
            elif cancel is not None and cancel.is_set():
                reason = "killed"
            elif deadline is not None and now >= deadline:
                reason = "timed_out"
            elif (
                idle_timeout_s is not None
                and now - self._last_line >= idle_timeout_s
                and not (is_busy is not None and is_busy())
            ):
                reason = "stuck"
            if reason is not None:
                self.stop(reason=reason)
                break
            if cancel is not None:
                cancel.wait(_POLL_S)  # wakes at once on cancel
            else:
                time.sleep(_POLL_S)
        # Even after a normal exit: whatever it left behind goes too.
        self.stop(reason=None)
        for t in self._threads:
            t.join(_READER_JOIN_S)
        reason = reason or self._stop_reason
        return WaitResult(
            exit_status=self._popen.returncode,
            timed_out=reason == "timed_out",
            stuck=reason == "stuck",
            killed=reason == "killed",
            duration_s=time.monotonic() - self.started,
        )

    def stop(self, grace_s: float | None = None, *, reason: str | None = "killed") -> None:
        """SIGTERM the group and marked processes, SIGKILL after the grace, sweep until none."""
        with self._lock:
            if reason is not None and self._stop_reason is None:
                self._stop_reason = reason
            grace = self.grace_s if grace_s is None else grace_s
            # poll() reaps the leader, so the sweep never mistakes its zombie for a survivor.
            kill_all(self.pgid, self.marker, grace, alive=lambda: self._popen.poll() is None)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=_READER_JOIN_S)
            with _registry_lock:
                _live.pop(self.pid, None)
            for pset in getattr(self, "_sets", ()):
                pset.discard(self)


def spawn(
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    stdin_text: str | None = None,
    *,
    on_line: OnLine | None = None,
    grace_s: float = 5.0,
    marker: str | None = None,
    merge_stderr: bool = False,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> ManagedProcess:
    """Start ``argv`` (never through a shell) in its own session; stdin gets the text then EOF.

    ``merge_stderr`` sends stderr into the stdout pipe, so lines keep their true order.
    Lines longer than ``max_line_bytes`` are passed on cut to it.
    """
    return ManagedProcess(
        argv, cwd, env, stdin_text, on_line=on_line, grace_s=grace_s, marker=marker,
        merge_stderr=merge_stderr, max_line_bytes=max_line_bytes,
    )


def tail_line(line: str) -> str:
    """A line as an output tail keeps it: at most ``TAIL_LINE_CHARS`` characters."""
    return line if len(line) <= TAIL_LINE_CHARS else line[:TAIL_LINE_CHARS] + " …"


def run_shell(
    command: str,
    cwd: Path,
    env: Mapping[str, str],
    timeout_s: float | None,
    cancel: threading.Event | None = None,
    on_line: OnLine | None = None,
    *,
    grace_s: float = 5.0,
    tail_lines: int = 200,
) -> ShellResult:
    """Run a setup / verify command with ``bash -c``; bounded, stoppable, nothing left behind."""
    tail: deque[str] = deque(maxlen=tail_lines)

    def collect(stream: Stream, line: str) -> None:
        tail.append(tail_line(line))
        if on_line is not None:
            on_line(stream, line)

    if cancel is not None and cancel.is_set():
        return ShellResult(command, None, "", False, True, 0.0)
    try:
        proc = spawn(
            ["bash", "-c", command], cwd, env, None, on_line=collect, grace_s=grace_s,
            merge_stderr=True,
        )
    except OSError as exc:  # no bash on PATH, the folder gone: not a failed check
        raise VerificationError(
            f"could not run {command!r} in {cwd}: {exc.strerror or exc}"
        ) from exc
    result = proc.wait(timeout_s, cancel)
    return ShellResult(
        command=command,
        exit_status=result.exit_status,
        output_tail="\n".join(tail),
        timed_out=result.timed_out,
        killed=result.killed,
        duration_s=result.duration_s,
    )
