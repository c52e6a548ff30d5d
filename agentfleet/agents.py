"""Run one agent attempt in a worktree: the Codex CLI or a plain shell command.

``run_agent`` never raises for the agent's own failure: every ending (completed,
429, bad key, timeout, cancel) is an ``AttemptOutcome``. It raises only when the
agent cannot be started at all (``AgentNotFound``, ``AgentError``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agentfleet.agent_config import AgentConfig
from agentfleet.codex_events import OutputLine, Transcript, parse_event
from agentfleet.errors import AgentError, AgentNotFound
from agentfleet.outcome import AttemptOutcome, Ending, Usage, classify
from agentfleet.process import ManagedProcess, Stream, spawn

OnEvent = Callable[[object], None]

PROMPT_VAR = "AGENTFLEET_PROMPT"
_STDERR_TAIL = 100
_OUTPUT_TAIL = 200
_ERROR_LINES = 20


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


# -- finding and calling codex -----------------------------------------------------------


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_codex(configured: Path | None, project_root: Path | None, path_env: str | None) -> Path:
    """The Codex CLI: the configured path, else ``node_modules/.bin/codex``, else on PATH."""
    if configured is not None:
        configured = Path(configured).expanduser()
        if _executable(configured):
            return configured
        raise AgentNotFound(
            f"Codex CLI not found at {configured} (AGENTFLEET_CODEX_PATH): "
            "no executable file there"
        )
    looked = []
    if project_root is not None:
        local = Path(project_root) / "node_modules" / ".bin" / "codex"
        if _executable(local):
            return local
        looked.append(str(local))
    if path_env:
        # which() with an explicit path never reads os.environ.
        found = shutil.which("codex", path=path_env)
        if found:
            return Path(found)
        looked.append("PATH")
    raise AgentNotFound(
        f"Codex CLI not found (looked in {', '.join(looked) or 'nowhere'}): run `npm ci` in the "
        "project to install the pinned @openai/codex, or set AGENTFLEET_CODEX_PATH"
    )


def toml_value(value: str | int | float | bool) -> str:
    """``value`` as a TOML literal for ``-c key=value``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    # A JSON string is a valid TOML basic string (same escapes).
    return json.dumps(value, ensure_ascii=False)


def codex_argv(codex: Path, agent: AgentConfig, extra: Sequence[str] = ()) -> list[str]:
    """``codex exec --json`` with only the flags the agent config asks for; prompt from stdin."""
    argv = [str(codex), "exec", "--json", "-s", agent.sandbox]
    if agent.model:
        argv += ["-m", agent.model]
    if agent.profile:
        argv += ["-p", agent.profile]
    for key, value in agent.config.items():
        argv += ["-c", f"{key}={toml_value(value)}"]
    # "-" reads the prompt from stdin: argv is capped at 128 KiB per string.
    return [*argv, *extra, "-"]


# -- running ------------------------------------------------------------------------------


def _emit(on_event: OnEvent | None, event: object) -> None:
    if on_event is not None:
        on_event(event)


def _start(argv: list[str], req: AgentRequest, env: Mapping[str, str], on_line) -> ManagedProcess:  # noqa: ANN001
    try:
        return spawn(argv, req.worktree, env, req.prompt, on_line=on_line, grace_s=req.grace_s)
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
    codex = find_codex(req.codex_path, None, req.env.get("PATH"))
    if cancel is not None and cancel.is_set():
        return _killed_before_start(started)
    transcript = Transcript()
    stderr_tail: deque[str] = deque(maxlen=_STDERR_TAIL)

    def on_line(stream: Stream, line: str) -> None:
        if stream == "stderr":
            stderr_tail.append(line)
            _emit(on_event, OutputLine(stream=stream, text=line))
            return
        if not line.strip():
            return
        event = parse_event(line)
        transcript.add(event)
        _emit(on_event, event)

    env = {**req.env, **req.agent.env}
    proc = _start(codex_argv(codex, req.agent, req.extra_codex_args), req, env, on_line)
    waited = proc.wait(req.timeout_s, cancel, req.idle_timeout_s, transcript.is_busy)
    stderr = "\n".join(stderr_tail)
    ending, error = classify(
        waited.exit_status, transcript, timed_out=waited.timed_out, stuck=waited.stuck,
        killed=waited.killed, stderr_tail=stderr,
    )
    files = _relative(transcript.files_changed, req.worktree)
    files += [f for f in git_changed_files(req.worktree, env) if f not in files]
    return AttemptOutcome(
        ending=ending,
        final_message=transcript.final_message,
        commands=transcript.commands,
        files_changed=files,
        usage=transcript.usage,
        duration_s=time.monotonic() - started,
        exit_status=waited.exit_status,
        error=error,
        warnings=list(transcript.warnings),
        thread_id=transcript.thread_id,
        stderr_tail=stderr,
    )


def run_command_agent(
    req: AgentRequest,
    *,
    on_event: OnEvent | None = None,
    cancel: threading.Event | None = None,
) -> AttemptOutcome:
    """``bash -c run`` in the worktree, the prompt on stdin and in ``AGENTFLEET_PROMPT``."""
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
            tail.append(line)
            if stream == "stdout" and line.strip():
                last_stdout[:] = [line.strip()]
        _emit(on_event, OutputLine(stream=stream, text=line))

    env = {**req.env, **req.agent.env, PROMPT_VAR: req.prompt}
    proc = _start(["bash", "-c", req.agent.run], req, env, on_line)
    waited = proc.wait(req.timeout_s, cancel, req.idle_timeout_s)
    output = list(tail)
    if waited.killed:
        ending, error = Ending.KILLED, "stopped"
    elif waited.timed_out:
        ending, error = Ending.TIMED_OUT, f"timed out after {req.timeout_s:g}s"
    elif waited.stuck:
        ending, error = Ending.STUCK, f"no output for {req.idle_timeout_s:g}s"
    elif waited.exit_status == 0:
        ending, error = Ending.COMPLETED, None
    else:
        ending = Ending.FAILED_FATAL
        error = "\n".join(output[-_ERROR_LINES:]).strip() or f"exit status {waited.exit_status}"
    any_output = [ln.strip() for ln in output if ln.strip()]
    final = last_stdout[0] if last_stdout else (any_output[-1] if any_output else None)
    return AttemptOutcome(
        ending=ending,
        final_message=final,
        files_changed=git_changed_files(req.worktree, env),
        usage=Usage(),
        duration_s=time.monotonic() - started,
        exit_status=waited.exit_status,
        error=error,
        stderr_tail="\n".join(output[-_ERROR_LINES:]),
    )


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


def git_changed_files(worktree: Path, env: Mapping[str, str]) -> list[str]:
    """Paths ``git status`` reports changed or untracked in the worktree ([] if not a repo)."""
    try:
        done = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(worktree), "status", "--porcelain", "-z",
             "--untracked-files=all"],
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
