"""Resolvers under the harness: the ``apply`` flow (hand-made branches, a target it creates)
and a sprint, each resolver finding git's merge in progress in its worktree."""

from __future__ import annotations

from pathlib import Path

from flows.apply import apply
from tests.conftest import MakeRepo, run_git
from tests.integration.conftest import command, run_sprint

MARKERS = "^(<<<<<<<|=======|>>>>>>>)"


def branch(repo: Path, name: str, files: dict[str, str]) -> None:
    run_git(repo, "switch", "-q", "-c", name, "main")
    for file, text in files.items():
        (repo / file).write_text(text)
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-q", "-m", name)
    run_git(repo, "switch", "-q", "main")


def test_a_resolver_finishes_the_merge_and_a_missing_target_is_created(
    harness, make_repo: MakeRepo, work_dir, tmp_path: Path
):
    repo = make_repo(files={"README.md": "hi\n", "shared.txt": "line\n"})
    branch(repo, "one", {"shared.txt": "line by one\n"})
    branch(repo, "two", {"two.txt": "two\n"})
    branch(repo, "three", {"shared.txt": "line by three\n"})
    seen = tmp_path / "status"
    resolver = {"kind": "command", "run": (
        f"git status --porcelain > {seen}; "
        f"grep -v -E '{MARKERS}' shared.txt > t; mv t shared.txt"
    )}  # fmt: skip
    state = apply(repo=str(repo), target="release", branches=["one", "two", "three"],
                  final_verify="test -f two.txt", on_conflict="resolve", resolver=resolver,
                  return_state=True)
    assert state.is_completed(), state.message
    report = state.result()
    assert [t.outcome.value for t in report.tasks] == ["applied", "applied", "applied"]
    main = run_git(repo, "rev-parse", "main")
    assert report.target_note == f"release created from HEAD ({main[:10]})"
    assert seen.read_text() == "UU shared.txt\n"  # the resolver saw git's merge in progress
    assert run_git(repo, "show", "release:shared.txt") == "line by one\nline by three\n"
    assert run_git(repo, "rev-list", "--count", "main..release").strip() == "3"


def test_a_sprint_resolves_a_real_conflict_with_its_resolver(
    harness, make_repo: MakeRepo, work_dir, tmp_path: Path
):
    repo = make_repo(files={"README.md": "hi\n", "shared.txt": "line\n"})
    seen = tmp_path / "status"
    ok, report = run_sprint(tmp_path, {
        "name": "res", "repo": str(repo), "overlap": "merge", "on_conflict": "resolve",
        "resolver": {"run": (f"git status --porcelain > {seen}; "
                             f"grep -v -E '{MARKERS}' shared.txt > t; mv t shared.txt")},
        "tasks": [
            command(t, f"echo 'line by {t}' > shared.txt", paths=["shared.txt"],
                    verify="! grep -q '^<<<<<<<' shared.txt")
            for t in ("a", "b")
        ],
    })  # fmt: skip
    assert ok, report.summary_line()
    assert [t.outcome.value for t in report.tasks] == ["applied", "applied"]
    assert report.tasks[1].attempt_branch == "agentfleet-attempts/res/b/2"  # the resolver's
    assert seen.read_text() == "UU shared.txt\n"
    assert run_git(repo, "show", "agentfleet/res:shared.txt") == "line by a\nline by b\n"
