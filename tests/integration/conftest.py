"""Flows under Prefect's harness (a temporary server in this process), `command` agents."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_RESULTS_LOCAL_STORAGE_PATH,
    temporary_settings,
)
from prefect.testing.utilities import prefect_test_harness

from agentfleet.results import SprintReport
from tests.support.prefect_server import own_prefect_server


@pytest.fixture(scope="session")
def harness_server() -> Iterator[str]:
    """One harness server for each test process: starting one takes 10 to 20 s on a loaded
    machine, once per module added minutes to the suite. Its API URL."""
    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


@pytest.fixture(scope="module")
def harness(harness_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The harness server, with results of the module's own, kept out of the user's
    PREFECT_HOME and apart from other modules'. Its API URL."""
    storage = tmp_path_factory.mktemp("results")
    with temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: storage}):
        yield harness_server


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``prefect server`` on PostgreSQL for the module alone, as production runs one, for
    tests that time slot handoffs between processes: the shared SQLite harness, busy with
    earlier modules' events, answered a waiting sprint's slot requests in seconds, and two
    sprints taking and giving back slots at once stalled it ("database is locked"). Its
    API URL, set for this process (the flows run here) and passed on to child processes."""
    storage = tmp_path_factory.mktemp("results")
    with (own_prefect_server(tmp_path_factory.mktemp("own-server")) as server,
          temporary_settings({PREFECT_API_URL: server.api_url,
                              PREFECT_RESULTS_LOCAL_STORAGE_PATH: storage})):
        yield server.api_url
        # What this process still has to send goes now, as the harness does before it
        # stops its server: at the process's exit it would try the stopped server for
        # minutes ("All connection attempts failed") before letting a plain pytest end.
        with contextlib.suppress(RuntimeError):  # no log was sent: no worker
            APILogWorker.instance().drain()
        EventsWorker.drain_all()


@pytest.fixture
def work_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """agentfleet's work dir for the test (worktrees, leases, locks)."""
    work = tmp_path / "work"
    monkeypatch.setenv("AGENTFLEET_WORK_DIR", str(work))
    monkeypatch.setenv("AGENTFLEET_STOP_GRACE_S", "1")
    return work


def command(task_id: str, run: str, **keys: object) -> dict[str, object]:
    """A task done by a shell command (no model)."""
    return {"id": task_id, "prompt": f"do {task_id}", "agent": {"run": run}, **keys}


def run_sprint(tmp_path: Path, plan: dict[str, object]) -> tuple[bool, SprintReport]:
    """Run the sprint flow on ``plan``; (whether the flow run completed, its report)."""
    import flows.sprint as sprint_module

    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"agent": {"kind": "command"}, **plan}, sort_keys=False))
    report = tmp_path / "report.json"
    report.unlink(missing_ok=True)
    state = sprint_module.sprint(plan_path=str(path), report=str(report), no_cache=True,
                                 return_state=True)
    return state.is_completed(), SprintReport.model_validate_json(report.read_text())
