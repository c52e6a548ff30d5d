"""What the Prefect API shows of a sprint: red failures (cached or not), blocked tasks,
readable logs, and bounds on what a loud agent can make agentfleet write.

Real ``agentfleet run`` processes with ``command`` agents against the session's real
Prefect server; states, logs and results are read back through the API and storage.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.sorting import LogSort
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.conftest import run_git
from tests.e2e.conftest import AGENTFLEET, ROOT, run_agentfleet
from tests.support.prefect_server import PrefectServer

pytestmark = pytest.mark.server


@pytest.fixture
def client(prefect_server: PrefectServer) -> Iterator[SyncPrefectClient]:
    """A Prefect client of the session's server, as a person's script would use it."""
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        with get_client(sync_client=True) as c:
            yield c


def flow_run_id(output: str) -> str:
    [found] = set(re.findall(r"/runs/flow-run/([0-9a-f-]{36})", output))
    return found


def task_runs(client: SyncPrefectClient, run_id: str) -> dict[str, Any]:
    """The flow run's task runs by name."""
    runs = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
    )
    return {r.name: r for r in runs}


def flow_logs(client: SyncPrefectClient, run_id: str, want: int = 1) -> list[Any]:
    """Every log row of a flow run, oldest first (the API batches: wait for ``want``)."""
    deadline = time.monotonic() + 30
    while True:
        rows: list[Any] = []
        while True:
            page = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
                limit=200, offset=len(rows), sort=LogSort.TIMESTAMP_ASC,
            )  # fmt: skip
            rows += page
            if len(page) < 200:
                break
        if len(rows) >= want or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def command_task(task_id: str, run: str, **more: object) -> dict:
    return {"id": task_id, "prompt": f"[{task_id}] do it", "paths": [f"{task_id}.txt"],
            "agent": {"kind": "command", "run": run}, **more}


def write_plan(tmp_path: Path, repo: Path, tasks: list[dict], **more: object) -> Path:
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"name": "states", "repo": str(repo), "tasks": tasks, **more},
                                   sort_keys=False))
    return plan


def test_failures_are_red_cached_or_not_and_a_blocked_task_has_a_run_naming_every_blocker(
    make_repo, sprint_env: dict[str, str], client: SyncPrefectClient, tmp_path: Path
) -> None:
    repo = make_repo()
    runs = tmp_path / "agent-runs"
    plan = write_plan(tmp_path, repo, [
        # verify fails on what the agent did: a failure worth caching.
        command_task("a", f"echo a > a.txt; echo ran a >> {runs}; echo wrote a.txt",
                     verify="exit 1"),
        command_task("b", f"echo ran b >> {runs}; echo no >&2; exit 7"),  # not cached
        command_task("c", "echo c > c.txt", depends_on=["a", "b"]),
        command_task("d", "echo d > d.txt", depends_on=["c"]),
        # Same paths as a, so it waits for a; a fails, so it starts from base.
        {**command_task("e", "echo e > a.txt"), "paths": ["a.txt"]},
    ])
    report = tmp_path / "report.json"
    base = run_git(repo, "rev-parse", "HEAD").strip()

    first = run_agentfleet("run", str(plan), "--report", str(report), env=sprint_env)
    out = first.stdout + first.stderr
    assert first.returncode == 1 and report.exists(), out[-1500:]
    tasks = {t["task"]: t for t in json.loads(report.read_text())["tasks"]}
    assert tasks["c"]["detail"] == "blocked by a, b" == tasks["d"]["detail"]
    first_id = flow_run_id(out)

    # The flow run's state message is the summary line, naming what did not land.
    flow_run = client.read_flow_run(first_id)
    assert flow_run.state.is_failed()
    assert flow_run.state.message.startswith(
        "sprint states: 1/5 tasks applied (not applied: a failed, b failed, c blocked, "
        "d blocked), ")
    by_name = task_runs(client, first_id)
    assert by_name["a#1"].state.type.value == "FAILED" and by_name["a#1"].state.name == "Failed"
    assert by_name["b#1"].state.message.endswith("(not cached)")
    for blocked in ("c", "d"):  # a task run each, Failed, naming both blockers
        state = by_name[blocked].state
        assert state.type.value == "FAILED" and state.name == "Blocked", state
        assert state.message == "not run: blocked by a, b"
    assert "c#1" not in by_name and "d#1" not in by_name

    # Logs: every line of a task run says whose it is; e says it starts from base.
    rows = flow_logs(client, first_id, want=10)
    names = {r.id: r.name for r in by_name.values()}
    for row in rows:
        if row.task_run_id is not None:
            assert row.message.startswith(f"{names[row.task_run_id]}:"), row.message
    messages = [r.message for r in rows]
    assert f"e: starts from base {base[:10]}; waited for a, which failed: not in its start" \
        in messages
    assert "a#1: wrote a.txt" in messages

    # Again: a's failure comes from the cache (no agent run) and is still red.
    second = run_agentfleet("run", str(plan), env=sprint_env)
    out2 = second.stdout + second.stderr
    assert second.returncode == 1, out2[-3000:]
    # a ran once, b twice (a and b run at once: in either order)
    assert sorted(runs.read_text().splitlines()) == ["ran a", "ran b", "ran b"]
    assert "a#1: cached (failed: verify failed (exit 1)" in out2
    again = task_runs(client, flow_run_id(out2))
    state = again["a#1"].state
    assert state.type.value == "FAILED" and state.name == "Cached", state
    assert state.message == "cached failure: verify failed (exit 1)"
    assert again["c"].state.message == "not run: blocked by a, b"


