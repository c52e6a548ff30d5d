"""flows.warm: a worker's runs forked from its warm engine, as cold runs would behave.

A stand-in worker (a Python process) starts clients (``tests.support.warm_jobs``) as a
process worker starts flow-run processes: its own children, each in a session of its
own, output to a log. The job the warm engine forks reports how its process looks.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.warm import engine_socket, private
from tests.support.waiting import alive, cmdline, parent, wait_for

ROOT = Path(__file__).resolve().parents[2]
WORKER = """
import json, os, subprocess, sys
for line in sys.stdin:
    order = json.loads(line)
    if "prestart" in order:  # as `agentfleet worker` does before it becomes the worker
        from flows.warm import prestart
        print("prestarted", prestart(os.getpid(), order["prestart"]), flush=True)
        continue
    with open(order["log"], "w") as log:
        client = subprocess.Popen([sys.executable, "-m", "tests.support.warm_jobs"],
                                  env=order["env"], cwd=order["cwd"], stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        print("started", client.pid, flush=True)
        print("ended", client.wait(), flush=True)
"""


class Worker:
    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home, self.env, self.runs = home, env, 0
        self.process = subprocess.Popen([sys.executable, "-c", WORKER], env=env, cwd=ROOT,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)

    def start(self, **extra: str) -> tuple[int, Path]:
        """Start a client; its pid and where its job reports."""
        self.runs += 1
        out = self.home / f"run-{self.runs}"
        cwd = self.home / f"cwd-{self.runs}"
        cwd.mkdir()
        order = {"env": {**self.env, "WARM_OUT": str(out), "WARM_RUN": str(self.runs),
                         **extra},
                 "cwd": str(cwd), "log": str(out) + ".log"}
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(order) + "\n")
        self.process.stdin.flush()
        word, pid = self.process.stdout.readline().split()
        assert word == "started"
        return int(pid), out

    def prestart(self, preload: list[str]) -> bool:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"prestart": preload}) + "\n")
        self.process.stdin.flush()
        word, ready = self.process.stdout.readline().split()
        assert word == "prestarted"
        return ready == "True"

    def engines(self) -> set[int]:
        """The warm engines serving this worker's runs (their sockets are in its TMPDIR):
        not their forks (a request's watcher, a run), whose parent is one of them."""
        pids = map(int, filter(str.isdigit, os.listdir("/proc")))
        found = {pid for pid in pids if f"-m flows.warm {self.env['TMPDIR']}/" in cmdline(pid)}
        return {pid for pid in found if parent(pid) not in found}

    def ended(self) -> int:
        assert self.process.stdout is not None
        word, code = self.process.stdout.readline().split()
        assert word == "ended"
        return int(code)

    def run(self, **extra: str) -> tuple[int, dict, str]:
        """A client run to its end: its exit code, its job's report, its output."""
        _, out = self.start(**extra)
        code = self.ended()
        return code, json.loads(out.read_text()), Path(str(out) + ".log").read_text()

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture()
def worker(tmp_path: Path) -> Iterator[Worker]:
    # A short folder for the sockets: pytest's tmp_path can exceed a socket path's limit.
    sockets = tempfile.mkdtemp(prefix="warm-")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": sockets}
    env.pop("AGENTFLEET_WARM_ENGINE", None)
    started = Worker(tmp_path, env)
    try:
        yield started
    finally:
        started.stop()
        # Its warm engine ends with it.
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not list(Path(sockets).rglob("*.sock")), 15, "the engine to end")
        subprocess.run(["rm", "-rf", sockets], check=False)


def test_runs_are_forked_from_one_warm_engine_as_the_client_would_run(worker: Worker) -> None:
    code, first, output = worker.run(WARM_DO="exit:7")
    assert code == 7, output
    assert "cold" not in output and "hello from 1" in output  # its stdout is the client's
    engine = first["engine"]
    assert engine != first["pid"] and alive(engine)
    assert first["group"] == first["pid"]  # a process group of its own, as a cold run
    assert first["cwd"] == str(worker.home / "cwd-1")
    assert first["worker"] == worker.process.pid
    assert first["argv"][0].endswith("warm_jobs.py")

    code, second, output = worker.run(WARM_DO="exit:0")
    assert code == 0 and "hello from 2" in output
    assert second["engine"] == engine  # forked from the same warm engine ...
    assert second["run"] == "2" and second["cwd"] == str(worker.home / "cwd-2")  # ... as run 2


def test_a_run_holds_the_engines_objects_frozen_and_logs_as_its_environment_says(
    worker: Worker,
) -> None:
    # Prefect's logging is built again only when the run's environment builds another.
    code, first, output = worker.run(WARM_PRELOAD="prefect.main", PREFECT_LOGGING_LEVEL="INFO")
    assert code == 0, output
    assert first["frozen"] > 10_000  # the engine's imports: no collection of a run walks them
    assert first["prefect_level"] == "INFO"
    code, second, output = worker.run(WARM_PRELOAD="prefect.main", PREFECT_LOGGING_LEVEL="DEBUG")
    assert code == 0, output
    assert second["engine"] == first["engine"] and second["prefect_level"] == "DEBUG"
    code, third, output = worker.run(WARM_PRELOAD="prefect.main", PREFECT_LOGGING_LEVEL="INFO")
    assert code == 0 and third["prefect_level"] == "INFO", output


def test_a_prestarted_engine_serves_the_workers_first_run(worker: Worker) -> None:
    assert worker.prestart(["tests.support.warm_jobs"])
    # One engine; a fork serving prestart's readiness probe may outlive it a moment (a
    # full-suite run saw one counted beside the engine): it is gone within seconds.
    def one() -> set[int] | None:
        found = worker.engines()
        return found if len(found) == 1 else None

    engines = wait_for(one, timeout=10, what=lambda: f"one engine: {worker.engines()}")
    code, first, output = worker.run()
    assert code == 0 and "cold" not in output
    assert {first["engine"]} == engines == worker.engines()  # no second one was started


def test_prestarting_an_engine_turned_off_starts_none(worker: Worker) -> None:
    worker.stop()
    worker.env["AGENTFLEET_WARM_ENGINE"] = "0"
    off = Worker(worker.home, worker.env)
    try:
        assert not off.prestart(["tests.support.warm_jobs"])
        assert not off.engines()
    finally:
        off.stop()


def test_signals_to_the_client_reach_its_run_and_its_end_is_the_clients(
        worker: Worker) -> None:
    client, out = worker.start(WARM_DO="wait")
    wait_for(out.exists, 60, "the job to start")
    os.kill(client, signal.SIGTERM)  # as a worker cancels a flow run
    assert worker.ended() == 3
    assert Path(str(out) + ".term").read_text() == "TERM"

    worker.start(WARM_DO=f"die:{signal.SIGKILL}")
    assert worker.ended() == -signal.SIGKILL  # the client dies of what its run died of


def test_a_client_killed_outright_takes_its_run_down(worker: Worker) -> None:
    client, out = worker.start(WARM_DO="wait")
    wait_for(out.exists, 60, "the job to start")
    job = json.loads(out.read_text())["pid"]
    os.kill(client, signal.SIGKILL)
    assert worker.ended() == -signal.SIGKILL
    wait_for(lambda: Path(str(out) + ".term").exists(), 15, "the run to get SIGTERM")
    wait_for(lambda: not alive(job), 15, "the run to end")


def test_the_warm_engine_ends_with_its_worker(worker: Worker) -> None:
    _, report, _ = worker.run()
    engine = report["engine"]
    assert alive(engine)
    worker.stop()  # killed, and reaped only later: a zombie for a moment
    wait_for(lambda: not alive(engine), 15, "the warm engine to end")


def test_a_warm_engine_whose_modules_changed_is_not_used_again(worker: Worker,
                                                               tmp_path: Path) -> None:
    # A module of its own the engine imports, changed on disk as an upgrade would.
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "upgraded_here.py").write_text("VERSION = 1\n")
    worker.env["PYTHONPATH"] += f"{os.pathsep}{modules}"
    worker.env["WARM_PRELOAD"] = "upgraded_here"
    _, first, output = worker.run()
    assert "cold" not in output
    (modules / "upgraded_here.py").write_text("VERSION = 2\n")
    stat = (modules / "upgraded_here.py").stat()
    os.utime(modules / "upgraded_here.py", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    code, stale, output = worker.run()
    assert code == 0 and "cold" in output  # this run starts cold ...
    wait_for(lambda: not alive(first["engine"]), 15, "the stale engine to end")
    _, fresh, output = worker.run()  # ... and the next one in a fresh warm engine
    assert "cold" not in output and fresh["engine"] not in (first["engine"], stale["engine"])


def test_turned_off_every_run_starts_cold(worker: Worker) -> None:
    code, report, output = worker.run(AGENTFLEET_WARM_ENGINE="0")
    assert code == 0 and "cold" in output
    assert report["engine"] == report["pid"]
    assert not list(Path(worker.env["TMPDIR"]).rglob("*.sock"))


def test_the_socket_is_this_users_own_and_short(tmp_path: Path) -> None:
    path = engine_socket(os.getpid(), ["prefect.engine", "flows.attempt"])
    assert private(path.parent) and path.parent.stat().st_mode & 0o777 == 0o700
    assert path != engine_socket(os.getpid(), ["other"])
    assert len(os.fsencode(path)) <= 107
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(elsewhere)
    assert not private(tmp_path / "link")  # a link someone planted: its sockets not trusted


def test_a_socket_folder_of_ours_others_could_enter_is_closed_again(worker: Worker) -> None:
    folder = Path(worker.env["TMPDIR"]) / f"agentfleet-engines-{os.getuid()}"
    folder.mkdir()
    folder.chmod(0o755)
    code, report, output = worker.run()
    assert code == 0 and "cold" not in output and report["engine"] != report["pid"]
    assert folder.stat().st_mode & 0o777 == 0o700


def test_agentfleet_worker_readies_its_engine_then_runs_prefect_worker_start(
        tmp_path: Path) -> None:
    sockets = tempfile.mkdtemp(prefix="warm-")
    # A server named, as `agentfleet worker` asks; `-- --help` never reaches it.
    env = {**os.environ, "TMPDIR": sockets, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    env.pop("AGENTFLEET_WARM_ENGINE", None)
    try:
        # `-- --help`: Prefect's worker prints its help and exits, so the test needs no server.
        command = subprocess.Popen(
            [sys.executable, "-m", "agentfleet.cli", "worker", "--pool", "attempts", "--limit",
             "1", "--", "--help"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        out, err = command.communicate(timeout=120)
        assert command.returncode == 0, err
        assert "agentfleet: warm engine ready" in err
        assert "Start a worker process to poll a work pool" in out  # Prefect's worker's help
        # The engine is the worker's: keyed by the pid that ran Prefect's worker, and gone
        # with it.
        (lock,) = Path(sockets).rglob("*.lock")
        assert lock.name.startswith(f"{command.pid}-")
        wait_for(lambda: not lock.with_suffix(".sock").exists(), 15, "the engine to end")
    finally:
        subprocess.run(["rm", "-rf", sockets], check=False)


def test_the_attempt_engines_preload_completes_prefects_client_models() -> None:
    """``flows.engine.PRELOAD`` builds the client models a forked run would otherwise build
    on first use (a flow run's, a deployment's), once, in the engine."""
    probe = (
        "from flows.engine import PRELOAD; from flows.warm import load; "
        "from prefect.client.schemas.objects import FlowRun; "
        "from prefect.client.schemas.responses import DeploymentResponse; "
        "before = FlowRun.__pydantic_complete__, DeploymentResponse.__pydantic_complete__; "
        "load(PRELOAD); "
        "print(before, (FlowRun.__pydantic_complete__, DeploymentResponse.__pydantic_complete__))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["(False,", "False)", "(True,", "True)"], done.stdout


def test_the_logging_basis_tells_configurations_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """``flows.warm._logging_basis``: equal for what builds the same logging configuration,
    not for a level the file names or a ``PREFECT_LOGGING_*`` override."""
    from prefect.settings import PREFECT_LOGGING_LEVEL, temporary_settings

    from flows.warm import _logging_basis

    base = _logging_basis()
    assert base is not None and base == _logging_basis()
    with temporary_settings(updates={PREFECT_LOGGING_LEVEL: "CRITICAL"}):
        assert _logging_basis() != base
    monkeypatch.setenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "ERROR")
    assert _logging_basis() != base
