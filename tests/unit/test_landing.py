"""Landing on real repositories: every ending is a report, never an exception.

Attempt commits are made here with git plumbing (a temporary index), the way an
attempt's commit looks to landing: a branch whose head descends from its start.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agentfleet import apply as ga
from agentfleet.landing import LandingRequest, land, report_for
from agentfleet.naming import attempt_branch
from agentfleet.results import AttemptResult, CheckResult, SprintReport, TaskOutcome
from tests.support.git_env import sh, user_repo

pytestmark = pytest.mark.usefixtures("no_git_identity")

SPRINT = "s1"
TARGET = "agentfleet/s1"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return user_repo(tmp_path / "repo", {"README.md": "hello\n"})


def git_bytes(repo: Path, *args: str | bytes, input: bytes | None = None, env=None) -> bytes:
    return subprocess.run(
        ["git", "-C", str(repo), *args], input=input, capture_output=True, check=True,
        env={**os.environ, **(env or {})},
    ).stdout


def commit_files(repo: Path, start: str, files: dict[str | bytes, str], message: str) -> str:
    """A commit on ``start`` changing ``files`` (names may be bytes), made without a worktree."""
    index = repo / ".git" / "test-index"
    env = {"GIT_INDEX_FILE": str(index), "GIT_AUTHOR_NAME": "agentfleet",
           "GIT_AUTHOR_EMAIL": "a@localhost", "GIT_COMMITTER_NAME": "agentfleet",
           "GIT_COMMITTER_EMAIL": "a@localhost"}
    git_bytes(repo, "read-tree", start, env=env)
    for name, text in files.items():
        blob = git_bytes(repo, "hash-object", "-w", "--stdin", input=text.encode()).strip()
        path = name if isinstance(name, bytes) else name.encode()
        git_bytes(repo, "update-index", "--add", "--cacheinfo", b"100644," + blob + b"," + path,
                  env=env)
    tree = git_bytes(repo, "write-tree", env=env).decode().strip()
    index.unlink()
    sha = git_bytes(repo, "commit-tree", tree, "-p", start, "-m", message, env=env)
    return sha.decode().strip()


def result(repo: Path, task: str, start: str, head: str, **kw: object) -> AttemptResult:
    branch = attempt_branch(SPRINT, task, 1)
    sh(repo, "branch", "-f", branch, head)
    return AttemptResult(task_id=task, attempt=1, branch=branch, start_sha=start, head_sha=head,
                         succeeded=True, **kw)  # type: ignore[arg-type]


# land()'s own arguments; the rest of a do_land call's keywords go into its LandingRequest.
RUNTIME = ("env", "log", "cancel", "run_attempt", "remote_env", "verified")


def do_land(repo: Path, tmp_path: Path, order: list[str], results: dict[str, AttemptResult],
            **kw: Any):
    fields = dict(repo=repo, sprint=SPRINT, base_sha=sh(repo, "rev-parse", "main").strip(),
                  target=TARGET, order=order, results=results, verify_timeout_s=60,
                  worktree_root=tmp_path / "wt")
    fields.update({k: v for k, v in kw.items() if k not in RUNTIME})
    runtime = {"env": dict(os.environ), **{k: v for k, v in kw.items() if k in RUNTIME}}
    return land(LandingRequest(**fields), **runtime)


def test_an_attempt_that_cannot_be_applied_fails_alone(repo: Path, tmp_path: Path):
    base = sh(repo, "rev-parse", "main").strip()
    good = commit_files(repo, base, {"a.txt": "a\n"}, "a")
    # An agent that rewound HEAD past its start: its commit does not descend from it.
    older = commit_files(repo, base, {"x.txt": "x\n"}, "elsewhere")
    rewound = commit_files(repo, older, {"b.txt": "b\n"}, "b")
    results = {
        "b": result(repo, "b", start=commit_files(repo, base, {"y": "y"}, "s"), head=rewound),
        "a": result(repo, "a", start=base, head=good),
    }
    landing = do_land(repo, tmp_path, ["b", "a"], results)
    outcomes = {t.task: t for t in landing.tasks}
    assert outcomes["b"].outcome is TaskOutcome.FAILED
    assert outcomes["b"].detail.startswith("cannot apply: ")
    assert "does not descend from its start" in outcomes["b"].detail
    assert outcomes["a"].outcome is TaskOutcome.APPLIED
    assert landing.target_moved
    assert sh(repo, "show", f"{TARGET}:a.txt") == "a\n"
    assert "b.txt" not in sh(repo, "ls-tree", "--name-only", TARGET)


def test_the_target_deleted_during_final_verify_is_the_note_not_an_exception(
    repo: Path, tmp_path: Path
):
    base = sh(repo, "rev-parse", "main").strip()
    sh(repo, "branch", TARGET, base)
    a = commit_files(repo, base, {"a.txt": "a\n"}, "a")
    # Someone deletes the target while final_verify runs: there is nothing to build on.
    intruder = f"git -C {repo} branch -D {TARGET}"
    landing = do_land(repo, tmp_path, ["a"], {"a": result(repo, "a", base, a)},
                      final_verify=intruder)
    assert landing.final_verify is not None and landing.final_verify.passed
    assert not landing.target_moved and not landing.target_up_to_date
    moved = f"{TARGET} moved while sprint 's1' ran (expected {base[:10]}, now absent)"
    assert moved in landing.note
    assert landing.target_sha is None
    assert sh(repo, "branch", "--list", TARGET) == ""  # refused: left as the intruder set it
    report = SprintReport(sprint=SPRINT, repo=str(repo), base="main", target=TARGET,
                          tasks=landing.tasks, target_note=landing.note,
                          final_verify=landing.final_verify,
                          target_up_to_date=landing.target_up_to_date)
    assert report.exit_status == 1 and "\n" not in report.target_note


def test_a_user_commit_on_the_target_during_final_verify_is_kept_under_the_stack(
    repo: Path, tmp_path: Path
):
    base = sh(repo, "rev-parse", "main").strip()
    sh(repo, "branch", TARGET, base)
    a = commit_files(repo, base, {"a.txt": "a\n"}, "a")
    user = commit_files(repo, base, {"user.txt": "mine\n"}, "a person's commit")
    marker = tmp_path / "moved"
    # The first final_verify moves the target to a person's commit, as a person would.
    intruder = f"test -e {marker} || {{ touch {marker}; git -C {repo} branch -f {TARGET} {user}; }}"
    landing = do_land(repo, tmp_path, ["a"], {"a": result(repo, "a", base, a)},
                      final_verify=intruder)
    assert landing.target_moved and landing.rebuilds == 1 and landing.verifications == 2
    head = sh(repo, "rev-parse", TARGET).strip()
    assert landing.target_sha == head
    assert sh(repo, "rev-parse", f"{head}^").strip() == user  # their commit under the stack
    assert sh(repo, "show", f"{TARGET}:user.txt") == "mine\n"
    assert sh(repo, "show", f"{TARGET}:a.txt") == "a\n"


def test_nothing_applied_creates_no_target(repo: Path, tmp_path: Path):
    base = sh(repo, "rev-parse", "main").strip()
    failed = AttemptResult(task_id="a", attempt=1, branch=attempt_branch(SPRINT, "a", 1),
                           start_sha=base, succeeded=False, reason="agent failed_fatal: x")
    landing = do_land(repo, tmp_path, ["a"], {"a": failed}, final_verify="true")
    assert [t.outcome for t in landing.tasks] == [TaskOutcome.FAILED]
    assert landing.final_verify is None and not landing.target_moved
    assert "not created" in landing.note
    assert sh(repo, "for-each-ref", "refs/heads/agentfleet/", "refs/agentfleet/") == ""


def test_a_file_name_that_is_not_utf8_lands_and_reports(repo: Path, tmp_path: Path):
    base = sh(repo, "rev-parse", "main").strip()
    name = b"caf\xe9.txt"  # Latin-1, as an old tool writes it
    head = commit_files(repo, base, {name: "x\n"}, "latin-1 name")
    files = ga.git(repo, "diff", "--name-only", "-z", base, head).split("\0")[:1]
    assert files == ["caf\udce9.txt"]  # what gitcmd gives: surrogate-escaped
    res = result(repo, "a", base, head, files=files, verify=CheckResult(
        command="check", passed=False, exit_status=1, output_tail="bad byte: caf\udce9.txt"))
    landing = do_land(repo, tmp_path, ["a"], {"a": res.model_copy(update={"verify": None})})
    assert landing.target_moved
    assert git_bytes(repo, "ls-tree", "-z", "--name-only", TARGET).split(b"\0")[1] == name
    report = SprintReport(sprint=SPRINT, repo=str(repo), base="main", target=TARGET,
                          tasks=landing.tasks, target_moved=True)
    data = json.loads(report.model_dump_json())
    assert data["tasks"][0]["files"] == ["caf\\xe9.txt"]
    assert json.loads(res.model_dump_json())["verify"]["output_tail"] == "bad byte: caf\\xe9.txt"
    assert json.loads(landing.model_dump_json())["tasks"][0]["files"] == ["caf\\xe9.txt"]
    assert res.model_dump()["files"] == ["caf\udce9.txt"]  # exact in Python (pickled results)


def test_redo_replaces_a_task_and_keeps_commits_agentfleet_did_not_make(
    repo: Path, tmp_path: Path
):
    base = sh(repo, "rev-parse", "main").strip()
    prompts = {"a": "write a", "b": "write b"}
    a1 = commit_files(repo, base, {"a.txt": "a1\n"}, "a1")
    b1 = commit_files(repo, base, {"b.txt": "b\n"}, "b1")
    first = do_land(repo, tmp_path, ["a", "b"],
                    {"a": result(repo, "a", base, a1), "b": result(repo, "b", base, b1)},
                    prompts=prompts)
    assert first.target_moved
    # The user commits on the target; then a's prompt changes.
    user = commit_files(repo, first.target_sha, {"user.txt": "mine\n"}, "user: my change")
    sh(repo, "update-ref", f"refs/heads/{TARGET}", user)
    changed = {**prompts, "a": "write a, better"}
    again = do_land(repo, tmp_path, ["a", "b"], {}, prompts=changed)
    notes = {t.task: (t.outcome, t.detail) for t in again.tasks}
    assert notes["a"] == (TaskOutcome.ALREADY_APPLIED, "its prompt changed since: "
                          "`agentfleet run --redo a` runs it again")
    assert notes["b"] == (TaskOutcome.ALREADY_APPLIED, "")
    assert again.target_up_to_date and sh(repo, "rev-parse", TARGET).strip() == user

    # A redo whose attempt failed leaves the target alone.
    failed = AttemptResult(task_id="a", attempt=1, branch=attempt_branch(SPRINT, "a", 1),
                           start_sha=base, succeeded=False, reason="verify failed (exit 1)")
    kept = do_land(repo, tmp_path, ["a", "b"], {"a": failed}, redo=["a"], prompts=changed)
    assert kept.tasks[0].outcome is TaskOutcome.FAILED and "keeps its earlier commit" in (
        kept.tasks[0].detail)
    assert sh(repo, "rev-parse", TARGET).strip() == user

    a2 = commit_files(repo, base, {"a.txt": "a2\n"}, "a2")
    redone = do_land(repo, tmp_path, ["a", "b"], {"a": result(repo, "a", base, a2)},
                     redo=["a"], prompts=changed)
    assert [(t.task, t.outcome) for t in redone.tasks] == [
        ("a", TaskOutcome.APPLIED), ("b", TaskOutcome.ALREADY_APPLIED)]
    assert redone.target_moved
    subjects = sh(repo, "log", "--format=%s", f"main..{TARGET}").splitlines()
    assert [s.split(":")[0] for s in subjects] == ["a", "user", "b"]
    assert sh(repo, "show", f"{TARGET}:a.txt") == "a2\n"
    assert sh(repo, "show", f"{TARGET}:user.txt") == "mine\n"
    assert sh(repo, "log", "-1", "--format=%an", f"{TARGET}~1").strip() == "agentfleet"
    applied = ga.applied_tasks(repo, f"refs/heads/{TARGET}", SPRINT)
    assert applied["a"].prompt_digest == ga.prompt_digest("write a,\n  better")
    assert applied["b"].prompt_digest == ga.prompt_digest("write b")
    assert a1 not in sh(repo, "rev-list", TARGET)


def test_drop_commits_keeps_author_and_date_and_refuses_what_it_cannot_replay(repo: Path):
    base = sh(repo, "rev-parse", "main").strip()
    x = commit_files(repo, base, {"x.txt": "x\n"}, "x")
    y = git_bytes(repo, "commit-tree", git_bytes(repo, "rev-parse", f"{x}^{{tree}}").decode()
                  .strip(), "-p", x, "-m", "user's y", env={
                      "GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.com",
                      "GIT_AUTHOR_DATE": "1500000000 +0200", "GIT_COMMITTER_NAME": "Ada",
                      "GIT_COMMITTER_EMAIL": "ada@example.com"}).decode().strip()
    z = commit_files(repo, y, {"x.txt": "x edited\n"}, "z edits x")
    # z edits x.txt, which x created: without x it cannot be replayed.
    with pytest.raises(ga.ConflictError, match="conflicts in x.txt"):
        ga.drop_commits(repo, z, [x], env=dict(os.environ))
    new = ga.drop_commits(repo, z, [z], env=dict(os.environ))
    assert new == y  # nothing after z: its parent
    w = commit_files(repo, base, {"w.txt": "w\n"}, "w")
    top = commit_files(repo, y, {"top.txt": "t\n"}, "top")
    rebuilt = ga.drop_commits(repo, top, [x], env=dict(os.environ))
    assert sh(repo, "log", "--format=%an|%ad|%s", "--date=raw", rebuilt).splitlines() == [
        "agentfleet|" + sh(repo, "log", "-1", "--format=%ad", "--date=raw", top).strip() + "|top",
        "Ada|1500000000 +0200|user's y",
        "User|" + sh(repo, "log", "-1", "--format=%ad", "--date=raw", base).strip() + "|initial",
    ]
    with pytest.raises(ga.GitError, match="not on the history"):
        ga.drop_commits(repo, top, [w], env=dict(os.environ))


def test_a_failed_attempt_names_its_branch_only_when_it_kept_one() -> None:
    """A failed attempt that committed nothing keeps no branch: the report names none."""
    nothing = AttemptResult(task_id="a", attempt=1, branch="agentfleet-attempts/s/a/1",
                            start_sha="0" * 40, succeeded=False, reason="command exited 1")
    committed = nothing.model_copy(update={"head_sha": "1" * 40, "reason": "verify failed"})
    assert report_for("a", nothing, {}).attempt_branch is None
    assert report_for("a", committed, {}).attempt_branch == "agentfleet-attempts/s/a/1"
