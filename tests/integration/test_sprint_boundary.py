"""The sprint flow's boundary under Prefect's harness, with `command` agents (no model).

An error inside the fan-out loop (here: a git failure starting one task) fails that task
only: the others land, the run ends 1, not as an interrupt.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

import flows.sprint as sprint_module
from agentfleet.results import SprintReport
from tests.conftest import MakeRepo, run_git
from tests.integration.conftest import command


def test_a_git_failure_starting_one_task_fails_that_task_only(
    harness: None, make_repo: MakeRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo()
    monkeypatch.setenv("AGENTFLEET_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("AGENTFLEET_STOP_GRACE_S", "1")
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({
        "name": "boundary", "repo": str(repo), "agent": {"kind": "command"},
        "tasks": [
            command("alpha", "echo a > alpha.txt", paths=["alpha.txt"]),
            command("beta", "echo b > beta.txt", paths=["beta.txt"]),
            command("gamma", "echo c > gamma.txt", paths=["gamma.txt"],
                    depends_on=["alpha", "beta"]),
            command("delta", "echo d > delta.txt", paths=["delta.txt"]),
        ],
    }, sort_keys=False))
    # The fault, from a real process: a `git` first on PATH refuses to write the commit
    # that would be gamma's start (its message names gamma); every other call goes through.
    shim = tmp_path / "bin"
    shim.mkdir()
    real_git = shutil.which("git")
    (shim / "git").write_text(f"""#!/bin/bash
case " $* " in *" commit-tree "*)
  msg=$(mktemp); cat > "$msg"
  if grep -q gamma "$msg"; then
    echo "fatal: forced failure for the test" >&2; rm -f "$msg"; exit 128
  fi
  exec {real_git} "$@" < "$msg";;
esac
exec {real_git} "$@"
""")
    (shim / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}:{os.environ['PATH']}")
    report_path = tmp_path / "report.json"
    state = sprint_module.sprint(plan_path=str(plan), report=str(report_path), return_state=True)
    assert state.is_failed(), state.message  # exit 1, not an interrupt
    report = SprintReport.model_validate_json(report_path.read_text())
    assert report.exit_status == 1 and not report.interrupted
    tasks = {t.task: t for t in report.tasks}
    assert {t for t, r in tasks.items() if r.applied} == {"alpha", "beta", "delta"}
    assert "forced failure" in json.dumps(tasks["gamma"].model_dump(mode="json"))
    assert report.target_moved is True
    files = run_git(repo, "ls-tree", "--name-only", "agentfleet/boundary").split()
    assert {"alpha.txt", "beta.txt", "delta.txt"} <= set(files) and "gamma.txt" not in files


def test_the_plan_is_read_once_per_run(
    harness: None, make_repo: MakeRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentfleet.checking import load_and_check

    repo = make_repo()
    monkeypatch.setenv("AGENTFLEET_WORK_DIR", str(tmp_path / "work"))
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({
        "name": "once", "repo": str(repo), "agent": {"kind": "command"},
        "tasks": [command("alpha", "echo a > alpha.txt", paths=["alpha.txt"])],
    }))
    checked = load_and_check(plan)
    # Were the flow to read the file again, it would find no valid plan.
    plan.write_text("name: [not a plan\n")
    report = sprint_module.run_and_report(plan, report=None, no_cache=True, checked=checked)
    assert report.exit_status == 0, report.summary_line()
    with get_client(sync_client=True) as client:  # named from the plan as checked
        (run,) = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=["sprint once"])))
    assert run.state.message == report.summary_line()
