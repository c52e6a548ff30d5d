"""Cached attempt results: a rerun asks the model nothing, a crashed sprint resumes.

Real Codex against the scripted model, a real Prefect server, real result storage
(one folder per test, from ``sprint_env``). Model requests are counted per ticket.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from agentfleet.sample import sample_plan, sample_script, write_plan
from agentfleet.testing import ScriptedModelServer
from tests.conftest import run_git
from tests.e2e.conftest import AGENTFLEET, ROOT, run_agentfleet
from tests.support.prefect_server import api
from tests.support.waiting import processes_under, wait_for

pytestmark = pytest.mark.codex

TARGET = "agentfleet/orders-v2"


def tasks(*ids: str) -> list[dict]:
    """The sample plan's tasks, only these."""
    return [t for t in sample_plan()["tasks"] if t["id"] in ids]


def counts(model: ScriptedModelServer) -> dict[str, int]:
    """Model requests so far, per ticket."""
    out: dict[str, int] = {}
    for r in model.requests:
        if r.rule:
            out[r.rule] = out.get(r.rule, 0) + 1
    return out


def applied(repo: Path) -> list[str]:
    """The tasks on the target, one per commit, oldest first."""
    log = run_git(repo, "log", "--reverse", "--format=%(trailers:key=Agentfleet-Task,valueonly)",
                  f"main..{TARGET}")  # fmt: skip
    return log.split()


def persisted_tasks(storage: Path) -> set[str]:
    """The tasks whose attempt results Prefect has written to the result storage."""
    found = set()
    for file in storage.glob("attempt-*"):
        try:
            record = json.loads(file.read_text())
            found.add(json.loads(record["result"])["data"]["task_id"])
        except (ValueError, KeyError, TypeError):
            continue  # still being written
    return found




def test_a_rerun_after_a_failed_final_verify_asks_the_model_nothing(
    sample, sprint_env, model: ScriptedModelServer, tmp_path: Path
) -> None:
    model.set_script(sample_script(delay_s=0.05))
    repo, plan = sample(final_verify="exit 3", tasks=tasks("db-indexes", "orders-endpoint",
                                                          "validation"))  # fmt: skip
    first = run_agentfleet("run", str(plan), env=sprint_env)
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
    assert not run_git(repo, "branch", "--list", TARGET)  # the target did not move
    served = counts(model)
    assert set(served) == {"db-indexes", "orders-endpoint", "validation"}
    # A lost branch (deleted, or a fresh clone) comes back from the persisted patch.
    validation = "agentfleet-attempts/orders-v2/validation/1"
    old_head = run_git(repo, "rev-parse", validation).strip()
    old_tree = run_git(repo, "rev-parse", f"{validation}^{{tree}}").strip()
    run_git(repo, "branch", "-D", validation)

    # The user fixes final_verify; nothing that decides an attempt changed.
    write_plan(plan, sample_plan(repo="orders-service",
                                 tasks=tasks("db-indexes", "orders-endpoint", "validation")))
    second = run_agentfleet("run", str(plan), env=sprint_env)

    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-4000:]
    assert counts(model) == served  # zero model requests
    assert "db-indexes#1: cached (succeeded; kept agentfleet-attempts" in out
    # orders-endpoint waited for db-indexes: its start commit was rebuilt, its tree was not.
    assert "orders-endpoint#1: cached (succeeded; kept" in out
    assert f"validation#1: cached (succeeded; restored {validation})" in out
    restored = run_git(repo, "rev-parse", validation).strip()
    assert restored != old_head
    assert run_git(repo, "rev-parse", f"{validation}^{{tree}}").strip() == old_tree
    assert applied(repo) == ["db-indexes", "orders-endpoint", "validation"]
    assert "def validate_order" in run_git(repo, "show", f"{TARGET}:app/validation.py")

    # --no-cache runs every agent again (the target is dropped so that there is work to do).
    run_git(repo, "branch", "-D", TARGET)
    third = run_agentfleet("run", str(plan), "--no-cache", env=sprint_env)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    again = counts(model)
    assert all(again[t] == 2 * served[t] for t in served), (served, again)
    assert "#1: cached" not in third.stdout + third.stderr
    assert applied(repo) == ["db-indexes", "orders-endpoint", "validation"]
    # It built the tree the second run verified, and verified it again all the same.
    assert "final_verify passed (reused" not in third.stdout + third.stderr

    # A plain rerun of that tree: final_verify's pass (of the --no-cache run) is reused.
    run_git(repo, "branch", "-D", TARGET)
    fourth = run_agentfleet("run", str(plan), env=sprint_env)
    out = fourth.stdout + fourth.stderr
    assert fourth.returncode == 0, out[-3000:]
    assert counts(model) == again
    assert "with the same command and environment (flow run " in out
    assert "final_verify passed (reused: flow run " in out
    assert applied(repo) == ["db-indexes", "orders-endpoint", "validation"]


