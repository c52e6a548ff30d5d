"""Worktrees, commits and diffs on real temporary repositories with no git identity."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from agentfleet.errors import ConfigError, GitError, NotARepository, WorktreeTampered
from agentfleet.gitcmd import AGENTFLEET_IDENTITY, git
from agentfleet.worktrees import (
    WorktreeManager,
    changed_files,
    commit_all,
    diffstat,
    is_dirty,
    numstat,
    pin_worktree,
    reset_worktree,
    snapshot_worktree,
    temporary_worktree,
    uncommitted_files,
)
from tests.support.git_env import fixture_commit, sh, user_repo

pytestmark = pytest.mark.usefixtures("no_git_identity")

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return user_repo(tmp_path / "repo", {"f.txt": "one\ntwo\nthree\n", ".gitignore": "*.log\n"})


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "worktrees" / "sprint"


def registered(repo: Path) -> list[str]:
    out = sh(repo, "worktree", "list", "--porcelain")
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("worktree ")]


def head(repo: Path) -> str:
    return sh(repo, "rev-parse", "HEAD").strip()


def test_add_creates_branch_and_worktree_outside_the_repository(repo: Path, root: Path):
    base = head(repo)
    manager = WorktreeManager(repo, root)
    path = manager.add("agentfleet-attempts/s/api/1", base, "api-1")
    assert path == root.resolve() / "api-1"
    assert (path / "f.txt").read_text() == "one\ntwo\nthree\n"
    assert sh(repo, "rev-parse", "agentfleet-attempts/s/api/1").strip() == base
    [info] = manager.list()
    assert (info.path, info.branch, info.head) == (path, "agentfleet-attempts/s/api/1", base)
    assert sh(repo, "status", "--porcelain") == ""


def test_add_refuses_an_existing_branch_unless_told_to_reset_it(repo: Path, root: Path):
    base = head(repo)
    (repo / "f.txt").write_text("changed\n")
    later = fixture_commit(repo, "later")
    manager = WorktreeManager(repo, root)
    first = manager.add("b", base, "b-1")
    (first / "scratch.txt").write_text("left over\n")
    with pytest.raises(GitError, match="already exists"):
        manager.add("b", later, "b-1")
    # A rerun after a crash: the stale worktree at the same place goes, the branch moves.
    again = manager.add("b", later, "b-1", reset=True)
    assert again == first
    assert sh(repo, "rev-parse", "b").strip() == later
    assert not (again / "scratch.txt").exists()
    assert [w.branch for w in manager.list()] == ["b"]


def test_remove_works_with_changes_and_when_the_folder_vanished(repo: Path, root: Path):
    manager = WorktreeManager(repo, root)
    dirty = manager.add("x", "main", "x")
    (dirty / "f.txt").write_text("dirty\n")
    (dirty / "new.txt").write_text("untracked\n")
    gone = manager.add("y", "main", "y")
    shutil.rmtree(gone)
    manager.remove(dirty)
    manager.remove(gone)
    manager.remove(gone)  # twice is fine
    assert registered(repo) == [str(repo)]
    assert not dirty.exists()
    assert manager.list() == []
    assert sh(repo, "branch", "--list", "x", "y").split() == ["x", "y"]  # branches are kept


def test_a_failed_add_leaves_nothing_registered_and_no_branch(repo: Path, root: Path):
    hook = repo / ".git" / "hooks" / "post-checkout"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text("#!/bin/sh\nexit 3\n")
    hook.chmod(0o755)
    manager = WorktreeManager(repo, root)
    with pytest.raises(GitError, match="worktree add"):
        manager.add("fails", "main", "fails")
    assert registered(repo) == [str(repo)]
    assert sh(repo, "branch", "--list", "fails") == ""
    assert not (root / "fails").exists()
    assert list((repo / ".git" / "worktrees").glob("*")) == []
    # An existing branch that was being reset goes back where it was.
    old = head(repo)
    (repo / "f.txt").write_text("newer\n")
    newer = fixture_commit(repo, "newer")
    sh(repo, "branch", "kept", old)
    with pytest.raises(GitError):
        manager.add("kept", newer, "kept", reset=True)
    assert sh(repo, "rev-parse", "kept").strip() == old
    assert registered(repo) == [str(repo)]


def test_parallel_adds_from_threads(repo: Path, root: Path):
    manager = WorktreeManager(repo, root)
    errors: list[BaseException] = []

    def add(i: int) -> None:
        try:
            manager.add(f"t/{i}", "main", f"t-{i}")
        except BaseException as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(w.branch or "" for w in manager.list()) == sorted(f"t/{i}" for i in range(8))
    for info in manager.list():
        manager.remove(info.path)
    assert registered(repo) == [str(repo)]


def test_parallel_adds_and_removes_from_two_processes(repo: Path, root: Path):
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from agentfleet.worktrees import WorktreeManager
        repo, root, tag = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
        m = WorktreeManager(repo, root)
        paths = [m.add(f"{tag}/{i}", "main", f"{tag}-{i}") for i in range(6)]
        for p in paths[:3]:
            m.remove(p)
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(repo), str(root), tag],
            cwd=PROJECT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("p", "q")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    names = sorted(w.path.name for w in WorktreeManager(repo, root).list())
    assert names == ["p-3", "p-4", "p-5", "q-3", "q-4", "q-5"]


def test_worktree_root_inside_the_repository_is_refused(repo: Path):
    with pytest.raises(ConfigError, match="inside the repository"):
        WorktreeManager(repo, repo / "wt")


def test_commit_all_without_any_git_identity(repo: Path, root: Path):
    manager = WorktreeManager(repo, root)
    tree = manager.add("c", "main", "c")
    (tree / "new.txt").write_text("hello\n")
    (tree / "f.txt").write_text("one\n")
    (tree / "debug.log").write_text("ignored\n")
    # Control: this environment really has no identity.
    sh(tree, "add", "-A")
    refused = subprocess.run(
        ["git", "-C", str(tree), "commit", "-qm", "x"], capture_output=True, text=True
    )
    assert refused.returncode != 0 and "identity" in refused.stderr.lower() + "email"

    sha = commit_all(
        manager.pinned(tree),
        "api: add endpoint\n\n# Summary\nadded new.txt",
        trailers={"Agentfleet-Task": "api", "Agentfleet-Attempt": "b/1"},
    )
    assert sha == sh(repo, "rev-parse", "c").strip()
    who = sh(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>", "c").strip()
    name, email = AGENTFLEET_IDENTITY
    assert who == f"{name} <{email}>|{name} <{email}>"
    assert (
        sh(repo, "log", "-1", "--format=%(trailers:key=Agentfleet-Task,valueonly)", "c").strip()
        == "api"
    )
    assert "# Summary" in sh(repo, "log", "-1", "--format=%B", "c")
    assert changed_files(repo, "main", sha) == ["f.txt", "new.txt"]
    assert sh(repo, "show", "c:new.txt") == "hello\n"


def test_commit_all_returns_none_when_nothing_changed(repo: Path, root: Path):
    manager = WorktreeManager(repo, root)
    tree = manager.add("n", "main", "n")
    (tree / "only.log").write_text("ignored files do not count\n")
    assert commit_all(manager.pinned(tree), "nothing") is None
    assert sh(repo, "rev-parse", "n").strip() == head(repo)


def test_diff_helpers(repo: Path, root: Path):
    manager = WorktreeManager(repo, root)
    tree = manager.add("d", "main", "d")
    (tree / "f.txt").write_text("one\nTWO\nthree\nfour\n")
    (tree / "blob.bin").write_bytes(b"\x00\x01\x02")
    sh(tree, "mv", ".gitignore", "ignore-rules")
    sha = commit_all(manager.pinned(tree), "diffs")
    assert sha is not None
    assert changed_files(repo, "main", sha) == [".gitignore", "blob.bin", "f.txt", "ignore-rules"]
    assert sorted(numstat(repo, "main", sha), key=lambda r: r[2]) == [
        (0, 1, ".gitignore"),
        (None, None, "blob.bin"),
        (2, 1, "f.txt"),
        (1, 0, "ignore-rules"),
    ]
    stat = diffstat(repo, "main", sha)
    # For people (and prompts), the stat shows the rename as one.
    assert ".gitignore => ignore-rules" in stat
    assert (
        stat.splitlines()[-1].strip().startswith("3 files changed, 2 insertions(+), 1 deletion(-)")
    )


def test_dirty_state_and_reset_worktree(repo: Path, root: Path):
    base = head(repo)
    manager = WorktreeManager(repo, root)
    tree = manager.add("r", base, "r")
    pinned = manager.pinned(tree)
    assert not is_dirty(pinned) and uncommitted_files(pinned) == []
    (tree / "f.txt").write_text("edited\n")
    (tree / "sub").mkdir()
    (tree / "sub" / "new.txt").write_text("new\n")
    (tree / "x.log").write_text("ignored\n")
    assert is_dirty(pinned)
    assert uncommitted_files(pinned) == ["f.txt", "sub/new.txt"]
    commit_all(pinned, "first try")
    (tree / "junk.txt").write_text("junk\n")
    reset_worktree(pinned, base)
    assert sh(tree, "rev-parse", "HEAD").strip() == base
    assert sorted(p.name for p in tree.iterdir()) == [".git", ".gitignore", "f.txt"]
    with pytest.raises(GitError, match="main worktree"):
        pin_worktree(repo, repo)


def test_temporary_worktree_is_detached_and_always_removed(repo: Path, root: Path):
    base = head(repo)
    with pytest.raises(RuntimeError):
        with temporary_worktree(repo, "main", root) as tree:
            assert sh(tree, "rev-parse", "HEAD").strip() == base
            assert sh(tree, "branch", "--show-current").strip() == ""
            (tree / "build").mkdir()
            raise RuntimeError("verify crashed")
    assert not tree.exists()
    assert registered(repo) == [str(repo)]


def test_git_errors_carry_git_s_own_words(repo: Path, tmp_path: Path):
    with pytest.raises(GitError, match="unknown revision|bad revision"):
        git(repo, "log", "no-such-branch")
    (tmp_path / "plain").mkdir()
    with pytest.raises(NotARepository):
        git(tmp_path / "plain", "status")
    with pytest.raises(NotARepository):
        WorktreeManager(tmp_path / "plain", tmp_path / "wt")


def test_removing_the_last_worktree_leaves_no_empty_folder(repo: Path, tmp_path: Path):
    root = tmp_path / "work" / "worktrees" / "repo-key" / "sprint"
    manager = WorktreeManager(repo, root)
    one, two = manager.add("one", "main", "one"), manager.add("two", "main", "two")
    scratch = one.with_name("one.tmp")  # an agent's private TMPDIR
    (scratch / "x").mkdir(parents=True)
    manager.remove(one)
    assert not scratch.exists() and root.is_dir()  # two is still there
    manager.remove(two)
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["worktrees"]
    assert list((tmp_path / "work" / "worktrees").iterdir()) == []


def test_a_worktree_replaced_by_a_link_is_unlinked_never_followed(repo: Path, root: Path):
    manager = WorktreeManager(repo, root)
    tree = manager.add("l", "main", "l")
    shutil.rmtree(tree)
    tree.symlink_to(repo)  # an agent's parting shot: its folder is now the user's repository
    manager.remove(tree)
    assert not tree.exists() and not tree.is_symlink()
    assert (repo / "f.txt").read_text() == "one\ntwo\nthree\n"
    assert registered(repo) == [str(repo)]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda tree, repo: (tree / ".git").write_text(f"gitdir: {repo / '.git'}\n"),
        lambda tree, repo: (tree / ".git").unlink(),
        lambda tree, repo: ((tree / ".git").unlink(), (tree / ".git").symlink_to(repo / ".git")),
        lambda tree, repo: (repo / ".git" / "worktrees" / "p" / "commondir").write_text(
            str(tmp_common(repo))),
    ],
    ids=["rewritten", "deleted", "linked-to-the-users-git", "commondir-elsewhere"],
)
def test_every_worktree_operation_refuses_a_changed_pointer(repo: Path, root: Path, tamper):
    manager = WorktreeManager(repo, root)
    tree = manager.add("p", "main", "p")
    pinned = manager.pinned(tree)
    (tree / "new.txt").write_text("new\n")
    before = (repo / ".git" / "index").read_bytes(), sh(repo, "for-each-ref")
    tamper(tree, repo)
    for operation in (
        lambda: commit_all(pinned, "x"),
        lambda: snapshot_worktree(pinned),
        lambda: reset_worktree(pinned, "main"),
        lambda: uncommitted_files(pinned),
        lambda: is_dirty(pinned),
    ):
        with pytest.raises(WorktreeTampered, match="the agent changed the worktree's .git"):
            operation()
    assert ((repo / ".git" / "index").read_bytes(), sh(repo, "for-each-ref")) == before
    manager.remove(tree)
    assert registered(repo) == [str(repo)]


def tmp_common(repo: Path) -> Path:
    """Another repository's .git, for a commondir pointing away."""
    other = repo.parent / "other"
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    return other / ".git"
