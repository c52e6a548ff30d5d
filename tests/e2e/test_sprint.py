"""The sprint end to end: real Codex CLI, scripted model, real git, a real Prefect server."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from agentfleet.testing import Fault, ScriptedModelServer
from tests.conftest import run_git
from tests.e2e.conftest import AGENTFLEET, ROOT, run_agentfleet
from tests.support.prefect_server import api
from tests.support.waiting import processes_under, wait_for

pytestmark = pytest.mark.codex

TARGET = "agentfleet/orders-v2"
APPLY_ORDER = [
    "db-indexes", "orders-endpoint", "validation", "auth-strict", "utils-docstrings",
    "integration-tests", "openapi-spec", "docs",
]


def spans(model: ScriptedModelServer) -> dict[str, tuple[float, float]]:
    """Per ticket: from its first model request to the end of its last one."""
    out: dict[str, tuple[float, float]] = {}
    for r in model.requests:
        if r.rule is None:
            continue
        start, end = out.get(r.rule, (r.started_at, r.finished_at or r.started_at))
        out[r.rule] = (min(start, r.started_at), max(end, r.finished_at or r.started_at))
    return out


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def user_state(repo: Path) -> dict[str, str]:
    return {
        "head": run_git(repo, "rev-parse", "HEAD"),
        "branch": run_git(repo, "symbolic-ref", "HEAD"),
        "status": run_git(repo, "status", "--porcelain"),
        "index": run_git(repo, "ls-files", "-s"),
        "readme": (repo / "README.md").read_text(),
    }


def test_eight_ticket_sprint_lands_each_task_once_on_a_verified_target(
    sample, sprint_env, model: ScriptedModelServer, tmp_path: Path
) -> None:
    repo, plan = sample()
    # The three first tickets' first answers take a while, so that agents started together
    # are seen together by the model even on a loaded machine.
    script = model.script.model_copy(deep=True)
    for rule in script.rules:
        if rule.name in ("db-indexes", "validation", "auth-strict"):
            rule.responses[0].delay_s = 2.5
    model.set_script(script)
    (repo / "README.md").write_text("work in progress, not committed\n")  # the user's own edit
    before = user_state(repo)
    report_file = tmp_path / "report.json"

    run = run_agentfleet("run", str(plan), "--report", str(report_file), env=sprint_env)

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "uncommitted changes" in run.stderr
    # Every ticket's work is on the target, one commit per task, in apply order.
    show = lambda path: run_git(repo, "show", f"{TARGET}:{path}")  # noqa: E731
    assert 'ROUTE = "/api/v2/orders"' in show("app/api/orders.py")
    assert "orders_customer" in show("migrations/002_orders_indexes.sql")
    assert "test_lists_one_customer" in show("tests/integration/test_orders_api.py")
    assert "/api/v2/orders" in show("docs/openapi.yaml")
    assert "## GET /api/v2/orders" in show("docs/index.md")
    assert '"""Format cents as dollars."""' in show("app/utils.py")
    assert "def validate_order" in show("app/validation.py")
    assert "def parse_bearer" in show("app/auth/tokens.py")
    log = run_git(
        repo, "log", "--reverse", "--format=%x1e%(trailers:key=Agentfleet-Task,valueonly)%x1f%P",
        f"main..{TARGET}",
    )
    commits = [c.split("\x1f") for c in log.split("\x1e")[1:]]
    assert [task.strip() for task, _ in commits] == APPLY_ORDER
    assert all(len(parents.split()) == 1 for _, parents in commits)  # no merge commits

    # Independent tickets overlapped in time; serialized ones did not; never more than 3.
    s = spans(model)
    assert overlap(s["db-indexes"], s["validation"]) and overlap(s["validation"], s["auth-strict"])
    assert s["orders-endpoint"][0] >= s["db-indexes"][1]  # depends_on
    assert s["integration-tests"][0] >= s["orders-endpoint"][1]
    assert s["docs"][0] >= s["openapi-spec"][1]  # overlapping paths: docs/** and docs/openapi.yaml
    assert most_at_once(list(s.values())) <= 3

    # The dependent ticket saw its dependency's files and was told what it did.
    seen = model.requests_for("integration-tests")
    assert "Task orders-endpoint (depends_on)" in seen[0].prompt
    assert "Added GET /api/v2/orders" in seen[0].prompt
    assert any("USES_INDEX" in json.dumps(r.body) for r in seen[1:])  # `cat app/api/orders.py`

    # The user's working tree, index and branch are untouched; no worktree is left.
    assert user_state(repo) == before
    assert run_git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    report = json.loads(report_file.read_text())
    assert [t["outcome"] for t in report["tasks"]] == ["applied"] * 8
    assert report["target_moved"] and report["final_verify"]["passed"]
    assert report["target_sha"] == run_git(repo, "rev-parse", TARGET).strip()
    model.assert_complete()  # every ticket's every scripted answer was asked for

    # A rerun applies nothing twice and asks the model nothing.
    served = len(model.requests)
    again = run_agentfleet("run", str(plan), "--report", str(report_file), env=sprint_env)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert len(model.requests) == served
    assert run_git(repo, "rev-list", "--count", f"main..{TARGET}").strip() == "8"
    report = json.loads(report_file.read_text())
    assert {t["outcome"] for t in report["tasks"]} == {"already applied"}


def latest_flow_run_state(api_url: str) -> str:
    return api(api_url, "/flow_runs/filter",
               {"sort": "START_TIME_DESC", "limit": 1})[0]["state"]["type"]


def test_a_failed_dependency_blocks_its_dependents_and_the_run_fails(
    sample, sprint_env, model: ScriptedModelServer, tmp_path: Path, prefect_server
) -> None:
    repo, plan = sample()
    script = model.script.model_copy(deep=True)
    rule = next(r for r in script.rules if r.name == "db-indexes")
    rule.faults = [Fault(kind="http", status=401, times=50)]
    model.set_script(script)
    model.write_codex_home(tmp_path / "codex-home", request_max_retries=0)
    report_file = tmp_path / "report.json"

    run = run_agentfleet("run", str(plan), "--report", str(report_file), env=sprint_env)

    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    outcomes = {t["task"]: t for t in json.loads(report_file.read_text())["tasks"]}
    assert outcomes["db-indexes"]["outcome"] == "failed"
    assert "401" in outcomes["db-indexes"]["detail"]
    for blocked in ("orders-endpoint", "integration-tests", "openapi-spec"):
        assert outcomes[blocked]["outcome"] == "blocked"
        assert outcomes[blocked]["detail"] == "blocked by db-indexes"
        assert not model.requests_for(blocked)  # never run
    assert outcomes["validation"]["outcome"] == "applied"
    assert "blocked by db-indexes" in run.stdout
    # A fatal failure is not retried by agentfleet: one Codex run (one thread).
    assert len({r.thread_id for r in model.requests_for("db-indexes")}) == 1
    assert latest_flow_run_state(prefect_server.api_url) == "FAILED"
    # Against a server, the run ends with its flow run's page.
    assert f"flow run: {prefect_server.api_url.removesuffix('/api')}/runs/flow-run/" in run.stdout
    # What did succeed still landed on the target, verified.
    assert "def validate_order" in run_git(repo, "show", f"{TARGET}:app/validation.py")




def test_interrupt_stops_every_agent_and_a_second_run_is_refused_meanwhile(
    sample, sprint_env, model: ScriptedModelServer, tmp_path: Path
) -> None:
    repo, plan = sample()
    script = model.script.model_copy(deep=True)
    # The model never answers these in time: validation is stopped mid-turn, and docs
    # (waiting on orders-endpoint through openapi-spec) never starts, however slow the box.
    for slow in (r for r in script.rules if r.name in ("validation", "orders-endpoint")):
        slow.responses[0].delay_s = 600
    model.set_script(script)
    work = Path(sprint_env["AGENTFLEET_WORK_DIR"])
    report_file = tmp_path / "report.json"
    first = subprocess.Popen(
        [AGENTFLEET, "run", str(plan), "--report", str(report_file)],
        env=sprint_env, cwd=ROOT, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_for(lambda: model.requests_for("validation"), 90, "the slow ticket to start")
        wait_for(
            lambda: "agentfleet-attempts/orders-v2/auth-strict/1"
            in run_git(repo, "branch", "--list", "agentfleet-attempts/*"),
            60, "a ticket to finish",
        )
        # The branch exists from the worktree's creation (the agent may still wait for a
        # slot): the ticket is finished once agentfleet committed on it.
        base = run_git(repo, "rev-parse", "HEAD").strip()
        wait_for(lambda: run_git(repo, "rev-parse", "-q", "--verify",
                                 "agentfleet-attempts/orders-v2/auth-strict/1^{commit}").strip()
                 not in ("", base), 60, "its commit")

        second = run_agentfleet("run", str(plan), env=sprint_env, timeout=60)
        assert second.returncode == 2
        assert "already running" in second.stderr

        first.send_signal(signal.SIGINT)
        output, _ = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, output[-3000:]
    assert "interrupted: every agent stopped" in output
    report = json.loads(report_file.read_text())
    assert report["interrupted"] is True
    outcomes = {t["task"]: t["outcome"] for t in report["tasks"]}
    assert outcomes["auth-strict"] == "not applied"  # finished, kept for the next run
    assert outcomes["validation"] == "failed"  # stopped
    assert outcomes["docs"] == "not run"
    wait_for(lambda: not processes_under(work), 10, "no agent process left")
    assert run_git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert not [p for p in (work / "worktrees").rglob("*") if p.is_dir() and (p / ".git").exists()]
    branches = run_git(repo, "branch", "--list", "agentfleet-attempts/*")
    assert "auth-strict/1" in branches  # a finished result is kept
    assert "validation/1" not in branches  # the interrupted one leaves nothing
    assert TARGET not in run_git(repo, "branch", "--list", TARGET)
