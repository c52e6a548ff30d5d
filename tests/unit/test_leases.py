"""Leases: owners that pid reuse can't fake, atomic files, an attempt's lease, orphan reaping."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from agentfleet.agent_config import AgentConfig
from agentfleet.attempt import AttemptSpec, run_attempt
from agentfleet.clean import reap_orphans
from agentfleet.leases import (
    Lease,
    LeasedProcess,
    Owner,
    lease_dir,
    list_leases,
    read_lease,
    stop_processes,
    write_lease,
)
from agentfleet.locks import repo_key
from agentfleet.process import find_processes, spawn
from agentfleet.worktrees import WorktreeManager, list_worktrees, resolve_commit
from tests.support.leftovers import dead_owner, leftover, orphan

pytestmark = pytest.mark.timeout(60)

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_CONFIG_NOSYSTEM": "1",
       "GIT_CONFIG_GLOBAL": os.devnull, "HOME": "/nonexistent"}


def test_an_owner_is_alive_only_as_the_same_process_on_the_same_host() -> None:
    me = Owner.current()
    assert me.is_alive()
    assert not dead_owner().is_alive()
    # The same pid with another start time is a reused pid: another process.
    assert not me.model_copy(update={"start_ticks": me.start_ticks + 1}).is_alive()
    # The machine rebooted since.
    assert not me.model_copy(update={"boot_id": "another-boot"}).is_alive()
    # Another host cannot be checked from here: it counts as alive, so nothing is touched.
    assert dead_owner().model_copy(update={"hostname": "elsewhere.invalid"}).is_alive()


def test_lease_files_are_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "leases" / "k" / "s" / "t-1.json"
    lease = Lease(sprint="s", task_id="t", attempt=1, repo=tmp_path, worktree=tmp_path / "w",
                  branch="b", start_sha="0" * 40, owner=Owner.current())
    write_lease(path, lease)
    write_lease(path, lease.model_copy(update={"state": "kept"}))
    assert read_lease(path) == lease.model_copy(update={"state": "kept"})
    assert [p.name for p in path.parent.iterdir()] == ["t-1.json"]  # no temporary file left
    path.write_text('{"sprint": ')  # not a lease: listed, never acted on
    assert list_leases(tmp_path) == [(path, None)]


def _spec(repo: Path, work: Path, run: str, **kw: object) -> AttemptSpec:
    sha = resolve_commit(repo, "HEAD")
    return AttemptSpec(
        sprint="s1", task_id="t", attempt=1, branch="agentfleet-attempts/s1/t/1", repo=repo,
        worktree_root=work / "worktrees", start_sha=sha, prompt="do it", paths=None,
        agent=AgentConfig(kind="command", run=run), timeout_s=20, retries=0, grace_s=1,
        lease_dir=work / "leases" / "k" / "s1", **kw,  # type: ignore[arg-type]
    )


def test_an_attempt_holds_its_lease_with_its_processes_then_releases_it(
    repo: Path, tmp_path: Path, git
) -> None:
    work = tmp_path / "work"
    lease_file = work / "leases" / "k" / "s1" / "t-1.json"
    # The agent copies its own lease: it is there, with the agent's process in it. `cat`, not
    # `cp`: GNU cp skips a file replaced while it copies, and the lease is rewritten with the ids.
    spec = _spec(repo, work, f'cat {lease_file} > seen.json; echo "$AGENTFLEET_ATTEMPT_ID" > m.txt',
                 setup="true")
    result = run_attempt(spec, env=ENV)

    assert result.succeeded, result.reason
    seen = json.loads(git(repo, "show", f"{spec.branch}:seen.json"))
    marker = git(repo, "show", f"{spec.branch}:m.txt").strip()
    assert seen["state"] == "active" and seen["owner"]["pid"] == os.getpid()
    assert seen["worktree"] == str(work.resolve() / "worktrees" / "t-1")
    assert seen["branch"] == spec.branch and seen["start_sha"] == spec.start_sha
    # setup, then the agent: every process the attempt started, recorded before it started.
    assert [p["argv0"] for p in seen["processes"]] == ["bash", "bash"]
    assert seen["processes"][1]["marker"] == marker
    assert seen["processes"][0]["pid"] is not None  # and its ids once it had them
    assert not lease_file.exists() and not (work / "leases" / "k").exists()
    assert len(list_worktrees(repo)) == 1


def test_a_kept_failed_worktree_keeps_a_kept_lease(repo: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    spec = _spec(repo, work, "echo half > half.txt; exit 1", keep_failed_worktree=True)
    result = run_attempt(spec, env=ENV)

    tree = work.resolve() / "worktrees" / "t-1"
    assert not result.succeeded
    assert result.reason.endswith(f"(worktree kept at {tree})")
    assert (tree / "half.txt").read_text() == "half\n"
    assert [w.path for w in list_worktrees(repo)][1:] == [tree]
    lease = read_lease(work / "leases" / "k" / "s1" / "t-1.json")
    assert lease is not None and lease.state == "kept" and lease.processes == []


def test_reaping_stops_a_dead_runs_agents_and_frees_its_worktree_not_a_live_runs(
    repo: Path, tmp_path: Path, git
) -> None:
    work = tmp_path / "work"
    gone = orphan()  # bash with a `setsid` child and a plain child
    live = orphan("sleep 1000", count=1)
    try:
        dead = leftover(work, repo, "slow", owner=dead_owner(), processes=[gone])
        committed = leftover(work, repo, "done", owner=dead_owner())
        tree = committed.worktree
        (tree / "x.txt").write_text("x\n")
        git(tree, "add", "x.txt")
        git(tree, "commit", "-qm", "work the dead run committed")
        mine = leftover(work, repo, "mine", owner=Owner.current(), processes=[live])
        other_sprint = leftover(work, repo, "other", owner=dead_owner(), sprint="s2")
        # A killed run's verification worktree: no lease explains it.
        verify = WorktreeManager(repo, dead.worktree.parent).add_detached(
            resolve_commit(repo, "HEAD"), "verify-0123456789")
        lines: list[str] = []

        reaped = reap_orphans(work, repo, "s1", grace_s=1, log=lines.append)

        assert sorted(r.worktree.name for r in reaped) == ["done-1", "slow-1", "verify-0123456789"]
        assert not verify.exists()
        assert find_processes(marker=gone.marker) == []
        assert any("stopped 3 process(es) of s1/slow#1" in line for line in lines), lines
        paths = [w.path for w in list_worktrees(repo)]
        assert dead.worktree not in paths and not dead.worktree.exists()
        assert tree not in paths
        branches = git(repo, "branch", "--list", "agentfleet-attempts/*")
        assert "s1/slow/1" not in branches  # nothing beyond its start: deleted
        assert "s1/done/1" in branches  # holds a commit: kept
        # A live run's lease and another sprint's are not this reaping's business.
        assert len(find_processes(marker=live.marker)) == 1
        assert mine.worktree in paths and other_sprint.worktree in paths
        left = sorted(p.name for p, _ in list_leases(work))
        assert left == ["mine-1.json", "other-1.json"]
        assert lease_dir(work, repo_key(repo), "s1").is_dir()
    finally:
        for proc in (gone, live):
            for pid in find_processes(marker=proc.marker):
                os.kill(pid, signal.SIGKILL)


def test_a_reused_group_id_is_never_signalled(tmp_path: Path) -> None:
    # A stranger's group that now has the id a lease recorded: it carries no marker of ours.
    stranger = spawn(["sleep", "1000"], tmp_path, ENV)
    try:
        stale = LeasedProcess(pid=stranger.pid, pgid=stranger.pgid, marker="gone-long-ago")
        never_started = LeasedProcess(marker="killed-before-its-start")  # no ids: no killpg(0)
        lease = Lease(sprint="s", task_id="t", attempt=1, repo=tmp_path, worktree=tmp_path,
                      branch="b", start_sha="0" * 40, owner=dead_owner(),
                      processes=[stale, never_started])
        assert stop_processes(lease, grace_s=0.5) == []
        assert stranger.poll() is None
    finally:
        stranger.stop(grace_s=0.5)