def test_kill_9_mid_sprint_then_the_same_plan_finishes_it_without_paying_twice(
    sample, sprint_env, model: ScriptedModelServer, tmp_path: Path
) -> None:
    ids = ("db-indexes", "orders-endpoint", "validation", "auth-strict", "utils-docstrings")
    repo, plan = sample(tasks=tasks(*ids))
    script = sample_script(delay_s=0.05)
    next(r for r in script.rules if r.name == "validation").responses[0].delay_s = 600
    model.set_script(script)
    storage = Path(sprint_env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"])
    work = Path(sprint_env["AGENTFLEET_WORK_DIR"])
    crashed = subprocess.Popen(
        [AGENTFLEET, "run", str(plan)], env=sprint_env, cwd=ROOT, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        # db-indexes, auth-strict, utils-docstrings finish; validation hangs in the model.
        wait_for(lambda: len(persisted_tasks(storage)) >= 3, 120, "three finished attempts")
        assert model.requests_for("validation")
        crashed.kill()  # kill -9: no handler runs, agents and worktrees are left behind
        crashed.wait(timeout=10)
    finally:
        if crashed.poll() is None:
            crashed.kill()
    finished = persisted_tasks(storage)
    at_kill = counts(model)
    assert "validation" not in finished
    assert processes_under(work), "a Codex of the killed run should still be running"
    # Its flow run, as its lock recorded it: Running on the server, nobody left to end it.
    (lock,) = (work / "locks").rglob("orders-v2.lock")
    killed_run = json.loads(lock.read_text())["flow_run"]
    api_url = sprint_env["PREFECT_API_URL"]
    assert api(api_url, f"/flow_runs/{killed_run}")["state"]["type"] == "RUNNING"

    model.set_script(sample_script(delay_s=0.05))  # validation answers now
    resumed = run_agentfleet("run", str(plan), env=sprint_env)

    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out[-4000:]
    # The next run of the sprint found the dead one's record: its flow run no longer runs.
    state = api(api_url, f"/flow_runs/{killed_run}")["state"]
    assert state["type"] == "CRASHED", state
    assert f"its process (pid {crashed.pid}, started at " in state["message"]
    assert "ended without telling Prefect (killed?)" in state["message"]
    assert f"(pid {crashed.pid}, started at " in out and "marked Crashed" in out
    after = counts(model)
    for task in finished:  # finished attempts came from the cache: not one request more
        assert after.get(task) == at_kill.get(task), task
        assert f"{task}#1: cached" in out
    for task in set(ids) - finished:  # unfinished ones ran (again)
        assert after.get(task, 0) > at_kill.get(task, 0), task
    assert sorted(applied(repo)) == sorted(ids)  # each exactly once
    # Nothing of the crashed run is left: processes, worktrees, the scratch ref.
    wait_for(lambda: not processes_under(work), 10, "no agent process left")
    assert run_git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert not run_git(repo, "for-each-ref", "refs/agentfleet/")
    assert "def validate_order" in run_git(repo, "show", f"{TARGET}:app/validation.py")

    # Once more: everything is on the target, nothing runs, nothing is applied twice.
    rerun = run_agentfleet("run", str(plan), env=sprint_env)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert counts(model) == after
    assert sorted(applied(repo)) == sorted(ids)
