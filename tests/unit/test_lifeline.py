"""A command started through the lifeline dies with its parent, whatever ends the parent."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from agentfleet.process import find_processes

pytestmark = pytest.mark.timeout(60)

# A parent that starts `sleep 1000` through the lifeline, says so, then waits to be killed.
PARENT = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-m", "agentfleet.lifeline", str(os.getpid()), "--",
                          "sleep", "1000"])
print(child.pid, flush=True)
time.sleep(1000)
"""


def _wait(predicate, timeout_s: float = 15.0) -> None:  # noqa: ANN001
    end = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.05)


def _is_sleep(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x001000\x00"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_the_child_dies_with_its_parent(sig: signal.Signals) -> None:
    marker = uuid.uuid4().hex
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "AGENTFLEET_ATTEMPT_ID": marker}, start_new_session=True,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        _wait(lambda: _is_sleep(child))  # exec'd: the lifeline is now `sleep`
        os.kill(parent.pid, sig)
        parent.wait(timeout=10)
        _wait(lambda: not find_processes(marker=marker))
    finally:
        for pid in find_processes(marker=marker):
            os.kill(pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()


def test_a_parent_that_is_already_gone_starts_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agentfleet.lifeline", "1", "--", "touch", str(tmp_path / "x")],
        capture_output=True, timeout=30,
    )
    assert done.returncode == 1 and not (tmp_path / "x").exists()


# A parent that starts a child watching it; the child writes a file when the parent is gone.
WATCHER = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", '''
import pathlib, sys, time
from agentfleet.lifeline import watch_parent
with watch_parent(lambda pid: pathlib.Path(sys.argv[1]).write_text(str(pid)), poll_s=0.05):
    print("watching", flush=True)
    time.sleep(60)
''', sys.argv[1]], stdout=sys.stdout)
time.sleep(1000)
"""


def test_a_watcher_hears_that_its_parent_is_gone(tmp_path: Path) -> None:
    told = tmp_path / "told"
    parent = subprocess.Popen([sys.executable, "-c", WATCHER, str(told)],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "watching"
        assert not told.exists()
        os.kill(parent.pid, signal.SIGKILL)  # no handler of the parent runs
        _wait(lambda: told.exists() and told.read_text())  # written, not just created
        assert told.read_text() == str(parent.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)


def test_a_watcher_hears_that_a_forebear_is_gone_while_its_parent_has_not_reaped_it(
        tmp_path: Path) -> None:
    # A warm engine's run watches its worker, which is not its parent. Killed, the worker
    # stays a zombie until its own parent (here this test) reaps it: kill(pid, 0) still
    # finds it, the pidfd does not.
    told = tmp_path / "told"
    forebear = subprocess.Popen(["sleep", "1000"])
    watcher = subprocess.Popen([sys.executable, "-c", f"""
import pathlib, time
from agentfleet.lifeline import watch_parent
with watch_parent(lambda pid: pathlib.Path({str(told)!r}).write_text(str(pid)),
                  poll_s=0.05, parent={forebear.pid}):
    print("watching", flush=True)
    time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout is not None
        assert watcher.stdout.readline().strip() == "watching"
        os.kill(forebear.pid, signal.SIGKILL)
        _wait(lambda: told.exists() and told.read_text())  # written, not just created
        assert told.read_text() == str(forebear.pid)
        assert forebear.poll() == -signal.SIGKILL  # reaped only now
    finally:
        watcher.kill()
        watcher.wait(timeout=10)
        forebear.kill()
        forebear.wait(timeout=10)
