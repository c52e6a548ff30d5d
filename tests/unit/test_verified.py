"""Reusing a passing final_verify: only for the same tree, command and environment.

Landing runs on real repositories; the final_verify command appends a line to a file
outside the repository each time it really runs, so the tests count real runs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from agentfleet.landing import LandingRequest, land
from agentfleet.naming import attempt_branch
from agentfleet.results import AttemptResult, CheckResult, SprintReport
from agentfleet.verified import VerifiedTrees, env_digest
from tests.support.git_env import fixture_commit, sh, without_git_identity

SPRINT = "s1"
TARGET = "agentfleet/s1"


@pytest.fixture(autouse=True)
def no_git_identity(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    without_git_identity(tmp_path_factory.mktemp("home"), monkeypatch)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    (path / "README.md").write_text("hello\n")
    fixture_commit(path, "initial")
    return path


def attempt_result(repo: Path, task: str, text: str) -> AttemptResult:
    """A succeeded attempt adding ``<task>.txt``, on its attempt branch."""
    start = sh(repo, "rev-parse", "main").strip()
    branch = attempt_branch(SPRINT, task, 1)
    sh(repo, "switch", "-q", "-c", branch, start)
    (repo / f"{task}.txt").write_text(text)
    fixture_commit(repo, f"{task}")
    sh(repo, "switch", "-q", "main")
    head = sh(repo, "rev-parse", branch).strip()
    return AttemptResult(task_id=task, attempt=1, branch=branch, start_sha=start, head_sha=head,
                         succeeded=True)


def land_once(repo: Path, tmp_path: Path, results: dict[str, AttemptResult], command: str,
              verified: VerifiedTrees | None):
    """Land ``results`` on a fresh target (deleted first) and report as a sprint would."""
    if sh(repo, "branch", "--list", TARGET).strip():
        sh(repo, "branch", "-D", TARGET)
    landing = land(LandingRequest(
        repo=repo, sprint=SPRINT, base_sha=sh(repo, "rev-parse", "main").strip(), target=TARGET,
        order=sorted(results), results=results, final_verify=command,
        verify_timeout_s=60, worktree_root=tmp_path / "wt",
    ), env=dict(os.environ), verified=verified)  # fmt: skip
    report = SprintReport(sprint=SPRINT, repo=str(repo), base="main", target=TARGET,
                          tasks=landing.tasks, final_verify=landing.final_verify,
                          target_moved=landing.target_moved, target_sha=landing.target_sha,
                          target_up_to_date=landing.target_up_to_date)
    return landing, report


def runs(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_a_rerun_landing_the_same_tree_reuses_the_pass_and_says_from_which_run(
    repo: Path, tmp_path: Path
) -> None:
    log = tmp_path / "verify-runs.log"
    command = f"echo ran >> {log} && test -f a.txt"
    results = {"a": attempt_result(repo, "a", "a\n")}
    folder = tmp_path / "verified"

    first, _ = land_once(repo, tmp_path, results, command,
                         VerifiedTrees(folder, os.environ, run="flow run one"))
    again, report = land_once(repo, tmp_path, results, command,
                              VerifiedTrees(folder, os.environ, run="flow run two"))

    assert runs(log) == 1  # the second landing ran nothing
    assert first.target_moved and again.target_moved
    assert sh(repo, "rev-parse", f"{again.target_sha}^{{tree}}").strip() == \
        sh(repo, "rev-parse", f"{first.target_sha}^{{tree}}").strip()
    assert first.final_verify is not None and first.final_verify.reused_from is None
    assert again.final_verify is not None and again.final_verify.passed
    assert again.final_verify.reused_from.startswith("flow run one at ")
    assert "final_verify passed (reused: flow run one at " in report.summary_line()
    assert report.exit_status == 0


def test_another_tree_command_or_environment_or_no_cache_verifies_again(
    repo: Path, tmp_path: Path
) -> None:
    log = tmp_path / "verify-runs.log"
    command = f"echo ran >> {log} && true"
    folder = tmp_path / "verified"
    one = {"a": attempt_result(repo, "a", "a\n")}

    def store(env=os.environ, reuse: bool = True) -> VerifiedTrees:
        return VerifiedTrees(folder, env, run="flow run x", reuse=reuse)

    land_once(repo, tmp_path, one, command, store())
    assert runs(log) == 1
    # Another tree: a second task lands too.
    land_once(repo, tmp_path, {**one, "b": attempt_result(repo, "b", "b\n")}, command, store())
    assert runs(log) == 2
    # Another command.
    land_once(repo, tmp_path, one, command + " && true", store())
    assert runs(log) == 3
    # Another environment (a variable the command could read).
    land_once(repo, tmp_path, one, command, store({**os.environ, "TEST_FLAG": "1"}))
    assert runs(log) == 4
    # --no-cache: verifies again, and its pass is still recorded for the next run.
    _, report = land_once(repo, tmp_path, one, command, store(reuse=False))
    assert runs(log) == 5 and report.final_verify.reused_from is None
    land_once(repo, tmp_path, one, command, store())
    assert runs(log) == 5


def test_a_failure_is_never_reused(repo: Path, tmp_path: Path) -> None:
    log = tmp_path / "verify-runs.log"
    command = f"echo ran >> {log} && false"
    results = {"a": attempt_result(repo, "a", "a\n")}
    folder = tmp_path / "verified"

    for expected in (1, 2):
        landing, report = land_once(repo, tmp_path, results, command,
                                    VerifiedTrees(folder, os.environ, run="flow run x"))
        assert runs(log) == expected
        assert not landing.target_moved and report.exit_status == 1
    assert not list(folder.glob("*.json"))


def test_a_pass_slower_than_the_timeout_now_allows_is_not_reused(tmp_path: Path) -> None:
    store = VerifiedTrees(tmp_path, {"PATH": "/bin"}, run="flow run x")
    store.keep("t" * 40, CheckResult(command="make test", passed=True, exit_status=0,
                                     duration_s=30.0))

    assert store.find("t" * 40, "make test", timeout_s=60) is not None
    assert store.find("t" * 40, "make test", timeout_s=10) is None


def test_the_environment_digest_ignores_only_the_shell_session(tmp_path: Path) -> None:
    base = {"PATH": "/bin", "HOME": "/root", "SECRET": "s3cret"}

    assert env_digest(base) == env_digest({**base, "PWD": "/x", "OLDPWD": "/y", "SHLVL": "3",
                                           "_": "/usr/bin/agentfleet",
                                           "PREFECT__FLOW_RUN_ID": "abc"})
    assert env_digest(base) != env_digest({**base, "SECRET": "other"})
    assert env_digest(base) != env_digest({**base, "VIRTUAL_ENV": "/venv"})
    # Values are never stored, only their digest; nor the output, which may show them.
    store = VerifiedTrees(tmp_path, base, run="flow run x")
    store.keep("t" * 40, CheckResult(command="env", passed=True, exit_status=0,
                                     output_tail="SECRET=s3cret"))
    (record,) = tmp_path.glob("*.json")
    assert "s3cret" not in record.read_text()
