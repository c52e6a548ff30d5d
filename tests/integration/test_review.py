"""``review: true``: the choice waits for a person while the rest of the sprint goes on.

The flow pauses (Prefect's pause with a typed form) only when nothing else can run; a
thread answers as a person would: resuming the run through the API, or with
``agentfleet review``. Unanswered reviews end by ``on_review_timeout``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prefect.flow_runs import resume_flow_run
from prefect.settings import PREFECT_API_URL

from agentfleet.results import TaskOutcome
from tasks.review import Waiting, find_waiting
from tests.conftest import GIT_ENV, MakeRepo, run_git
from tests.integration.conftest import command, run_sprint

ROOT = Path(__file__).resolve().parents[2]
K = "$AGENTFLEET_ATTEMPT"


def reviewed_plan(name: str) -> dict[str, object]:
    """``pick``: two candidates, score max picks k=2; ``after`` waits on it; ``other`` not."""
    return {
        "name": name,
        "tasks": [
            command("pick", f"echo {K} > pick.txt", paths=["pick.txt"], attempts=2,
                    score="cat pick.txt", score_goal="max", review=True),
            command("after", "cp pick.txt after.txt", paths=["after.txt"],
                    depends_on=["pick"]),
            command("other", "echo other > other.txt", paths=["other.txt"]),
        ],
    }


def answer_when_paused(sprint: str, respond: Callable[[Waiting], None],
                       seen: list[Waiting]) -> threading.Thread:
    """A person: wait until the sprint's run is paused for review, then answer."""
    api_url = str(PREFECT_API_URL.value())

    def person() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            # The API's paused runs (no locator in this folder).
            waiting = find_waiting(sprint, Path("/nonexistent"), api_url)
            if waiting is not None:
                seen.append(waiting)
                respond(waiting)
                return
            time.sleep(0.3)

    thread = threading.Thread(target=person, daemon=True)
    thread.start()
    return thread


def outcomes(report) -> dict[str, TaskOutcome]:
    return {t.task: t.outcome for t in report.tasks}


def test_a_review_answered_through_the_api_overrules_the_automatic_choice(
    harness, make_repo: MakeRepo, work_dir, tmp_path
):
    repo = make_repo()
    seen: list[Waiting] = []
    person = answer_when_paused(
        "rev-api", lambda w: resume_flow_run(w.flow_run_id, run_input={"pick": "k=1"}), seen)

    completed, report = run_sprint(tmp_path, {"repo": str(repo), **reviewed_plan("rev-api")})
    person.join(timeout=5)

    assert completed, report.table()
    (form,) = seen
    # One form: the pending task, its candidates (diffstat, verify, score, votes), the choice.
    assert form.fields == {"pick": (["k=1", "k=2", "reject"], "k=2")}
    assert "### Task `pick`" in form.description
    assert "Automatic choice: **k=2** (k=2 won on score: 2.0 > 1.0)" in form.description
    assert "| 1 | passed | `agentfleet-attempts/rev-api/pick/1` | 1 file (+1 -0): pick.txt " \
           "| - | 1 | 1 |" in form.description
    assert outcomes(report) == {t: TaskOutcome.APPLIED for t in ("pick", "after", "other")}
    pick = next(t for t in report.tasks if t.task == "pick")
    assert pick.winner == 1 and pick.criterion == "review"
    assert pick.selection == "k=1 chosen by review (automatic: k=2)"
    target = "agentfleet/rev-api"
    assert run_git(repo, "show", f"{target}:pick.txt") == "1\n"
    assert run_git(repo, "show", f"{target}:after.txt") == "1\n"  # started from the pick
    assert run_git(repo, "show", f"{target}:other.txt") == "other\n"
    assert not (work_dir / "reviews" / "rev-api.json").exists()


