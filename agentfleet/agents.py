"""Run one agent attempt in a worktree: the Codex CLI or a plain shell command.

``run_agent`` never raises for the agent's own failure: every ending (completed,
429, bad key, timeout, cancel) is an ``AttemptOutcome``. It raises only when the
agent cannot be started at all (``AgentNotFound``, ``AgentError``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from agentfleet.agent_config import AgentConfig
from agentfleet.codex.cli import codex_argv, find_codex, native_launch
from agentfleet.codex.events import OutputLine, Transcript, parse_event
from agentfleet.codex.outcome import AttemptOutcome, Ending, Usage, classify
from agentfleet.codex.sandbox import sandbox_refusal
from agentfleet.durations import format_duration
from agentfleet.errors import AgentError, AgentNotFound
from agentfleet.process import MAX_LINE_BYTES, ManagedProcess, Stream, spawn, tail_line

OnEvent = Callable[[object], None]

PROMPT_VAR = "AGENTFLEET_PROMPT"
PROMPT_FILE_VAR = "AGENTFLEET_PROMPT_FILE"
# Linux refuses to exec with one environment string over 128 KiB ("Argument list too
# long"): a larger prompt reaches a command agent on stdin and in its file only.
PROMPT_VAR_MAX_BYTES = 64 * 1024
_STDERR_TAIL = 100
_OUTPUT_TAIL = 200
_ERROR_LINES = 20
# Codex's JSON events hold a command's whole output (aggregated_output): a line cut short
# no longer parses, so allow more than for plain output, but still a bound.
_CODEX_LINE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class AgentRequest:
    """One agent run: where, what, with which agent, for how long, in which environment."""

    worktree: Path
    prompt: str
    agent: AgentConfig
    timeout_s: float
    env: Mapping[str, str]  # the complete environment; agent.env is layered on top
    codex_path: Path | None = None
    idle_timeout_s: float | None = None
    grace_s: float = 5.0
    extra_codex_args: tuple[str, ...] = ()
    # The agent's own temporary folder, outside its worktree: its TMPDIR, writable in
    # Codex's sandbox (see ``isolation_overrides``). None: no TMPDIR is writable.
    private_tmp: Path | None = None
    # The timeout a timed-out agent's message names: the task's, when the agent got only
    # what setup left of it. None: ``timeout_s``.
    timeout_named_s: float | None = None
    # The worktree's own admin dir: agentfleet's git looks at the worktree through it, never
    # through the folder's .git, which the agent may have changed. None: discovered.
    git_dir: Path | None = None


# -- running ------------------------------------------------------------------------------


def _emit(on_event: OnEvent | None, event: object) -> None:
    if on_event is not None:
        on_event(event)


def _start(
    argv: list[str], req: AgentRequest, env: Mapping[str, str], on_line,  # noqa: ANN001
    max_line_bytes: int | None = None,
) -> ManagedProcess:
    try:
        return spawn(
            argv, req.worktree, env, req.prompt, on_line=on_line, grace_s=req.grace_s,
            max_line_bytes=max_line_bytes or MAX_LINE_BYTES,
        )
    except FileNotFoundError as exc:
        if not Path(req.worktree).is_dir():
            raise AgentError(f"worktree {req.worktree} does not exist") from exc
        raise AgentNotFound(f"cannot run {argv[0]}: {exc.strerror}") from exc
    except OSError as exc:
        raise AgentError(f"cannot start {argv[0]}: {exc}") from exc


def _killed_before_start(started: float) -> AttemptOutcome:
    return AttemptOutcome(
        ending=Ending.KILLED, error="stopped", duration_s=time.monotonic() - started
    )


def _timeout_named(req: AgentRequest) -> str:
    return format_duration(round(req.timeout_named_s or req.timeout_s))


def run_agent(
    req: AgentRequest,
    *,
    on_event: OnEvent | None = None,
    cancel: threading.Event | None = None,
) -> AttemptOutcome:
    """Run one attempt of the request's agent in its worktree and say how it ended."""
    if req.agent.kind == "command":
        return run_command_agent(req, on_event=on_event, cancel=cancel)
    return run_codex_agent(req, on_event=on_event, cancel=cancel)


def run_codex_agent(
    req: AgentRequest,
    *,
    on_event: OnEvent | None = None,
    cancel: threading.Event | None = None,
) -> AttemptOutcome:
    """``codex exec --json`` in the worktree, the prompt on stdin, events parsed as they come."""
    started = time.monotonic()
    if cancel is not None and cancel.is_set():
        find_codex(req.codex_path, None, req.env.get("PATH"))
        return _killed_before_start(started)
    return start_codex_agent(req, on_event=on_event).wait(cancel)


