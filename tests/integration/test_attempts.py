"""Best-of-N inside a sprint: N attempts per task, one chosen for a reason anyone can read.

`command` agents tell attempts apart by ``AGENTFLEET_ATTEMPT`` (k), so each attempt
does different work at no cost; the flow runs under Prefect's harness.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from prefect.artifacts import Artifact

from agentfleet.leases import leases_root
from agentfleet.results import SprintReport, TaskReport
from tests.conftest import MakeRepo, run_git
from tests.integration.conftest import command, run_sprint

K = "$AGENTFLEET_ATTEMPT"


def task_of(report: SprintReport, task_id: str) -> TaskReport:
    return next(t for t in report.tasks if t.task == task_id)


def show(repo: Path, target: str, path: str) -> str:
    return run_git(repo, "show", f"{target}:{path}")


def test_only_attempt_2_passes_verify(harness, make_repo: MakeRepo, work_dir, tmp_path):
    repo = make_repo()
    ok, report = run_sprint(tmp_path, {
        "name": "only2", "repo": str(repo), "attempts": 3,
        "tasks": [command("pick", f"echo {K} > out.txt", paths=["out.txt"],
                          verify='test "$(cat out.txt)" = 2')],
    })
    assert ok, report.summary_line()
    row = task_of(report, "pick")
    assert row.winner == 2 and row.criterion == "passes"
    assert row.selection == "k=2 won: the only candidate that passed"
    assert [(c.k, c.outcome) for c in row.candidates] == [(1, "failed"), (2, "passed"),
                                                           (3, "failed")]
    assert all("verify failed" in c.reason for c in row.candidates if c.k != 2)
    assert row.candidates[0].verify_exit_status == 1
    assert row.candidates[1].branch == "agentfleet-attempts/only2/pick/2"
    assert show(repo, "agentfleet/only2", "out.txt") == "2\n"
    # The report carries every candidate; the console's row stays one line.
    data = json.loads(report.model_dump_json())["tasks"][0]
    assert {"k", "branch", "outcome", "reason", "final_message", "usage", "duration_s",
            "verify_exit_status", "verify_output_tail", "score", "diff_size"} <= set(
        data["candidates"][0])
    assert set(data["candidates"][0]["usage"]) >= {"input_tokens", "cached_input_tokens",
                                                   "output_tokens", "reasoning_output_tokens"}
    assert data["winner"] == 2 and data["criterion"] == "passes" and data["votes"]
    assert "[k=2 of 3, on passes]" in report.table().splitlines()[2]
    # The stages are visible: decompose's markdown and select's candidates table.
    table = Artifact.get("agentfleet-only2-pick-candidates")
    assert table is not None and table.description == row.selection
    assert '"winner": "yes"' in str(table.data) or "yes" in str(table.data)
    decomposition = Artifact.get("agentfleet-only2-decompose")
    assert decomposition is not None and "apply order: pick" in str(decomposition.data)
    assert "3 attempts" in str(decomposition.data)


def test_a_candidate_writing_outside_paths_loses(harness, make_repo, work_dir, tmp_path):
    repo = make_repo()
    run = (f'if [ {K} = 1 ]; then echo stray > stray.txt; echo one > a.txt; '
           f'else echo {K} > a.txt; fi')
    ok, report = run_sprint(tmp_path, {
        "name": "scope", "repo": str(repo), "attempts": 2,
        "tasks": [command("a", run, paths=["a.txt"])],
    })
    assert ok, report.summary_line()
    row = task_of(report, "a")
    assert row.winner == 2
    assert not row.candidates[0].passed and "stray.txt" in row.candidates[0].reason
    assert show(repo, "agentfleet/scope", "a.txt") == "2\n"


def test_score_decides_min_and_max(harness, make_repo, work_dir, tmp_path):
    # k=1 scores 7, k=2 scores 4, k=3 scores 1: the lower k or the smaller diff never decide.
    run = f"echo $((10 - 3 * {K})) > n.txt"
    for goal, winner, sentence in (("min", 3, "k=3 won on score: 1.0 < 4.0"),
                                   ("max", 1, "k=1 won on score: 7.0 > 4.0")):
        repo = make_repo(name=f"repo-{goal}")
        ok, report = run_sprint(tmp_path, {
            "name": f"score-{goal}", "repo": str(repo), "attempts": 3,
            "score": "echo measuring; cat n.txt", "score_goal": goal,
            "tasks": [command("fast", run, paths=["n.txt"])],
        })
        assert ok, report.summary_line()
        row = task_of(report, "fast")
        assert row.winner == winner and row.criterion == "score", row.selection
        assert row.selection.startswith(sentence), row.selection
        assert [c.score for c in row.candidates] == [7.0, 4.0, 1.0]


def test_consensus_decides_between_three_where_two_agree(harness, make_repo, work_dir,
                                                         tmp_path):
    repo = make_repo()
    # k=1 writes the smallest diff; k=2 and k=3 agree (whitespace aside) and win on votes.
    run = (f'if [ {K} = 1 ]; then echo a > f.txt; '
           f'elif [ {K} = 2 ]; then printf "b c\\nd\\n" > f.txt; '
           'else printf "b   c\\nd\\n" > f.txt; fi')
    ok, report = run_sprint(tmp_path, {
        "name": "votes", "repo": str(repo), "attempts": 3,
        "tasks": [command("t", run, paths=["f.txt"])],
    })
    assert ok, report.summary_line()
    row = task_of(report, "t")
    assert row.criterion == "votes" and row.winner == 2, row.selection
    assert row.votes == {1: 1, 2: 2, 3: 2} or row.votes[2] > row.votes[1]


def test_early_stop_first_pass_stops_the_others(harness, make_repo, work_dir, tmp_path):
    repo = make_repo()
    run = f'if [ {K} = 1 ]; then echo done > r.txt; else sleep 120; echo late > r.txt; fi'
    started = time.monotonic()
    ok, report = run_sprint(tmp_path, {
        "name": "early", "repo": str(repo), "attempts": 3, "early_stop": "first_pass",
        "limits": {"concurrency": 3},
        "tasks": [command("t", run, paths=["r.txt"])],
    })
    assert ok, report.summary_line()
    assert time.monotonic() - started < 100
    row = task_of(report, "t")
    assert row.winner == 1
    assert [c.reason for c in row.candidates[1:]] == ["stopped: early stop"] * 2
    # No process, worktree or lease left behind by the stopped attempts.
    assert list(leases_root(work_dir).rglob("*.json")) == []
    assert run_git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert processes_in(work_dir) == []


def processes_in(folder: Path) -> list[int]:
    """Live processes whose working folder lies in ``folder`` (an attempt's worktree)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if cwd.startswith(str(folder)):
                found.append(int(entry.name))
    return found


def test_a_dependent_task_starts_from_the_winner(harness, make_repo, work_dir, tmp_path):
    repo = make_repo()
    ok, report = run_sprint(tmp_path, {
        "name": "dep", "repo": str(repo),
        "tasks": [
            command("a", f"echo {K} > out.txt", paths=["out.txt"], attempts=3,
                    verify='test "$(cat out.txt)" = 2'),
            command("b", "cp out.txt seen.txt", paths=["seen.txt"], depends_on=["a"]),
        ],
    })
    assert ok, report.summary_line()
    assert show(repo, "agentfleet/dep", "seen.txt") == "2\n"
    assert task_of(report, "b").candidates == []  # one attempt: no selection


def test_all_candidates_failing_fail_the_task_with_every_reason(harness, make_repo, work_dir,
                                                               tmp_path):
    repo = make_repo()
    ok, report = run_sprint(tmp_path, {
        "name": "none", "repo": str(repo), "attempts": 2,
        "tasks": [command("t", f"echo {K} > x.txt", paths=["x.txt"], verify="exit 3"),
                  command("u", "echo u > u.txt", paths=["u.txt"])],
    })
    assert not ok and report.exit_status == 1
    row = task_of(report, "t")
    assert not row.applied and row.winner is None
    assert "no candidate passed" in row.detail and "k=1" in row.detail and "k=2" in row.detail
    assert task_of(report, "u").applied
    branches = run_git(repo, "branch", "--list", "agentfleet-attempts/none/t/*").split()
    assert branches == ["agentfleet-attempts/none/t/1", "agentfleet-attempts/none/t/2"]
