"""After ``kill -9`` (or SIGTERM) of ``agentfleet run`` nothing it started lives on for long:
a running ``final_verify`` is stopped by the next run or by ``agentfleet clean --yes``,
and Prefect's embedded server dies with the process.

Real ``agentfleet run`` processes, real signals, processes found through ``/proc``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_git
from tests.e2e.conftest import AGENTFLEET, ROOT, embedded_env, run_agentfleet
from tests.support.waiting import cmdline, wait_for

MARK = "AGENTFLEET_TEST_RUN_MARK"  # inherited by everything a run starts


def marked(mark: str) -> list[int]:
    """Live processes carrying ``MARK=mark`` in their environment."""
    tag = f"{MARK}={mark}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if tag in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if state not in ("Z", "X"):
                    found.append(int(pid))
        except OSError:
            continue
    return found


def start(plan: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [AGENTFLEET, "run", str(plan)], env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )


def kill_all(mark: str) -> None:
    for pid in marked(mark):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.server
def test_a_final_verify_of_a_killed_run_is_stopped_by_the_next_run_and_by_clean(
    make_repo, sprint_env: dict[str, str], tmp_path: Path
) -> None:
    repo = make_repo()
    started = tmp_path / "verifying"
    plan = tmp_path / "plan.yaml"

    def write(final_verify: str) -> None:
        plan.write_text(yaml.safe_dump({
            "name": "leased", "repo": str(repo), "final_verify": final_verify,
            "tasks": [{"id": "one", "prompt": "one", "paths": ["one.txt"],
                       "agent": {"kind": "command", "run": "echo 1 > one.txt"}}],
        }))

    # Touches a file so the test knows it runs, then verifies for a very long time.
    write(f"touch {started}; sleep 1000")
    work = Path(sprint_env["AGENTFLEET_WORK_DIR"])
    for ender in ("the next run", "agentfleet clean --yes"):
        mark = uuid.uuid4().hex
        env = {**sprint_env, MARK: mark}
        started.unlink(missing_ok=True)
        run = start(plan, env, tmp_path / "run.log")
        try:
            wait_for(started.exists, 120, lambda: (tmp_path / "run.log").read_text()[-2000:])
            os.kill(run.pid, signal.SIGKILL)
            run.wait(timeout=10)
            # `touch` ran; its shell may not have started `sleep` yet on a loaded machine.
            wait_for(lambda m=mark: [p for p in marked(m) if cmdline(p).startswith("sleep 1000")],
                     15, "final_verify to outlive the killed run")
            [tree] = [p for p in (work / "worktrees").glob("*/leased/verify-*")]
            if ender == "the next run":
                write("true")
                done = run_agentfleet("run", str(plan), env=env)
                out = done.stdout + done.stderr
                assert done.returncode == 0, out[-3000:]
                assert "orphan of a killed run" in out and "leased/final_verify#1" in out
                write(f"touch {started}; sleep 1000")
                run_git(repo, "branch", "-D", "agentfleet/leased")  # so there is work again
            else:
                cleaned = run_agentfleet("clean", "--yes", env=env)
                assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
                assert "stopped" in cleaned.stdout and str(tree) in cleaned.stdout
            # Stopped before its worktree went: no process of it, no worktree, no lease.
            wait_for(lambda m=mark: not any(cmdline(p).startswith("sleep 1000") for p in marked(m)),
                     15, "final_verify to be stopped")
            assert not tree.exists()
            assert run_git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
            assert not list((work / "leases").glob("*/leased/*.json"))
        finally:
            kill_all(mark)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_the_embedded_server_dies_with_agentfleet_run_and_says_nothing_of_telemetry(
    make_repo, sprint_env: dict[str, str], tmp_path: Path, sig: signal.Signals
) -> None:
    repo = make_repo()
    started = tmp_path / "agent-started"
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({
        "name": "embedded", "repo": str(repo),
        "tasks": [{"id": "slow", "prompt": "slow", "paths": ["slow.txt"],
                   "agent": {"kind": "command", "run": f"touch {started}; sleep 1000"}}],
    }))
    mark = uuid.uuid4().hex
    log = tmp_path / "run.log"
    run = start(plan, {**embedded_env(sprint_env, tmp_path), MARK: mark}, log)
    try:
        wait_for(started.exists, 180, lambda: log.read_text()[-2000:])
        servers = [p for p in marked(mark) if "uvicorn" in cmdline(p)]
        assert servers, [cmdline(p) for p in marked(mark)]
        os.kill(run.pid, sig)
        run.wait(timeout=60)
        wait_for(lambda: not any("uvicorn" in cmdline(p) for p in marked(mark)), 20,
                 lambda: f"no server left, still: {[cmdline(p) for p in marked(mark)]}")
        output = log.read_text()
        assert "Starting temporary server" in output
        for noise in ("telemetry", "database is locked", "Traceback"):
            assert noise not in output, output[-3000:]
    finally:
        kill_all(mark)
