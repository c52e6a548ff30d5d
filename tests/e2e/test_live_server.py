"""The Prefect user's ways in, for real: ``prefect server start`` on SQLite and on PostgreSQL,
``prefect deploy --all``, a process worker started from another folder, a run from the CLI as
CI does it, a cron schedule, ``agentfleet status``/``show``, and the UI in a real browser.

One server per database (``live``), one test item each: the scheduled deployment and the
sprint the browser looks at run while the other checks run. Agents are ``command`` agents
(real processes, no model), so the cost is Prefect's, not the agents'.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_fixed

from tests.conftest import run_git
from tests.e2e.conftest import AGENTFLEET, ROOT
from tests.support.prefect_server import PrefectServer, start_prefect_server
from tests.support.waiting import wait_for

# Server start-up, deployments, runs and Chromium: up to 177 s in CI (300 s by default).
pytestmark = [pytest.mark.server, pytest.mark.timeout(600)]

PREFECT = [sys.executable, "-m", "prefect"]
CHROMIUM = os.environ.get("AGENTFLEET_TEST_CHROMIUM", "/usr/bin/chromium")
# Screenshots stay after the run (ignored by git).
SHOTS = ROOT / "test-output" / "ui"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass
class Live:
    """A running server with agentfleet deployed and a worker polling its pool."""

    database: str
    server: PrefectServer
    env: dict[str, str]
    root: Path
    repos: dict[str, Path] = field(default_factory=dict)
    plans: dict[str, Path] = field(default_factory=dict)
    started: dict[str, str] = field(default_factory=dict)  # plan -> flow run id

    @retry(retry=retry_if_exception(
        lambda e: isinstance(e, urllib.error.HTTPError) and e.code in (502, 503)),
        stop=stop_after_attempt(8), wait=wait_fixed(1), reraise=True)
    def api(self, method: str, path: str, body: Any = None) -> Any:
        """Call the REST API; a busy SQLite answers 503 ("database is locked"): try again."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.server.api_url}{path}", data=data, method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def prefect(self, *args: str, check: bool = True, timeout: float = 300
                ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*PREFECT, *args], env=self.env, cwd=ROOT, capture_output=True, text=True,
            timeout=timeout, stdin=subprocess.DEVNULL,
        )
        if check:
            assert done.returncode == 0, f"prefect {' '.join(args)}: " \
                f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
        return done

    def flow_run(self, flow_run_id: str) -> dict[str, Any]:
        return self.api("GET", f"/flow_runs/{flow_run_id}")

    def finished(self, flow_run_id: str, timeout: float = 240) -> dict[str, Any]:
        return wait_for(
            lambda: (run := self.flow_run(flow_run_id))["state"]["type"] in TERMINAL and run,
            timeout, f"flow run {flow_run_id} to finish", interval=0.5,
        )

    def task_runs(self, flow_run_id: str) -> dict[str, dict[str, Any]]:
        runs = self.api("POST", "/task_runs/filter",
                        {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200})
        return {r["name"]: r for r in runs}

    def artifact_keys(self, flow_run_id: str) -> set[str]:
        found = self.api("POST", "/artifacts/filter",
                         {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200})
        return {a["key"] for a in found if a["key"]}

    def deployment(self, name: str) -> dict[str, Any]:
        return self.api("GET", f"/deployments/name/{name}")


def _repo(path: Path) -> Path:
    path.mkdir(parents=True)
    run_git(path, "init", "-q", "-b", "main")
    run_git(path, "config", "user.name", "Agentfleet Test")
    run_git(path, "config", "user.email", "test@agentfleet.invalid")
    (path / "README.md").write_text("hello\n")
    run_git(path, "add", "-A")
    run_git(path, "commit", "-q", "-m", "init")
    return path


def _command(task: str, run: str, **more: Any) -> dict[str, Any]:
    return {"id": task, "prompt": f"do {task}", "paths": [f"{task}.txt"],
            "agent": {"kind": "command", "run": run}, **more}


def good_plan(name: str, repo: Path) -> dict[str, Any]:
    """Two tasks, the second waiting for the first; everything lands."""
    return {
        "name": name, "repo": str(repo), "final_verify": "test -f a.txt && test -f b.txt",
        "tasks": [_command("a", "echo a > a.txt"),
                  _command("b", "cat a.txt > b.txt", depends_on=["a"])],
    }


