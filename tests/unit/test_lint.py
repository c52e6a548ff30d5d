"""``make lint`` holds in CI too: ruff over the project, mypy over everything but tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_ruff_finds_nothing() -> None:
    done = subprocess.run(
        [str(BIN / "ruff"), "check", "agentfleet", "flows", "tasks", "blocks", "tests", "bench"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_finds_nothing_in_the_code() -> None:
    # No cache: a stale one (another checkout, another mypy) must not hide a complaint.
    done = subprocess.run(
        [str(BIN / "mypy"), "--cache-dir", "/dev/null"],  # files and plugin: pyproject.toml
        cwd=ROOT, capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success" in done.stdout
