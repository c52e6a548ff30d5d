"""Every ending of `agentfleet run` prints the summary and writes the report: runs with
`command` agents (no model) that end badly, and `--redo`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.conftest import run_git
from tests.e2e.conftest import run_agentfleet
from tests.support.prefect_server import api, own_prefect_server
from tests.support.sprint_process import sprint_process
from tests.support.waiting import wait_for

TARGET = "agentfleet/fail"


def plan_file(tmp_path: Path, repo: Path, tasks: list[dict[str, object]], **keys: object) -> Path:
    plan = {"name": "fail", "repo": str(repo), "agent": {"kind": "command"}, "tasks": tasks,
            **keys}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def command(task_id: str, run: str, **keys: object) -> dict[str, object]:
    return {"id": task_id, "prompt": f"do {task_id}", "agent": {"run": run}, **keys}


def run(plan: Path, report: Path, env: dict[str, str], *more: str):
    done = run_agentfleet("run", str(plan), "--report", str(report), *more, env=env)
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output[-4000:]
    assert report.exists(), output[-4000:]
    assert "sprint fail:" in done.stdout, output[-4000:]  # the summary line
    return done, json.loads(report.read_text())


def test_a_file_name_that_is_not_utf8_lands_and_is_reported(make_repo, sprint_env, tmp_path):
    repo = make_repo()
    plan = plan_file(tmp_path, repo, [
        command("latin", "printf 'old tool\\n' > \"$(printf 'caf\\351.txt')\"; echo wrote it"),
        command("plain", "echo plain > plain.txt", paths=["plain.txt"]),
    ])
    done, report = run(plan, tmp_path / "report.json", sprint_env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = {t["task"]: t["files"] for t in report["tasks"]}
    assert files == {"latin": ["caf\\xe9.txt"], "plain": ["plain.txt"]}
    assert report["target_moved"] is True
    names = run_git(repo, "-c", "core.quotePath=true", "ls-tree", "--name-only", TARGET)
    assert '"caf\\351.txt"' in names.splitlines()


def test_a_persons_commit_on_the_target_during_the_run_is_kept_under_the_stack(
    make_repo, sprint_env, tmp_path
):
    repo = make_repo()
    base = run_git(repo, "rev-parse", "main").strip()
    run_git(repo, "branch", TARGET, base)
    # A person's commit, put on the target while the first final_verify runs.
    run_git(repo, "worktree", "add", "-q", "--detach", str(tmp_path / "t"), base)
    (tmp_path / "t" / "user.txt").write_text("mine\n")
    run_git(tmp_path / "t", "add", "user.txt")
    run_git(tmp_path / "t", "commit", "-qm", "a person's commit")
    user = run_git(tmp_path / "t", "rev-parse", "HEAD").strip()
    run_git(repo, "worktree", "remove", str(tmp_path / "t"))
    marker = tmp_path / "moved"
    plan = plan_file(tmp_path, repo, [command("alpha", "echo a > alpha.txt")], final_verify=(
        f"test -e {marker} || {{ touch {marker}; git -C {repo} branch -f {TARGET} {user}; }}"))
    done, report = run(plan, tmp_path / "report.json", sprint_env)
    assert done.returncode == 0, done.stdout[-3000:]
    assert report["final_verify"]["passed"] is True and report["target_moved"] is True
    head = run_git(repo, "rev-parse", TARGET).strip()
    assert run_git(repo, "rev-parse", f"{head}^").strip() == user
    assert run_git(repo, "show", f"{TARGET}:user.txt") == "mine\n"
    assert "rebuilding the stack on it" in done.stdout + done.stderr


def test_failures_are_one_line_with_verify_s_tail_and_nothing_applied_creates_no_target(
    make_repo, sprint_env, tmp_path
):
    repo = make_repo()
    wide = "$(printf 'x%.0s' $(seq 1 200))"
    noisy = f"for i in $(seq 1 300); do echo \"noise $i {wide}\"; done; exit 3"
    plan = plan_file(tmp_path, repo, [
        command("alpha", noisy, paths=["alpha.txt"]),
        command("beta", "echo b > beta.txt", paths=["beta.txt"],
                verify="for i in $(seq 1 30); do echo \"check-$i\"; done; exit 1"),
    ])
    done, report = run(plan, tmp_path / "report.json", sprint_env)
    assert done.returncode == 1
    tasks = {t["task"]: t for t in report["tasks"]}
    assert tasks["alpha"]["outcome"] == "failed"
    assert tasks["alpha"]["detail"] == "agent failed_fatal: command exited 3"
    assert tasks["beta"]["detail"] == "verify failed (exit 1)"
    assert tasks["beta"]["verify_tail"].splitlines() == [f"check-{i}" for i in range(11, 31)]
    table = done.stdout[: done.stdout.index("beta: verify failed")]
    assert max(len(line) for line in table.splitlines()) < 200
    assert "noise" not in done.stdout
    after = done.stdout[done.stdout.index("beta: verify failed, last 20 lines"):]
    assert "  check-30" in after and "  check-11" in after and "check-10\n" not in after
    # Nothing applied: no target branch, no scratch ref.
    assert run_git(repo, "for-each-ref", "refs/heads/agentfleet/", "refs/agentfleet/") == ""
    assert report["target_moved"] is False and "not created" in report["target_note"]


def test_an_agent_that_rewinds_head_does_not_stop_the_others(make_repo, sprint_env, tmp_path):
    repo = make_repo()
    (repo / "second.txt").write_text("second\n")
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-qm", "second")
    plan = plan_file(tmp_path, repo, [
        command("rewind", "echo r > r.txt && git reset -q --soft HEAD~1"),
        command("beta", "echo b > beta.txt", paths=["beta.txt"]),
        command("gamma", "echo g > gamma.txt", paths=["gamma.txt"]),
    ])
    done, report = run(plan, tmp_path / "report.json", sprint_env)
    tasks = {t["task"]: t for t in report["tasks"]}
    assert tasks["beta"]["outcome"] == "applied" and tasks["gamma"]["outcome"] == "applied"
    assert run_git(repo, "show", f"{TARGET}:beta.txt") == "b\n"
    assert run_git(repo, "show", f"{TARGET}:gamma.txt") == "g\n"
    # Whichever way the rewound attempt ends, it is that task's row, not the run's end.
    assert tasks["rewind"]["outcome"] in ("failed", "applied")
    assert done.returncode == (0 if tasks["rewind"]["outcome"] == "applied" else 1)


def test_redo_replaces_a_changed_task_and_its_dependents(make_repo, sprint_env, tmp_path):
    repo = make_repo()
    tasks = [
        command("alpha", "cat > alpha.txt", paths=["alpha.txt"]),
        command("beta", "cp alpha.txt beta.txt", paths=["beta.txt"], depends_on=["alpha"]),
        command("gamma", "echo g > gamma.txt", paths=["gamma.txt"]),
    ]
    plan = plan_file(tmp_path, repo, tasks)
    done, _ = run(plan, tmp_path / "r1.json", sprint_env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    first = {t: run_git(repo, "log", "-1", "--format=%H", f"--grep=Agentfleet-Task: {t}", TARGET)
             .strip() for t in ("alpha", "beta", "gamma")}

    # The user adds a commit of their own; then alpha's prompt changes.
    tree = tmp_path / "user"
    run_git(repo, "worktree", "add", "-q", str(tree), TARGET)
    (tree / "user.txt").write_text("mine\n")
    run_git(tree, "add", "user.txt")
    run_git(tree, "commit", "-qm", "user's own commit")
    run_git(repo, "worktree", "remove", str(tree))
    tasks[0]["prompt"] = "do alpha, the new way"
    plan = plan_file(tmp_path, repo, tasks)
    done, report = run(plan, tmp_path / "r2.json", sprint_env)
    assert done.returncode == 0
    alpha = next(t for t in report["tasks"] if t["task"] == "alpha")
    note = "its prompt changed since: `agentfleet run --redo alpha` runs it again"
    assert alpha["outcome"] == "already applied" and alpha["detail"] == note
    assert "--redo alpha" in done.stdout

    done, report = run(plan, tmp_path / "r3.json", sprint_env, "--redo", "alpha")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    outcomes = {t["task"]: t["outcome"] for t in report["tasks"]}
    assert outcomes == {"alpha": "applied", "beta": "applied", "gamma": "already applied"}
    assert "do alpha, the new way" in run_git(repo, "show", f"{TARGET}:alpha.txt")
    assert "the new way" in run_git(repo, "show", f"{TARGET}:beta.txt")  # rebuilt on alpha
    log = run_git(repo, "log", "--format=%H %s", f"main..{TARGET}").splitlines()
    # gamma and the user's commit replayed, then the new alpha and beta.
    assert [line.split(" ", 1)[1].split(":")[0] for line in log] == [
        "beta", "alpha", "user's own commit", "gamma"]
    shas = [line.split()[0] for line in log]
    assert first["alpha"] not in shas and first["beta"] not in shas
    assert any("user's own commit" in line for line in log)
    assert run_git(repo, "show", f"{TARGET}:user.txt") == "mine\n"


def test_refs_heads_target_is_that_branch(make_repo, sprint_env, tmp_path):
    repo = make_repo()
    run_git(repo, "branch", "keep", "main")
    plan = plan_file(tmp_path, repo, [command("alpha", "echo a > alpha.txt")],
                     target="refs/heads/keep")
    done, report = run(plan, tmp_path / "report.json", sprint_env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert report["target"] == "keep" and report["target_moved"] is True
    assert run_git(repo, "show", "keep:alpha.txt") == "a\n"
    assert run_git(repo, "for-each-ref", "refs/heads/refs/") == ""


def test_a_server_that_dies_mid_sprint_still_lands_and_says_what_went(
    make_repo, sprint_env, tmp_path
):
    # The sprint's own server, killed while both agents work. The work is git's and the
    # agents': it lands; only Prefect's record of the run is lost, and the run says so. It
    # used to fail both attempts ("crashed: Connection refused": giving back their pool
    # slots) and then hang for minutes at exit, Prefect's workers retrying against the dead
    # server. Once the server is back, the next run records the first one's end.
    repo = make_repo()
    flag, started = tmp_path / "server-gone", tmp_path / "started"
    started.mkdir()
    wait = f"touch {started}/$AGENTFLEET_TASK; while [ ! -f {flag} ]; do sleep 0.1; done"
    plan = plan_file(tmp_path, repo, [command(t, f"{wait}; echo {t} > {t}.txt",
                                              paths=[f"{t}.txt"]) for t in ("a", "b")])
    report = tmp_path / "report.json"
    with own_prefect_server(tmp_path / "own-server") as server:
        # No retry of a request to the dead server (Prefect makes five: a minute each).
        env = {**sprint_env, **server.env(), "PREFECT_CLIENT_MAX_RETRIES": "0",
               "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(tmp_path / "results")}
        with sprint_process(plan, env, "--report", str(report),
                            stderr=subprocess.PIPE) as sprint:
            wait_for(lambda: len(list(started.iterdir())) == 2 or sprint.poll() is not None,
                     120, "both agents to start")
            server.halt()
            flag.touch()
            out, err = sprint.communicate(timeout=240)
            assert sprint.returncode == 2, out[-3000:] + err[-3000:]
            assert f"cannot reach the Prefect API at {server.api_url}" in err
            assert "error: the sprint ended as above, but Prefect could not record its run" in err
            assert "sprint fail: 2/2 tasks applied" in out  # the table and summary were printed
            assert run_git(repo, "show", f"{TARGET}:a.txt") == "a\n"
            assert run_git(repo, "show", f"{TARGET}:b.txt") == "b\n"
            data = json.loads(report.read_text())
            assert [t["outcome"] for t in data["tasks"]] == ["applied", "applied"]
            assert run_git(repo, "worktree", "list").count("\n") == 1  # no attempt worktree left

        # The server back (same database and address): its run still shows Running, until
        # the next run of the sprint records the end the first one could not.
        server.start_again()
        [first] = api(server.api_url, "/flow_runs/filter", {})
        assert first["state_type"] == "RUNNING"
        done, _ = run(plan, report, env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "marked Completed, as it ended" in done.stderr
        first = api(server.api_url, f"/flow_runs/{first['id']}")
        assert first["state_type"] == "COMPLETED"
        assert first["state"]["message"].startswith("sprint fail: 2/2 tasks applied")
        assert "recorded by the next run of this sprint" in first["state"]["message"]
