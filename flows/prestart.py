"""Start Prefect's embedded server before Prefect is imported: the two start-ups overlap.

``agentfleet run`` without ``PREFECT_API_URL`` pays two slow start-ups one after the
other: importing Prefect here, then the server process importing it again and opening
its database (5 to 11 s on 2 cores). Once the plan is checked, the server's process
is started at once from the main thread, behind ``agentfleet.lifeline`` (it dies with
this process), on a free port; ``flows/embedded.py`` then adopts it as Prefect's
embedded server instead of starting one. Nothing of Prefect is imported here.

When Prefect's settings (a profile) name a server after all, or the early process
ended (its port taken meanwhile), it is stopped and things go as without it.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

# Prefect 3.9's embedded server command (flows/embedded.py builds the same).
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
              "PREFECT__SERVER_FINAL": "1"}
QUIET = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"}

_early: tuple[int, subprocess.Popen[bytes]] | None = None


def uvicorn_command(port: int, app_dir: Path) -> list[str]:
    """The embedded server's command line, behind the lifeline of this process."""
    uvicorn = [
        sys.executable, "-m", "uvicorn",
        "--app-dir", str(app_dir),
        "--factory", "prefect.server.api.server:create_app",
        "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "error", "--lifespan", "on",
    ]  # fmt: skip
    return [sys.executable, "-m", "agentfleet.lifeline", str(os.getpid()), "--", *uvicorn]


def prestart_embedded_server() -> None:
    """Start the embedded server's process now, when nothing says a server is running."""
    global _early
    if _early is not None or os.environ.get("PREFECT_API_URL"):
        return
    if os.environ.get("PREFECT_SERVER_EPHEMERAL_ENABLED", "").lower() in ("0", "false"):
        return
    spec = importlib.util.find_spec("prefect")
    if spec is None or not spec.submodule_search_locations:
        return
    app_dir = Path(next(iter(spec.submodule_search_locations))).parent
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(uvicorn_command(port, app_dir),
                            env={**QUIET, **os.environ, **SERVER_ENV})
    _early = (port, proc)


def early_port() -> int | None:
    """The port of the early server, if one was started and still runs."""
    if _early is None or _early[1].poll() is not None:
        return None
    return _early[0]


def take_early(port: int | None) -> subprocess.Popen[bytes] | None:
    """The early server's process for Prefect to adopt, once, if it runs on ``port``."""
    global _early
    if _early is None or _early[0] != port or _early[1].poll() is not None:
        return None
    proc = _early[1]
    _early = None
    return proc


def stop_early() -> None:
    """Stop an early server nobody adopted (Prefect's settings name another server)."""
    global _early
    if _early is None:
        return
    proc = _early[1]
    _early = None
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
