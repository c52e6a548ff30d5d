"""The merge queue through `agentfleet run`: `overlap: merge` with Codex and the scripted
model; with `command` agents (no model needed) a conflict rerun that sees the other side's
change, bisection, and `agentfleet apply` of branches made by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentfleet.testing import ScriptedModelServer
from agentfleet.testing.script import Response, Rule, Script
from tests.conftest import run_git
from tests.e2e.conftest import run_agentfleet
from tests.e2e.test_sprint import overlap, spans
from tests.e2e.test_sprint_failures import TARGET, command, plan_file, run


@pytest.mark.codex
def test_overlap_merge_runs_both_at_once_and_lands_both(
    make_repo, sprint_env, model: ScriptedModelServer, tmp_path
):
    repo = make_repo()
    (repo / "f.txt").write_text("".join(f"line {i}\n" for i in range(1, 11)))
    run_git(repo, "add", "f.txt")
    run_git(repo, "commit", "-qm", "f")

    def edit(name: str, line: int) -> Rule:
        # The first answer takes a while, so that agents started together are seen together.
        return Rule(name=name, match=f"[{name}]", responses=[
            Response(delay_s=1.5, steps=[
                {"do": "exec", "cmd": f"sed -i '{line}s/.*/edited by {name}/' f.txt"}]),
            Response(steps=[{"do": "message", "text": f"Edited line {line}."}]),
        ])  # fmt: skip

    model.set_script(Script(rules=[edit("a", 1), edit("b", 10)]))
    plan = plan_file(tmp_path, repo, [
        {"id": t, "prompt": f"[{t}] edit f.txt", "paths": ["f.txt"]} for t in ("a", "b")
    ], agent={"kind": "codex"}, overlap="merge")  # fmt: skip
    done, report = run(plan, tmp_path / "report.json", sprint_env)
    assert done.returncode == 0, done.stdout[-3000:]
    assert [t["outcome"] for t in report["tasks"]] == ["applied", "applied"]
    text = run_git(repo, "show", f"{TARGET}:f.txt").splitlines()
    assert text[0] == "edited by a" and text[-1] == "edited by b"
    # From the model server's log: each task's requests, first to last, overlap in time.
    s = spans(model)
    assert overlap(s["a"], s["b"]), s


def test_a_conflict_reruns_on_the_stack_seeing_the_other_sides_change(
    make_repo, sprint_env, tmp_path
):
    repo = make_repo()
    # A commit agentfleet did not make, on the target, touching alpha.txt.
    run_git(repo, "branch", TARGET, "main")
    run_git(repo, "worktree", "add", "-q", str(tmp_path / "t"), TARGET)
    (tmp_path / "t" / "alpha.txt").write_text("the user's alpha\n")
    run_git(tmp_path / "t", "add", "alpha.txt")
    run_git(tmp_path / "t", "commit", "-qm", "user's own commit")
    run_git(repo, "worktree", "remove", str(tmp_path / "t"))
    prompts = tmp_path / "prompts.txt"
    agent = f'cat "$AGENTFLEET_PROMPT_FILE" >> {prompts}; echo "@@@@" >> {prompts}; ' \
            "echo alpha >> alpha.txt"
    plan = plan_file(tmp_path, repo, [command("alpha", agent, paths=["alpha.txt"])])
    done, report = run(plan, tmp_path / "report.json", sprint_env)
    assert done.returncode == 0, done.stdout[-3000:]
    [alpha] = report["tasks"]
    assert alpha["outcome"] == "applied" and alpha["attempt_branch"].endswith("/alpha/2")
    assert run_git(repo, "show", f"{TARGET}:alpha.txt") == "the user's alpha\nalpha\n"
    second = prompts.read_text().split("@@@@\n")[1]
    assert "+the user's alpha" in second and "alpha.txt" in second
    assert "alpha#2" in done.stdout + done.stderr


def test_bisection_lands_four_of_five_and_exits_1(make_repo, sprint_env, tmp_path: Path):
    repo = make_repo()
    tasks = [command(f"t{i}", f"echo {i} > t{i}.txt", paths=[f"t{i}.txt"]) for i in range(1, 6)]
    plan = plan_file(tmp_path, repo, tasks, final_verify="test ! -e t4.txt",
                     limits={"concurrency": 2})
    done, report = run(plan, tmp_path / "report.json", sprint_env)
    assert done.returncode == 1, done.stdout[-3000:]
    outcomes = {t["task"]: t["outcome"] for t in report["tasks"]}
    assert outcomes == {"t1": "applied", "t2": "applied", "t3": "applied", "t4": "ejected",
                        "t5": "applied"}
    assert report["target_moved"] and report["final_verify"]["passed"]
    names = run_git(repo, "ls-tree", "--name-only", TARGET).split()
    assert "t4.txt" not in names and "t5.txt" in names
    assert "verifications" in done.stdout + done.stderr


def test_agentfleet_apply_lands_hand_made_branches_and_skips_the_conflict(
    make_repo, sprint_env, tmp_path
):
    repo = make_repo()
    run_git(repo, "branch", "release", "main")

    def branch(name: str, file: str, text: str) -> None:
        run_git(repo, "worktree", "add", "-q", "-b", name, str(tmp_path / name), "main")
        (tmp_path / name / file).write_text(text)
        run_git(tmp_path / name, "add", file)
        run_git(tmp_path / name, "commit", "-qm", f"{name} by hand")
        run_git(repo, "worktree", "remove", str(tmp_path / name))

    branch("one", "shared.txt", "one\n")
    branch("two", "two.txt", "two\n")
    branch("three", "shared.txt", "three\n")  # conflicts with one
    refused = run_agentfleet("apply", "--repo", str(repo), "--target", "release", "one",
                             "--on-conflict", "rerun", env=sprint_env)
    assert refused.returncode == 2 and "rerun needs a task's prompt" in refused.stderr
    done = run_agentfleet("apply", "--repo", str(repo), "--target", "release", "one", "two",
                          "three", "--final-verify", "test -f two.txt", env=sprint_env)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert "Traceback" not in output
    assert "git cherry-pick" in output  # how to finish three by hand
    assert run_git(repo, "show", "release:shared.txt") == "one\n"
    assert run_git(repo, "show", "release:two.txt") == "two\n"
    assert run_git(repo, "rev-parse", "three").strip()  # its branch is kept
    assert "2/3 tasks applied" in done.stdout
