"""Managed processes on real processes: bounded, stoppable, nothing left behind."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from agentfleet import process
from agentfleet.errors import VerificationError
from agentfleet.process import find_processes, run_shell, spawn
from tests.support.waiting import alive

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}


def _gone(proc: process.ManagedProcess) -> bool:
    return not find_processes(pgid=proc.pgid, marker=proc.marker)


def _sleepers(marker: str) -> list[int]:
    """Processes of this marker whose command line is ``sleep 1000``."""
    out = []
    for pid in find_processes(marker=marker):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x001000\x00":
                out.append(pid)
        except OSError:
            pass
    return out


def _wait_for(predicate, timeout_s: float = 10.0) -> None:  # noqa: ANN001
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def test_normal_exit_and_lines(tmp_path: Path, env: dict[str, str]) -> None:
    lines: list[tuple[str, str]] = []
    proc = spawn(
        ["bash", "-c", "echo out; echo err >&2; exit 3"], tmp_path, env,
        on_line=lambda s, t: lines.append((s, t)),
    )
    result = proc.wait(10)
    assert result.exit_status == 3
    assert not (result.timed_out or result.stuck or result.killed)
    assert sorted(lines) == [("stderr", "err"), ("stdout", "out")]
    assert process.live_processes() == []


def test_stdin_text_then_eof_and_devnull(tmp_path: Path, env: dict[str, str]) -> None:
    got: list[str] = []
    big = "x" * 300_000  # larger than a pipe buffer
    proc = spawn(["bash", "-c", "wc -c"], tmp_path, env, big, on_line=lambda s, t: got.append(t))
    assert proc.wait(10).exit_status == 0
    assert got == [str(len(big))]
    got.clear()
    proc = spawn(["bash", "-c", "cat; echo end"], tmp_path, env, None,
                 on_line=lambda s, t: got.append(t))
    assert proc.wait(10).exit_status == 0
    assert got == ["end"]


def test_own_session_and_marker(tmp_path: Path, env: dict[str, str]) -> None:
    got: list[str] = []
    proc = spawn(
        ["bash", "-c", 'echo "$AGENTFLEET_ATTEMPT_ID"; ps -o sid= -p $$; tty || true'],
        tmp_path, env, on_line=lambda s, t: got.append(t.strip()),
    )
    proc.wait(10)
    assert got[0] == proc.marker
    assert got[1] == str(proc.pid)  # session leader
    assert "not a tty" in got[2]


def test_timeout_kills_sleep_with_nothing_left(tmp_path: Path, env: dict[str, str]) -> None:
    proc = spawn(["sleep", "1000"], tmp_path, env, grace_s=1)
    info = proc.info
    assert [p.pid for p in process.live_processes()] == [proc.pid]
    result = proc.wait(timeout_s=0.5)
    assert result.timed_out and not result.killed
    assert result.exit_status is not None and result.exit_status < 0
    assert 0.5 <= result.duration_s < 3
    assert not alive(info.pid)
    assert find_processes(marker=info.marker) == []
    assert process.live_processes() == []


def test_escaped_setsid_and_double_fork_are_killed(tmp_path: Path, env: dict[str, str]) -> None:
    script = (
        "setsid sleep 1000 & "  # leaves the group
        "( ( sleep 1000 & ) & ) ; "  # double fork: reparented away from us
        "setsid bash -c 'trap \"\" TERM; sleep 1000' & "  # ignores SIGTERM: needs SIGKILL
        "echo ready; sleep 1000"
    )
    ready = threading.Event()
    proc = spawn(["bash", "-c", script], tmp_path, env, grace_s=0.5,
                 on_line=lambda s, t: ready.set())
    ready.wait(5)
    _wait_for(lambda: len(_sleepers(proc.marker)) == 4)
    sleepers = _sleepers(proc.marker)
    result = proc.wait(timeout_s=0.1)
    assert result.timed_out
    assert [p for p in sleepers if alive(p)] == []
    assert find_processes(marker=proc.marker) == []


def test_leftovers_are_killed_after_a_normal_exit(tmp_path: Path, env: dict[str, str]) -> None:
    proc = spawn(["bash", "-c", "setsid sleep 1000 & sleep 1000 & echo started"], tmp_path, env,
                 grace_s=1)
    result = proc.wait(timeout_s=10)
    assert result.exit_status == 0 and not result.timed_out
    assert find_processes(marker=proc.marker) == []


def test_idle_timeout_stops_an_idle_process(tmp_path: Path, env: dict[str, str]) -> None:
    proc = spawn(["bash", "-c", "echo hi; sleep 1000"], tmp_path, env, grace_s=1)
    result = proc.wait(timeout_s=20, idle_timeout_s=0.5)
    assert result.stuck and not result.timed_out
    assert result.duration_s < 5
    assert _gone(proc)


def test_idle_timeout_spares_a_busy_process(tmp_path: Path, env: dict[str, str]) -> None:
    proc = spawn(["bash", "-c", "sleep 1.5; echo done"], tmp_path, env)
    result = proc.wait(timeout_s=20, idle_timeout_s=0.3, is_busy=lambda: True)
    assert result.exit_status == 0 and not result.stuck


def test_cancel_event_stops_it(tmp_path: Path, env: dict[str, str]) -> None:
    cancel = threading.Event()
    proc = spawn(["bash", "-c", "sleep 1000"], tmp_path, env, grace_s=1)
    threading.Timer(0.3, cancel.set).start()
    result = proc.wait(timeout_s=30, cancel=cancel)
    assert result.killed and not result.timed_out
    assert result.duration_s < 5
    assert _gone(proc)


def test_sigterm_then_sigkill_after_grace(tmp_path: Path, env: dict[str, str]) -> None:
    got: list[str] = []
    proc = spawn(["bash", "-c", "trap 'echo term' TERM; echo ready; while :; do sleep 0.05; done"],
                 tmp_path, env, grace_s=0.5, on_line=lambda s, t: got.append(t))
    _wait_for(lambda: "ready" in got)
    result = proc.wait(timeout_s=0.2)
    assert result.timed_out
    assert "term" in got  # it was asked first
    assert result.exit_status == -9
    assert _gone(proc)


def test_lines_arrive_before_the_end(tmp_path: Path, env: dict[str, str]) -> None:
    seen = threading.Event()
    proc = spawn(["bash", "-c", "echo first; sleep 1000"], tmp_path, env, grace_s=1,
                 on_line=lambda s, t: seen.set())
    assert seen.wait(5)
    assert proc.poll() is None  # still running
    proc.stop()
    assert proc.wait(5).killed
    assert _gone(proc)


def test_a_failing_callback_does_not_block_the_pipe(tmp_path: Path, env: dict[str, str]) -> None:
    def boom(stream: str, text: str) -> None:
        raise RuntimeError("callback bug")

    proc = spawn(["bash", "-c", "seq 1 200000"], tmp_path, env, on_line=boom)
    result = proc.wait(timeout_s=20)
    assert result.exit_status == 0 and not result.timed_out
    assert isinstance(proc.callback_error, RuntimeError)


def test_stop_all_stops_every_live_process(tmp_path: Path, env: dict[str, str]) -> None:
    procs = [spawn(["bash", "-c", "setsid sleep 1000 & sleep 1000"], tmp_path, env, grace_s=1)
             for _ in range(3)]
    results: list[process.WaitResult] = []
    waiters = [threading.Thread(target=lambda p=p: results.append(p.wait(timeout_s=60)))
               for p in procs]
    for t in waiters:
        t.start()
    _wait_for(lambda: all(len(_sleepers(p.marker)) == 2 for p in procs))
    assert {i.pid for i in process.live_processes()} == {p.pid for p in procs}
    started = time.monotonic()
    assert process.stop_all() == 3
    assert time.monotonic() - started < 5  # in parallel, not one grace after another
    for t in waiters:
        t.join(10)
    assert len(results) == 3 and all(r.killed for r in results)
    assert all(_gone(p) for p in procs)
    assert process.live_processes() == []


def test_run_shell_output_tail_and_status(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_shell("for i in $(seq 1 500); do echo line $i; done; echo oops >&2; exit 4",
                       tmp_path, env, timeout_s=10)
    assert result.exit_status == 4 and not result.passed
    lines = result.output_tail.splitlines()
    assert len(lines) == 200
    assert lines[-1] == "oops" and lines[-2] == "line 500"
    assert result.command.startswith("for i")


def test_a_command_that_cannot_be_started_is_a_verification_error(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    with pytest.raises(VerificationError) as error:
        run_shell("make check", gone, {"PATH": "/usr/bin:/bin"}, timeout_s=5)
    assert f"could not run 'make check' in {gone}" in str(error.value)
    with pytest.raises(VerificationError, match="No such file"):  # no bash on this PATH
        run_shell("true", tmp_path, {"PATH": str(tmp_path)}, timeout_s=5)


def test_run_shell_runs_in_cwd_with_given_env(tmp_path: Path) -> None:
    result = run_shell('pwd; echo "$ONLY"', tmp_path, {"PATH": "/usr/bin:/bin", "ONLY": "given"},
                       timeout_s=10)
    assert result.passed
    assert result.output_tail.splitlines() == [str(tmp_path), "given"]


def test_run_shell_timeout_and_cancel(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_shell("setsid sleep 1000 & sleep 1000", tmp_path, env, timeout_s=0.3, grace_s=1)
    assert result.timed_out and not result.passed
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    result = run_shell("sleep 1000", tmp_path, env, timeout_s=30, cancel=cancel, grace_s=1)
    assert result.killed
    assert process.live_processes() == []


def test_kill_all_for_a_lease(tmp_path: Path, env: dict[str, str]) -> None:
    proc = spawn(["bash", "-c", "setsid sleep 1000 & sleep 1000"], tmp_path, env)
    _wait_for(lambda: len(_sleepers(proc.marker)) == 2)
    killed = process.kill_all(proc.pgid, proc.marker, grace_s=1)
    assert proc.pid in killed
    assert find_processes(pgid=proc.pgid, marker=proc.marker) == []
    proc.wait(5)


def test_a_huge_line_reaches_on_line_cut_and_memory_stays_bounded(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # 50 MB without a newline, then a normal line: the reader never holds the 50 MB.
    script = "head -c 50000000 /dev/zero | tr '\\0' x; echo; echo after"
    lines: list[str] = []
    proc = spawn(["bash", "-c", script], tmp_path, env, on_line=lambda _, line: lines.append(line))
    result = proc.wait(timeout_s=60)
    assert result.exit_status == 0
    assert len(lines) == 2 and lines[1] == "after"
    assert lines[0].startswith("x" * 1000) and lines[0].endswith(
        f" … (line cut at {process.MAX_LINE_BYTES:,} bytes)")
    assert len(lines[0]) < process.MAX_LINE_BYTES + 100


def test_run_shell_tail_is_bounded_in_lines_and_in_bytes(
    tmp_path: Path, env: dict[str, str]
) -> None:
    script = "for i in $(seq 1 300); do head -c 20000 /dev/zero | tr '\\0' y; echo; done; echo end"
    done = run_shell(script, tmp_path, env, timeout_s=60)
    assert done.passed and done.output_tail.endswith("end")
    lines = done.output_tail.splitlines()
    assert len(lines) == 200  # the last 200 lines
    assert all(len(line) <= process.TAIL_LINE_CHARS + 2 for line in lines)
