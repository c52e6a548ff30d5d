"""Token budgets in a sprint: the real Codex CLI through the sprint's metering proxy, the
scripted model upstream, the flow under Prefect's harness."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.artifacts import Artifact

from agentfleet.artifacts import progress_key
from agentfleet.scripted import Rule, Script, ScriptedModelServer
from agentfleet.settings import PROJECT_ROOT
from tests.conftest import MakeRepo
from tests.integration.conftest import run_sprint

pytestmark = pytest.mark.codex

CODEX = PROJECT_ROOT / "node_modules" / ".bin" / "codex"
SPEND = {"input_tokens": 1000, "output_tokens": 100}  # 1,100 tokens a response


@pytest.fixture
def model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedModelServer]:
    """The scripted model; every Codex agent of the test talks to it (through the proxy)."""
    assert CODEX.exists(), f"the pinned Codex CLI is missing at {CODEX}: run make setup"
    with ScriptedModelServer(Script(rules=[])) as server:
        home = server.write_codex_home(tmp_path / "codex-home")
        for key, value in server.agent_env(home).items():
            monkeypatch.setenv(key, value)
        yield server


def patch_step(path: str) -> dict[str, object]:
    return {"do": "patch",
            "patch": f"*** Begin Patch\n*** Add File: {path}\n+done\n*** End Patch\n"}


def codex_task(task_id: str, **keys: object) -> dict[str, object]:
    return {"id": task_id, "prompt": f"Please work on {task_id}.", "paths": [f"{task_id}.txt"],
            **keys}


def test_an_attempt_over_its_budget_gets_no_further_response(
    harness, model, make_repo: MakeRepo, work_dir, tmp_path
):
    model.set_script(Script(rules=[Rule.model_validate({
        "name": "spend", "match": "work on spend", "usage": SPEND,
        "responses": [{"steps": [{"do": "exec", "cmd": f"echo {i}"}]} for i in range(5)],
    })]))
    ok, report = run_sprint(tmp_path, {
        "name": "budget", "repo": str(make_repo()), "agent": {"kind": "codex"},
        "tasks": [codex_task("spend", max_tokens=2500)],
    })
    assert not ok
    (row,) = report.tasks
    assert row.detail == "over budget: 3,300 of 2,500 tokens"
    assert row.tokens == 3300  # as the proxy counted: the three responses it let through
    assert len(model.requests_for("spend")) == 3  # the fourth was refused, not retried


def test_a_spent_sprint_budget_skips_the_tasks_left_and_says_so(
    harness, model, make_repo: MakeRepo, work_dir, tmp_path
):
    model.set_script(Script(rules=[
        Rule.model_validate({
            "name": "first", "match": "work on first", "usage": SPEND,
            "responses": [{"steps": [patch_step("first.txt")]},
                          {"steps": [{"do": "message", "text": "Done."}]}],
        }),
        Rule.model_validate({"name": "second", "match": "work on second", "usage": SPEND}),
    ]))
    ok, report = run_sprint(tmp_path, {
        "name": "spent", "repo": str(make_repo()), "agent": {"kind": "codex"},
        "limits": {"tokens": 2000},
        "tasks": [codex_task("first"), codex_task("second", depends_on=["first"])],
    })
    assert not ok
    first, second = report.tasks
    assert first.outcome == "applied" or first.applied, first
    assert first.tokens == 2200  # equal to what the scripted model reported for its two
    assert second.detail == "skipped: sprint over budget: 2,200 of 2,000 tokens"
    assert model.requests_for("second") == []
    # The live view: the progress artifact shows the tokens against the sprint's budget.
    progress = Artifact.get(progress_key("spent"))
    assert progress is not None and progress.description.endswith("; tokens: 2,200 of 2,000")


def test_complexity_picks_the_model_each_request_names(
    harness, model, make_repo: MakeRepo, work_dir, tmp_path
):
    model.set_script(Script(rules=[
        Rule.model_validate({"name": n, "match": f"work on {n}",
                             "responses": [{"steps": [patch_step(f"{n}.txt")]}]})
        for n in ("easy", "hard", "named")
    ]))
    ok, report = run_sprint(tmp_path, {
        "name": "routed", "repo": str(make_repo()), "agent": {"kind": "codex"},
        "models": {"complex": "gpt-6-astra"},
        "tasks": [codex_task("easy", complexity="simple"),
                  codex_task("hard", complexity="complex"),
                  codex_task("named", complexity="simple", agent={"model": "gpt-5.5"})],
    })
    assert ok, report.summary_line()
    used = {n: {r.body.get("model") for r in model.requests_for(n)}
            for n in ("easy", "hard", "named")}
    # simple: the setting's default; complex: the plan's; a named model wins.
    assert used == {"easy": {"gpt-6-luna"}, "hard": {"gpt-6-astra"}, "named": {"gpt-5.5"}}


def test_a_429_with_retry_after_holds_every_agent(
    harness, model, make_repo: MakeRepo, work_dir, tmp_path
):
    model.set_script(Script(rules=[
        Rule.model_validate({
            "name": "limited", "match": "work on limited",
            "faults": [{"kind": "http", "status": 429, "retry_after": 2}],
            "responses": [{"steps": [patch_step("limited.txt")]}],
        }),
        Rule.model_validate({
            "name": "other", "match": "work on other",
            "responses": [{"steps": [{"do": "exec", "cmd": f"echo {i}"}]} for i in range(3)]
            + [{"steps": [patch_step("other.txt")]}],
        }),
    ]))
    ok, report = run_sprint(tmp_path, {
        "name": "backoff", "repo": str(make_repo()), "agent": {"kind": "codex"},
        "tasks": [codex_task("limited"), codex_task("other")],
    })
    assert ok, report.summary_line()
    records = model.requests
    (limited,) = [r for r in records if r.status == 429]
    after = [r.started_at - limited.started_at for r in records
             if r.started_at > limited.started_at]
    assert after, "no request after the 429"
    # Nothing reached the model server while the hold ran (the proxy held every agent).
    assert min(after) >= 1.9, after
