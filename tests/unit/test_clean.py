"""``agentfleet clean``: lists, then removes with --yes; never a live run, never unasked work."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from agentfleet.clean import clean, reap_orphans
from agentfleet.cli import main
from agentfleet.leases import Owner, PoolSlot, lease_dir, list_leases, write_lease
from agentfleet.locks import SprintLock, repo_key
from agentfleet.process import find_processes
from agentfleet.worktrees import WorktreeManager, list_worktrees, resolve_commit
from tests.support.leftovers import dead_owner, leftover, orphan

pytestmark = pytest.mark.timeout(60)


def test_clean_lists_then_removes_only_what_dead_runs_left(
    make_repo, git, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    repo_a, repo_b = make_repo("a"), make_repo("b")
    agent = orphan()
    live_agent = orphan("sleep 1000", count=1)
    try:
        orphaned = leftover(work, repo_a, "slow", owner=dead_owner(), processes=[agent])
        kept = leftover(work, repo_a, "failed", owner=dead_owner(), state="kept")
        dirty = leftover(work, repo_b, "half", owner=dead_owner(), state="kept", dirty=True)
        alive = leftover(work, repo_b, "running", owner=Owner.current(), sprint="s2",
                         processes=[live_agent])
        # A verification worktree of a killed run: no lease, its sprint's lock is free.
        root_a = work / "worktrees" / repo_key(repo_a) / "s1"
        stale = WorktreeManager(repo_a, root_a).add_detached(resolve_commit(repo_a, "HEAD"),
                                                             "verify-0123456789")
        trees = {lease.worktree for lease in (orphaned, kept, dirty, alive)} | {stale}

        assert main(["clean", "--work-dir", str(work)]) == 0
        listed = capsys.readouterr().out
        for tree in (orphaned.worktree, kept.worktree, stale):
            assert f"would remove {tree}: " in listed
        assert "run that is no longer alive (s1/slow#1" in listed
        assert "kept for inspection" in listed
        assert listed.count("would stop process") == 3  # bash and its two sleeps
        assert f"skipped {dirty.worktree}: uncommitted changes (half-done.txt); --force" in listed
        assert f"skipped {alive.worktree}: its run is alive (pid {os.getpid()})" in listed
        assert all(t.exists() for t in trees)  # listing removes nothing
        assert len(find_processes(marker=agent.marker)) == 3

        lines = clean(work, yes=True, force=False, grace_s=1)

        assert find_processes(marker=agent.marker) == []
        assert any("stopped 3 process(es) of s1/slow#1" in line for line in lines), lines
        for tree in (orphaned.worktree, kept.worktree, stale):
            assert not tree.exists()
        assert [w.path for w in list_worktrees(repo_a)] == [repo_a]
        assert git(repo_a, "branch", "--list", "agentfleet-attempts/*") == ""  # nothing on them
        assert dirty.worktree.exists() and alive.worktree.exists()
        assert len(find_processes(marker=live_agent.marker)) == 1
        assert sorted(p.name for p, _ in list_leases(work)) == ["half-1.json", "running-1.json"]

        lines = clean(work, yes=True, force=True, grace_s=1)
        assert not dirty.worktree.exists()
        assert [w.path for w in list_worktrees(repo_b)] == [repo_b, alive.worktree]
        assert any(line.startswith(f"skipped {alive.worktree}") for line in lines)
        assert len(find_processes(marker=live_agent.marker)) == 1
    finally:
        for proc in (agent, live_agent):
            for pid in find_processes(marker=proc.marker):
                os.kill(pid, signal.SIGKILL)


def test_a_running_sprints_worktree_folder_is_not_stale(repo: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    root = work / "worktrees" / repo_key(repo) / "s1"
    tree = WorktreeManager(repo, root).add_detached(resolve_commit(repo, "HEAD"), "verify-1")
    with SprintLock(work / "locks", repo, "s1"):
        lines = clean(work, yes=True, force=True)
    assert lines == ["nothing to remove under " + str(work),
                     f"skipped {tree}: sprint 's1' is running"]
    assert tree.exists()
    assert clean(work, yes=True, force=False)[-1] == f"  removed worktree {tree}"
    assert not tree.exists()


def test_bad_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["clean", "--yes", "--bogus"]) == 2
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    assert main(["clean", "--work-dir", str(not_a_folder)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["clean", "--work-dir", str(tmp_path / "none")]) == 0


def test_clean_removes_empty_folders_but_not_a_running_sprints(repo: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    key = repo_key(repo)
    for sprint in ("done", "running"):
        (work / "worktrees" / key / sprint).mkdir(parents=True)
    (work / "leases" / key / "done").mkdir(parents=True)
    with SprintLock(work / "locks", repo, "running"):
        assert clean(work, yes=False, force=False) == [
            f"nothing to remove under {work}",
            f"would remove empty folder {work / 'worktrees' / key / 'done'}",
            f"would remove empty folder {work / 'leases' / key / 'done'}",
            f"would remove empty folder {work / 'leases' / key}",
            "run `agentfleet clean --yes` to remove them",
        ]
        clean(work, yes=True, force=False)
    assert sorted(p.name for p in (work / "worktrees" / key).iterdir()) == ["running"]
    assert list((work / "leases").iterdir()) == []


# A process that runs an attempt whose `setup` or `verify` hangs, as `agentfleet run` would.
HANGING_CHECK = """
import sys
from pathlib import Path
from agentfleet.agent_config import AgentConfig
from agentfleet.attempt import AttemptSpec, run_attempt
repo, work, start, check, setup = sys.argv[1:6]
spec = AttemptSpec(
    sprint="s1", task_id="t", attempt=1, branch="agentfleet-attempts/s1/t/1", repo=Path(repo),
    worktree_root=Path(work) / "worktrees" / "k" / "s1", start_sha=start, prompt="p",
    paths=None, agent=AgentConfig(kind="command", run="echo x > x.txt"), timeout_s=600,
    setup=check if setup == "setup" else None, verify=check if setup != "setup" else None,
    lease_dir=Path(work) / "leases" / "k" / "s1",
)
run_attempt(spec, env={"PATH": "/usr/bin:/bin"})
"""


@pytest.mark.parametrize("which", ["setup", "verify"])
def test_a_hanging_setup_or_verify_of_a_killed_run_is_leased_and_stopped_by_clean(
    make_repo, tmp_path: Path, which: str
) -> None:
    import subprocess
    import sys
    import time

    repo = make_repo()
    work = tmp_path / "work"
    started = tmp_path / "started"
    check = f"touch {started}; exec sleep 1000"
    run = subprocess.Popen([sys.executable, "-c", HANGING_CHECK, str(repo), str(work),
                            resolve_commit(repo, "HEAD"), check, which])
    try:
        deadline = time.monotonic() + 30
        while not started.exists():
            assert time.monotonic() < deadline and run.poll() is None, "the check never ran"
            time.sleep(0.05)
        run.kill()  # kill -9: the check lives on, its lease names it
        run.wait()
        [(_, lease)] = list_leases(work)
        assert lease is not None and lease.processes
        marker = lease.processes[-1].marker  # the check: the last process started
        assert find_processes(marker=marker)

        lines = clean(work, yes=True, force=True, grace_s=1)

        assert any("stopped 1 process(es) of s1/t#1" in line for line in lines), lines
        assert not find_processes(marker=marker) and not lease.worktree.exists()
    finally:
        if run.poll() is None:
            run.kill()


def test_a_dead_runs_pool_slot_is_given_back_with_its_worktree(make_repo, tmp_path: Path) -> None:
    work = tmp_path / "work"
    repo = make_repo()
    slot = PoolSlot(limit="agents", lease_id="7d1c6f0e-0000-4000-8000-000000000001",
                    api_url="http://127.0.0.1:4200/api")
    for task, dirty in (("gone", False), ("half", True)):
        lease = leftover(work, repo, task, owner=dead_owner(), dirty=dirty)
        write_lease(lease_dir(work, repo_key(repo), "s1") / f"{task}-1.json",
                    lease.model_copy(update={"slot": slot}))
    given: list[PoolSlot] = []

    def release(s: PoolSlot) -> str:
        given.append(s)
        return f"gave back its slot of the shared pool '{s.limit}'"

    listed = clean(work, yes=False, force=False, release_slot=release)
    assert sum("would give back its slot of the shared pool 'agents'" in line
               for line in listed) == 2 and given == []
    lines = clean(work, yes=True, force=False, grace_s=1, release_slot=release)
    # Both agents are gone, so both slots go back; the uncommitted work stays.
    assert given == [slot, slot]
    assert sum("gave back its slot" in line for line in lines) == 2, lines
    lines = clean(work, yes=True, force=False, grace_s=1, release_slot=release)
    assert len(given) == 2, lines  # the kept worktree's lease no longer names the slot

    reaped_repo = make_repo("reaped")
    lease = leftover(work, reaped_repo, "slow", owner=dead_owner())
    write_lease(lease_dir(work, repo_key(reaped_repo), "s1") / "slow-1.json",
                lease.model_copy(update={"slot": slot}))
    logged: list[str] = []
    reap_orphans(work, reaped_repo, "s1", grace_s=1, log=logged.append, release_slot=release)
    assert len(given) == 3 and any("gave back its slot" in line for line in logged), logged
