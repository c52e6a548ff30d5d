"""End-to-end fixtures: a real Prefect server on PostgreSQL, the scripted model, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentfleet.sample import build_sample_repo, sample_plan, sample_script, write_plan
from agentfleet.testing import ScriptedModelServer
from tests.support.prefect_server import PrefectServer, own_prefect_server

ROOT = Path(__file__).resolve().parents[2]
AGENTFLEET = str(Path(sys.executable).parent / "agentfleet")


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """One real ``prefect server`` for the session, backed by a fresh PostgreSQL database."""
    with own_prefect_server(tmp_path_factory.mktemp("prefect-home")) as server:
        yield server


@pytest.fixture
def model(tmp_path: Path) -> Iterator[ScriptedModelServer]:
    """The scripted model, answering the sample sprint's eight tickets."""
    with ScriptedModelServer(sample_script(delay_s=0.4)) as server:
        yield server


@pytest.fixture
def sprint_env(
    tmp_path: Path, prefect_server: PrefectServer, model: ScriptedModelServer
) -> dict[str, str]:
    """The environment of an ``agentfleet`` process: like a fresh CI machine, no git identity,
    but Python writing its bytecode as on a user's machine. CI's machines set
    PYTHONDONTWRITEBYTECODE, which hid a demo that failed elsewhere: an agent's ``python3``
    left a ``__pycache__`` in its worktree, outside its paths."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AGENTFLEET_", "PREFECT_")) and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(prefect_server.env())
    env.update(model.agent_env(model.write_codex_home(tmp_path / "codex-home")))
    env.update(
        AGENTFLEET_WORK_DIR=str(tmp_path / "work"),
        # Attempt results are cached across runs: each test gets its own result storage,
        # or one test's sample sprint would be served from another's cache.
        PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(tmp_path / "results"),
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        PREFECT_LOGGING_LEVEL="INFO",
    )
    return env


def embedded_env(sprint_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """``sprint_env`` without PREFECT_API_URL: ``agentfleet run`` starts Prefect's embedded
    server (its database in the test's own PREFECT_HOME)."""
    env = {k: v for k, v in sprint_env.items()
           if not k.startswith("PREFECT_") or k == "PREFECT_RESULTS_LOCAL_STORAGE_PATH"}
    return {**env, "PREFECT_HOME": str(tmp_path / "prefect-home")}


@pytest.fixture
def sample(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    """``sample(**plan_overrides) -> (repo, plan_file)``: the sample service and its plan."""

    def make(**overrides: object) -> tuple[Path, Path]:
        repo = build_sample_repo(tmp_path / "orders-service")
        plan = write_plan(tmp_path / "sprint.yaml", sample_plan(repo="orders-service", **overrides))
        return repo, plan

    return make


def run_agentfleet(
    *args: str, env: dict[str, str], timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``agentfleet`` command to the end."""
    return subprocess.run(
        [AGENTFLEET, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
