"""Restoring attempt branches from persisted patches, on real repositories."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from agentfleet.apply import commit_tree, tree_of
from agentfleet.errors import GitError
from agentfleet.restore import capture, patched_tree, restore_branch
from agentfleet.results import CommitPatch
from tests.conftest import GIT_ENV

BRANCH = "agentfleet-attempts/s1/api/1"
ENV = {**os.environ, **GIT_ENV}


def commit_on(git, repo: Path, branch: str, start: str, files: dict[str, bytes | None]) -> str:
    """A commit on ``branch`` from ``start`` changing ``files`` (None deletes), via a worktree."""
    tree = repo.parent / f"wt-{branch.replace('/', '-')}"
    git(repo, "worktree", "add", "-q", "-B", branch, str(tree), start)
    for rel, data in files.items():
        path = tree / rel
        if data is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", "agentfleet: api (attempt 1)\n\nAdded the endpoint.")
    git(repo, "worktree", "remove", "--force", str(tree))
    return git(repo, "rev-parse", branch).strip()


@pytest.fixture
def project(make_repo) -> Path:
    return make_repo(files={"README.md": "hello\n", "app/old.py": "x = 1\n", "run.sh": "echo\n"})


CHANGES: dict[str, bytes | None] = {
    "app/api.py": b"ROUTE = '/api/v2/orders'\n",
    "app/old.py": None,
    "logo.png": bytes(range(256)) * 4,  # binary: a "GIT binary patch"
    "latin1.txt": "café\n".encode("latin-1"),  # text git diffs as text, but not UTF-8
}


def test_a_deleted_branch_comes_back_with_the_same_tree_and_no_working_tree_touched(
    project: Path, git, snapshot
) -> None:
    start = git(project, "rev-parse", "HEAD").strip()
    head = commit_on(git, project, BRANCH, start, CHANGES)
    patch = capture(project, start, head)
    assert patch.encoding == "base64"  # latin-1 bytes kept exactly
    assert "Added the endpoint." in patch.message
    git(project, "branch", "-D", BRANCH)
    before = snapshot(project)

    restored = restore_branch(project, BRANCH, start, patch, env=ENV)

    assert restored.restored and restored.start_sha == start
    assert git(project, "rev-parse", BRANCH).strip() == restored.head_sha
    assert tree_of(project, restored.head_sha) == tree_of(project, head)
    assert git(project, "rev-parse", f"{BRANCH}^").strip() == start
    assert git(project, "log", "-1", "--format=%an %B", BRANCH).startswith("agentfleet ")
    assert "Added the endpoint." in git(project, "log", "-1", "--format=%B", BRANCH)
    after = snapshot(project)
    assert after["status"] == before["status"] and after["files"] == before["files"]
    assert not (project / ".git" / "index.lock").exists()


def test_a_branch_that_holds_the_result_is_kept_even_on_a_rebuilt_start(
    project: Path, git
) -> None:
    start = git(project, "rev-parse", "HEAD").strip()
    head = commit_on(git, project, BRANCH, start, {"app/api.py": b"v = 1\n"})
    patch = capture(project, start, head)
    assert patch.encoding == "utf-8" and "+v = 1" in patch.diff
    # The next run rebuilds the start commit: same tree, new sha.
    rebuilt = commit_tree(project, tree_of(project, start), [start], "agentfleet: start of api\n")
    assert rebuilt != start

    kept = restore_branch(project, BRANCH, rebuilt, patch, env=ENV)

    assert not kept.restored
    assert kept.head_sha == head and kept.start_sha == start  # the branch's own parent
    assert git(project, "rev-parse", BRANCH).strip() == head


def test_a_branch_that_points_elsewhere_is_replaced(project: Path, git) -> None:
    start = git(project, "rev-parse", "HEAD").strip()
    head = commit_on(git, project, BRANCH, start, {"app/api.py": b"v = 1\n"})
    patch = capture(project, start, head)
    other = commit_on(git, project, BRANCH, start, {"app/api.py": b"v = 2\n"})

    restored = restore_branch(project, BRANCH, start, patch, env=ENV)

    assert restored.restored and restored.head_sha not in (head, other)
    assert git(project, "show", f"{BRANCH}:app/api.py") == "v = 1\n"


def test_an_empty_patch_restores_a_commit_with_the_start_tree(project: Path, git) -> None:
    start = git(project, "rev-parse", "HEAD").strip()
    restored = restore_branch(project, BRANCH, start, CommitPatch(diff="", message="m\n"), env=ENV)
    assert tree_of(project, restored.head_sha) == tree_of(project, start)


def test_a_patch_that_does_not_apply_is_a_git_error_and_moves_nothing(
    project: Path, git
) -> None:
    start = git(project, "rev-parse", "HEAD").strip()
    head = commit_on(git, project, BRANCH, start, {"README.md": b"changed\n"})
    patch = capture(project, start, head)
    git(project, "branch", "-D", BRANCH)
    (project / "README.md").write_text("something else\n")
    git(project, "commit", "-qam", "diverged")
    elsewhere = git(project, "rev-parse", "HEAD").strip()

    with pytest.raises(GitError, match="does not apply"):
        patched_tree(project, elsewhere, patch, env=ENV)
    with pytest.raises(GitError, match="does not apply"):
        restore_branch(project, BRANCH, elsewhere, patch, env=ENV)
    assert BRANCH not in git(project, "branch", "--list", BRANCH)


def test_a_checked_out_branch_is_never_moved(project: Path, git, tmp_path: Path) -> None:
    start = git(project, "rev-parse", "HEAD").strip()
    head = commit_on(git, project, BRANCH, start, {"app/api.py": b"v = 1\n"})
    patch = capture(project, start, head)
    commit_on(git, project, BRANCH, start, {"app/api.py": b"v = 2\n"})
    git(project, "worktree", "add", "-q", str(tmp_path / "held"), BRANCH)

    with pytest.raises(GitError, match="checked out"):
        restore_branch(project, BRANCH, start, patch, env=ENV)


def test_capture_ignores_the_users_diff_settings(project: Path, git) -> None:
    start = git(project, "rev-parse", "HEAD").strip()
    head = commit_on(git, project, BRANCH, start, {"app/api.py": b"v = 1\n"})
    git(project, "config", "diff.noprefix", "true")
    git(project, "config", "diff.external", "/bin/false")
    git(project, "config", "color.diff", "always")
    patch = capture(project, start, head)
    assert "diff --git a/app/api.py b/app/api.py" in patch.diff
    assert "\x1b[" not in patch.diff
    git(project, "branch", "-D", BRANCH)
    restored = restore_branch(project, BRANCH, start, patch, env=ENV)
    assert tree_of(project, restored.head_sha) == tree_of(project, head)


def test_the_patch_survives_a_json_round_trip_and_applies_in_a_fresh_clone(
    project: Path, git, tmp_path: Path
) -> None:
    start = git(project, "rev-parse", "HEAD").strip()
    head = commit_on(git, project, BRANCH, start, CHANGES)
    patch = CommitPatch.model_validate_json(capture(project, start, head).model_dump_json())
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True, env=ENV)
    assert BRANCH not in git(clone, "branch", "--list", BRANCH)

    restored = restore_branch(clone, BRANCH, start, patch, env=ENV)

    assert tree_of(clone, restored.head_sha) == tree_of(project, head)
    blob = subprocess.run(
        ["git", "-C", str(clone), "show", f"{BRANCH}:latin1.txt"],
        capture_output=True, check=True, env=ENV,
    ).stdout
    assert blob == "café\n".encode("latin-1")


def test_a_patch_over_the_size_limit_is_not_kept_and_only_its_branch_can_serve_it(
    project: Path, git
) -> None:
    start = git(project, "rev-parse", "HEAD").strip()
    big = os.urandom(300_000)  # incompressible: its patch is larger still
    head = commit_on(git, project, BRANCH, start, {"big.bin": big, "app/api.py": b"x = 2\n"})

    patch = capture(project, start, head, max_bytes=100_000)

    assert patch.diff == "" and patch.omitted_bytes is not None
    assert patch.omitted_bytes >= len(big) and patch.tree == tree_of(project, head)
    assert len(patch.model_dump_json()) < 2_000  # the persisted result stays small
    # The branch still holds the commit: kept.
    kept = restore_branch(project, BRANCH, start, patch, env=ENV)
    assert not kept.restored and kept.head_sha == head
    # The branch is gone: restoring says why, and that the patch was too large.
    git(project, "branch", "-D", BRANCH)
    with pytest.raises(GitError, match=r"too large to keep in the result.*is gone"):
        restore_branch(project, BRANCH, start, patch, env=ENV)
    assert not git(project, "branch", "--list", BRANCH)
    # Under the limit the same commit is captured whole, as before.
    assert capture(project, start, head).omitted_bytes is None
