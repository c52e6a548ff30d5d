"""``best-of-n`` on its own: the flow (with and without a target) and the command end to end.

`command` agents tell attempts apart by ``AGENTFLEET_ATTEMPT``; the command talks to
the harness's server through ``PREFECT_API_URL``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prefect.settings import PREFECT_API_URL

from flows.best_of_n import best_of_n
from tests.conftest import GIT_ENV, MakeRepo, run_git

ROOT = Path(__file__).resolve().parents[2]
K = "$AGENTFLEET_ATTEMPT"


def agentfleet(*args: str, cwd: Path, work: Path, storage: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTFLEET_", "PREFECT_"))}
    env.update(GIT_ENV, PREFECT_API_URL=str(PREFECT_API_URL.value()),
               AGENTFLEET_WORK_DIR=str(work), AGENTFLEET_STOP_GRACE_S="1",
               PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(storage))
    return subprocess.run([sys.executable, "-m", "agentfleet.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)


def test_the_flow_returns_the_winner_and_applies_only_to_a_target(
    harness, make_repo: MakeRepo, work_dir, tmp_path
):
    repo = make_repo()
    run = {"kind": "command", "run": f"echo {K} > n.txt"}
    answer = best_of_n("write n", repo=str(repo), attempts=3, agent=run, score="cat n.txt",
                       score_goal="max", paths=["n.txt"], no_cache=True)
    assert answer.winner == 3 and answer.branch == "agentfleet-attempts/best-of-n/task/3"
    assert answer.criterion == "score" and answer.sentence.startswith("k=3 won on score")
    assert [row["k"] for row in answer.candidates] == [1, 2, 3] and not answer.applied
    assert run_git(repo, "branch", "--list", "agentfleet/*") == ""  # nothing applied
    landed = best_of_n("write n", repo=str(repo), attempts=2, agent=run, verify="true",
                       target="result", name="landing", no_cache=True)
    assert landed.winner == 1 and landed.applied  # equal diffs: the lower k
    assert run_git(repo, "show", "result:n.txt") == "1\n"


def test_the_command_prints_the_table_and_the_winner(harness, make_repo: MakeRepo, tmp_path):
    repo = make_repo()
    work, storage = tmp_path / "work", tmp_path / "results"
    done = agentfleet("best-of-n", "make it pass", "--repo", str(repo), "--attempts", "3",
                      "--run", f"echo {K} > out.txt", "--verify", 'test "$(cat out.txt)" = 2',
                      "--paths", "out.txt", cwd=ROOT, work=work, storage=storage)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "k=2 won: the only candidate that passed" in done.stdout
    assert "| 1 |  | failed |" in done.stdout and "| 2 | yes | passed |" in done.stdout
    assert done.stdout.rstrip().endswith("winner: k=2 agentfleet-attempts/best-of-n/task/2")
    assert run_git(repo, "show", "agentfleet-attempts/best-of-n/task/2:out.txt") == "2\n"

    none = agentfleet("best-of-n", "fail", "--repo", str(repo), "--attempts", "2",
                      "--run", "echo x > x.txt", "--verify", "exit 1", "--name", "failing",
                      cwd=ROOT, work=work, storage=storage)
    assert none.returncode == 1, none.stdout + none.stderr
    assert "no candidate passed" in none.stdout

    bad = agentfleet("best-of-n", "x", "--repo", str(repo), "--attempts", "9", "--run", "true",
                     cwd=ROOT, work=work, storage=storage)
    assert bad.returncode == 2 and "attempts" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr
