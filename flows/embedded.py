"""Prefect's embedded server for ``agentfleet run``, tied to the life of the process.

When ``PREFECT_API_URL`` is unset, Prefect starts a server (``uvicorn``) as a child
process and stops it at exit, but only at a clean exit: after ``kill -9`` or a SIGTERM
that no handler turns into an exit, the server stayed behind. Here the same server is
started through ``agentfleet.lifeline`` (the kernel kills it when its parent ends) and
registered as Prefect's own embedded server, which Prefect then uses and stops as usual.

It also leaves out what needs the network (there may be none): the server's telemetry
heartbeat, whose start-up also raced other writes ("database is locked" tracebacks)
and printed "Failed to send telemetry". Only where the user did not decide otherwise.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from typing import Any

import prefect
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_SERVER_EPHEMERAL_ENABLED,
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
)
from prefect.settings.context import get_current_settings

from flows.prestart import early_port, stop_early, take_early

# Defaults for the embedded server; an environment variable or a Prefect profile wins.
QUIET = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
# Prefect waits 20 s by default; a first start (database migrations) on a busy machine
# takes longer, and a run that gives up then has done nothing.
MIN_STARTUP_TIMEOUT_S = 120


@functools.cache
def embedded_server_class() -> type:
    """``SubprocessASGIServer`` whose process dies with the thread that starts it.

    Made on first use: importing Prefect's server costs seconds that a run against
    ``PREFECT_API_URL`` (or one refused at once) should not pay.
    """
    from prefect.server.api.server import SubprocessASGIServer

    class EmbeddedServer(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            early = take_early(self.port)  # started before Prefect was imported
            if early is not None:
                return early
            # Prefect 3.9's command and environment, behind the lifeline.
            server_env = {
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
            }
            uvicorn = [
                sys.executable, "-m", "uvicorn",
                "--app-dir", str(prefect.__module_path__.parent),
                "--factory", "prefect.server.api.server:create_app",
                "--host", "127.0.0.1", "--port", str(self.port),
                "--log-level", "error", "--lifespan", "on",
            ]  # fmt: skip
            return subprocess.Popen(
                [sys.executable, "-m", "agentfleet.lifeline", str(os.getpid()), "--", *uvicorn],
                env={
                    **QUIET,
                    **os.environ,
                    **server_env,
                    **get_current_settings().to_environment_variables(exclude_unset=True),
                },
            )

    return EmbeddedServer


def start_embedded_server() -> str | None:
    """Start the embedded server now (call on the main thread); its API URL, or None.

    None when ``PREFECT_API_URL`` names a server (nothing to start) or ephemeral mode is
    off. Prefect's later ``SubprocessASGIServer()`` calls get this instance (one per port,
    and this one is the default's), so no second server starts, and it is stopped at exit.
    """
    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        stop_early()
        return None
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer._instances.get(None)
    if server is None or not server.running:
        SubprocessASGIServer._instances.pop(None, None)
        server = embedded_server_class()()
        server.port = server.port or early_port()  # adopt the one flows/prestart.py started
        server.start(
            timeout=max(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value(),
                        MIN_STARTUP_TIMEOUT_S)
        )
    return server.api_url