def test_an_agent_printing_100_mb_and_writing_60_mb_leaves_bounded_logs_and_results(
    make_repo, sprint_env: dict[str, str], client: SyncPrefectClient, tmp_path: Path
) -> None:
    repo = make_repo()
    loud = (
        # 100 MB of output in 100,000 lines, one line of 30 MB, a 60 MB file.
        "python3 -c \"import sys; line = 'y' * 999 + chr(10); "
        "[sys.stdout.write(line) for _ in range(100000)]\"; "
        "head -c 30000000 /dev/zero | tr '\\0' z; echo; "
        "head -c 60000000 /dev/urandom > loud.txt; echo done"
    )
    plan = write_plan(tmp_path, repo, [command_task("loud", loud)], timeout="10m")
    env = {**sprint_env}
    log = tmp_path / "agentfleet.log"
    proc = subprocess.Popen(
        [AGENTFLEET, "run", str(plan)], env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
        stdout=log.open("w"), stderr=subprocess.STDOUT,
    )
    peak_kb = 0
    while proc.poll() is None:  # agentfleet's own memory, sampled as it runs
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak_kb = max(peak_kb, int(re.search(r"VmHWM:\s+(\d+)", status).group(1)))
        except (OSError, AttributeError):
            pass
        time.sleep(0.2)
    out = log.read_text()
    assert proc.returncode == 0, out[-3000:]
    assert peak_kb < 700_000, f"agentfleet peaked at {peak_kb:,} kB"

    run_id = flow_run_id(out)
    [attempt] = [r for r in task_runs(client, run_id).values() if r.name == "loud#1"]
    rows = [r for r in flow_logs(client, run_id, want=1000) if r.task_run_id == attempt.id]
    assert 1000 <= len(rows) < 1100, len(rows)  # the first 1,000 lines, then counts
    messages = [r.message for r in rows]
    assert any(m.startswith("loud#1: … more than 1,000 lines of output") for m in messages)
    assert any(re.match(r"loud#1: … [\d,]+ more lines? \(100,00[0-9] in all\)", m)
               for m in messages), messages[-5:]
    assert max(len(m) for m in messages) < 2000

    # The persisted result holds no 60 MB patch: the branch alone has the file.
    storage = Path(env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"])
    [result_file] = storage.glob("attempt-*")
    assert result_file.stat().st_size < 200_000
    data = json.loads(json.loads(result_file.read_text())["result"])["data"]
    assert data["patch"]["diff"] == "" and data["patch"]["omitted_bytes"] >= 60_000_000

    # The branch is gone: the cached result cannot be restored, and the run says why.
    run_git(repo, "branch", "-D", "agentfleet-attempts/states/loud/1", "agentfleet/states")
    again = run_agentfleet("run", str(plan), env=env)
    out = again.stdout + again.stderr
    assert again.returncode == 1
    assert "was too large to keep in the result and the branch " \
           "agentfleet-attempts/states/loud/1 that held it is gone" in out
    assert "run again with --no-cache" in out
