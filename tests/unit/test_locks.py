"""Sprint locks contended by real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentfleet.errors import SprintLocked
from agentfleet.locks import SprintLock, lock_path, read_holder
from agentfleet.worktrees import WorktreeManager
from tests.support.git_env import user_repo

pytestmark = pytest.mark.usefixtures("no_git_identity")

PROJECT = Path(__file__).resolve().parents[2]

HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from agentfleet.locks import SprintLock
    with SprintLock(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], flow_run="run-1",
                    api_url="http://127.0.0.1:4200/api"):
        print("locked", flush=True)
        sys.stdin.read()  # hold until the test closes stdin (or kills us)
    """
)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return user_repo(tmp_path / "repo", {"f.txt": "x\n"})


@pytest.fixture
def lock_dir(tmp_path: Path) -> Path:
    return tmp_path / "locks"


@pytest.fixture
def holder(lock_dir: Path, repo: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding sprint 's1' on ``repo``; stopped at the end whatever happens."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_dir), str(repo), "s1"],
        cwd=PROJECT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_a_second_run_of_the_same_sprint_is_refused_with_the_holder_named(
    lock_dir: Path, repo: Path, holder: subprocess.Popen[str]
):
    with pytest.raises(SprintLocked) as caught:
        with SprintLock(lock_dir, repo, "s1"):
            pytest.fail("acquired a held lock")
    message = str(caught.value)
    assert message.startswith(
        f"sprint 's1' is already running on {repo.resolve()} (pid {holder.pid}, "
    )
    assert message.endswith("wait for it or stop it") and "started at 20" in message
    assert caught.value.exit_code == 2
    found = read_holder(lock_dir, repo, "s1")
    assert found is not None and found.pid == holder.pid and found.repo == str(repo.resolve())


def test_other_sprints_and_repositories_lock_independently(
    lock_dir: Path, repo: Path, tmp_path: Path, holder: subprocess.Popen[str]
):
    other_repo = user_repo(tmp_path / "other", {"f.txt": "x\n"})
    with SprintLock(lock_dir, repo, "s2"), SprintLock(lock_dir, other_repo, "s1"):
        assert read_holder(lock_dir, other_repo, "s1").pid == os.getpid()  # type: ignore[union-attr]
    # A linked worktree of the same repository is the same repository.
    tree = WorktreeManager(repo, tmp_path / "wt").add("w", "main", "w")
    with pytest.raises(SprintLocked):
        SprintLock(lock_dir, tree, "s1").acquire()


def test_a_killed_holder_leaves_no_stale_lock(lock_dir: Path, repo: Path, holder):
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    assert lock_path(lock_dir, repo, "s1").read_text()  # its record is still there...
    assert read_holder(lock_dir, repo, "s1") is None  # ...but nobody holds the lock
    with SprintLock(lock_dir, repo, "s1", probe=True) as probe:  # `agentfleet run`'s check
        assert probe.previous is None
    with SprintLock(lock_dir, repo, "s1") as lock:
        assert read_holder(lock_dir, repo, "s1").pid == os.getpid()  # type: ignore[union-attr]
        # The dead holder's record, for its flow run to be marked Crashed (tasks/abandoned.py).
        assert lock.previous is not None and lock.previous.pid == holder.pid
        assert (lock.previous.flow_run, lock.previous.api_url) == (
            "run-1", "http://127.0.0.1:4200/api")
    with SprintLock(lock_dir, repo, "s1") as after:  # let go cleanly: nothing to mend
        assert after.previous is None


def test_a_holder_that_says_its_ending_leaves_it_for_the_next(lock_dir: Path, repo: Path):
    # The sprint flow says how its run ends before it lets go: should Prefect's server be
    # gone by then, the next holder records that end (tasks/abandoned.py).
    with SprintLock(lock_dir, repo, "s1", flow_run="run-1", api_url="http://x/api") as lock:
        lock.ending(False, "sprint s1: 1/2 tasks applied")
    assert read_holder(lock_dir, repo, "s1") is None  # let go all the same
    with SprintLock(lock_dir, repo, "s1", probe=True) as probe:
        assert probe.previous is None
    with SprintLock(lock_dir, repo, "s1", flow_run="run-2") as lock:
        assert lock.previous is not None and lock.previous.flow_run == "run-1"
        assert lock.previous.pid == os.getpid()
        ended = lock.previous.ended
        assert ended is not None and (ended.state, ended.message) == (
            "FAILED", "sprint s1: 1/2 tasks applied")
    with SprintLock(lock_dir, repo, "s1") as after:  # run-2 said nothing: nothing to mend
        assert after.previous is None


def test_a_holder_that_ends_normally_releases(lock_dir: Path, repo: Path, holder):
    holder.stdin.close()
    assert holder.wait(timeout=10) == 0
    assert read_holder(lock_dir, repo, "s1") is None
    lock = SprintLock(lock_dir, repo, "s1")
    lock.acquire()
    assert lock.previous is None  # it ended cleanly
    # Two holders in one process exclude each other too (two flows in one worker).
    with pytest.raises(SprintLocked, match=f"pid {os.getpid()}"):
        SprintLock(lock_dir, repo, "s1").acquire()
    lock.release()
    with SprintLock(lock_dir, repo, "s1"):
        pass