def mixed_plan(repo: Path) -> dict[str, Any]:
    """What the UI must show: a task with a failed and a passing attempt (so a ``select``),
    a failing task and a task blocked by it."""
    return {
        "name": "ui-sprint", "repo": str(repo),
        "tasks": [
            _command("pick", 'if [ "$AGENTFLEET_ATTEMPT" = 1 ]; then echo no >&2; exit 3; fi; '
                     "echo ok > pick.txt", attempts=2),
            _command("broken", "echo cannot >&2; exit 5"),
            _command("after", "echo after > after.txt", depends_on=["broken"]),
        ],
    }


def _write(path: Path, plan: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def _stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=5)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _live(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A server on ``database`` with the UI (SQLite) on, agentfleet deployed with
    ``prefect --no-prompt deploy --all`` from the checkout, an every-minute deployment,
    and a process worker started in a folder of its own."""
    root = tmp_path_factory.mktemp(f"live-{database}")
    (root / "prefect-home").mkdir()
    server = start_prefect_server(
        root / "prefect-home", database=database, ui=database == "sqlite",
        # Schedules become runs within seconds, not the default minute.
        env_extra={"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5"},
    )
    worker = None
    try:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AGENTFLEET_", "PREFECT_"))}
        env.update(
            server.env(),
            AGENTFLEET_WORK_DIR=str(root / "work"),
            PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(root / "results"),
            PREFECT_WORKER_QUERY_SECONDS="1",
            PREFECT_LOGGING_LEVEL="INFO",
            GIT_CONFIG_GLOBAL=os.devnull,
            GIT_CONFIG_NOSYSTEM="1",
        )
        live = Live(database, server, env, root)
        live.repos = {k: _repo(root / f"repo-{k}")
                      for k in ("ci", "inline", "scheduled", "ui")}
        live.plans = {
            "ci": _write(root / "ci.yaml", good_plan("ci-e2e", live.repos["ci"])),
            "scheduled": _write(root / "scheduled.yaml",
                                good_plan("scheduled", live.repos["scheduled"])),
            "ui": _write(root / "ui.yaml", mixed_plan(live.repos["ui"])),
        }
        # `prefect work-pool create agentfleet --type process` (as the README says), without
        # a CLI process's start-up: the same pool with the process worker's template.
        from prefect.workers.process import ProcessWorker

        live.api("POST", "/work_pools/", {
            "name": "agentfleet", "type": "process",
            "base_job_template": ProcessWorker.get_default_base_job_template()})
        live.prefect("--no-prompt", "deploy", "--all")
        # The schedule: the sprint deployment once more, with a one-minute cron that is on
        # (made through the API: a second `prefect deploy` costs seconds of imports).
        sprint = live.deployment("sprint/sprint")
        live.api("POST", "/deployments/", {
            "name": "every-minute", "flow_id": sprint["flow_id"],
            "entrypoint": sprint["entrypoint"], "pull_steps": [],
            "work_pool_name": "agentfleet", "work_queue_name": sprint["work_queue_name"],
            "parameter_openapi_schema": sprint["parameter_openapi_schema"],
            "parameters": {"plan_path": str(live.plans["scheduled"])},
            "schedules": [{"schedule": {"cron": "* * * * *", "timezone": "UTC"},
                           "active": True}],
        })
        elsewhere = root / "elsewhere"
        elsewhere.mkdir()
        worker = subprocess.Popen(
            [*PREFECT, "worker", "start", "--pool", "agentfleet", "--limit", "4"],
            env={**env, "PWD": str(elsewhere)}, cwd=elsewhere,
            stdout=(root / "worker.log").open("w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if database == "sqlite":
            # The sprint the browser looks at runs while the CI-style test runs.
            started = live.api("POST", f"/deployments/{sprint['id']}/create_flow_run",
                               {"parameters": {"plan_path": str(live.plans["ui"]),
                                               "no_cache": True}})
            live.started["ui"] = started["id"]
        yield live
    finally:
        if worker is not None:
            _stop(worker)
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Live]:
    """Each database's server in turn (each test item owns its server, so pytest-xdist may
    run the two side by side)."""
    yield from _live(request.param, tmp_path_factory)


def _flow_run_id(output: str) -> str:
    return re.search(r"UUID: ([0-9a-f-]{36})", output).group(1)


def check_deploy_all_deploys_every_flow_independent_of_its_folder(live: Live) -> None:
    for name in ("sprint/sprint", "apply/apply", "best-of-n/best-of-n", "sprint/nightly-sprint"):
        deployment = live.deployment(name)
        # Module entrypoints and no pull step: nothing names the folder deploy ran in.
        assert deployment["pull_steps"] == [], name
        assert str(ROOT) not in json.dumps(deployment), name
        assert ":" not in deployment["entrypoint"], deployment["entrypoint"]
    nightly = live.deployment("sprint/nightly-sprint")
    assert [(s["schedule"]["cron"], s["active"]) for s in nightly["schedules"]] == [
        ("0 2 * * *", False)]


def check_a_sprint_from_ci_completes(live: Live, name: str, repo: Path, *params: str) -> None:
    """``prefect deployment run 'sprint/sprint' --param ... --watch`` as a CI job runs it:
    exit 0, the flow run Completed with its task runs and artifacts, the result landed."""
    for _ in range(3):
        run = live.prefect("deployment", "run", "sprint/sprint", *params, "--watch",
                           "--watch-timeout", "240", check=False)
        # SQLite, busy on a starved machine, can refuse the run's creation ("database is
        # locked": 503) past the CLI's five retries; no run exists then: ask again, as the
        # API helper does. A refusal once the run exists is a failure.
        said = run.stdout + run.stderr
        refused = "503 Service Unavailable" in said and "/create_flow_run'" in said
        if run.returncode == 0 or live.database != "sqlite" or not refused:
            break
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    flow_run = live.flow_run(_flow_run_id(run.stdout))
    assert flow_run["state"]["type"] == "COMPLETED"
    assert flow_run["name"] == f"sprint {name}"
    assert flow_run["state"]["message"].startswith(f"sprint {name}: 2/2 tasks applied")
    names = set(live.task_runs(flow_run["id"]))
    assert {"a#1", "b#1"} <= names
    assert any(n.startswith("sequential-apply") for n in names), names
    assert {f"agentfleet-{name}-a-1", f"agentfleet-{name}-b-1", f"agentfleet-{name}-summary"
            } <= live.artifact_keys(flow_run["id"])
    assert run_git(repo, "show", f"agentfleet/{name}:b.txt") == "a\n"


def _run_agentfleet(live: Live, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AGENTFLEET, *args], env=live.env, cwd=live.root, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def check_status_and_show_read_a_finished_sprint_from_the_api(live: Live) -> None:
    flow_run = live.finished(live.started["ui"])
    status = _run_agentfleet(live, "status")
    assert status.returncode == 0, status.stderr
    line = next((ln for ln in status.stdout.splitlines() if ln.startswith("ui-sprint ")),
                status.stdout)
    assert " failed " in line and " 1/3 " in line, status.stdout
    assert f"{live.server.ui_url}/runs/flow-run/{flow_run['id']}" in line

    shown = _run_agentfleet(live, "show", "ui-sprint", "pick")
    assert shown.returncode == 0, shown.stderr
    first, second = shown.stdout.split("\n== ")
    assert first.startswith("== pick #1: failed") and "-- Error\n  command exited 3" in first
    assert "-- Prompt (as sent" in first and "do pick" in first
    assert second.startswith("pick #2: succeeded")
    assert "-- Files changed" in second and "pick.txt | 1 +" in second
    listing = _run_agentfleet(live, "show", "ui-sprint")
    assert "broken#1 failed" in listing.stdout
    missing = _run_agentfleet(live, "show", "no-such-sprint")
    assert missing.returncode == 2 and "no sprint 'no-such-sprint'" in missing.stderr


def check_the_ui_shows_the_run_form_and_a_finished_sprint(live: Live, tmp_path: Path) -> None:
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import expect, sync_playwright

    flow_run = live.finished(live.started["ui"])
    assert flow_run["state"]["type"] == "FAILED"
    sprint = live.deployment("sprint/sprint")
    properties = sprint["parameter_openapi_schema"]["properties"]
    SHOTS.mkdir(parents=True, exist_ok=True)
    ui = live.server.ui_url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            # The deployment's custom run form: a field per flow parameter.
            page.goto(f"{ui}/deployments/deployment/{sprint['id']}/run")
            for name, spec in properties.items():
                expect(page.get_by_text(_label(spec.get("title", name))).first
                       ).to_be_visible(timeout=30_000)
            _shoot(page, tmp_path, "sprint-run-form")
            # The plan itself in the form: its fields, and a task's once one is added.
            page.get_by_role("button", name="Plan", exact=True).click()
            for title in ("Name", "Repo", "Agent", "Verify", "Final Verify", "Tasks"):
                expect(page.get_by_text(_label(title)).first).to_be_visible()
            page.get_by_role("button", name="Add item", exact=True).first.click()
            for title in ("Id", "Prompt", "Paths", "Depends On", "Stage", "Attempts"):
                expect(page.get_by_text(_label(title)).first).to_be_visible()
            _shoot(page, tmp_path, "sprint-run-form-plan")

            page.goto(f"{ui}/runs/flow-run/{flow_run['id']}")
            _open_tab(page, "Task Runs")
            runs = live.task_runs(flow_run["id"])
            for name in ("pick#1", "pick#2", "broken#1", "after", "pick:select"):
                assert name in runs, sorted(runs)
                expect(page.get_by_text(name, exact=True).first).to_be_visible(timeout=30_000)
            apply_name = next(n for n in runs if n.startswith("sequential-apply"))
            expect(page.get_by_text(apply_name, exact=True).first).to_be_visible()
            # A failed attempt in Prefect's failed colour; the blocked task named Blocked.
            failed = page.locator(".state-badge.state--failed", has_text="Failed").first
            expect(failed).to_be_visible()
            assert failed.evaluate("e => getComputedStyle(e).backgroundColor") == \
                "rgb(222, 5, 41)"
            row = page.locator("div", has=page.get_by_text("after", exact=True)).filter(
                has=page.locator(".state-badge", has_text="Blocked")).last
            expect(row).to_be_visible(timeout=30_000)
            _shoot(page, tmp_path, "flow-run-task-runs")

            _open_tab(page, "Artifacts")
            for key in ("agentfleet-ui-sprint-pick-1", "agentfleet-ui-sprint-summary"):
                assert key in live.artifact_keys(flow_run["id"])
                expect(page.get_by_text(key).first).to_be_visible(timeout=30_000)
            _shoot(page, tmp_path, "flow-run-artifacts")
        finally:
            browser.close()


def _open_tab(page: Any, name: str, timeout_s: float = 30) -> None:
    """Show the run page's tab ``name``: clicked until its panel shows. Before the run is
    read the page hides it, and a click then can leave the Logs tab showing, whose lines
    name the task runs too (seen once in 2026-12-02's suite)."""
    from playwright.sync_api import expect

    deadline = time.monotonic() + timeout_s
    while True:
        page.get_by_text(name, exact=True).first.click()
        try:
            expect(page.get_by_role("tabpanel", name=name)).to_be_visible(timeout=2_000)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def _label(title: str) -> re.Pattern[str]:
    """A form field's label as the UI writes it: its title, `` (Optional)`` when it is."""
    return re.compile(rf"^{re.escape(title)}( \(Optional\))?$")


def _shoot(page: Any, tmp_path: Path, name: str) -> None:
    """A screenshot as test output: under test-output/ui and the test's tmp dir."""
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)


