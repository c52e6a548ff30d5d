"""`placement: pool` attempts are metered by the sprint's proxy: budgets hold across workers.

A real `prefect server`, a process worker started from its own folder, a bare repository
as the remote, the real Codex CLI on the worker against the scripted model. The worker's
Codex talks to the sprint's metering proxy (its own key, from its own environment), so the
sprint counts its tokens as they stream and holds `max_tokens` and `limits.tokens`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from agentfleet.results import SprintReport
from agentfleet.testing import Rule, Script, ScriptedModelServer
from tests.conftest import MakeRepo, run_git
from tests.e2e.conftest import ROOT, run_agentfleet
from tests.support.attempt_pool import attempt_pool, flow_runs
from tests.support.prefect_server import PrefectServer

pytestmark = [pytest.mark.server, pytest.mark.codex]

POOL = "agentfleet-metered-e2e"
CODEX = ROOT / "node_modules" / ".bin" / "codex"
SPEND = {"input_tokens": 1000, "output_tokens": 100}  # 1,100 tokens a response


def patch_step(path: str) -> dict[str, object]:
    return {"do": "patch",
            "patch": f"*** Begin Patch\n*** Add File: {path}\n+done\n*** End Patch\n"}


def test_pool_attempts_spend_against_the_sprints_budgets(
    make_repo: MakeRepo, tmp_path: Path, prefect_server: PrefectServer
) -> None:
    assert CODEX.exists(), f"the pinned Codex CLI is missing at {CODEX}: run make setup"
    remote = tmp_path / "remote.git"
    run_git(tmp_path, "clone", "-q", "--bare", str(make_repo("seed")), str(remote))
    script = Script(rules=[
        # Would make five requests of 1,100 tokens; its budget is 2,500.
        Rule.model_validate({"name": "spend", "match": "work on spend", "usage": SPEND,
                             "responses": [{"steps": [{"do": "exec", "cmd": f"echo {i}"}]}
                                           for i in range(5)]}),
        Rule.model_validate({"name": "first", "match": "work on first", "usage": SPEND,
                             "responses": [{"steps": [patch_step("first.txt")]},
                                           {"steps": [{"do": "message", "text": "Done."}]}]}),
        Rule.model_validate({"name": "last", "match": "work on last", "usage": SPEND}),
    ])
    with ScriptedModelServer(script) as model:
        codex_home = model.write_codex_home(tmp_path / "codex-home")
        # The sprint's machine and the worker name the same provider, each in its own Codex
        # home; the key is in the worker's environment (its own credentials) and travels
        # nowhere else.
        with attempt_pool(prefect_server, tmp_path, POOL, ["w1"], model.agent_env(codex_home),
                          own=lambda home: model.agent_env(
                              model.write_codex_home(home / "codex-home")),
                          shared=[remote]) as (env, (worker,)):
            plan = tmp_path / "plan.yaml"
            plan.write_text(yaml.safe_dump({
                "name": "metered", "repo": f"file://{remote}", "placement": "pool",
                "agent": {"kind": "codex"},
                # One at a time: spend (3,300), first (2,200), then the sprint's 5,000 are gone.
                "limits": {"concurrency": 1, "tokens": 5000},
                "tasks": [
                    {"id": t, "prompt": f"Please work on {t}.", "paths": [f"{t}.txt"], **keys}
                    for t, keys in (("spend", {"max_tokens": 2500}), ("first", {}),
                                    ("last", {"depends_on": ["first"]}))
                ],
            }))
            report_path = tmp_path / "report.json"
            done = run_agentfleet("run", str(plan), "--report", str(report_path),
                                  env={**env, "PWD": str(tmp_path)})
            out = done.stdout + done.stderr
            worker_log = worker.text()

            assert done.returncode == 1, out[-3000:]
            rows = {r.task: r for r in SprintReport.model_validate_json(
                report_path.read_text()).tasks}
            # Stopped after its third request: the proxy refused the fourth, the worker's
            # Codex did not retry it.
            assert len(model.requests_for("spend")) == 3
            assert rows["spend"].detail == "over budget: 3,300 of 2,500 tokens"
            assert rows["spend"].tokens == 3300
            # The proxy's count, equal to Codex's own (the worker logs Codex's figure).
            assert rows["first"].applied and rows["first"].tokens == 2200
            assert "first#1: succeeded: 1 files, 2,200 tokens" in worker_log
            assert "the metering proxy counted" not in out  # no mismatch with Codex's
            # limits.tokens counted the pool attempts: the last task never started.
            assert rows["last"].detail == "skipped: sprint over budget: 5,500 of 5,000 tokens"
            assert model.requests_for("last") == []
            # The live view on the sprint's side, as the worker's agent spent.
            assert "spend#1: tokens 3,300 of 2,500 (+1,100); sprint 3,300 of 5,000" in out
            assert "metered: its model requests go through the sprint's proxy" in worker_log
            assert run_git(remote, "show", "agentfleet/metered:first.txt") == "done\n"
            # The worker got URLs, never the key: not in any flow run's parameters.
            runs = flow_runs(prefect_server.api_url, ["spend#1", "first#1"])
            assert len(runs) == 2
            assert all("/a/" in json.dumps(r["parameters"]["metering"]) for r in runs)
            assert model.api_key not in json.dumps(runs)
            assert {r.authorization for r in model.requests} == {f"Bearer {model.api_key}"}
