"""A work pool of real process workers running the ``attempt`` deployment (``placement: pool``).

Each worker starts from its own folder with its own work dir, and sees nothing else of the
test's folder but the result storage folder standing for a bucket shared by the sprint and
every worker (and what the test shares, the remote): not the other workers' folders, not
the sprint's work dir (``tests.support.walls``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.support.prefect_server import PrefectServer, api
from tests.support.waiting import processes_under
from tests.support.walls import walled_in

ROOT = Path(__file__).resolve().parents[2]
PREFECT = [sys.executable, "-m", "prefect"]
AGENTFLEET = [sys.executable, "-m", "agentfleet.cli"]


def prefect(*args: str, env: Mapping[str, str], timeout: float = 300) -> None:
    """Run the ``prefect`` CLI; fail the test with its output when it fails."""
    done = subprocess.run([*PREFECT, *args], env=dict(env), cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"prefect {' '.join(args)}: {done.stdout[-2000:]}" \
        f"{done.stderr[-2000:]}"


def pool_env(prefect_server: PrefectServer, tmp_path: Path, pool: str,
             extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The sprint's (and, with their own work dirs, the workers') environment; ``extra``
    last (e.g. the scripted model's Codex home and key)."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AGENTFLEET_", "PREFECT_"))},
        **prefect_server.env(),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(tmp_path / "bucket"),  # shared, as a bucket
        "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_LOGGING_LEVEL": "INFO",
        "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
        "AGENTFLEET_ATTEMPT_POOL": pool, "AGENTFLEET_WORK_DIR": str(tmp_path / "sprint-work"),
        # The deployment runs `python -m flows.engine`: agentfleet's Python first.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PWD": str(ROOT),
        **(extra or {}),
    }


def deploy_attempt(env: Mapping[str, str], tmp_path: Path, pool: str) -> None:
    """Create the process work pool and deploy ``attempt`` (prefect.yaml's) on it."""
    deploy(env, tmp_path, pool, "attempt")


def deploy(env: Mapping[str, str], tmp_path: Path, pool: str, name: str) -> None:
    """Create the process work pool and deploy prefect.yaml's deployment ``name`` on it."""
    prefect("work-pool", "create", pool, "--type", "process", "--overwrite", env=env)
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    config["deployments"] = [d for d in config["deployments"] if d["name"] == name]
    config["deployments"][0]["work_pool"]["name"] = pool
    pinned = tmp_path / f"prefect-{name}.yaml"
    pinned.write_text(yaml.safe_dump(config))
    prefect("--no-prompt", "deploy", "--all", "--prefect-file", str(pinned), env=env)


@dataclass
class Worker:
    """One ``agentfleet worker`` process (Prefect's worker), its folder and its log."""

    name: str
    process: subprocess.Popen
    home: Path

    @property
    def log(self) -> Path:
        return self.home / "worker.log"

    def text(self) -> str:
        """Everything it logged so far (its flow runs' logs included)."""
        return self.log.read_text()


def start_worker(name: str, tmp_path: Path, env: Mapping[str, str], pool: str,
                 own: Callable[[Path], Mapping[str, str]] | None = None,
                 shared: Sequence[Path] = (), root: Path | None = None) -> Worker:
    """A process worker taking one flow run at a time (``agentfleet worker``: its warm
    engine first), from ``tmp_path/name``: its work dir, temp dir and Prefect home there,
    plus ``own(home)`` (e.g. its own Codex home). Of ``root`` (default ``tmp_path``) it
    sees only its own folder, the bucket (``PREFECT_RESULTS_LOCAL_STORAGE_PATH``) and
    ``shared``."""
    home = tmp_path / name
    (home / "tmp").mkdir(parents=True)
    worker_env = {**env, "AGENTFLEET_WORK_DIR": str(home / "work"), "TMPDIR": str(home / "tmp"),
                  "PREFECT_HOME": str(home / "prefect"), "PWD": str(home),
                  **(own(home) if own is not None else {})}
    bucket = Path(worker_env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"])
    bucket.mkdir(parents=True, exist_ok=True)
    command = [*AGENTFLEET, "worker", "--pool", pool, "--limit", "1", "--name", name]
    process = subprocess.Popen(
        walled_in(command, root or tmp_path, [home, bucket, *shared], cwd=home),
        env=worker_env, cwd=home, stdout=(home / "worker.log").open("w"),
        stderr=subprocess.STDOUT, start_new_session=True,
    )
    return Worker(name, process, home)


def stop_workers(workers: list[Worker], tmp_path: Path) -> None:
    """Stop every worker (SIGTERM, then SIGKILL) and any process left under ``tmp_path``."""
    for worker in workers:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.process.pid, signal.SIGTERM)
    for worker in workers:
        try:
            worker.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.process.pid, signal.SIGKILL)
    # Whatever a test that failed midway left running.
    for pid in processes_under(tmp_path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def attempt_pool(prefect_server: PrefectServer, tmp_path: Path, pool: str, names: list[str],
                 extra: Mapping[str, str] | None = None,
                 own: Callable[[Path], Mapping[str, str]] | None = None,
                 shared: Sequence[Path] = (),
                 ) -> Iterator[tuple[dict[str, str], list[Worker]]]:
    """The sprint's environment and started workers on a freshly deployed ``pool``; the
    workers are stopped at the end. ``own``: each worker's own settings, from its folder;
    ``shared``: the folders of ``tmp_path`` every worker sees besides its own and the
    bucket (the remote)."""
    env = pool_env(prefect_server, tmp_path, pool, extra)
    deploy_attempt(env, tmp_path, pool)
    workers: list[Worker] = []
    try:
        for name in names:
            workers.append(start_worker(name, tmp_path, env, pool, own, shared))
        yield env, workers
    finally:
        stop_workers(workers, tmp_path)


def flow_runs(api_url: str, names: list[str]) -> list[dict]:
    """The server's flow runs of these names (JSON, as the API gives them)."""
    return api(api_url, "/flow_runs/filter", {"flow_runs": {"name": {"any_": names}}})
