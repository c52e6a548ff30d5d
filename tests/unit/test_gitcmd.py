"""``git()``: a command refused for another process's lock file runs again; others do not."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from agentfleet.errors import GitError
from agentfleet.gitcmd import git
from tests.support.git_env import user_repo


def test_a_command_refused_for_a_held_index_lock_runs_again_once_it_is_gone(tmp_path: Path):
    repo = user_repo(tmp_path / "repo", {"a.txt": "a\n"})
    (repo / "a.txt").write_text("changed\n")
    lock = repo / ".git" / "index.lock"
    lock.write_text("")  # another git process at work (an editor refreshing the index)
    released = threading.Timer(0.3, lock.unlink)
    released.start()
    try:
        git(repo, "add", "a.txt")
    finally:
        released.cancel()
    assert "a.txt" in git(repo, "diff", "--cached", "--name-only")


def test_a_lock_never_released_fails_with_gits_words_after_a_few_tries(tmp_path: Path):
    repo = user_repo(tmp_path / "repo", {"a.txt": "a\n"})
    (repo / ".git" / "index.lock").write_text("")  # a git process that crashed holding it
    started = time.monotonic()
    with pytest.raises(GitError, match="index.lock': File exists") as error:
        git(repo, "add", "a.txt")
    assert error.value.retryable
    assert time.monotonic() - started >= 1.0  # it waited for the lock before giving up


def test_other_failures_are_not_run_again(tmp_path: Path):
    repo = user_repo(tmp_path / "repo", {"a.txt": "a\n"})
    calls = tmp_path / "calls"
    with pytest.raises(GitError, match="exit 3") as error:
        git(repo, "-c", f"alias.boom=!echo run >> {calls}; exit 3", "boom")
    assert not error.value.retryable
    assert calls.read_text().splitlines() == ["run"]