def check_a_one_minute_cron_creates_and_completes_a_run(live: Live) -> None:
    deployment = live.deployment("sprint/every-minute")

    def runs(*states: str) -> list[dict[str, Any]]:
        # The scheduler makes many runs ahead: ask for the ones in these states only.
        return live.api("POST", "/flow_runs/filter", {
            "deployments": {"id": {"any_": [deployment["id"]]}},
            "flow_runs": {"state": {"type": {"any_": list(states)}}},
            "sort": "EXPECTED_START_TIME_ASC", "limit": 5})

    def seen() -> str:
        states = [(r["name"], r["state"]["type"], r["expected_start_time"])
                  for r in runs("SCHEDULED", "PENDING", "RUNNING", "FAILED", "CRASHED")]
        log = (live.root / "worker.log").read_text()[-3000:]
        return f"a scheduled run to complete: {states}\nworker log: {log}"

    run = wait_for(lambda: runs("COMPLETED"), 150, seen, interval=1)[0]
    assert run["auto_scheduled"] is True
    assert run_git(live.repos["scheduled"], "show", "agentfleet/scheduled:b.txt") == "a\n"


def test_deploy_run_from_ci_watch_and_schedule_on_a_real_server(live: Live, tmp_path: Path):
    """Everything on one server, in an order that lets the schedule's minute pass meanwhile:
    one test item per database, so each server starts once."""
    check_deploy_all_deploys_every_flow_independent_of_its_folder(live)
    # With a plan file on the worker and with the plan itself as JSON, side by side.
    inline = json.dumps(good_plan("ci-inline", live.repos["inline"]))
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(check_a_sprint_from_ci_completes, live, "ci-e2e", live.repos["ci"],
                            "--param", f"plan_path={live.plans['ci']}"),
                pool.submit(check_a_sprint_from_ci_completes, live, "ci-inline",
                            live.repos["inline"], "--param", f"plan={inline}")]
        for run in runs:
            run.result()
    if live.database == "sqlite":  # the server with the UI, running the mixed sprint
        check_status_and_show_read_a_finished_sprint_from_the_api(live)
        check_the_ui_shows_the_run_form_and_a_finished_sprint(live, tmp_path)
    check_a_one_minute_cron_creates_and_completes_a_run(live)
