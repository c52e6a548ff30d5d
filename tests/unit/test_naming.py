from __future__ import annotations

import subprocess

import pytest

from agentfleet.naming import (
    ATTEMPTS_NAMESPACE,
    ID_PATTERN,
    attempt_branch,
    attempts_prefix,
    branch_name_problem,
    default_target,
    is_attempt_branch,
    is_valid_id,
    scratch_ref,
)


def test_names() -> None:
    assert attempt_branch("s1", "api", 1) == "agentfleet-attempts/s1/api/1"
    assert attempt_branch("s1", "api", 3).startswith(ATTEMPTS_NAMESPACE)
    assert attempts_prefix("s1") == "agentfleet-attempts/s1/"
    assert attempts_prefix("s1", "api") == "agentfleet-attempts/s1/api/"
    assert default_target("s1") == "agentfleet/s1"
    assert scratch_ref("s1") == "refs/agentfleet/scratch/s1"
    assert is_attempt_branch("agentfleet-attempts/s1/api/1")
    assert is_attempt_branch("refs/heads/agentfleet-attempts/s1/api/1")
    assert not is_attempt_branch("agentfleet/s1")
    assert ID_PATTERN.startswith("^")


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError):
        attempt_branch("s", "t", 0)


@pytest.mark.parametrize("value", ["a", "api", "a-b", "0day", "x1-2"])
def test_valid_ids(value: str) -> None:
    assert is_valid_id(value)


@pytest.mark.parametrize("value", ["", "-a", "A", "a_b", "a b", "a.b", "é"])
def test_invalid_ids(value: str) -> None:
    assert not is_valid_id(value)


BRANCHES = [
    "main", "feature/x", "agentfleet/s1", "a.b", "v1.0", "x-y_z", "@", "HEAD", "-x", "a..b",
    "a/.b", ".a", "a.lock", "a/b.lock/c", "a/", "/a", "a//b", "a.", "a@{b", "a b", "a~1",
    "a^", "a:b", "a?", "a*", "a[b", "a\\b", "a\tb", "ü", "a@b", "@a", "x/y/z",
]


@pytest.mark.parametrize("name", BRANCHES)
def test_branch_names_agree_with_git(name: str) -> None:
    done = subprocess.run(
        ["git", "check-ref-format", "--branch", name], capture_output=True, text=True
    )
    # `--branch` expands "@" and accepts "HEAD"; `git branch` refuses both as names.
    git_ok = done.returncode == 0 and name not in ("HEAD", "@")
    assert (branch_name_problem(name) is None) == git_ok, branch_name_problem(name)


def test_branch_problem_says_why() -> None:
    assert "'..'" in (branch_name_problem("a..b") or "")
    assert "' '" in (branch_name_problem("a b") or "")
