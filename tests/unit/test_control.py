"""Stopping one attempt or one run never touches another's processes."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from agentfleet import process
from agentfleet.control import RunControl


def _sleeper(tmp_path: Path, control) -> process.ManagedProcess:  # noqa: ANN001
    with process.tracked_in(control.processes):
        return process.spawn(["sleep", "60"], tmp_path, dict(os.environ), grace_s=0.5)


def _waiter(proc: process.ManagedProcess, cancel: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=proc.wait, args=(60, cancel), daemon=True)
    thread.start()
    return thread


def test_stopping_one_attempt_leaves_its_siblings_running(tmp_path: Path) -> None:
    run = RunControl("s")
    first, second = run.attempt("t#1"), run.attempt("t#2")
    p1, p2 = _sleeper(tmp_path, first), _sleeper(tmp_path, second)
    try:
        assert [i.pid for i in first.processes.live()] == [p1.pid]
        assert run.stop_attempt("t#1", "early stop") == 1
        assert p1.poll() is not None and first.stopped and first.reason == "early stop"
        assert p2.poll() is None and not second.stopped
        assert first.processes.live() == []
    finally:
        p1.stop(grace_s=0)
        p2.stop(grace_s=0)


def test_two_runs_in_one_process_never_stop_each_other(tmp_path: Path) -> None:
    mine, theirs = RunControl("a"), RunControl("b")
    p1 = _sleeper(tmp_path, mine.attempt("x#1"))
    p2 = _sleeper(tmp_path, theirs.attempt("x#1"))
    waiting = _waiter(p2, theirs.attempt("x#1").cancel)
    try:
        assert mine.stop(grace_s=0.5) == 1
        assert p1.poll() is not None
        assert p2.poll() is None and not theirs.attempt("x#1").stopped
        assert waiting.is_alive()
        # An attempt that starts after its run was stopped starts stopped.
        assert mine.attempt("y#1").stopped
        # 1, or 0 when its waiter, woken by the cancel, stopped the process first.
        assert theirs.stop(grace_s=0.5) in (0, 1)
        waiting.join(10)
        assert not waiting.is_alive() and p2.poll() is not None
    finally:
        p1.stop(grace_s=0)
        p2.stop(grace_s=0)
