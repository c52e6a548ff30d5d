"""Running real sprints for the bench: the scripted model, Prefect servers, `agentfleet run`.

``Context`` owns what measures share and starts it on first use: one scripted
model server (its request log is the record of when each Codex session asked the
model), a ``CODEX_HOME`` pointing at it, and a running ``prefect server`` on
PostgreSQL (as ``tests/support/prefect_server.py`` starts it). ``run_agentfleet``
runs the installed ``agentfleet run`` as a user would and stamps each output line
with its arrival time, which is how the run's fixed costs are read from
agentfleet's own log.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from agentfleet.testing import RecordedRequest, Script, ScriptedModelServer
from bench.common import AGENTFLEET, PROJECT_ROOT, clean_env, commit_all, init_repo, say

RUN_TIMEOUT_S = 1800


class Context:
    """Resources shared by measures, started when first needed, stopped by ``close``."""

    def __init__(self, work: Path, *, smoke: bool) -> None:
        self.work = work
        self.smoke = smoke
        self._model: ScriptedModelServer | None = None
        self._prefect = None  # tests.support.prefect_server.PrefectServer
        self.server_warm = False  # a throwaway flow already ran on the running server

    def model(self) -> ScriptedModelServer:
        """The scripted model server (started on first use), logging every request."""
        if self._model is None:
            self._model = ScriptedModelServer(
                Script(rules=[]), log_path=self.work / "model-requests.jsonl"
            ).start()
            self._model.write_codex_home(self.work / "codex-home")
        return self._model

    def codex_env(self) -> dict[str, str]:
        """What a Codex process needs to talk to the scripted model."""
        return self.model().agent_env(self.work / "codex-home")

    def prefect(self):  # noqa: ANN201 - tests.support's PrefectServer
        """A running ``prefect server`` on a fresh PostgreSQL database (started on first use)."""
        if self._prefect is None and os.environ.get("BENCH_PREFECT_API_URL"):
            # A server someone else runs (the test suite's): used, never stopped.
            self._prefect = _RunningServer(os.environ["BENCH_PREFECT_API_URL"],
                                           self.work / "prefect-client")
        if self._prefect is None:
            from tests.support.prefect_server import start_prefect_server

            home = self.work / "prefect-server"
            home.mkdir(parents=True, exist_ok=True)
            say("starting a prefect server on PostgreSQL")
            self._prefect = start_prefect_server(home, timeout_s=180)
        return self._prefect

    def warm_server(self) -> None:
        """Run one throwaway flow against the running server, once (not at smoke size: no
        timing is judged there, and each throwaway run costs the suite seconds)."""
        if not self.server_warm and not self.smoke:
            throwaway_run(self, self.work / "warmup-server", self.server_env)
            self.server_warm = True

    def server_env(self, run_dir: Path) -> dict[str, str]:
        """The environment of an ``agentfleet run`` against the running server."""
        env = agentfleet_env(self, run_dir)
        env.update(self.prefect().env())
        # Each run its own result storage, so no run is served from another's cache.
        env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(run_dir / "results")
        return env

    def close(self) -> None:
        """Stop what was started."""
        if self._model is not None:
            self._model.stop()
            self._model = None
        if self._prefect is not None:
            self._prefect.stop()
            self._prefect = None


class _RunningServer:
    """A ``prefect server`` started elsewhere, by its API URL (``BENCH_PREFECT_API_URL``)."""

    def __init__(self, api_url: str, home: Path) -> None:
        self.api_url, self.home = api_url, home

    def env(self) -> dict[str, str]:
        return {"PREFECT_API_URL": self.api_url, "PREFECT_HOME": str(self.home),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}

    def stop(self) -> None:
        pass


def agentfleet_env(ctx: Context, run_dir: Path) -> dict[str, str]:
    """A clean environment for ``agentfleet run`` in ``run_dir``: its own work dir and results."""
    return clean_env(
        PYTHONUNBUFFERED="1",
        AGENTFLEET_WORK_DIR=str(run_dir / "work"),
        PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(run_dir / "results"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="INFO",
        **ctx.codex_env(),
    )


def embedded_env(ctx: Context, run_dir: Path, prefect_home: Path) -> dict[str, str]:
    """The environment of an ``agentfleet run`` on the embedded server in ``prefect_home``."""
    env = agentfleet_env(ctx, run_dir)
    env["PREFECT_HOME"] = str(prefect_home)
    # The first start on a loaded 2-core machine can exceed Prefect's 20 s default.
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "300"
    return env


@dataclass
class AgentfleetRun:
    """One finished ``agentfleet run``: its time, status, stamped lines, model requests."""

    seconds: float
    returncode: int
    spawned_at: float
    exited_at: float
    lines: list[tuple[float, str]]
    requests: list[RecordedRequest] = field(default_factory=list)
    report: dict | None = None

    def first(self, pattern: str) -> float | None:
        """Arrival time of the first output line matching ``pattern``."""
        rx = re.compile(pattern)
        return next((t for t, line in self.lines if rx.search(line)), None)

    def last(self, pattern: str) -> float | None:
        """Arrival time of the last output line matching ``pattern``."""
        rx = re.compile(pattern)
        return next((t for t, line in reversed(self.lines) if rx.search(line)), None)

    def tail(self, n: int = 40) -> str:
        """The last lines of output, for an error message."""
        return "".join(line for _, line in self.lines[-n:])


def run_agentfleet(ctx: Context, plan: Path, env: dict[str, str], *args: str,
                   expect_ok: bool = True,
                   on_line: Callable[[str], None] | None = None) -> AgentfleetRun:
    """Run ``agentfleet run PLAN`` to the end; every output line stamped as it arrives (and
    handed to ``on_line`` then)."""
    model = ctx.model()
    before = len(model.requests)
    report = plan.parent / f"report-{time.monotonic_ns()}.json"
    lines: list[tuple[float, str]] = []
    spawned = time.time()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [str(AGENTFLEET), "run", str(plan), "--report", str(report), *args],
        cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True,
    )

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.time(), line))
            if on_line is not None:
                on_line(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    seconds = time.perf_counter() - started
    exited = time.time()
    reader.join(10)
    (plan.parent / f"{report.stem}.log").write_text("".join(line for _, line in lines))
    run = AgentfleetRun(
        seconds=seconds, returncode=proc.returncode, spawned_at=spawned, exited_at=exited,
        lines=lines, requests=model.requests[before:],
        report=json.loads(report.read_text()) if report.exists() else None,
    )
    if expect_ok and run.returncode != 0:
        raise RuntimeError(f"agentfleet run {plan} exited {run.returncode}:\n{run.tail()}")
    return run


def throwaway_run(ctx: Context, run_dir: Path, env_for) -> AgentfleetRun:  # noqa: ANN001
    """A one-task sprint of a ``command`` agent: creates the database, warms imports."""
    run_dir.mkdir(parents=True, exist_ok=True)
    repo = init_repo(run_dir / "repo")
    (repo / "README.md").write_text("warm-up\n")
    commit_all(repo, "warm-up")
    plan = write_plan(run_dir / "plan.yaml", {
        "name": "bench-warmup", "repo": "repo",
        "agent": {"kind": "command", "run": "echo warm > warm.txt"},
        "tasks": [{"id": "warm", "prompt": "warm up", "paths": ["warm.txt"]}],
    })
    say(f"throwaway flow run in {run_dir.name}")
    return run_agentfleet(ctx, plan, env_for(run_dir))


def write_plan(path: Path, plan: dict) -> Path:
    """Write a plan file."""
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


# ------------------------------------------------------------ reading the request log


@dataclass(frozen=True)
class Session:
    """One Codex session as the model saw it: its first request's start, last one's end."""

    thread_id: str
    first_request: float
    last_response: float
    requests: int


def sessions(requests: list[RecordedRequest]) -> list[Session]:
    """The Codex sessions in a request log, by thread id, in order of their first request."""
    by_thread: dict[str, list[RecordedRequest]] = {}
    for r in requests:
        by_thread.setdefault(r.thread_id or f"#{r.index}", []).append(r)
    found = [
        Session(tid, min(r.started_at for r in rs),
                max(r.finished_at or r.started_at for r in rs), len(rs))
        for tid, rs in by_thread.items()
    ]
    return sorted(found, key=lambda s: s.first_request)


def idle_gaps(found: list[Session], concurrency: int) -> list[float]:
    """Per freed slot: the k-th agent's last response → the (concurrency+k)-th first request.

    With independent tasks every slot that frees up is taken by the next agent to
    start, so pairing ends and later starts in order measures how long a slot sat idle
    between one agent's end (as the model saw it) and the next agent's first request.
    """
    starts = sorted(s.first_request for s in found)
    ends = sorted(s.last_response for s in found)
    return [starts[concurrency + k] - ends[k] for k in range(max(0, len(starts) - concurrency))]
