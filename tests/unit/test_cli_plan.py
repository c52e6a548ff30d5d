from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from agentfleet.cli import build_parser, load_and_check, main
from agentfleet.errors import PlanError

AGENTFLEET = Path(sys.executable).parent / "agentfleet"

VALID = """
name: s1
repo: repo
tasks:
  - {id: db, prompt: add tables, stage: foundation, paths: ["src/db/**"]}
  - {id: api, prompt: add endpoints, paths: ["src/**/*.py"]}
  - {id: ui, prompt: add pages, paths: ["web/**"]}
  - {id: tests, prompt: add tests, stage: tests, paths: ["tests/**"], depends_on: [api]}
"""


@pytest.fixture
def workdir(tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path holds repo/ (a git repository) and is the current folder."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_plan(folder: Path, text: str) -> str:
    (folder / "plan.yaml").write_text(textwrap.dedent(text))
    return "plan.yaml"


def run_plan(
    capsys: pytest.CaptureFixture[str], snapshot: Callable[[Path], dict[str, object]], repo: Path
) -> tuple[int, str, str]:
    before = snapshot(repo)
    status = main(["plan", "plan.yaml"])
    out, err = capsys.readouterr()
    assert snapshot(repo) == before, "agentfleet plan changed the repository"
    assert "Traceback" not in err
    return status, out, err


def test_valid_plan(workdir: Path, repo: Path, capsys, snapshot) -> None:
    write_plan(workdir, VALID)
    status, out, err = run_plan(capsys, snapshot, repo)
    assert status == 0, err
    assert err == ""
    assert "plan 's1': 4 tasks" in out
    assert "-> target agentfleet/s1 (new)" in out
    assert "wave 1 (may run together):" in out and "wave 2" in out
    assert "db -> api: paths overlap (src/db/** and src/**/*.py both match src/db/a.py)" in out
    assert "api -> tests: tests depends on api" in out
    assert "apply order: db, ui, api, tests" not in out
    assert "apply order: db, api, ui, tests" in out


def test_overlap_merge_shows_overlapping_tasks_in_one_wave(
    workdir: Path, repo: Path, capsys, snapshot
) -> None:
    write_plan(workdir, VALID.replace("repo: repo\n", "repo: repo\noverlap: merge\n"))
    status, out, err = run_plan(capsys, snapshot, repo)
    assert status == 0, err
    assert "overlap: merge (tasks whose paths overlap run together" in out
    assert "db -> api" not in out and "api -> tests: tests depends on api" in out
    wave1 = out.split("wave 1 (may run together):")[1].split("wave 2")[0]
    assert "db" in wave1 and "api" in wave1 and "ui" in wave1


def test_warnings_go_to_stderr(workdir: Path, repo: Path, capsys, snapshot) -> None:
    (repo / "scratch.txt").write_text("not committed\n")
    write_plan(
        workdir, "name: s\nrepo: repo\ntasks:\n - {id: a, prompt: x}\n - {id: b, prompt: y}\n"
    )
    status, out, err = run_plan(capsys, snapshot, repo)
    assert status == 0
    assert f"warning: uncommitted changes in {repo.resolve()} are not part of base 'main'" in err
    assert "warning: task 'a' has no paths" in err
    assert "a serializes with every task" in out


BAD = [
    (
        "name: s\nrepo: repo\ntasks:\n  - id: a\n    prompt: x\n  bad: [\n",
        ["error: plan.yaml:6: YAML does not parse"],
    ),
    ("- just\n- a list\n", ["error: plan.yaml: the plan must be a mapping of keys"]),
    (
        "name: s\nrepo: repo\ntaks: 1\ntasks: [{id: a, prompt: x}]\n",
        ["error: plan.yaml: unknown key 'taks'; did you mean 'tasks'?"],
    ),
    (
        "name: s\nrepo: repo\nretries: lots\ntasks: [{id: a, prompt: x}]\n",
        ["error: plan.yaml: retries: expected a whole number, got the text 'lots'"],
    ),
    (
        "name: s\nrepo: repo\ntasks: [{id: a, prompt: x}, {id: a, prompt: y}]\n",
        ["error: plan.yaml: tasks[1].id: duplicate id 'a'"],
    ),
    (
        "name: s\nrepo: repo\ntasks: [{id: a, prompt: x, depends_on: [zz]}]\n",
        ["error: plan.yaml: tasks[a].depends_on: unknown task 'zz'"],
    ),
    (
        "name: s\nrepo: repo\ntasks:\n - {id: a, prompt: x, depends_on: [c]}\n"
        " - {id: b, prompt: x, depends_on: [a]}\n - {id: c, prompt: x, depends_on: [b]}\n",
        ["error: plan.yaml: tasks[a].depends_on: dependency cycle: a -> c -> b -> a"],
    ),
    (
        "name: S_1\nrepo: repo\ntasks: [{id: A1, prompt: x}]\n",
        [
            "error: plan.yaml: name: 'S_1' is not a valid name",
            "error: plan.yaml: tasks[A1].id: 'A1' is not a valid id",
        ],
    ),
    (
        "name: s\nrepo: repo\ntasks: [{id: a, prompt: x, paths: ['../up', '/abs/x']}]\n",
        [
            "error: plan.yaml: tasks[a].paths[0]: path pattern '../up' leaves the repository",
            "error: plan.yaml: tasks[a].paths[1]: path pattern '/abs/x' is absolute",
        ],
    ),
    (
        "name: s\nrepo: repo\ntasks: [{id: api, prompt: ' '}]\n",
        ["error: plan.yaml: tasks[api].prompt: empty prompt"],
    ),
    (
        "name: s\nrepo: repo\ntasks: [{id: api, prompt: x, timeout: soon}]\n",
        ["error: plan.yaml: tasks[api].timeout: bad duration 'soon' (use 90s, 20m, 1h)"],
    ),
    (
        "name: s\nrepo: repo\ntasks: [{id: a, prompt: x, depends_on: [a]}]\n",
        ["error: plan.yaml: tasks[a].depends_on: task 'a' depends on itself"],
    ),
    (
        "name: s\nrepo: repo\ntarget: agentfleet-attempts/s/x\ntasks: [{id: a, prompt: x}]\n",
        ["error: plan.yaml: target: 'agentfleet-attempts/s/x' is inside agentfleet-attempts/"],
    ),
    (
        "name: s\nrepo: repo\ntarget: 'feature..x'\ntasks: [{id: a, prompt: x}]\n",
        ["error: plan.yaml: target: 'feature..x' is not a valid branch name"],
    ),
    (
        "name: s\nrepo: repo\ntarget: 'x.lock'\ntasks: [{id: a, prompt: x}]\n",
        ["error: plan.yaml: target: 'x.lock' is not a valid branch name"],
    ),
    (
        "name: s\nrepo: repo\nagent: {kind: command}\ntasks: [{id: a, prompt: x}]\n",
        ["error: plan.yaml: agent.run: required when the agent kind is 'command'"],
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_bad_plan(
    workdir: Path, repo: Path, capsys, snapshot, text: str, expected: list[str]
) -> None:
    write_plan(workdir, text)
    status, out, err = run_plan(capsys, snapshot, repo)
    assert status == 2
    assert out == ""
    lines = err.splitlines()
    assert all(line.startswith("error: ") for line in lines), lines
    for line in expected:
        assert any(got.startswith(line) for got in lines), (line, lines)


def test_every_problem_reported_together(workdir: Path, repo: Path, capsys, snapshot) -> None:
    write_plan(
        workdir,
        """
        name: s
        repo: repo
        base: nope
        timeout: soon
        tasks:
          - {id: api, prompt: x, timeout: later, paths: ["../x"]}
          - {id: api, prompt: y, depends_on: [ghost]}
        """,
    )
    status, _, err = run_plan(capsys, snapshot, repo)
    assert status == 2
    lines = err.splitlines()
    assert "error: plan.yaml: timeout: bad duration 'soon' (use 90s, 20m, 1h)" in lines
    assert any("tasks[0].timeout: bad duration 'later'" in line for line in lines)
    assert any("paths[0]" in line for line in lines)
    assert any("duplicate id 'api'" in line for line in lines)
    assert any("unknown task 'ghost'" in line for line in lines)
    # the repository's problem comes with the plan's
    assert any(
        line.startswith("error: plan.yaml: base: branch 'nope' does not exist") for line in lines
    )


def test_base_missing_lists_branches(git, workdir: Path, repo: Path, capsys, snapshot) -> None:
    for name in ["dev", "feature-a", "feature-b", "feature-c", "feature-d", "feature-e"]:
        git(repo, "branch", name)
    write_plan(workdir, "name: s\nrepo: repo\nbase: mian\ntasks: [{id: a, prompt: x}]\n")
    status, _, err = run_plan(capsys, snapshot, repo)
    assert status == 2
    assert (
        f"error: plan.yaml: base: branch 'mian' does not exist in {repo.resolve()}; existing "
        "branches: dev, feature-a, feature-b, feature-c, feature-d and 2 more"
    ) in err


def test_repository_missing(workdir: Path, capsys) -> None:
    write_plan(workdir, "name: s\nrepo: gone\ntasks: [{id: a, prompt: x}]\n")
    assert main(["plan", "plan.yaml"]) == 2
    err = capsys.readouterr().err
    assert f"error: plan.yaml: repo: {(workdir / 'gone').resolve()} does not exist" in err


def test_not_a_repository(workdir: Path, capsys) -> None:
    (workdir / "plain").mkdir()
    write_plan(workdir, "name: s\nrepo: plain\ntasks: [{id: a, prompt: x}]\n")
    assert main(["plan", "plan.yaml"]) == 2
    err = capsys.readouterr().err
    assert f"error: plan.yaml: repo: {(workdir / 'plain').resolve()} is not a git repository" in err
    assert not (workdir / "plain" / ".git").exists()


def test_repository_without_commits(workdir: Path, make_repo, capsys, snapshot) -> None:
    empty = make_repo("empty", commit=False)
    write_plan(workdir, "name: s\nrepo: empty\ntasks: [{id: a, prompt: x}]\n")
    status, _, err = run_plan(capsys, snapshot, empty)
    assert status == 2
    assert f"error: plan.yaml: repo: {empty.resolve()} has no commits yet" in err


def test_detached_head_without_base(git, workdir: Path, repo: Path, capsys, snapshot) -> None:
    git(repo, "checkout", "-q", "--detach")
    write_plan(workdir, "name: s\nrepo: repo\ntasks: [{id: a, prompt: x}]\n")
    status, _, err = run_plan(capsys, snapshot, repo)
    assert status == 2
    assert "error: plan.yaml: base: HEAD is detached" in err and "set base:" in err

    write_plan(workdir, "name: s\nrepo: repo\nbase: main\ntasks: [{id: a, prompt: x}]\n")
    status, out, _ = run_plan(capsys, snapshot, repo)
    assert status == 0 and "base main" in out


def test_target_next_to_existing_branch(git, workdir: Path, repo: Path, capsys, snapshot) -> None:
    git(repo, "branch", "agentfleet")
    write_plan(workdir, "name: s\nrepo: repo\ntasks: [{id: a, prompt: x}]\n")
    status, _, err = run_plan(capsys, snapshot, repo)
    assert status == 2
    assert "target: branch 'agentfleet/s' cannot be created next to the existing branch" in err


def test_existing_target_is_reported(git, workdir: Path, repo: Path, capsys, snapshot) -> None:
    git(repo, "branch", "agentfleet/s")
    write_plan(workdir, "name: s\nrepo: repo\ntasks: [{id: a, prompt: x}]\n")
    status, out, _ = run_plan(capsys, snapshot, repo)
    assert status == 0 and "target agentfleet/s (exists at" in out


def test_missing_plan_file(workdir: Path, capsys) -> None:
    assert main(["plan", "nope.yaml"]) == 2
    assert capsys.readouterr().err == "error: nope.yaml: no such plan file\n"


def test_load_and_check(git, workdir: Path, repo: Path) -> None:
    write_plan(workdir, VALID)
    checked = load_and_check(Path("plan.yaml"))
    assert checked.repo.root == repo.resolve()
    assert checked.repo.base == "main" and checked.repo.current_branch == "main"
    assert checked.repo.base_sha == git(repo, "rev-parse", "main").strip()
    assert not checked.repo.target_exists and not checked.repo.dirty
    assert checked.decomposition.order == ["db", "api", "ui", "tests"]
    assert checked.plan.repo_path == repo.resolve()
    write_plan(workdir, "name: s\nrepo: repo\nbase: nope\ntasks: [{id: a, prompt: x}]\n")
    with pytest.raises(PlanError) as info:
        load_and_check(Path("plan.yaml"))
    assert info.value.exit_code == 2 and len(info.value.problems) == 1


def test_schema(capsys) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "agentfleet plan" and "tasks" in schema["properties"]


def test_usage(capsys) -> None:
    assert main([]) == 2
    assert main(["plan"]) == 2
    assert "PLAN" in capsys.readouterr().err
    assert {"plan", "schema"} <= set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


def test_interrupt_exits_130(monkeypatch, capsys) -> None:
    def interrupted(args):
        raise KeyboardInterrupt

    # build_parser looks the command up when main() builds the parser.
    monkeypatch.setattr("agentfleet.cli.cmd_schema", interrupted)
    assert main(["schema"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


@pytest.mark.skipif(not AGENTFLEET.exists(), reason="console script not installed")
def test_console_script(tmp_path: Path, repo: Path, snapshot) -> None:
    write_plan(tmp_path, VALID)
    before = snapshot(repo)
    done = subprocess.run(
        [str(AGENTFLEET), "plan", "plan.yaml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "wave 1 (may run together):" in done.stdout
    write_plan(tmp_path, "name: s\nrepo: repo\ntasks: [{id: a, prompt: x, timeout: soon}]\n")
    done = subprocess.run(
        [str(AGENTFLEET), "plan", "plan.yaml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert (
        done.stderr
        == "error: plan.yaml: tasks[a].timeout: bad duration 'soon' (use 90s, 20m, 1h)\n"
    )
    assert snapshot(repo) == before


def test_a_pattern_naming_a_folder_without_a_slash_is_refused(
    workdir: Path, repo: Path, capsys, snapshot, git
) -> None:
    (repo / "src" / "app").mkdir(parents=True)
    (repo / "src" / "app" / "main.py").write_text("x = 1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "src")
    write_plan(workdir, """\
        name: s
        repo: repo
        tasks:
          - id: api
            prompt: p
            paths: [src/app, "*.md", src/app/]
        """)
    status, _, err = run_plan(capsys, snapshot, repo)
    assert status == 2
    assert "tasks[api].paths: 'src/app' names the folder 'src/app'" in err
    assert "write 'src/app/'" in err
    assert err.count("error:") == 1  # '*.md' and 'src/app/' are fine
