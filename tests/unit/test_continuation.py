"""Between agent runs of an attempt: the continuation prompt, the worktree a retry starts from."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentfleet.codex.outcome import AttemptOutcome, CommandRun, Ending
from agentfleet.errors import GitError
from agentfleet.prompts import continuation_prompt
from agentfleet.worktrees import (
    Worktree,
    WorktreeManager,
    pin_worktree,
    restore_worktree,
    snapshot_worktree,
)
from tests.conftest import run_git


def session(**kw: object) -> AttemptOutcome:
    return AttemptOutcome(ending=Ending.CONTEXT_WINDOW, **kw)


def test_the_continuation_prompt_says_what_each_session_did_then_the_task() -> None:
    first = session(
        commands=[CommandRun(command="pytest -q", exit_code=1, status="failed"),
                  CommandRun(command="echo hi > a.py", exit_code=0, status="completed")],
        files_changed=["a.py", "docs/b.md"],
        final_message="Half done: a.py written.",
    )
    second = session(commands=[CommandRun(command="sleep 99")], final_message=None)

    text = continuation_prompt("Add a greeting.\n", [first, second])

    assert "ran out of room in the model's context window" in text
    assert "## Session 1" in text and "## Session 2" in text
    assert "- `pytest -q` -> 1" in text and "- `echo hi > a.py` -> 0" in text
    assert "Files changed: a.py, docs/b.md" in text
    assert "Last message: Half done: a.py written." in text
    assert "- `sleep 99` -> still running" in text and "Last message: (none)" in text
    assert text.endswith("# The task\n\nAdd a greeting.\n")


def test_the_continuation_prompt_stays_small() -> None:
    many = session(
        commands=[CommandRun(command=f"cmd {i} " + "x" * 1000, exit_code=0) for i in range(500)],
        final_message="m" * 50_000,
    )
    text = continuation_prompt("Task.", [many])
    assert "(460 earlier commands left out)" in text and "cmd 499" in text
    assert "cmd 459 " not in text
    assert len(text) < 20_000


@pytest.fixture
def pinned(make_repo, tmp_path: Path) -> Worktree:
    repo = make_repo(files={"keep.py": "1\n", "gone.py": "2\n", ".gitignore": "cache/\n"})
    manager = WorktreeManager(repo, tmp_path / "wt")
    return manager.pinned(manager.add("attempt", "HEAD", "t-1"))


@pytest.fixture
def worktree(pinned: Worktree) -> Path:
    return pinned.path


def files_of(worktree: Path) -> dict[str, str]:
    return {
        str(p.relative_to(worktree)): p.read_text()
        for p in sorted(worktree.rglob("*"))
        if p.is_file() and ".git" not in p.parts
    }


def test_restore_brings_back_the_snapshot_and_keeps_ignored_files(
    worktree: Path, pinned: Worktree
) -> None:
    # A session's work: a change, a new file, a deletion; and setup's ignored products.
    (worktree / "keep.py").write_text("changed\n")
    (worktree / "new" / "n.py").parent.mkdir()
    (worktree / "new" / "n.py").write_text("new\n")
    (worktree / "gone.py").unlink()
    (worktree / "cache").mkdir()
    (worktree / "cache" / "setup.bin").write_text("from setup\n")
    before = files_of(worktree)
    status = run_git(worktree, "status", "--porcelain")
    snap = snapshot_worktree(pinned)
    assert run_git(worktree, "status", "--porcelain") == status  # nothing staged by it

    # A failed try's leftovers.
    (worktree / "keep.py").write_text("half-done try\n")
    (worktree / "new" / "n.py").unlink()
    (worktree / "stray.txt").write_text("stray\n")
    (worktree / "gone.py").write_text("back\n")

    restore_worktree(pinned, snap)

    assert files_of(worktree) == before
    assert run_git(worktree, "status", "--porcelain") == status
    assert run_git(worktree, "diff", "--cached", "--name-only") == ""


def test_snapshots_refuse_the_users_own_worktree(repo: Path) -> None:
    # The user's checkout can never be pinned, so nothing can snapshot or reset it.
    with pytest.raises(GitError, match="main worktree"):
        pin_worktree(repo, repo)
