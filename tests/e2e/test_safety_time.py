"""Agents bounded in time and leaving nothing behind, through ``agentfleet run`` and ``clean``.

The real Codex CLI against the scripted model where Codex's own behaviour is the point
(a hung command, a silent stream, a long command); ``command`` agents elsewhere.
Processes are found in /proc by a tag every agent inherits through its environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
import yaml

from agentfleet.leases import Lease, list_leases, live_processes
from agentfleet.process import find_processes
from agentfleet.testing import Fault, Response, Rule, Script, ScriptedModelServer
from tests.conftest import run_git
from tests.e2e.conftest import AGENTFLEET, ROOT, run_agentfleet
from tests.support.waiting import cmdline, wait_for

pytestmark = [pytest.mark.codex, pytest.mark.timeout(180)]

SLEEP = b"sleep\x001000\x00"


def tagged(tag: str, cmdline: bytes | None = None) -> set[int]:
    """Live (not zombie) processes whose environment carries ``E2E_TAG=tag``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                continue
            if f"E2E_TAG={tag}".encode() not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if cmdline is None or (entry / "cmdline").read_bytes() == cmdline:
                found.add(int(entry.name))
        except (OSError, IndexError):
            pass
    return found



def write_plan(path: Path, plan: dict) -> Path:
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def worktrees(repo: Path) -> list[str]:
    out = run_git(repo, "worktree", "list", "--porcelain")
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("worktree ")]


TIME_SCRIPT = Script(rules=[
    Rule(name="hung", match="[hung]", responses=[
        Response(steps=[{"do": "exec", "cmd": "sleep 1000", "yield_time_ms": 600_000}]),
    ]),
    Rule(name="silent", match="[silent]", faults=[Fault(kind="silent", times=50)]),
    Rule(name="busy", match="[busy]", responses=[
        Response(steps=[{"do": "exec", "cmd": "sleep 6 && echo done > busy.txt",
                         "yield_time_ms": 600_000}]),
        Response(steps=[{"do": "message", "text": "Ran the long test suite."}]),
    ]),
])