class CodexRun:
    """A started ``codex exec``: its process and what it printed so far.

    Started and waited for apart, so an attempt can start its agent ahead of its agent
    slot (``agentfleet/start_ahead.py``) and count its time from the grant.
    """

    def __init__(self, req: AgentRequest, on_event: OnEvent | None) -> None:
        self.req = req
        self.started = time.monotonic()
        codex = find_codex(req.codex_path, None, req.env.get("PATH"))
        self.transcript = transcript = Transcript()
        self._stderr_tail: deque[str] = deque(maxlen=_STDERR_TAIL)

        def on_line(stream: Stream, line: str) -> None:
            if stream == "stderr":
                self._stderr_tail.append(tail_line(line))
                _emit(on_event, OutputLine(stream=stream, text=line))
                return
            if not line.strip():
                return
            event = parse_event(line)
            transcript.add(event)
            _emit(on_event, event)

        # The private TMPDIR goes under agent.env: a TMPDIR the plan sets is the user's choice.
        tmp = {"TMPDIR": str(req.private_tmp)} if req.private_tmp is not None else {}
        self.env = env = {**req.env, **tmp, **req.agent.env}
        private = req.private_tmp is not None and env.get("TMPDIR") == str(req.private_tmp)
        self.program, self.launched = native_launch(codex, env)
        argv = codex_argv(self.program, req.agent, req.extra_codex_args, private_tmp=private)
        self.proc = _start(argv, req, self.launched, on_line, _CODEX_LINE_BYTES)

    def ended(self) -> bool:
        """Whether the process has exited."""
        return self.proc.poll() is not None

    def restart_clock(self) -> None:
        """Count the timeout, the idle timeout and the duration from now."""
        self.started = time.monotonic()
        self.proc.restart_clock()

    def stop(self) -> None:
        """Stop it and everything it started (nothing of it is reported)."""
        self.proc.stop()

    def wait(self, cancel: threading.Event | None = None, timeout_s: float | None = None
             ) -> AttemptOutcome:
        """Wait for the end (``timeout_s``, default the request's, from the clock's start)
        and say how it went."""
        req, transcript = self.req, self.transcript
        waited = self.proc.wait(req.timeout_s if timeout_s is None else timeout_s, cancel,
                                req.idle_timeout_s, transcript.is_busy)
        stderr = "\n".join(self._stderr_tail)
        ending, error = classify(
            waited.exit_status, transcript, timed_out=waited.timed_out, stuck=waited.stuck,
            killed=waited.killed, stderr_tail=stderr,
        )
        if waited.timed_out or waited.stuck:
            # Say what stopped it; Codex's last warning (e.g. "Reconnecting...") says why.
            what = (
                f"timed out after {_timeout_named(req)}" if waited.timed_out
                else f"no event for {req.idle_timeout_s:g}s while no command was running"
            )
            error = f"{what} ({error})" if error else what
        files = _relative(transcript.files_changed, req.worktree)
        files += [f for f in git_changed_files(req.worktree, self.env, req.git_dir)
                  if f not in files]
        refused = None
        # Only for a turn that ended as if all went well: a stopped or failed one says why.
        if (ending is Ending.COMPLETED and transcript.files_failed
                and req.agent.sandbox != "danger-full-access"):
            refused = sandbox_refusal(self.program, self.launched, req.worktree)
        return AttemptOutcome(
            ending=ending,
            final_message=transcript.final_message,
            commands=transcript.commands,
            files_changed=files,
            usage=transcript.usage,
            duration_s=time.monotonic() - self.started,
            exit_status=waited.exit_status,
            error=error,
            warnings=list(transcript.warnings),
            thread_id=transcript.thread_id,
            stderr_tail=stderr,
            sandbox_refused=refused,
        )


def start_codex_agent(req: AgentRequest, *, on_event: OnEvent | None = None) -> CodexRun:
    """Start ``codex exec --json`` in the worktree; ``CodexRun.wait`` for its outcome."""
    return CodexRun(req, on_event)