def agentfleet(*args: str, work: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTFLEET_", "PREFECT_"))}
    env.update(GIT_ENV, AGENTFLEET_WORK_DIR=str(work))  # finds the run by its note there
    return subprocess.run([sys.executable, "-m", "agentfleet.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_agentfleet_review_lists_and_rejects_and_the_rest_lands(
    harness, make_repo: MakeRepo, work_dir, tmp_path
):
    repo = make_repo()
    runs: list[subprocess.CompletedProcess[str]] = []

    def respond(_: Waiting) -> None:
        runs.append(agentfleet("review", "rev-cli", work=work_dir))
        runs.append(agentfleet("review", "rev-cli", "--answer", "pick=reject", work=work_dir))

    person = answer_when_paused("rev-cli", respond, [])
    completed, report = run_sprint(tmp_path, {"repo": str(repo), **reviewed_plan("rev-cli")})
    person.join(timeout=5)

    listed, answered = runs
    assert listed.returncode == 0, listed.stderr
    assert "Automatic choice: **k=2**" in listed.stdout
    assert "--answer TASK=CHOICE" in listed.stdout
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout.rstrip().endswith("answered: pick=reject")
    assert not completed
    assert outcomes(report) == {"pick": TaskOutcome.FAILED, "after": TaskOutcome.BLOCKED,
                                "other": TaskOutcome.APPLIED}
    pick = next(t for t in report.tasks if t.task == "pick")
    assert pick.detail == "rejected by review; the automatic choice was k=2"
    # Every candidate's branch is kept; the target has only the unrelated task.
    assert run_git(repo, "show", "agentfleet-attempts/rev-cli/pick/2:pick.txt") == "2\n"
    assert run_git(repo, "ls-tree", "--name-only", "agentfleet/rev-cli").split() == [
        "README.md", "other.txt"]
    nothing = agentfleet("review", "rev-cli", work=work_dir)
    assert nothing.returncode == 1 and "no run of sprint rev-cli waits" in nothing.stderr


# auto: the review's time ends while `slow` still runs (no pause at all); fail: `slow`
# ends first and the run pauses until the time is up. The outcome is the same either way.
@pytest.mark.parametrize(("on_timeout", "review_timeout", "slow_s"),
                         [("auto", "1s", 3), ("fail", "3s", 1)])
def test_an_unanswered_review_times_out_while_an_unrelated_task_finishes(
    harness, make_repo: MakeRepo, work_dir, tmp_path, on_timeout, review_timeout, slow_s
):
    repo = make_repo()
    name = f"rev-timeout-{on_timeout}"
    plan = {
        "name": name, "repo": str(repo),
        "tasks": [
            command("pick", "echo picked > pick.txt", paths=["pick.txt"], review=True,
                    review_timeout=review_timeout, on_review_timeout=on_timeout),
            # Finishes while the review waits (it starts with pick, and takes longer).
            command("slow", f"sleep {slow_s}; echo slow > slow.txt", paths=["slow.txt"]),
        ],
    }

    completed, report = run_sprint(tmp_path, plan)

    assert outcomes(report)["slow"] is TaskOutcome.APPLIED
    assert run_git(repo, "show", f"agentfleet/{name}:slow.txt") == "slow\n"
    pick = next(t for t in report.tasks if t.task == "pick")
    if on_timeout == "auto":
        assert completed and pick.outcome is TaskOutcome.APPLIED
        assert run_git(repo, "show", f"agentfleet/{name}:pick.txt") == "picked\n"
    else:
        assert not completed and pick.outcome is TaskOutcome.FAILED
        assert pick.detail == ("review timed out (on_review_timeout: fail); the automatic "
                               "choice was k=1")
        assert run_git(repo, "show", "agentfleet-attempts/" + name + "/pick/1:pick.txt") \
            == "picked\n"


def test_agentfleet_run_on_a_terminal_asks_there(harness, make_repo: MakeRepo, tmp_path):
    import pty

    import yaml

    repo = make_repo()
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"agent": {"kind": "command"}, "repo": str(repo),
                                    **reviewed_plan("rev-tty")}, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTFLEET_", "PREFECT_"))}
    env.update(GIT_ENV, PREFECT_API_URL=str(PREFECT_API_URL.value()),
               AGENTFLEET_WORK_DIR=str(tmp_path / "work"), AGENTFLEET_STOP_GRACE_S="1",
               PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(tmp_path / "results"))
    master, terminal = pty.openpty()
    try:
        # The person types before the question comes: the terminal keeps the line.
        os.write(master, b"1\n")
        run = subprocess.run([sys.executable, "-m", "agentfleet.cli", "run", str(plan)],
                             cwd=ROOT, env=env, stdin=terminal, capture_output=True, text=True,
                             timeout=120)
    finally:
        os.close(terminal)
        os.close(master)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "# agentfleet review: sprint `rev-tty`" in run.stderr
    assert "pick [k=1/k=2/reject] (Enter: k=2): " in run.stderr
    assert "pick: k=1 by review (the automatic choice was k=2)" in run.stdout + run.stderr
    assert run_git(repo, "show", "agentfleet/rev-tty:pick.txt") == "1\n"
