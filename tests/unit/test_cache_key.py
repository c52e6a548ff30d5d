"""The attempt cache key: what changes it, what must not, and which results are reused."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentfleet.agent_config import AgentConfig
from agentfleet.attempt import AttemptSpec
from agentfleet.cache_key import attempt_key, is_cacheable, key_parts
from agentfleet.codex.outcome import AttemptOutcome, Ending
from agentfleet.results import AttemptResult, CheckResult

TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
SECRET = "sk-sentinel-do-not-store"


def spec(**changes: object) -> AttemptSpec:
    values: dict[str, object] = dict(
        sprint="s1", task_id="api", attempt=1, branch="agentfleet-attempts/s1/api/1",
        repo=Path("/somewhere/repo"), worktree_root=Path("/work/wt"), start_sha="a" * 40,
        prompt="Add the endpoint.", paths=["app/**"], setup="make deps", verify="make test",
        timeout_s=600, agent=AgentConfig(model="gpt-5.5", env={"OPENAI_API_KEY": SECRET}),
    )  # fmt: skip
    values.update(changes)
    return AttemptSpec.model_validate(values)


def key(s: AttemptSpec, tree: str = TREE, version: str | None = "codex-cli 0.169.0") -> str:
    return attempt_key(s, tree, version)


def test_the_key_ignores_the_start_commit_the_machine_and_the_limits() -> None:
    assert key(spec()) == key(
        spec(start_sha="b" * 40, repo=Path("/elsewhere"), worktree_root=Path("/tmp/x"),
             timeout_s=5, retries=0, grace_s=1.0)
    )  # fmt: skip


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": "Add the endpoint.\n\nTask db (depends_on) added indexes."},
        {"paths": ["app/**", "docs/**"]},
        {"paths": None},
        {"setup": None},
        {"verify": "make test-all"},
        {"attempt": 2},
        {"task_id": "api2"},
        {"agent": AgentConfig(model="gpt-6-sol", env={"OPENAI_API_KEY": SECRET})},
        {"agent": AgentConfig(model="gpt-5.5", sandbox="read-only",
                              env={"OPENAI_API_KEY": SECRET})},
        {"agent": AgentConfig(model="gpt-5.5", profile="fast", env={"OPENAI_API_KEY": SECRET})},
        {"agent": AgentConfig(model="gpt-5.5", config={"model_reasoning_effort": "high"},
                              env={"OPENAI_API_KEY": SECRET})},
        {"agent": AgentConfig(model="gpt-5.5", env={"OPENAI_API_KEY": SECRET, "CI": "1"})},
        {"agent": AgentConfig(kind="command", run="make it")},
    ],
)
def test_the_key_changes_with_what_decides_the_result(change: dict[str, object]) -> None:
    assert key(spec(**change)) != key(spec())


def test_the_key_changes_with_the_tree_and_the_codex_version() -> None:
    assert key(spec(), tree="1" * 40) != key(spec())
    assert key(spec(), version="codex-cli 0.170.0") != key(spec())


def test_a_resolvers_key_holds_the_merge_in_progress() -> None:
    from agentfleet.merging import MergeInProgress

    merge = MergeInProgress(commit="c" * 40, label="feature", files=["a.py"])
    resolver = spec(merge=merge)
    trees = ("1" * 40, "2" * 40)  # the merged commit's tree, the merge base's
    assert attempt_key(resolver, TREE, None, trees) != key(spec())
    assert attempt_key(resolver, TREE, None, trees) != attempt_key(resolver, TREE, None,
                                                                   ("1" * 40, "3" * 40))
    other = spec(merge=merge.model_copy(update={"files": ["a.py", "b.py"]}))
    assert attempt_key(other, TREE, None, trees) != attempt_key(resolver, TREE, None, trees)
    # Keys of attempts that merge nothing are as before the field existed.
    assert "merge" not in key_parts(spec(), TREE, None).model_dump(exclude_none=True)


def test_secret_values_never_enter_the_key() -> None:
    other = spec(agent=AgentConfig(model="gpt-5.5", env={"OPENAI_API_KEY": "sk-other"}))
    assert key(other) == key(spec())
    parts = key_parts(spec(), TREE, "v").model_dump_json()
    assert SECRET not in parts and "OPENAI_API_KEY" in parts


def test_a_command_agent_is_keyed_on_its_command_not_on_codex() -> None:
    command = spec(agent=AgentConfig(kind="command", run="make it", model="ignored"))
    assert key(command, version="codex-cli 0.169.0") == key(command, version=None)
    assert key(command) == key(spec(agent=AgentConfig(kind="command", run="make it")))
    assert key(command) != key(spec(agent=AgentConfig(kind="command", run="make other")))


def result(**changes: object) -> AttemptResult:
    values: dict[str, object] = dict(
        task_id="api", attempt=1, branch="b", start_sha="a" * 40, head_sha="c" * 40,
        succeeded=False, outcome=AttemptOutcome(ending=Ending.COMPLETED),
    )  # fmt: skip
    values.update(changes)
    return AttemptResult.model_validate(values)


def check(passed: bool, exit_status: int | None = 1, timed_out: bool = False) -> CheckResult:
    return CheckResult(command="make test", passed=passed, exit_status=exit_status,
                       timed_out=timed_out)  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "cached"),
    [
        ({"succeeded": True, "verify": check(True, 0)}, True),
        ({"verify": check(False, 1), "reason": "verify failed (exit 1)"}, True),
        ({"reason": "changed files outside its paths: x"}, True),
        ({"head_sha": None, "reason": "the agent changed no file"}, True),
        ({"verify": check(False, None, timed_out=True)}, False),
        ({"verify": check(False, None)}, False),  # killed by an interrupt
        ({"outcome": None, "setup": check(False, 1), "head_sha": None}, False),
        ({"outcome": AttemptOutcome(ending=Ending.FAILED_TRANSIENT), "head_sha": None}, False),
        ({"outcome": AttemptOutcome(ending=Ending.FAILED_FATAL), "head_sha": None}, False),
        ({"outcome": AttemptOutcome(ending=Ending.TIMED_OUT), "head_sha": None}, False),
        ({"outcome": AttemptOutcome(ending=Ending.KILLED), "head_sha": None}, False),
    ],
)
def test_what_the_inputs_decide_is_cached_what_chance_decides_is_not(
    changes: dict[str, object], cached: bool
) -> None:
    assert is_cacheable(result(**changes)) is cached