def run_command_agent(
    req: AgentRequest,
    *,
    on_event: OnEvent | None = None,
    cancel: threading.Event | None = None,
) -> AttemptOutcome:
    """``bash -c run`` in the worktree; the prompt on stdin, in the file named by
    ``AGENTFLEET_PROMPT_FILE`` and, while at most 64 KiB, in ``AGENTFLEET_PROMPT``."""
    started = time.monotonic()
    if not (req.agent.run and req.agent.run.strip()):
        raise AgentError("a command agent needs `run` (the shell command)")
    if cancel is not None and cancel.is_set():
        return _killed_before_start(started)
    tail: deque[str] = deque(maxlen=_OUTPUT_TAIL)
    last_stdout: list[str] = []
    lock = threading.Lock()

    def on_line(stream: Stream, line: str) -> None:
        with lock:
            tail.append(tail_line(line))
            if stream == "stdout" and line.strip():
                last_stdout[:] = [tail_line(line.strip())]
        _emit(on_event, OutputLine(stream=stream, text=line))

    with _prompt_file(req.prompt) as prompt_file:
        env = {**req.env, **req.agent.env, PROMPT_FILE_VAR: str(prompt_file)}
        env.pop(PROMPT_VAR, None)  # never an inherited value standing in for this prompt
        if len(req.prompt.encode("utf-8", "surrogatepass")) <= PROMPT_VAR_MAX_BYTES:
            env[PROMPT_VAR] = req.prompt
        proc = _start(["bash", "-c", req.agent.run], req, env, on_line)
        waited = proc.wait(req.timeout_s, cancel, req.idle_timeout_s)
    output = list(tail)
    if waited.killed:
        ending, error = Ending.KILLED, "stopped"
    elif waited.timed_out:
        ending, error = Ending.TIMED_OUT, f"timed out after {_timeout_named(req)}"
    elif waited.stuck:
        ending, error = Ending.STUCK, f"no output for {req.idle_timeout_s:g}s"
    elif waited.exit_status == 0:
        ending, error = Ending.COMPLETED, None
    else:
        # One line: the output itself is in the log, the artifact and stderr_tail.
        ending, error = Ending.FAILED_FATAL, _exit_words(waited.exit_status)
    any_output = [ln.strip() for ln in output if ln.strip()]
    final = last_stdout[0] if last_stdout else (any_output[-1] if any_output else None)
    return AttemptOutcome(
        ending=ending,
        final_message=final,
        files_changed=git_changed_files(req.worktree, env, req.git_dir),
        usage=Usage(),
        duration_s=time.monotonic() - started,
        exit_status=waited.exit_status,
        error=error,
        stderr_tail="\n".join(output[-_ERROR_LINES:]),
    )


def _exit_words(status: int | None) -> str:
    """How a command ended: ``command exited 3``, or the signal that killed it."""
    if status is None:
        return "command ended without an exit status"
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"command killed by {name}"
    return f"command exited {status}"


@contextlib.contextmanager
def _prompt_file(prompt: str) -> Iterator[Path]:
    """The prompt in a private file outside every worktree (never committed), removed after."""
    fd, name = tempfile.mkstemp(prefix="agentfleet-prompt-", suffix=".txt")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as out:
            out.write(prompt)
        yield Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


# -- files --------------------------------------------------------------------------------


def _relative(paths: Mapping[str, str], worktree: Path) -> list[str]:
    """Codex reports absolute paths; the rest of agentfleet speaks worktree-relative ones."""
    root = Path(worktree).resolve()
    out: list[str] = []
    for path in paths:
        p = Path(path)
        if p.is_absolute():
            try:
                p = p.resolve().relative_to(root)
            except ValueError:
                pass  # outside the worktree: keep it absolute, so it is noticed
        rel = p.as_posix()
        if rel not in out:
            out.append(rel)
    return out


def git_changed_files(
    worktree: Path, env: Mapping[str, str], git_dir: Path | None = None
) -> list[str]:
    """Paths ``git status`` reports changed or untracked in the worktree ([] if not a repo)."""
    pinned = [f"--git-dir={git_dir}", f"--work-tree={worktree}"] if git_dir is not None else []
    try:
        done = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(worktree), *pinned, "status", "--porcelain",
             "-z", "--untracked-files=all"],
            capture_output=True, env=dict(env), timeout=60, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:
        return []
    files: list[str] = []
    entries = done.stdout.decode("utf-8", "replace").split("\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        status, path = entry[:2], entry[3:]
        if "R" in status or "C" in status:
            i += 1  # the next entry is the rename's source path
        if path not in files:
            files.append(path)
    return files
