"""A process worker's flow-run processes forked from one warm engine, not started cold.

A process worker starts every flow run as a new Python process, and importing Prefect's
engine and the attempt flow is over a second of CPU before the run begins (two to four
when three workers start runs at once on two cores). The ``attempt`` deployment's
command (``python -m flows.engine``) is instead a thin client, of the standard library
only. It asks its worker's warm engine for the run: a process that imported all of that
once and forks one child per run. The child takes over the client's standard streams,
environment, working directory and arguments, leads a process group of its own as a
cold flow-run process does, and runs Prefect's engine; the client forwards the signals
the worker sends it and exits as the child did. The engine imports with the collector off
and freezes what it imported (``agentfleet.startup``), which no collection of a run then
walks, and a run keeps the engine's logging configuration when its environment would
build the same one.

Lifetimes: ``agentfleet worker`` starts its worker's warm engine before the worker
itself (``prestart``); otherwise the first client of a worker starts it (that run waits
for the imports, as a cold one would). Every later run of the worker is forked. The warm
engine ends with its worker. A client killed outright (``SIGKILL``) takes its run down
with it: the fork that watches the run sees the client's end of the socket close and
sends it SIGTERM (SIGKILL ``GRACE_S`` later). A run whose worker ends stops itself
(``flows.attempt.dies_with_worker`` watches ``worker_pid``).

The client runs the engine itself (``run_warm`` returns None) when warm engines are
turned off (``AGENTFLEET_WARM_ENGINE=0`` in the deployment's ``env``), when one cannot be
started, or when a module it imported changed on disk since it started (an upgrade: it
exits, and the worker's next run starts a fresh one).

Nothing but the standard library at import: this module is the client's start-up cost.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SWITCH = "AGENTFLEET_WARM_ENGINE"
START_S = 120.0  # how long a warm engine may take to import Prefect on a busy machine
GRACE_S = 30.0  # a run whose client vanished: SIGTERM, then SIGKILL this much later
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
             signal.SIGUSR1, signal.SIGUSR2)
_SIZE = struct.Struct("!I")
MAX_PATH = 107  # bytes in a socket's path (Linux)


@dataclass(frozen=True)
class Job:
    """One run: what its forked child takes over from the client, and what it calls."""

    target: str  # "module:function", called with no arguments
    env: dict[str, str]
    cwd: str
    argv: list[str]
    worker: int  # the client's parent


_worker: int | None = None  # set in a forked run: its client's worker
# What the warm engine's logging configuration was built from (``_logging_basis``).
_engine_logging: tuple[object, ...] | None = None


def worker_pid() -> int | None:
    """In a run forked here, the worker whose end ends it (its client's parent); else None:
    that worker is this process's own parent."""
    return _worker


def engine_socket(worker: int, preload: Sequence[str]) -> Path:
    """Where the warm engine of ``worker`` for this Python and ``preload`` listens, in a
    folder only this user may enter (``private``)."""
    folder = Path(tempfile.gettempdir()) / f"agentfleet-engines-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    with contextlib.suppress(OSError):
        found = folder.lstat()
        if found.st_uid == os.getuid() and stat.S_ISDIR(found.st_mode):
            folder.chmod(0o700)  # ours, opened up since: closed again
    # The interpreter and its environment (a virtualenv's `python` and `python3` are one).
    kind = "\0".join([os.path.realpath(sys.executable), sys.prefix,
                      os.environ.get("PYTHONPATH", ""), *preload])
    return folder / f"{worker}-{hashlib.sha1(kind.encode()).hexdigest()[:12]}.sock"


def private(folder: Path) -> bool:
    """Whether ``folder`` is a folder of this user's that no one else may enter (one made
    by someone else in a shared temporary folder, or a link, is not used)."""
    found = folder.lstat()
    return found.st_uid == os.getuid() and stat.S_ISDIR(found.st_mode) and not (
        found.st_mode & 0o077)


def turned_off() -> bool:
    return os.environ.get(SWITCH, "1").strip().lower() in ("0", "false", "no", "off")


# --- the client ------------------------------------------------------------------------


def run_warm(target: str, preload: Sequence[str]) -> int | None:
    """Have this worker's warm engine (which imported ``preload``) call ``target`` in a
    child that is this process in all but its pid; the child's exit code, or None when
    the caller should run ``target`` itself."""
    worker = os.getppid()
    conn = _engine(worker, preload)
    if conn is None:
        return None
    with conn:
        job = Job(target, dict(os.environ), os.getcwd(), list(sys.argv), worker)
        data = json.dumps(job.__dict__).encode()
        replies = conn.makefile("r", encoding="ascii")
        try:
            socket.send_fds(conn, [_SIZE.pack(len(data)) + data], [0, 1, 2])
            first = replies.readline().split()
        except OSError:
            first = []
        if first[:1] != ["pid"]:
            return None  # stale, or no child could be made: nothing has run
        child = int(first[1])
        for number in FORWARDED:
            signal.signal(number, lambda sig, _frame: _signal_group(child, sig))
        word, _, value = replies.readline().partition(" ")
        if word != "exit":
            # The warm engine's watcher itself died: what became of the run is unknown.
            print("agentfleet: the warm engine lost this run", file=sys.stderr)
            return 1
    return _exit_as(int(value))


def prestart(worker: int, preload: Sequence[str]) -> bool:
    """Start the warm engine of ``worker`` before its first run (``agentfleet worker``,
    whose process becomes the worker); whether one is ready for its runs."""
    conn = _engine(worker, preload)
    if conn is None:
        return False
    conn.close()  # its watching fork reads no request and goes
    return True


def _engine(worker: int, preload: Sequence[str]) -> socket.socket | None:
    """A connection to ``worker``'s warm engine, started if need be; None when its runs
    start cold (turned off, an engine that cannot be had or is not this user's)."""
    if turned_off():
        return None
    if worker <= 1:  # a container's first process (a Docker or Kubernetes worker's run)
        return None  # or an orphan: one run, nothing to share an engine with
    path = engine_socket(worker, preload)
    if len(os.fsencode(path)) > MAX_PATH or not private(path.parent):
        return None
    conn = _connect(path) or _start(path, worker, preload)
    if conn is not None and _peer_uid(conn) != os.getuid():
        conn.close()  # the environment a client sends holds secrets
        return None
    return conn


def _exit_as(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:  # killed by a signal: so is this process, as its worker expects
        with contextlib.suppress(OSError):  # SIGKILL has no handler to reset
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


def _connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:  # none there, or one that died and left its socket
        conn.close()
        return None
    return conn


def _start(path: Path, worker: int, preload: Sequence[str]) -> socket.socket | None:
    """Start the warm engine and wait until it answers; None if it cannot be had."""
    from agentfleet.locks import is_held  # only here, where a start costs seconds anyway

    with path.with_suffix(".log").open("ab") as log:
        engine = subprocess.Popen(
            [sys.executable, "-m", "flows.warm", str(path), str(worker), *preload],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        conn = _connect(path)
        if conn is not None:
            return conn
        # Ours exited: fine while another client's is starting (it holds the lock).
        if engine.poll() is not None and not is_held(path.with_suffix(".lock")):
            return None
        time.sleep(0.02)
    return None


def _signal_group(leader: int, number: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader, number)


# --- the warm engine -------------------------------------------------------------------


def load(preload: Sequence[str]) -> None:
    """Import each "module" of ``preload``; call each "module:function" once imported."""
    for name in preload:
        module, _, function = name.partition(":")
        imported = importlib.import_module(module)
        if function:
            getattr(imported, function)()


def serve(path: Path, worker: int, preload: Sequence[str]) -> Job | None:
    """Import ``preload`` (and call its ``module:function`` entries), then fork a run per
    request on ``path`` until ``worker`` ends.

    Returns in a forked run only: its job (``run_job``). The warm engine itself returns
    None when it ends."""
    from agentfleet.lifeline import process_handle
    from agentfleet.startup import long_lived_imports

    # One warm engine per socket, holding the lock for its life: a second one started at
    # the same moment goes, and a socket whose engine died is told from a live one.
    lock = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return None
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path.unlink(missing_ok=True)
    listener.bind(str(path))  # clients see it at once, and wait until it listens
    try:
        # What the engine holds lives as long as every run: frozen, the runs' collections
        # leave it alone (each full one walked it all, and copied the pages it touched).
        with long_lived_imports():
            load(preload)
            loaded = _module_times()
            if "prefect" in sys.modules:  # configured at Prefect's import, from this env
                global _engine_logging
                _engine_logging = _logging_basis()
        worker_ended = process_handle(worker)
        listener.listen(16)
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the watching forks reap themselves
        watched: list[Any] = [listener, worker_ended]  # a socket and a pidfd (an int)
        while True:
            ready, _, _ = select.select(watched, [], [])
            if worker_ended in ready:
                return None
            conn, _ = listener.accept()
            if _peer_uid(conn) != os.getuid():
                conn.close()
            elif _changed(loaded):
                conn.settimeout(10)
                with contextlib.suppress(OSError), conn:
                    for fd in _receive(conn)[1]:  # read first: closed unread, it resets
                        os.close(fd)
                    conn.sendall(b"stale\n")
                return None
            elif os.fork() == 0:
                listener.close()
                os.close(worker_ended)
                os.close(lock)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                return _fork_run(conn)
            else:
                conn.close()
    finally:
        if listener.fileno() >= 0:  # the warm engine itself, not a run
            listener.close()
            path.unlink(missing_ok=True)


def _fork_run(conn: socket.socket) -> Job:
    """In the watching fork: fork the run, tell the client its pid, wait, report its end.
    Returns in the run only."""
    try:
        data, fds = _receive(conn)
        job = Job(**json.loads(data))
    except (OSError, ValueError, TypeError):  # a client gone mid-request, or not one
        os._exit(0)
    run = os.fork()
    if run == 0:
        conn.close()
        os.setsid()
        for number, fd in enumerate(fds):
            os.dup2(fd, number)
            os.close(fd)
        return job
    for fd in fds:
        os.close(fd)
    try:
        conn.sendall(f"pid {run}\n".encode())
        conn.sendall(f"exit {_wait(conn, run)}\n".encode())
    except OSError:
        pass
    finally:
        os._exit(0)


def _wait(conn: socket.socket, run: int) -> int:
    """The run's wait status; a client that goes away first takes the run down with it."""
    ended = os.pidfd_open(run)
    watched: list = [ended, conn]
    timeout: float | None = None  # once the client has gone: the grace before SIGKILL
    while True:
        ready, _, _ = select.select(watched, [], [], timeout)
        if ended in ready:
            return os.waitpid(run, 0)[1]
        if conn not in watched:  # the grace is over
            _signal_group(run, signal.SIGKILL)
            timeout = None
        elif not conn.recv(1):  # the client's end closed: it was killed
            _signal_group(run, signal.SIGTERM)
            watched, timeout = [ended], GRACE_S


def _receive(conn: socket.socket) -> tuple[bytes, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    while len(data) < _SIZE.size or len(data) < _SIZE.size + _SIZE.unpack_from(data)[0]:
        more = conn.recv(1 << 16)
        if not more:
            raise ConnectionError("the client went away mid-request")
        data += more
    return data[_SIZE.size:], fds


def run_job(job: Job) -> None:
    """In the forked run: become the client's process, then call the job's target."""
    global _worker
    _worker = job.worker
    os.chdir(job.cwd)
    os.environ.clear()
    os.environ.update(job.env)
    sys.argv = list(job.argv)
    tempfile.tempdir = None  # else computed from the warm engine's environment
    if "prefect" in sys.modules:  # settings and logging as the client's environment says
        from prefect.context import refresh_global_settings_context
        from prefect.logging.configuration import setup_logging

        refresh_global_settings_context()
        # Building it renders every setting: a third of a forked run's CPU, for the
        # engine's own configuration again in the usual case.
        if _engine_logging is None or _logging_basis() != _engine_logging:
            setup_logging(incremental=False)
    module, _, function = job.target.partition(":")
    getattr(importlib.import_module(module), function)()


def _logging_basis() -> tuple[object, ...] | None:
    """What Prefect's logging configuration is built from (``prefect.logging.configuration``):
    its file, the settings that file names, the ``PREFECT_LOGGING_*`` overrides and the
    extra loggers. Equal bases build equal configurations; None when not all is known."""
    import string

    import prefect.settings
    from prefect.logging.configuration import DEFAULT_LOGGING_SETTINGS_PATH
    from prefect.settings.legacy import Setting

    path = prefect.settings.PREFECT_LOGGING_SETTINGS_PATH.value()
    path = path if path.exists() else DEFAULT_LOGGING_SETTINGS_PATH
    try:
        text = path.read_text()
    except OSError:
        return None
    named = {}
    for name in string.Template(text).get_identifiers():
        setting = getattr(prefect.settings, name, None)
        if not isinstance(setting, Setting):
            return None  # not a setting Prefect's accessors know: build it
        named[name] = repr(setting.value())
    overrides = sorted((k, v) for k, v in os.environ.items() if k.startswith("PREFECT_LOGGING_"))
    return (str(path), text, named, overrides,
            list(prefect.settings.PREFECT_LOGGING_EXTRA_LOGGERS.value()))


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def _module_times() -> dict[str, float]:
    times: dict[str, float] = {}
    for module in list(sys.modules.values()):
        name = getattr(module, "__file__", None)
        if isinstance(name, str):
            with contextlib.suppress(OSError):
                times[name] = os.stat(name).st_mtime
    return times


def _changed(loaded: dict[str, float]) -> bool:
    for name, mtime in loaded.items():
        try:
            if os.stat(name).st_mtime != mtime:
                return True
        except OSError:
            return True
    return False


def main(argv: list[str]) -> None:
    """``SOCKET WORKER_PID MODULE...``: the warm engine (``run_warm`` starts it)."""
    os.chdir("/")  # not its first client's working folder, which the worker removes
    job = serve(Path(argv[0]), int(argv[1]), argv[2:])
    if job is not None:
        run_job(job)


if __name__ == "__main__":
    # As flows.warm, not as __main__: a forked run's state (``_worker``) is read there.
    from flows import warm

    warm.main(sys.argv[1:])
