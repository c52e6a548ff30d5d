"""Watching a sprint: live logs, artifacts, events and an automation, read from the server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from agentfleet.sample import sample_plan
from agentfleet.testing import ScriptedModelServer
from tests.e2e.conftest import AGENTFLEET, ROOT, run_agentfleet
from tests.support.prefect_server import PrefectServer, api
from tests.support.waiting import wait_for

README = ROOT / "README.md"


# -- the Prefect API, as a person's script would read it --------------------------------


def now() -> str:
    return datetime.now(UTC).isoformat()


def task_run(server: PrefectServer, name: str, since: str) -> dict | None:
    """The task run named ``name`` started after ``since`` (tests share one server)."""
    runs = api(server.api_url, "/task_runs/filter", {
        "task_runs": {"name": {"any_": [name]}, "start_time": {"after_": since}},
        "limit": 5,
    })
    return runs[0] if runs else None


def log_lines(server: PrefectServer, task_run_id: str) -> list[str]:
    logs = api(server.api_url, "/logs/filter", {
        "logs": {"task_run_id": {"any_": [task_run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 200,
    })
    return [entry["message"] for entry in logs]


def artifacts(server: PrefectServer, key: str) -> list[dict]:
    """Every version of the artifact ``key``, newest first."""
    return api(server.api_url, "/artifacts/filter", {
        "artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 20,
    })


def agentfleet_events(server: PrefectServer, since: str) -> list[dict]:
    page = api(server.api_url, "/events/filter", {
        "filter": {"occurred": {"since": since}, "event": {"prefix": ["agentfleet."]},
                   "order": "ASC"},
        "limit": 50,  # the server's maximum
    })
    return page["events"]



def related(event: dict, role: str) -> list[str]:
    return [r["prefect.resource.id"] for r in event["related"]
            if r.get("prefect.resource.role") == role]


# -- live logs ------------------------------------------------------------------------


@pytest.mark.codex
def test_agent_lines_reach_the_task_run_log_while_the_agent_still_runs(
    sample, sprint_env, model: ScriptedModelServer, prefect_server: PrefectServer,
    tmp_path: Path,
) -> None:
    tasks = [t for t in sample_plan()["tasks"] if t["id"] == "db-indexes"]
    _, plan = sample(name="watch-live", tasks=tasks)
    script = model.script.model_copy(deep=True)
    rule = next(r for r in script.rules if r.name == "db-indexes")
    # The final message waits for the test's reads: the agent is still busy meanwhile.
    rule.responses[-1].after = "logs-read"
    model.set_script(script)
    since = now()
    report_file = tmp_path / "report.json"
    proc = subprocess.Popen(
        [AGENTFLEET, "run", str(plan), "--report", str(report_file)], env=sprint_env, cwd=ROOT,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        run = wait_for(lambda: task_run(prefect_server, "db-indexes#1", since), 60, "the task run")
        seen: list[str] = []

        def files_line_logged() -> bool:
            # Paths relative to the worktree; Codex lists a patch's files in its own order.
            seen[:] = log_lines(prefect_server, run["id"])
            prefix = "db-indexes#1: files changed: "
            return any(
                line.startswith(prefix) and sorted(line[len(prefix):].split(", ")) == [
                    "add migrations/002_orders_indexes.sql", "update app/db.py"]
                for line in seen
            )

        wait_for(files_line_logged, 30, lambda: f"the files line in the log, got {seen}")
        lines = list(seen)
        # Read while the model still holds back the last answer: Codex is mid-turn.
        wait_for(lambda: model.requests_for("db-indexes")[-1].position
                 == len(rule.responses) - 1, 30, "Codex's request for the final message")
        assert model.requests_for("db-indexes")[-1].finished_at is None
        assert proc.poll() is None
        assert api(prefect_server.api_url, f"/task_runs/{run['id']}")["state"]["type"] == "RUNNING"
        model.open_latch("logs-read")
        output, _ = proc.communicate(timeout=120)
    finally:
        model.open_latch("logs-read")
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-3000:]
    # Every line says whose it is: `prefect flow-run logs` shows no task run names.
    assert all(line.startswith("db-indexes#1: ") for line in lines), lines
    lines = [line.removeprefix("db-indexes#1: ") for line in lines]
    assert "$ cat app/db.py" in lines and "$ cat app/db.py  -> exit 0" in lines
    assert not any(line.lstrip().startswith("{") for line in lines)  # no raw JSON

    lines = [line.removeprefix("db-indexes#1: ") for line in log_lines(prefect_server, run["id"])]
    assert "agent: Added indexes orders_customer and orders_total (migration 002)." in lines
    assert not any("could not create PATH aliases" in line for line in lines)
    assert not any(str(tmp_path) in line for line in lines if line.startswith("files"))

    # The attempt's artifact: the prompt as sent, the answer, commands, diffstat, verify, cost.
    report = json.loads(report_file.read_text())
    [md] = [a["data"] for a in artifacts(prefect_server, "agentfleet-watch-live-db-indexes-1")]
    assert md.startswith("# db-indexes #1: succeeded")
    assert "[db-indexes] Add database indexes" in md
    assert "Only change files matching these patterns" in md  # the context agentfleet added
    assert "Added indexes orders_customer and orders_total (migration 002)." in md
    assert "| `cat app/db.py` | 0 |" in md
    assert "migrations/002_orders_indexes.sql" in md and "app/db.py" in md
    assert "## verify: passed" in md and "`python3 -m compileall -q app`" in md
    tokens = report["tasks"][0]["tokens"]
    assert tokens > 0 and f"| tokens | {tokens:,} (" in md


# -- artifacts, events and an automation of a sprint with a failing task -----------------


class Webhook:
    """A local HTTP endpoint a notification block posts to; records the bodies."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                size = int(self.headers.get("Content-Length") or 0)
                hook.bodies.append(json.loads(self.rfile.read(size) or b"{}"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    try:
        yield hook
    finally:
        hook.close()


def readme_automation() -> dict:
    """The "tell me when a task fails" automation, as the README shows it."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.DOTALL)
    [text] = [b for b in blocks if "agentfleet.attempt.failed" in b and "actions:" in b]
    return yaml.safe_load(text)


def make_notification_block(server: PrefectServer, url: str) -> str:
    """A Custom Webhook notification block posting to ``url``; its id.

    Through the REST API: the server registered Prefect's own block types at start-up.
    """
    block_type = api(server.api_url, "/block_types/slug/custom-webhook")
    [schema] = api(server.api_url, "/block_schemas/filter", {
        "block_schemas": {"block_type_id": {"any_": [block_type["id"]]}}, "limit": 1,
    })
    document = api(server.api_url, "/block_documents/", {
        "name": f"agentfleet-test-hook-{uuid.uuid4().hex[:8]}",
        "block_type_id": block_type["id"],
        "block_schema_id": schema["id"],
        "data": {"name": "agentfleet-test", "url": url, "method": "POST",
                 "json_data": {"subject": "{{subject}}", "body": "{{body}}"}},
    })
    return document["id"]


def server_env(server: PrefectServer) -> dict[str, str]:
    """The environment of a ``prefect`` client process of ``server``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {**env, **server.env()}


def command_task(task_id: str, run: str) -> dict:
    return {"id": task_id, "prompt": f"[{task_id}]", "paths": [f"{task_id}.txt"],
            "agent": {"kind": "command", "run": run}}


def test_artifacts_events_and_the_readme_automation_of_a_sprint_with_a_failing_task(
    sample, sprint_env, prefect_server: PrefectServer, webhook: Webhook, tmp_path: Path
) -> None:
    # The README's automation, with a real notification block, accepted by the server.
    automation = readme_automation()
    automation["name"] = "agentfleet test: task failed"
    automation["actions"][0]["block_document_id"] = make_notification_block(
        prefect_server, webhook.url
    )
    automation_file = tmp_path / "task-failed.yaml"
    automation_file.write_text(yaml.safe_dump(automation))
    created = subprocess.run(
        [sys.executable, "-m", "prefect", "automation", "create", "--from-file",
         str(automation_file)],
        env={**server_env(prefect_server), "COLUMNS": "200"}, capture_output=True, text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    automation_id = re.search(r"with\s+id\s+([0-9a-f-]{36})", created.stdout).group(1)
    try:
        check_sprint_with_a_failing_task(sample, sprint_env, prefect_server, webhook)
    finally:  # later tests share the server: their failures must not notify anyone
        delete = urllib.request.Request(
            f"{prefect_server.api_url}/automations/{automation_id}", method="DELETE"
        )
        urllib.request.urlopen(delete, timeout=10).close()


def check_sprint_with_a_failing_task(
    sample, sprint_env: dict[str, str], prefect_server: PrefectServer, webhook: Webhook
) -> None:
    _, plan = sample(
        name="watch-events", verify=None, final_verify=None,
        tasks=[command_task("good", "echo done > good.txt && echo wrote good.txt"),
               command_task("bad", "echo cannot do it >&2; exit 7")],
    )
    since = now()
    run = run_agentfleet("run", str(plan), env=sprint_env)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]

    # Events: one per attempt, one for the sprint, each naming sprint, task and branch.
    events = wait_for(
        lambda: (found := agentfleet_events(prefect_server, since)) and len(found) >= 3 and found,
        30, "three agentfleet events",
    )
    by_name = {e["event"]: e for e in events}
    assert sorted(by_name) == [
        "agentfleet.attempt.completed", "agentfleet.attempt.failed", "agentfleet.sprint.failed",
    ]
    good, bad = by_name["agentfleet.attempt.completed"], by_name["agentfleet.attempt.failed"]
    assert good["resource"]["prefect.resource.id"] == "agentfleet.sprint.watch-events.task.good"
    assert bad["resource"]["prefect.resource.id"] == "agentfleet.sprint.watch-events.task.bad"
    assert bad["resource"]["agentfleet.branch"] == "agentfleet-attempts/watch-events/bad/1"
    assert related(bad, "sprint") == ["agentfleet.sprint.watch-events"]
    assert related(bad, "branch") == ["agentfleet.branch.agentfleet-attempts/watch-events/bad/1"]
    assert related(bad, "task-run") and related(bad, "flow-run")  # Prefect adds its own
    # The reason is one line with the exit status; the output is in the artifact.
    assert bad["payload"]["outcome"] == "failed"
    assert bad["payload"]["reason"] == "agent failed_fatal: command exited 7"
    assert good["payload"]["outcome"] == "succeeded" and good["payload"]["files"] == 1
    sprint = by_name["agentfleet.sprint.failed"]
    assert sprint["resource"]["prefect.resource.id"] == "agentfleet.sprint.watch-events"
    assert sprint["resource"]["agentfleet.target"] == "agentfleet/watch-events"
    assert related(sprint, "target") == ["agentfleet.branch.agentfleet/watch-events"]
    assert sprint["payload"]["not_applied"] == {"bad": "failed"}
    # The flow run's heartbeat (beaten by agentfleet, flows/heartbeat.py), as Prefect's:
    # the flow run as resource, its flow related; one at the start of a short run.
    [beat] = wait_for(lambda: api(prefect_server.api_url, "/events/filter", {
        "filter": {"occurred": {"since": since}, "event": {"name": ["prefect.flow-run.heartbeat"]}},
        "limit": 50})["events"], 30, "the flow run's heartbeat")
    assert [beat["resource"]["prefect.resource.id"]] == related(sprint, "flow-run")
    assert beat["resource"]["prefect.resource.name"] == "sprint watch-events"
    assert [r["prefect.resource.role"] for r in beat["related"]][:1] == ["flow"]

    # Artifacts: each attempt's markdown, the sprint's table, its progress at 100%.
    [bad_md] = artifacts(prefect_server, "agentfleet-watch-events-bad-1")
    assert bad_md["type"] == "markdown" and bad_md["task_run_id"]
    assert bad_md["data"].startswith("# bad #1: failed")
    assert "cannot do it" in bad_md["data"]
    [good_md] = artifacts(prefect_server, "agentfleet-watch-events-good-1")
    assert "good.txt | 1 +" in good_md["data"] and "wrote good.txt" in good_md["data"]
    [table] = artifacts(prefect_server, "agentfleet-watch-events-summary")
    rows = {r["task"]: r for r in json.loads(table["data"])}
    assert rows["good"]["outcome"] == "applied" and rows["good"]["applied"] != "no"
    assert rows["bad"]["outcome"] == "failed" and rows["bad"]["attempts"] == 1
    [progress] = artifacts(prefect_server, "agentfleet-watch-events-progress")
    assert progress["type"] == "progress" and progress["data"] == 100.0
    assert progress["description"].startswith("2/2 tasks finished")

    # The automation told us, through the notification block, what failed and why.
    message = wait_for(
        lambda: next((b for b in webhook.bodies if "bad" in b.get("subject", "")), None),
        60, "the automation's notification",
    )
    assert message["subject"] == "agentfleet: bad failed"
    assert "Sprint watch-events, task bad failed:" in message["body"]
    assert "command exited 7" in message["body"]
    assert "agentfleet-attempts/watch-events/bad/1" in message["body"]
    assert not any("good" in b.get("subject", "") for b in webhook.bodies)

    # A second run adds versions under the same keys: the UI shows each task's history.
    again = run_agentfleet("run", str(plan), env=sprint_env)
    assert again.returncode == 1
    assert len(artifacts(prefect_server, "agentfleet-watch-events-bad-1")) == 2
    assert len(artifacts(prefect_server, "agentfleet-watch-events-summary")) == 2