def test_timeouts_and_idleness_stop_agents_and_leave_no_process_or_worktree(
    make_repo, sprint_env, model: ScriptedModelServer, tmp_path: Path
) -> None:
    repo = make_repo()
    model.set_script(TIME_SCRIPT)
    # Codex would wait 5 minutes on the silent stream by itself.
    model.write_codex_home(Path(sprint_env["CODEX_HOME"]), request_max_retries=0,
                           stream_max_retries=0, stream_idle_timeout_ms=300_000)
    tag = uuid.uuid4().hex
    env = {**sprint_env, "E2E_TAG": tag, "AGENTFLEET_STOP_GRACE_S": "2"}
    plan = write_plan(tmp_path / "plan.yaml", {
        "name": "time", "repo": str(repo), "retries": 0, "timeout": "40s",
        "limits": {"concurrency": 4},
        "tasks": [
            # Long enough for four agents starting at once on a starved machine to have
            # Codex's `sleep` running before it ends (4 s once was not).
            {"id": "hung", "prompt": "[hung] run the tests", "paths": ["hung.txt"],
             "timeout": "8s"},
            {"id": "escape", "prompt": "leave a daemon", "paths": ["escape.txt"],
             "timeout": "3s",
             "agent": {"kind": "command", "run": "setsid sleep 1000 & sleep 1000"}},
            {"id": "silent", "prompt": "[silent] wait for the model", "paths": ["silent.txt"],
             "idle_timeout": "3s"},
            {"id": "busy", "prompt": "[busy] run a long command", "paths": ["busy.txt"],
             "idle_timeout": "3s"},
        ],
    })
    report = tmp_path / "report.json"
    seen: set[int] = set()
    stop = threading.Event()

    def watch() -> None:  # every `sleep 1000` an agent started, while the sprint runs
        while not stop.is_set():
            seen.update(tagged(tag, SLEEP))
            stop.wait(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        run = run_agentfleet("run", str(plan), "--report", str(report), env=env, timeout=150)
    finally:
        stop.set()
        watcher.join()

    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    tasks = {t["task"]: t for t in json.loads(report.read_text())["tasks"]}
    assert tasks["hung"]["outcome"] == "failed"
    assert "agent timed_out: timed out after 8s" in tasks["hung"]["detail"]
    assert tasks["escape"]["outcome"] == "failed"
    assert "agent timed_out: timed out after 3s" in tasks["escape"]["detail"]
    assert tasks["silent"]["outcome"] == "failed"
    assert "stuck: no event for 3s while no command was running" in tasks["silent"]["detail"]
    # Six seconds of a command with no event is work, not idleness.
    assert tasks["busy"]["outcome"] == "applied", tasks["busy"]
    assert run_git(repo, "show", "agentfleet/time:busy.txt") == "done\n"
    assert tasks["hung"]["duration_s"] < 8 + 2 + 5 and tasks["silent"]["duration_s"] < 3 + 2 + 5

    # Codex's `sleep 1000`, the command agent's and its `setsid` child: all seen, all gone.
    assert len(seen) >= 3
    assert tagged(tag) == set(), [Path(f"/proc/{p}/cmdline").read_bytes() for p in tagged(tag)]
    assert worktrees(repo) == [str(repo)]
    work = Path(env["AGENTFLEET_WORK_DIR"])
    assert not [p for p in (work / "worktrees").rglob("*") if (p / ".git").exists()]
    assert list_leases(work) == []


def _codex_runs(lease: Lease) -> bool:
    """Whether `codex exec` itself (Node's launcher or the native binary) of the lease runs,
    not what it started."""
    return any("codex exec " in cmdline(pid) for pid in live_processes(lease))


SLOW_SCRIPT = Script(rules=[
    Rule(name="slow", match="[slow]", responses=[
        Response(steps=[{"do": "message", "text": "Finally."}], delay_s=600),
    ]),
])


def test_orphans_of_a_killed_run_are_stopped_by_the_next_run_and_clean_removes_kept_worktrees(
    make_repo, sprint_env, model: ScriptedModelServer, tmp_path: Path
) -> None:
    repo = make_repo()
    model.set_script(SLOW_SCRIPT)
    tag = uuid.uuid4().hex
    env = {**sprint_env, "E2E_TAG": tag, "AGENTFLEET_STOP_GRACE_S": "2"}
    work = Path(env["AGENTFLEET_WORK_DIR"])
    plan = tmp_path / "plan.yaml"
    write_plan(plan, {
        "name": "orphans", "repo": str(repo), "retries": 0,
        "tasks": [
            {"id": "slow-codex", "prompt": "[slow] think hard", "paths": ["slow.txt"]},
            {"id": "slow-command", "prompt": "wait", "paths": ["wait.txt"],
             "agent": {"kind": "command", "run": "sleep 1000"}},
        ],
    })
    first = subprocess.Popen(
        [AGENTFLEET, "run", str(plan)], env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        def both_agents_leased() -> bool:
            leases = [lease for _, lease in list_leases(work) if lease and lease.processes]
            return len(leases) == 2 and bool(model.requests_for("slow")) and bool(
                tagged(tag, SLEEP))

        wait_for(both_agents_leased, 90, "both agents to run, with their leases")
        running = {lease.task_id: lease for _, lease in list_leases(work) if lease}
        assert _codex_runs(running["slow-codex"])  # waiting for the model's answer
        first.kill()  # kill -9: no cleanup of any kind
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    leases = {lease.task_id: lease for _, lease in list_leases(work) if lease}
    try:
        # The command agent's sleep lives on without its agentfleet. The Codex agent does
        # not for long: its requests went through the run's metering proxy, which died with
        # the run, and at its first "Reconnecting" line, on a stdout nobody reads any more,
        # Codex 0.169 panics (EPIPE, exit 101): an orphan spends no token. What it started
        # may live on (here its login shell's `pyenv rehash`, for up to a minute): the
        # next run stops that, below.
        assert live_processes(leases["slow-command"])
        wait_for(lambda: not _codex_runs(leases["slow-codex"]), 30,
                 "the orphaned Codex to end by itself")
        old_trees = [str(lease.worktree) for lease in leases.values()]
        assert sorted(worktrees(repo)[1:]) == sorted(old_trees)

        listing = run_agentfleet("clean", "--work-dir", str(work), env=env, timeout=60)
        assert listing.returncode == 0, listing.stderr
        for tree in old_trees:
            assert f"would remove {tree}: worktree of a run that is no longer alive" in (
                listing.stdout)
        assert "would stop process" in listing.stdout and "sleep 1000" in listing.stdout
        assert live_processes(leases["slow-command"])  # nothing stopped, nothing removed
        assert sorted(worktrees(repo)[1:]) == sorted(old_trees)

        # The next run of the sprint (other tasks now, failing; their worktrees kept).
        write_plan(plan, {
            "name": "orphans", "repo": str(repo), "retries": 0, "keep_failed_worktrees": True,
            "agent": {"kind": "command"},
            "tasks": [
                {"id": "gives-up", "prompt": "try", "paths": ["a.txt"],
                 "agent": {"run": "echo 'no idea'; exit 1"}},
                {"id": "half-done", "prompt": "try", "paths": ["b.txt"],
                 "agent": {"run": "echo half > b.txt; exit 1"}},
            ],
        })
        report = tmp_path / "report.json"
        second = run_agentfleet("run", str(plan), "--report", str(report), env=env, timeout=120)
        output = second.stdout + second.stderr
        assert second.returncode == 1, output[-3000:]
        for lease in leases.values():
            assert find_processes(marker=lease.processes[0].marker) == []
        assert leases["slow-command"].label in output  # its agent stopped by this run
        assert tagged(tag, SLEEP) == set()
        assert "orphan of a killed run" in output
        branches = run_git(repo, "branch", "--list", "agentfleet-attempts/*")
        assert "slow-codex" not in branches and "slow-command" not in branches

        # keep_failed_worktrees: the failed attempts' worktrees stay, and the report says where.
        root = Path(old_trees[0]).parent
        kept, dirty = root / "gives-up-1", root / "half-done-1"
        assert sorted(worktrees(repo)[1:]) == sorted([str(kept), str(dirty)])
        tasks = {t["task"]: t for t in json.loads(report.read_text())["tasks"]}
        assert tasks["gives-up"]["detail"].endswith(f"(worktree kept at {kept})")
        assert f"worktree kept for inspection: {dirty}" in output
        assert (dirty / "b.txt").read_text() == "half\n"

        cleaned = run_agentfleet("clean", "--yes", "--work-dir", str(work), env=env, timeout=60)
        assert cleaned.returncode == 0, cleaned.stderr
        assert f"removed worktree {kept}" in cleaned.stdout
        assert f"skipped {dirty}: uncommitted changes (b.txt); --force removes it" in (
            cleaned.stdout)
        assert worktrees(repo) == [str(repo), str(dirty)]

        forced = run_agentfleet("clean", "--yes", "--force", "--work-dir", str(work), env=env,
                                timeout=60)
        assert forced.returncode == 0 and f"removed worktree {dirty}" in forced.stdout
        assert worktrees(repo) == [str(repo)] and list_leases(work) == []
    finally:
        for pid in tagged(tag):
            os.kill(pid, 9)
