"""A real ``prefect server`` on loopback, backed by PostgreSQL as in production (or SQLite)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PG_DSN = "postgresql+asyncpg://postgres@127.0.0.1:5432/{db}"
# Serializes the template's making among the test processes (xdist) of this machine; one
# per user, who may not open another's file in /tmp.
TEMPLATE_LOCK = Path(f"/tmp/agentfleet-prefect-template-{os.getuid()}.lock")


def api(api_url: str, path: str, body: dict | None = None) -> Any:
    """The Prefect REST API's parsed answer to ``path``: a POST of ``body``, else a GET."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{api_url}{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _psql(sql: str) -> str:
    return subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-tAqc", sql],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def migrated_template() -> str:
    """A database a server has started on once (migrated, its block types registered),
    made once per machine and Prefect version.

    Each server's database is a copy of it (``CREATE DATABASE ... TEMPLATE``, tens of
    milliseconds): a server's first start on a fresh database costs ~2 s more CPU and
    ~2.7 s more time (its migrations), on a suite that is CPU-bound. Made under another
    name and renamed when done: a run killed half-way leaves nothing that passes for it."""
    name = "agentfleet_template_" + re.sub(r"\W", "_", version("prefect"))
    with TEMPLATE_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").strip():
            return name
        building = f"{name}_building"
        _psql(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')
        _psql(f'CREATE DATABASE "{building}"')
        with tempfile.TemporaryDirectory() as home:
            server = _serve(Path(home), building, 180)
            server.process.terminate()
            server.process.wait(timeout=30)
        # Its connections may outlive the process by a moment: a rename needs none.
        _psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
              f"WHERE datname = '{building}'")
        _psql(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
        return name


@dataclass
class PrefectServer:
    api_url: str
    home: Path
    database: str
    process: subprocess.Popen
    ui_url: str = ""

    def env(self) -> dict[str, str]:
        """Environment for a client process of this server."""
        return {
            "PREFECT_API_URL": self.api_url,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(self.home / "storage"),
        }

    def halt(self) -> None:
        """Stop the server process, keeping its database (``start_again``)."""
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def start_again(self, timeout_s: float = 90) -> None:
        """The halted server back, on its database and port (its clients' URL holds), in
        this object: whoever stops it stops the new process."""
        self.process = _serve(self.home, self.database, timeout_s,
                              port=urlsplit(self.api_url).port).process

    def stop(self) -> None:
        self.halt()
        if self.database != "sqlite":
            _psql(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


def start_prefect_server(
    home: Path,
    timeout_s: float = 90,
    *,
    database: str = "postgresql",
    ui: bool = False,
    env_extra: dict[str, str] | None = None,
) -> PrefectServer:
    """Start a server on a fresh database (``postgresql`` or ``sqlite`` in ``home``); wait
    until it answers. ``ui``: serve the Prefect UI on the same port too."""
    if database != "sqlite":
        database = f"agentfleet_test_{uuid.uuid4().hex[:8]}"
        _psql(f'CREATE DATABASE "{database}" TEMPLATE "{migrated_template()}"')
    return _serve(home, database, timeout_s, ui=ui, env_extra=env_extra)


@contextlib.contextmanager
def own_prefect_server(home: Path) -> Iterator[PrefectServer]:
    """A server of the test's own on PostgreSQL (``home`` made), stopped and its database
    dropped when the block ends, halted and started again meanwhile or not."""
    home.mkdir(parents=True, exist_ok=True)
    server = start_prefect_server(home)
    try:
        yield server
    finally:
        server.stop()


def _serve(home: Path, database: str, timeout_s: float, *, ui: bool = False,
           env_extra: dict[str, str] | None = None, port: int | None = None) -> PrefectServer:
    """A server on PostgreSQL database ``database`` (or ``sqlite``: a file in ``home``)."""
    port = port or free_port()
    env = dict(os.environ)
    connection = (f"sqlite+aiosqlite:///{home / 'prefect.db'}" if database == "sqlite"
                  else PG_DSN.format(db=database))
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_DATABASE_CONNECTION_URL=connection,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="true" if ui else "false",
        PREFECT_UI_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_SERVER_API_HOST="127.0.0.1",
        **(env_extra or {}),
    )
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "ab")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api_url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log_tail = (home / "server.log").read_text()[-3000:]
            raise RuntimeError(f"prefect server exited: {log_tail}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:
                if r.status == 200:
                    return PrefectServer(api_url, home, database, process,
                                         ui_url=f"http://127.0.0.1:{port}")
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("prefect server did not become healthy in time")
