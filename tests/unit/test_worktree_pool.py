"""Reused worktrees (agentfleet/worktree_pool.py): nothing of one attempt is visible to the next.

Real attempts with `command` agents (no sandbox) through ``run_attempt`` under a run's
pool: the first plants files, ignored files, a nested repository, forged file stats,
index bits, refs, a stash and a reflog; the second records what it finds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentfleet.agent_config import AgentConfig
from agentfleet.attempt import AttemptSpec, run_attempt
from agentfleet.worktree_pool import worktree_pool
from agentfleet.worktrees import list_worktrees, temporary_worktree
from tests.conftest import run_git

START_FILES = {"README.md": "hello\n", "a.txt": "A1\n", "src/b.txt": "b\n",
               ".gitignore": "build/\n"}


@pytest.fixture
def repo(make_repo) -> Path:
    return make_repo(files=START_FILES)


def spec(repo: Path, work: Path, task: str, start: str, run: str, **kw: object) -> AttemptSpec:
    fields: dict[str, object] = dict(
        sprint="s1", task_id=task, attempt=1, branch=f"agentfleet-attempts/s1/{task}/1",
        repo=repo, worktree_root=work / "worktrees" / "repo-key" / "s1", start_sha=start,
        prompt="do it", paths=None, agent=AgentConfig(kind="command", run=run), timeout_s=30,
        retries=0, grace_s=1, lease_dir=work / "leases" / "repo-key" / "s1",
    )  # fmt: skip
    fields.update(kw)
    return AttemptSpec(**fields)  # type: ignore[arg-type]


def attempt(repo: Path, work: Path, task: str, start: str, run: str, **kw: object):
    return run_attempt(spec(repo, work, task, start, run, **kw), env=dict(os.environ))


ID = "-c user.name=Mallory -c user.email=mallory@example.com"
# Same size and mtime as the original: only the ctime tells; the agent also tells git
# to ignore ctimes and to skip the files it changed.
FORGE = ("python3 -c \"import os; s = os.stat('README.md'); "
         "open('README.md', 'w').write('HELLO\\n'); "
         "os.utime('README.md', ns=(s.st_atime_ns, s.st_mtime_ns))\"")
PLANT = " && ".join([
    "echo s > stash.txt", "git add stash.txt", f"git {ID} stash -q",
    f"git {ID} commit -q --allow-empty -m planted",
    "git update-ref refs/worktree/planted HEAD", "git update-ref refs/bisect/bad HEAD",
    "echo changed > src/b.txt", "rm a.txt", "echo new > new.txt",
    "mkdir -p build", "echo obj > build/out.o",
    "mkdir nested", "git -C nested init -q", "echo n > nested/n.txt",
    FORGE, "git config core.trustctime false",
    "git update-index --skip-worktree README.md",
    "echo '*.txt' >> .gitignore", "git update-index --assume-unchanged .gitignore",
    "echo 'ref: refs/heads/main' > $(git rev-parse --git-dir)/ORIG_HEAD",
    # A tracked folder replaced by a link out: the next checkout must not write through it.
    "rm -rf src", "ln -s {outside} src",
])  # fmt: skip


def look(out: Path) -> str:
    """A command agent that records what it sees in its worktree into ``out``."""
    return " && ".join([
        f"git status --porcelain --ignored --untracked-files=all > {out}/status",
        f"git for-each-ref --format='%(refname)' > {out}/refs",
        f"git stash list > {out}/stash",
        f"(git log -g --format=%gs HEAD > {out}/reflog 2>&1 || true)",
        f"ls -A \"$(git rev-parse --git-dir)\" > {out}/admin",
        f"cp -a . {out}/tree",
    ])  # fmt: skip


def files_under(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): p.read_text()
        for p in folder.rglob("*")
        if p.is_file() and p.relative_to(folder).parts[0] != ".git"
    }


def test_a_reused_worktree_holds_nothing_of_the_attempt_before(repo: Path, tmp_path: Path):
    work, out = tmp_path / "work", tmp_path / "out"
    out.mkdir()
    first = run_git(repo, "rev-parse", "HEAD").strip()
    (repo / "a.txt").write_text("A2\n")
    (repo / "c.txt").write_text("c\n")
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-qm", "second")
    second = run_git(repo, "rev-parse", "HEAD").strip()
    root = work / "worktrees" / "repo-key" / "s1"
    with worktree_pool(repo, root) as pool:
        outside = tmp_path / "outside"
        outside.mkdir()
        planted = attempt(repo, work, "t1", first, PLANT.format(outside=outside))
        assert "nested git repository" in (planted.reason or "")
        seen = attempt(repo, work, "t2", second, look(out))
        assert pool.stats.reused == 1 and pool.stats.created == 1
    assert seen.reason == "the agent changed no file"
    assert (out / "status").read_text() == ""
    refs = (out / "refs").read_text().split()
    assert not [r for r in refs if r.startswith(("refs/worktree/", "refs/bisect/", "refs/stash"))]
    assert (out / "stash").read_text() == ""
    assert "planted" not in (out / "reflog").read_text()
    assert set((out / "admin").read_text().split()) <= {"HEAD", "commondir", "gitdir",
                                                          "index", "logs"}
    expected = {**START_FILES, "a.txt": "A2\n", "c.txt": "c\n"}
    assert files_under(out / "tree") == expected
    assert not (out / "tree" / "src").is_symlink()
    assert list(outside.iterdir()) == []
    # The run's end leaves no worktree and no folder behind.
    assert [w.path for w in list_worktrees(repo)] == [repo]
    assert not root.exists()


def test_a_tampered_worktree_leaves_the_pool(repo: Path, tmp_path: Path):
    work = tmp_path / "work"
    start = run_git(repo, "rev-parse", "HEAD").strip()
    with worktree_pool(repo, work / "worktrees" / "repo-key" / "s1") as pool:
        bad = attempt(repo, work, "t1", start, f'echo "gitdir: {repo}/.git" > .git')
        assert not bad.succeeded
        good = attempt(repo, work, "t2", start, "echo ok > ok.txt")
        assert good.succeeded, good.reason
        assert pool.stats.reused == 0 and pool.stats.created == 2
    assert run_git(repo, "status", "--porcelain") == ""
    assert [w.path for w in list_worktrees(repo)] == [repo]


def test_a_kept_failed_worktree_leaves_the_pool(repo: Path, tmp_path: Path):
    work = tmp_path / "work"
    start = run_git(repo, "rev-parse", "HEAD").strip()
    root = work / "worktrees" / "repo-key" / "s1"
    with worktree_pool(repo, root) as pool:
        failed = attempt(repo, work, "t1", start, "echo mine > mine.txt; exit 3",
                         keep_failed_worktree=True)
        assert not failed.succeeded
        again = attempt(repo, work, "t2", start, "echo ok > ok.txt")
        assert again.succeeded, again.reason
        assert pool.stats.reused == 0 and pool.stats.created == 2
    kept = root / "t1-1"
    assert (kept / "mine.txt").read_text() == "mine\n"
    assert [w.path for w in list_worktrees(repo)] == [repo, kept.resolve()]


def test_released_worktrees_are_reused_in_turn(repo: Path, tmp_path: Path):
    work = tmp_path / "work"
    start = run_git(repo, "rev-parse", "HEAD").strip()
    with worktree_pool(repo, work / "worktrees" / "repo-key" / "s1") as pool:
        for k in range(3):
            done = attempt(repo, work, f"t{k}", start, f"test ! -e f.txt && echo {k} > f.txt")
            assert done.succeeded, done.reason
            assert run_git(repo, "show", f"{done.branch}:f.txt") == f"{k}\n"
            # Released, the worktree is on no branch: the user may delete the attempt's.
            run_git(repo, "branch", "-D", done.branch)
        assert pool.stats.reused == 2 and pool.stats.created == 1


def test_a_verification_worktree_comes_from_the_pool_detached(repo: Path, tmp_path: Path):
    work = tmp_path / "work"
    start = run_git(repo, "rev-parse", "HEAD").strip()
    root = work / "worktrees" / "repo-key" / "s1"
    with worktree_pool(repo, root) as pool:
        done = attempt(repo, work, "t1", start, "echo 1 > one.txt && mkdir -p build && "
                       "echo o > build/x.o")
        assert done.succeeded, done.reason
        with temporary_worktree(repo, done.head_sha, root) as tree:
            assert pool.stats.reused == 1
            assert run_git(tree, "status", "--porcelain", "--ignored") == ""
            assert run_git(tree, "rev-parse", "HEAD").strip() == done.head_sha
            assert [w.branch for w in list_worktrees(repo) if w.path == tree.resolve()] == [None]
            assert files_under(tree) == {**START_FILES, "one.txt": "1\n"}
        # Detached: the attempt's branch is checked out nowhere.
        run_git(repo, "branch", "-D", done.branch)
    assert [w.path for w in list_worktrees(repo)] == [repo]


# Makes its products only when missing; `made` holds a number of the setup run that made it,
# and every run appends its own to {runs}.
SETUP = ("n=$RANDOM$RANDOM && echo $n >> {runs} && mkdir -p build/deps"
         " && {{ test -e build/made || echo $n > build/made; }}"
         " && {{ test -e build/deps/lib.txt || echo lib > build/deps/lib.txt; }}"
         " && mkdir -p build/cache && touch build/cache/c")
# The first attempt's agent: all of PLANT, plus changes to setup's products (a kept file
# rewritten with its mtime restored, a file added among them, a folder swapped for a link).
PLANT_IN_PRODUCTS = " && ".join([
    "python3 -c \"import os; p = 'build/deps/lib.txt'; s = os.stat(p); "
    "open(p, 'w').write('evil\\\\n'); os.utime(p, ns=(s.st_atime_ns, s.st_mtime_ns))\"",
    "echo evil > build/deps/evil.txt", "mkdir -p build/new && echo evil > build/new/x",
    "rm -rf build/cache", "ln -s {outside} build/cache",
])


def test_setup_products_are_kept_unchanged_and_nothing_else(repo: Path, tmp_path: Path):
    work, out = tmp_path / "work", tmp_path / "out"
    out.mkdir()
    start = run_git(repo, "rev-parse", "HEAD").strip()
    outside = tmp_path / "outside"
    outside.mkdir()
    setup = SETUP.format(runs=tmp_path / "runs")
    with worktree_pool(repo, work / "worktrees" / "repo-key" / "s1") as pool:
        planted = attempt(repo, work, "t1", start,
                          PLANT_IN_PRODUCTS.format(outside=outside) + " && "
                          + PLANT.format(outside=outside),
                          setup=setup, keep_setup_products=True)
        assert "nested git repository" in (planted.reason or "")
        seen = attempt(repo, work, "t2", start, look(out), setup=setup,
                       keep_setup_products=True)
        assert pool.stats.reused == 1 and pool.stats.kept_setup == 1
        # Another setup command finds nothing of the first one's products.
        other = attempt(repo, work, "t3", start, "test ! -e build && echo ok > ok.txt",
                        setup="true", keep_setup_products=True)
        assert other.succeeded, other.reason
        assert pool.stats.kept_setup == 1
    assert seen.reason == "the agent changed no file"
    # `made` is t1's setup's (kept); lib.txt, which t1's agent changed, is setup's again.
    assert sorted((out / "status").read_text().splitlines()) == [
        "!! build/cache/c", "!! build/deps/lib.txt", "!! build/made"]
    first_run = (tmp_path / "runs").read_text().split()[0]
    assert (out / "tree" / "build" / "made").read_text() == first_run + "\n"
    assert (out / "tree" / "build" / "deps" / "lib.txt").read_text() == "lib\n"
    refs = (out / "refs").read_text().split()
    assert not [r for r in refs if r.startswith(("refs/worktree/", "refs/bisect/", "refs/stash"))]
    assert (out / "stash").read_text() == ""
    assert "planted" not in (out / "reflog").read_text()
    tracked = {k: v for k, v in files_under(out / "tree").items() if not k.startswith("build/")}
    assert tracked == START_FILES
    assert list(outside.iterdir()) == []
