"""A second sprint: ``agentfleet run`` in a process of its own, on the test's Prefect server.

Limits shared across sprints are only proven by two processes; the test runs one sprint
in its own process and this one beside it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from prefect.settings import get_current_settings

AGENTFLEET = Path(sys.executable).parent / "agentfleet"


def process_env(results: Path, work_dir: Path | None = None, **more: str) -> dict[str, str]:
    """This process's environment on the current Prefect API, with results of its own
    (and a work dir of its own, else the test's)."""
    env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url),
           "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(results), **more}
    if work_dir is not None:
        env["AGENTFLEET_WORK_DIR"] = str(work_dir)
    return env


@contextlib.contextmanager
def sprint_process(plan: Path, env: dict[str, str], *args: str,
                   stderr: int = subprocess.STDOUT) -> Iterator[subprocess.Popen[str]]:
    """``agentfleet run plan *args`` (output piped, stderr with stdout unless ``stderr``
    says otherwise); killed if it still runs when the block ends."""
    proc = subprocess.Popen([str(AGENTFLEET), "run", str(plan), *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=stderr)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
