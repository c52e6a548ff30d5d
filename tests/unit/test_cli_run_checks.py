"""What `agentfleet plan` and `agentfleet run` refuse before anything runs: exit 2, one line
per problem, nothing created in the repository (no branch, no folder)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agentfleet import cli
from agentfleet.cli import load_and_check, main


@pytest.fixture
def workdir(tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENTFLEET_WORK_DIR", str(tmp_path / "work"))
    return tmp_path


def write_plan(folder: Path, **overrides: object) -> str:
    plan = {
        "name": "s", "repo": "repo", "agent": {"kind": "command", "run": "true"},
        "tasks": [{"id": "alpha", "prompt": "write alpha", "paths": ["alpha.txt"]}],
        **overrides,
    }
    (folder / "plan.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    return "plan.yaml"


def refused(capsys, snapshot, repo: Path, argv: list[str]) -> list[str]:
    """Run the command; it must exit 2 and change nothing; its error lines."""
    before = snapshot(repo)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert snapshot(repo) == before
    assert "Traceback" not in err and out == ""
    # `run` names the plan by its absolute path, `plan` as given.
    lines = err.replace(f"{Path.cwd()}/plan.yaml", "plan.yaml").splitlines()
    assert all(line.startswith("error: ") for line in lines), lines
    return lines


def test_report_into_a_missing_folder(workdir: Path, repo: Path, capsys, snapshot) -> None:
    write_plan(workdir)
    lines = refused(capsys, snapshot, repo, ["run", "plan.yaml", "--report", "no/such/r.json"])
    assert lines == [
        "error: --report no/such/r.json: the folder no/such does not exist; create it first"
    ]
    assert not (workdir / "work").exists()  # not even the work dir's locks


def test_work_dir_inside_the_repository(
    workdir: Path, repo: Path, capsys, snapshot, monkeypatch
) -> None:
    write_plan(workdir)
    monkeypatch.setenv("AGENTFLEET_WORK_DIR", str(repo / ".cache" / "agentfleet"))
    lines = refused(capsys, snapshot, repo, ["run", "plan.yaml"])
    assert len(lines) == 1
    assert lines[0].startswith(f"error: the work dir {repo.resolve()}/.cache/agentfleet "
                               "(AGENTFLEET_WORK_DIR) is inside the repository")
    assert not (repo / ".cache").exists()


def test_redo_of_an_unknown_task(workdir: Path, repo: Path, capsys, snapshot) -> None:
    write_plan(workdir)
    lines = refused(capsys, snapshot, repo, ["run", "plan.yaml", "--redo", "alpa"])
    assert lines == ["error: --redo alpa: the plan has no task 'alpa'; did you mean 'alpha'?"]


def test_every_run_problem_at_once(workdir: Path, repo: Path, capsys, snapshot, monkeypatch):
    write_plan(workdir)
    monkeypatch.setenv("AGENTFLEET_WORK_DIR", str(repo))
    lines = refused(capsys, snapshot, repo,
                    ["run", "plan.yaml", "--report", "gone/r.json", "--redo", "zzz"])
    assert len(lines) == 3


def test_a_prompt_of_hundreds_of_kb(workdir: Path, repo: Path, capsys, snapshot) -> None:
    big = "Read this carefully. " * 15000  # about 300 KiB
    write_plan(workdir, tasks=[{"id": "alpha", "prompt": big, "paths": ["alpha.txt"]}])
    for command in ("plan", "run"):
        lines = refused(capsys, snapshot, repo, [command, "plan.yaml"])
        assert lines == [
            "error: plan.yaml: tasks[alpha].prompt: the prompt is 308 KiB, more than 128 KiB: "
            "put the material in a file of the repository and tell the agent to read it"
        ]


def test_a_nul_byte_anywhere_a_process_would_get_it(
    workdir: Path, repo: Path, capsys, snapshot
) -> None:
    write_plan(workdir, verify="make\0check",
               tasks=[{"id": "alpha", "prompt": "write\0alpha", "paths": ["alpha.txt"]}])
    lines = refused(capsys, snapshot, repo, ["run", "plan.yaml"])
    assert lines == [
        "error: plan.yaml: tasks[alpha].prompt: contains a NUL byte (\\0), which no command "
        "or agent can be given: remove it",
        "error: plan.yaml: verify: contains a NUL byte (\\0), which no command or agent can be "
        "given: remove it",
    ]


def test_a_folder_pattern_is_listed_with_the_other_problems(
    workdir: Path, repo: Path, git, capsys, snapshot
) -> None:
    (repo / "docs").mkdir()
    (repo / "docs" / "index.md").write_text("x\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "docs")
    write_plan(workdir, timeout="soon", tasks=[
        {"id": "alpha", "prompt": "p", "paths": ["docs"]},
        {"id": "beta", "prompt": "p", "paths": ["beta.txt"], "depends_on": ["ghost"]},
    ])
    lines = refused(capsys, snapshot, repo, ["plan", "plan.yaml"])
    assert "error: plan.yaml: timeout: bad duration 'soon' (use 90s, 20m, 1h)" in lines
    assert "error: plan.yaml: tasks[beta].depends_on: unknown task 'ghost'" in lines
    assert ("error: plan.yaml: tasks[alpha].paths: 'docs' names the folder 'docs' but matches "
            "only files of that name; write 'docs/' (or 'docs/**') for what is inside it") in lines
    assert len(lines) == 3


@pytest.mark.parametrize("target", ["refs/tags/v1", "refs/remotes/origin/main"])
def test_target_must_be_a_branch(workdir, repo, capsys, snapshot, target: str) -> None:
    write_plan(workdir, target=target)
    (line,) = refused(capsys, snapshot, repo, ["plan", "plan.yaml"])
    assert line.startswith(f"error: plan.yaml: target: '{target}' is ")
    assert "target must be a branch name" in line


def test_a_target_that_is_already_a_tag(workdir, repo, git, capsys, snapshot) -> None:
    git(repo, "tag", "v1")
    write_plan(workdir, target="v1")
    (line,) = refused(capsys, snapshot, repo, ["run", "plan.yaml"])
    assert line == (f"error: plan.yaml: target: 'v1' is already a tag in {repo.resolve()}; a "
                    "branch of the same name would make it ambiguous: choose another target")


def test_refs_heads_names_the_branch(workdir, repo, git, capsys, snapshot) -> None:
    git(repo, "branch", "keep")
    write_plan(workdir, target="refs/heads/keep", base="refs/heads/main")
    assert main(["plan", "plan.yaml"]) == 0
    assert "base main (" in capsys.readouterr().out
    checked = load_and_check(Path("plan.yaml"))
    assert checked.plan.target_branch == "keep" and checked.plan.base == "main"
    assert checked.repo.target_exists
    assert checked.repo.target_sha == git(repo, "rev-parse", "keep").strip()
    write_plan(workdir, target="refs/heads/agentfleet-attempts/x")
    (line,) = refused(capsys, snapshot, repo, ["plan", "plan.yaml"])
    assert "reserves for attempt branches" in line


def test_a_bad_base_lists_the_user_s_branches_first(workdir, repo, git, capsys, snapshot):
    for task in ("a", "b", "c", "d", "e", "f"):
        git(repo, "branch", f"agentfleet-attempts/s/{task}/1")
    git(repo, "branch", "zeta")
    write_plan(workdir, base="mian")
    (line,) = refused(capsys, snapshot, repo, ["plan", "plan.yaml"])
    assert line.endswith("existing branches: main, zeta, agentfleet-attempts/s/a/1, "
                         "agentfleet-attempts/s/b/1, agentfleet-attempts/s/c/1 and 3 more")


def test_an_unexpected_failure_is_one_line(monkeypatch, capsys) -> None:
    def broken(args):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(cli, "cmd_schema", broken)
    assert main(["schema"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: agentfleet failed unexpectedly: RecursionError: ")


def test_a_prefect_api_that_does_not_answer_is_named_not_a_bug(monkeypatch) -> None:
    import httpx

    from tasks.api_url import server_unreachable

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    try:  # Prefect's client wraps it: found down the chain
        try:
            raise refused
        except httpx.ConnectError as exc:
            raise RuntimeError("reading the flow runs") from exc
    except RuntimeError as wrapped:
        error = server_unreachable(wrapped)
    assert error is not None and error.exit_code == 2
    assert str(error) == (
        "cannot reach the Prefect API at http://127.0.0.1:9/api ([Errno 111] Connection "
        "refused): start the server (`prefect server start`) or set PREFECT_API_URL to one "
        "that runs")
    engine = RuntimeError("Failed to reach API at http://127.0.0.1:9/api/")
    assert server_unreachable(engine) is not None  # Prefect's own words at a flow's start
    assert server_unreachable(RuntimeError("something else")) is None
    assert server_unreachable(ValueError("bad")) is None
