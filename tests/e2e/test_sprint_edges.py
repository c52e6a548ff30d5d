"""The sprint's edges with `command` agents (no model needed): verification, a checked-out
target, bad input to `agentfleet run`, and a Prefect server that is missing or down."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.conftest import bare_remote, run_git
from tests.e2e.conftest import embedded_env, run_agentfleet
from tests.support.prefect_server import free_port


def command_plan(tmp_path: Path, repo: Path | str, **overrides: object) -> Path:
    """Two independent tasks, each writing one file through a `command` agent."""
    plan = {
        "name": "edges",
        "repo": str(repo),
        "agent": {"kind": "command"},
        "tasks": [
            {"id": "alpha", "prompt": "write alpha", "paths": ["alpha.txt"],
             "agent": {"run": "echo alpha > alpha.txt && echo wrote alpha"}},
            {"id": "beta", "prompt": "write beta", "paths": ["beta.txt"],
             "agent": {"run": "echo beta > beta.txt && echo wrote beta"}},
        ],
        **overrides,
    }
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def test_final_verify_failure_leaves_the_target_where_it_was(make_repo, sprint_env, tmp_path):
    repo = make_repo()
    plan = command_plan(tmp_path, repo, final_verify="test -f alpha.txt && exit 3",
                        on_final_verify_failure="fail")
    report = tmp_path / "report.json"

    run = run_agentfleet("run", str(plan), "--report", str(report), env=sprint_env)

    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    data = json.loads(report.read_text())
    assert data["final_verify"]["passed"] is False and data["final_verify"]["exit_status"] == 3
    assert not data["target_moved"]
    assert run_git(repo, "branch", "--list", "agentfleet/edges") == ""  # target never created
    assert run_git(repo, "for-each-ref", "refs/agentfleet/") == ""  # no scratch ref left
    assert "final_verify: FAILED" in run.stdout


def test_a_checked_out_target_is_left_alone_with_the_result_on_the_scratch_ref(
    make_repo, sprint_env, tmp_path
):
    repo = make_repo()
    plan = command_plan(tmp_path, repo, target="main", base="main")
    (repo / "README.md").write_text("edited by the user\n")
    head = run_git(repo, "rev-parse", "HEAD")

    run = run_agentfleet("run", str(plan), env=sprint_env)

    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    assert "is checked out at" in run.stdout
    assert run_git(repo, "rev-parse", "HEAD") == head  # main did not move under the user
    assert (repo / "README.md").read_text() == "edited by the user\n"
    assert run_git(repo, "status", "--porcelain").strip() == "M README.md"
    scratch = "refs/agentfleet/scratch/edges"
    assert run_git(repo, "show", f"{scratch}:alpha.txt") == "alpha\n"
    assert run_git(repo, "show", f"{scratch}:beta.txt") == "beta\n"


def test_run_refuses_bad_input_with_exit_2_and_creates_nothing(
    make_repo, sprint_env, tmp_path, snapshot
):
    repo = make_repo()
    plan = command_plan(tmp_path, repo, timeout="soon")
    before = snapshot(repo)
    run = run_agentfleet("run", str(plan), env=sprint_env, timeout=60)
    assert run.returncode == 2
    assert "timeout" in run.stderr and "Traceback" not in run.stderr
    assert snapshot(repo) == before


def test_run_without_codex_is_a_configuration_error(make_repo, sprint_env, tmp_path, snapshot):
    repo = make_repo()
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(
        {"name": "nocodex", "repo": str(repo), "tasks": [{"id": "a", "prompt": "do a"}]}
    ))
    before = snapshot(repo)
    env = {**sprint_env, "AGENTFLEET_CODEX_PATH": str(tmp_path / "no" / "codex")}
    run = run_agentfleet("run", str(plan), env=env, timeout=60)
    assert run.returncode == 2, run.stderr
    assert "codex" in run.stderr.lower() and "Traceback" not in run.stderr
    assert snapshot(repo) == before


def test_a_conflict_stops_that_task_only_and_keeps_its_branch(make_repo, sprint_env, tmp_path):
    repo = make_repo()
    # The target already exists with a commit agentfleet did not make, touching alpha.txt.
    run_git(repo, "branch", "agentfleet/edges", "main")
    run_git(repo, "worktree", "add", "-q", str(tmp_path / "t"), "agentfleet/edges")
    (tmp_path / "t" / "alpha.txt").write_text("the user's alpha\n")
    run_git(tmp_path / "t", "add", "alpha.txt")
    run_git(tmp_path / "t", "commit", "-qm", "user's own commit")
    run_git(repo, "worktree", "remove", str(tmp_path / "t"))
    report = tmp_path / "report.json"

    run = run_agentfleet("run", str(command_plan(tmp_path, repo, on_conflict="skip")),
                         "--report", str(report), env=sprint_env)

    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    tasks = {t["task"]: t for t in json.loads(report.read_text())["tasks"]}
    assert tasks["alpha"]["outcome"] == "conflict"
    assert tasks["alpha"]["detail"].startswith("conflict in alpha.txt; branch kept. To finish by "
                                               "hand: git switch agentfleet/edges && git "
                                               "cherry-pick ")
    assert tasks["beta"]["outcome"] == "applied"  # later tasks still apply
    assert run_git(repo, "show", "agentfleet-attempts/edges/alpha/1:alpha.txt") == "alpha\n"
    assert run_git(repo, "show", "agentfleet/edges:alpha.txt") == "the user's alpha\n"
    assert run_git(repo, "show", "agentfleet/edges:beta.txt") == "beta\n"
    log = run_git(repo, "log", "--format=%s", "agentfleet/edges")
    assert "user's own commit" in log  # commits agentfleet did not make are kept


def test_on_the_embedded_server_the_pool_holds_within_the_process(
    make_repo, sprint_env: dict[str, str], tmp_path: Path
) -> None:
    events = tmp_path / "events.log"
    mark = f'echo "$AGENTFLEET_TASK {{}} $(date +%s.%N)" >> {events}'
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({
        "name": "alone", "repo": str(make_repo()), "agent": {"kind": "command"},
        "limits": {"concurrency": 2},
        "tasks": [{"id": t, "prompt": t, "paths": [f"{t}.txt"],
                   "agent": {"run": f"{mark.format('start')}; sleep 1; echo {t} > {t}.txt; "
                                    f"{mark.format('end')}"}}
                  for t in ("one", "two")],
    }))
    env = {**embedded_env(sprint_env, tmp_path), "AGENTFLEET_POOL_SIZE": "1"}
    done = run_agentfleet("run", str(plan), env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    output = done.stdout + done.stderr
    assert ("agents share the pool 'agentfleet-agents' (1 slot; counted in this process, "
            "no Prefect server is shared)") in output
    # Concurrency 2, but the pool's one slot: the agents ran one after the other.
    spans: dict[str, dict[str, float]] = {}
    for line in events.read_text().splitlines():
        task, edge, at = line.split()
        spans.setdefault(task, {})[edge] = float(at)
    first, second = sorted(spans.values(), key=lambda s: s["start"])
    assert second["start"] >= first["end"], spans


NO_SERVER = ("placement: pool needs a Prefect server that its workers reach too: set "
             "PREFECT_API_URL to its API (for example http://127.0.0.1:4200/api, where "
             "`prefect server start` serves)")


def test_a_pool_sprint_or_a_worker_without_a_server_says_so_and_starts_none(
    make_repo, sprint_env: dict[str, str], tmp_path: Path
) -> None:
    # Without PREFECT_API_URL Prefect would start a temporary server of the process's own,
    # which no worker sees: the run and the worker used to start one (telemetry errors and
    # all), then failed, the worker with Prefect's traceback.
    remote = bare_remote(make_repo, tmp_path)
    plan = command_plan(tmp_path, f"file://{remote}", placement="pool")
    env = embedded_env(sprint_env, tmp_path)
    refs = run_git(remote, "for-each-ref")

    run = run_agentfleet("run", str(plan), env=env, timeout=60)

    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    assert run.stderr.strip() == f"error: {NO_SERVER}"
    assert run.stdout == ""
    worker = run_agentfleet("worker", "--limit", "1", env=env, timeout=60)
    assert worker.returncode == 2, worker.stdout[-2000:] + worker.stderr[-2000:]
    assert worker.stderr.strip() == (
        "error: agentfleet worker needs a Prefect server to take runs from, the one the "
        "sprints use: set PREFECT_API_URL to its API (for example http://127.0.0.1:4200/api, "
        "where `prefect server start` serves)")  # said before its warm engine starts
    home = tmp_path / "prefect-home"  # Prefect's settings make the folder, no server fills it
    assert not home.exists() or list(home.iterdir()) == []
    assert run_git(remote, "for-each-ref") == refs


def test_a_server_that_is_down_is_named_not_reported_as_a_bug(
    make_repo, sprint_env: dict[str, str], tmp_path: Path, snapshot
) -> None:
    repo = make_repo()
    plan = command_plan(tmp_path, repo)
    api = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    env = {**sprint_env, "PREFECT_API_URL": api}
    before = snapshot(repo)
    hint = "start the server (`prefect server start`) or set PREFECT_API_URL to one that runs"

    for command in (["run", str(plan)], ["status"]):
        done = run_agentfleet(*command, env=env, timeout=120)
        assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith(f"error: cannot reach the Prefect API at {api} (")
        assert line.endswith(hint)
    assert snapshot(repo) == before
