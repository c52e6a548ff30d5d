"""Best-of-N with the real Codex CLI: `variants` give attempts different models and hints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from agentfleet.testing import Script, ScriptedModelServer
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


def _writes(tag: str, path: str, text: str) -> dict:
    """A rule: the attempt whose prompt carries ``[tag]`` writes ``text`` to ``path``."""
    return {
        "name": tag, "match": f"[{tag}]", "usage": {"input_tokens": 100, "output_tokens": 10},
        "responses": [
            {"steps": [{"do": "patch", "patch": f"*** Begin Patch\n*** Add File: {path}\n"
                        f"+{text}\n*** End Patch\n"}]},
            {"steps": [{"do": "message", "text": f"Wrote {path}."}]},
        ],
    }


def _task(task_id: str, paths: list[str], tags: list[str], **keys: object) -> dict:
    """A task of ``len(tags)`` attempts; attempt k's hint carries ``[tags[k-1]]``."""
    return {"id": task_id, "prompt": f"work on {task_id}", "paths": paths,
            "attempts": len(tags), "variants": [{"hint": f"[{t}]"} for t in tags], **keys}


def test_the_scripted_model_gives_each_attempt_its_own_work_and_the_best_one_lands(
    make_repo, sprint_env, model: ScriptedModelServer, tmp_path: Path
):
    model.set_script(Script.model_validate({"rules": [
        _writes("v1", "two.txt", "bad"), _writes("v2", "two.txt", "good"),
        _writes("v3", "two.txt", "bad"),
        _writes("s1", "outside.txt", "stray"), _writes("s2", "inside.txt", "kept"),
        _writes("m1", "score.txt", "a much longer answer"), _writes("m2", "score.txt", "short"),
        _writes("c1", "vote.txt", "same"), _writes("c2", "vote.txt", "other"),
        _writes("c3", "vote.txt", "same"),
    ]}))
    repo = make_repo()
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({
        "name": "best", "repo": str(repo), "limits": {"concurrency": 4},
        "tasks": [
            _task("verify", ["two.txt"], ["v1", "v2", "v3"], verify="grep -qx good two.txt"),
            _task("scope", ["inside.txt"], ["s1", "s2"]),
            _task("score", ["score.txt"], ["m1", "m2"], score="wc -c < score.txt",
                  score_goal="min"),
            _task("votes", ["vote.txt"], ["c1", "c2", "c3"]),
        ],
    }))
    report_path = tmp_path / "report.json"
    done = run_agentfleet("run", str(plan), "--report", str(report_path), env=sprint_env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # Every attempt was its own Codex session, asking the model for its own work.
    asked = {r.rule for r in model.requests}
    assert asked == {"v1", "v2", "v3", "s1", "s2", "m1", "m2", "c1", "c2", "c3"}, asked
    model.assert_complete()  # and each session to its end
    rows = {t["task"]: t for t in json.loads(report_path.read_text())["tasks"]}
    decided = {t: (r["winner"], r["criterion"]) for t, r in rows.items()}
    assert decided == {"verify": (2, "passes"), "scope": (2, "passes"),
                       "score": (2, "score"), "votes": (1, "votes")}, decided
    assert [c["outcome"] for c in rows["verify"]["candidates"]] == ["failed", "passed", "failed"]
    assert "outside.txt" in rows["scope"]["candidates"][0]["reason"]
    target = "agentfleet/best"
    assert run_git(repo, "show", f"{target}:two.txt") == "good\n"
    assert run_git(repo, "show", f"{target}:inside.txt") == "kept\n"
    assert run_git(repo, "show", f"{target}:score.txt") == "short\n"
    assert run_git(repo, "show", f"{target}:vote.txt") == "same\n"
    assert "outside.txt" not in run_git(repo, "ls-tree", "--name-only", target)
