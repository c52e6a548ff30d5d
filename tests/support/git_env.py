"""A CI-like git environment for tests: no global config, no identity, no guessing one."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

_IDENTITY_VARS = (
    "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL",
    "EMAIL", "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE",
)


def without_git_identity(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make git see no user configuration and refuse to invent an identity."""
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_SYSTEM", "/dev/null")
    # Without this git may invent user@hostname and hide a missing identity.
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "user.useConfigOnly")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "true")
    for name in _IDENTITY_VARS:
        monkeypatch.delenv(name, raising=False)


def sh(repo: Path, *args: str) -> str:
    """Run git in ``repo``; return stdout; raise on failure."""
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


def fixture_commit(repo: Path, message: str, name: str = "User") -> str:
    """Commit everything as a test user (the user's own commit, not agentfleet's)."""
    sh(repo, "add", "-A")
    sh(repo, "-c", f"user.name={name}", "-c", "user.email=user@example.com",
       "commit", "-q", "-m", message)
    return sh(repo, "rev-parse", "HEAD").strip()


@pytest.fixture
def no_git_identity(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """A CI-like environment for a test (``pytest.mark.usefixtures("no_git_identity")``)."""
    without_git_identity(tmp_path_factory.mktemp("home"), monkeypatch)


def user_repo(path: Path, files: dict[str, str]) -> Path:
    """A repository on ``main`` whose one commit, the user's, holds ``files``."""
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    for rel, text in files.items():
        (path / rel).write_text(text)
    fixture_commit(path, "initial")
    return path
