"""Best-of-N with the real Codex CLI: `variants` give attempts different models and hints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from agentfleet.scripted import Script, ScriptedModelServer
from tests.conftest import run_git
from tests.e2e.conftest import run_agentfleet

pytestmark = pytest.mark.codex

GREET = {
    "name": "greet",
    "match": "[greet]",
    "usage": {"input_tokens": 100, "output_tokens": 10},
    "responses": [
        {"steps": [{"do": "patch", "patch": "*** Begin Patch\n*** Add File: greeting.txt\n"
                    "+hello\n*** End Patch\n"}]},
        {"steps": [{"do": "message", "text": "Wrote greeting.txt."}]},
    ],
}


def test_variants_with_two_models(make_repo, sprint_env, model: ScriptedModelServer,
                                  tmp_path: Path):
    model.set_script(Script.model_validate({"rules": [GREET]}))
    repo = make_repo()
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({
        "name": "variants", "repo": str(repo), "attempts": 2,
        "variants": [{"model": "gpt-5.5", "hint": "[hint-fast] keep it short"},
                     {"model": "gpt-5.1-codex", "hint": "[hint-deep] be thorough"}],
        "tasks": [{"id": "greet", "prompt": "[greet] write a greeting",
                   "paths": ["greeting.txt"]}],
    }))
    report_path = tmp_path / "report.json"
    done = run_agentfleet("run", str(plan), "--report", str(report_path), env=sprint_env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # The model each request named, and the hint its prompt carried, per variant.
    seen = {(r.body.get("model"), "[hint-fast]" in r.prompt, "[hint-deep]" in r.prompt)
            for r in model.requests if r.rule == "greet"}
    assert seen == {("gpt-5.5", True, False), ("gpt-5.1-codex", False, True)}, seen
    report = json.loads(report_path.read_text())
    row = report["tasks"][0]
    assert [c["k"] for c in row["candidates"]] == [1, 2]
    # gpt-5.5 gets Codex's freeform apply_patch tool and writes the file; whether the
    # other model's tool call works depends on Codex's model table: k=1 wins either way
    # (alone on passes, or on k when both wrote the same diff).
    assert row["candidates"][0]["outcome"] == "passed"
    assert row["winner"] == 1 and row["criterion"] in ("passes", "k"), row["selection"]
    assert run_git(repo, "show", "agentfleet/variants:greeting.txt") == "hello\n"
