"""Fixtures every test level shares: real git repositories and a clean environment."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

pytest_plugins = ["tests.support.git_env"]

# A suite started in the background by a non-interactive shell (`make test &`) inherits
# SIGINT ignored, and so would every `agentfleet run` a test stops with Ctrl-C: Python
# then installs no KeyboardInterrupt and the run never hears it. Each test process
# (xdist's workers too) takes Python's own handler back; its children then start with
# SIGINT at its default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Git must not read the developer's own configuration (signing, hooks, templates).
GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
}


def run_git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` and return its stdout; fails the test on a non-zero exit."""
    done = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
    )
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout


MakeRepo = Callable[..., Path]


@pytest.fixture(autouse=True)
def _clean_agentfleet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the environment; a developer's AGENTFLEET_* must not leak in."""
    for name in list(os.environ):
        if name.startswith("AGENTFLEET_"):
            monkeypatch.delenv(name)


@pytest.fixture
def make_repo(tmp_path: Path) -> MakeRepo:
    """A factory of real git repositories with one commit and a local user.

    ``make_repo(name="repo", files={"README.md": "hi\\n"}, branch="main")``.
    """

    def make(
        name: str = "repo",
        files: dict[str, str] | None = None,
        branch: str = "main",
        commit: bool = True,
    ) -> Path:
        path = tmp_path / name
        path.mkdir(parents=True, exist_ok=True)
        run_git(path, "init", "-q", "-b", branch)
        run_git(path, "config", "user.name", "Agentfleet Test")
        run_git(path, "config", "user.email", "test@agentfleet.invalid")
        run_git(path, "config", "commit.gpgsign", "false")
        for rel, text in (files if files is not None else {"README.md": "hello\n"}).items():
            target = path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        if commit:
            run_git(path, "add", "-A")
            run_git(path, "commit", "-q", "-m", "initial commit")
        return path

    return make


def bare_remote(make_repo: MakeRepo, tmp_path: Path,
                branches: dict[str, str] | None = None) -> Path:
    """A bare remote, ``tmp_path/remote.git``, whose ``main`` holds README.md; each of
    ``branches`` (name: file) adds one file on a branch of its own."""
    seed = make_repo("seed", files={"README.md": "hello\n"})
    for name, file in (branches or {}).items():
        run_git(seed, "switch", "-q", "-c", name, "main")
        (seed / file).write_text(f"{name}\n")
        run_git(seed, "add", "-A")
        run_git(seed, "commit", "-q", "-m", name)
        run_git(seed, "switch", "-q", "main")
    remote = tmp_path / "remote.git"
    run_git(tmp_path, "clone", "-q", "--bare", str(seed), str(remote))
    return remote


def files_at(repo: Path, ref: str) -> set[str]:
    """The names at the top of ``ref``'s tree."""
    return set(run_git(repo, "ls-tree", "--name-only", ref).split())


@pytest.fixture
def git() -> Callable[..., str]:
    """``git(repo, *args)``: run git in a repository, return stdout, fail the test on error."""
    return run_git


@pytest.fixture
def repo(make_repo: MakeRepo) -> Path:
    """One real git repository on branch ``main`` with one commit."""
    return make_repo()


def repo_state(repo: Path) -> dict[str, object]:
    """Everything a read-only command must leave as it was: refs, worktrees, status, .git files."""
    git_dir = repo / ".git"
    return {
        "refs": run_git(repo, "for-each-ref"),
        "worktrees": run_git(repo, "worktree", "list", "--porcelain"),
        "status": run_git(repo, "--no-optional-locks", "status", "--porcelain"),
        "git_files": sorted(str(p.relative_to(git_dir)) for p in git_dir.rglob("*")),
        "files": sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if ".git" not in p.parts),
    }


@pytest.fixture
def snapshot() -> Callable[[Path], dict[str, object]]:
    """``snapshot(repo)``: the repository's state, to compare before and after a command."""
    return repo_state


def repo_bytes(repo: Path, *, skip: tuple[str, ...] = ()) -> dict[str, object]:
    """A repository's state to the byte, minus agentfleet's own attempt branches.

    Refs (``for-each-ref``), HEAD, index, config, packed-refs, every reflog and ref file,
    and every file of the working tree (bytes, mode, symlink targets). ``skip``: top-level
    names of the working tree to leave out (a work dir kept inside it).
    """
    git_dir = repo / ".git"

    def files(root: Path, exclude: tuple[str, ...]) -> dict[str, object]:
        out: dict[str, object] = {}
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if rel.split("/")[0] in exclude or "agentfleet-attempts" in rel.split("/"):
                continue
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_file():
                out[rel] = (oct(p.stat().st_mode), p.read_bytes())
            else:
                out[rel] = "dir"
        return out

    refs = [line for line in run_git(repo, "for-each-ref").splitlines()
            if "refs/heads/agentfleet-attempts/" not in line]
    state: dict[str, object] = {"refs": refs}
    for name in ("HEAD", "index", "config", "packed-refs", "ORIG_HEAD", "FETCH_HEAD"):
        path = git_dir / name
        state[name] = path.read_bytes() if path.exists() else None
    state["logs"] = files(git_dir / "logs", ()) if (git_dir / "logs").exists() else {}
    state["ref_files"] = files(git_dir / "refs", ())
    state["work_tree"] = files(repo, (".git", *skip))
    return state


@pytest.fixture
def byte_snapshot() -> Callable[..., dict[str, object]]:
    """``byte_snapshot(repo, skip=(...))``: the repository to the byte (``repo_bytes``)."""
    return repo_bytes
