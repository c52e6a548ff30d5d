"""Sequential apply on real temporary repositories: refs, history shape, trailers, guards."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentfleet import apply as ga
from agentfleet.errors import ConflictError, GitError
from agentfleet.gitcmd import AGENTFLEET_IDENTITY
from agentfleet.naming import scratch_ref
from agentfleet.worktrees import WorktreeManager, commit_all
from tests.support.git_env import fixture_commit, sh, user_repo

pytestmark = pytest.mark.usefixtures("no_git_identity")

SPRINT = "s1"


LINES = "".join(f"line {i}\n" for i in range(1, 21))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return user_repo(tmp_path / "repo", {"shared.txt": LINES})


class Fleet:
    """Attempts as the sprint makes them: a worktree per branch, committed by agentfleet."""

    def __init__(self, repo: Path, root: Path) -> None:
        self.repo = repo
        self.manager = WorktreeManager(repo, root)
        self.starts: dict[str, str] = {}

    def attempt(self, task: str, start: str, files: dict[str, str]) -> str:
        branch = f"agentfleet-attempts/{SPRINT}/{task}/1"
        tree = self.manager.add(branch, start, f"{task}-1")
        try:
            for name, text in files.items():
                (tree / name).parent.mkdir(parents=True, exist_ok=True)
                (tree / name).write_text(text)
            sha = commit_all(self.manager.pinned(tree), f"agentfleet: {task} (attempt 1)")
        finally:
            self.manager.remove(tree)
        assert sha is not None
        self.starts[sha] = start
        return sha

    def land(
        self,
        order: list[tuple[str, str]],
        *,
        target: str = "main",
        base: str = "main",
        use_start: bool = True,
    ) -> list[ga.ApplyResult]:
        """Apply (task, head) pairs in order on the scratch ref, skipping applied tasks."""
        head = ga.start(self.repo, SPRINT, target, base)
        done = ga.applied_tasks(self.repo, head, SPRINT)
        results = []
        for task, sha in order:
            if task in done:
                continue
            result = ga.apply_one(
                self.repo,
                head,
                sha,
                sprint=SPRINT,
                task_id=task,
                attempt_branch=f"agentfleet-attempts/{SPRINT}/{task}/1",
                subject=f"{task}: done",
                body=f"what {task} did",
                start=self.starts[sha] if use_start else None,
            )
            if result.applied:
                ga.set_scratch(self.repo, SPRINT, result.commit, head)
                head = result.commit
            results.append(result)
        return results


@pytest.fixture
def fleet(repo: Path, tmp_path: Path) -> Fleet:
    return Fleet(repo, tmp_path / "worktrees")


def edit(text: str, line: int, new: str) -> str:
    lines = text.splitlines(keepends=True)
    lines[line - 1] = new + "\n"
    return "".join(lines)


def subjects(repo: Path, rev_range: str) -> list[str]:
    return sh(repo, "log", "--format=%s", rev_range).splitlines()


def test_waiting_task_starts_from_its_predecessor_and_lands_once(repo: Path, fleet: Fleet):
    base = sh(repo, "rev-parse", "main").strip()
    a = fleet.attempt(
        "a", base, {"a.py": "def a():\n    return 1\n", "shared.txt": edit(LINES, 2, "line 2 by a")}
    )
    b_start = ga.combine(repo, base, [a], "agentfleet: start of b")
    assert b_start == a  # one head already on top of base: no new commit
    # b edits what a wrote: the very lines a added and changed.
    b = fleet.attempt(
        "b",
        b_start,
        {
            "a.py": "def a():\n    return 2\n",
            "b.py": "import a\n",
            "shared.txt": edit(edit(LINES, 2, "line 2 by a and b"), 9, "9b"),
        },
    )
    c = fleet.attempt("c", base, {"c.py": "c\n", "shared.txt": edit(LINES, 19, "line 19 by c")})

    results = fleet.land([("a", a), ("c", c), ("b", b)])
    assert [r.applied for r in results] == [True, True, True]
    scratch = scratch_ref(SPRINT)
    assert subjects(repo, f"main..{scratch}") == ["b: done", "c: done", "a: done"]
    # One commit per task, each with the previous one as its only parent.
    parents = sh(repo, "log", "--format=%P", f"main..{scratch}").split("\n")[:3]
    assert all(len(p.split()) == 1 for p in parents)
    assert sh(repo, "show", f"{scratch}:a.py") == "def a():\n    return 2\n"
    assert sh(repo, "show", f"{scratch}:b.py") == "import a\n"
    assert sh(repo, "show", f"{scratch}:c.py") == "c\n"
    shared = sh(repo, "show", f"{scratch}:shared.txt").splitlines()
    assert shared[1] == "line 2 by a and b" and shared[8] == "9b" and shared[18] == "line 19 by c"
    assert len(shared) == 20  # a's change is in there once
    # b's own commit holds b's change only.
    b_commit = results[2].commit
    assert sh(repo, "diff", "--name-only", f"{b_commit}^", b_commit).split() == [
        "a.py",
        "b.py",
        "shared.txt",
    ]
    b_diff = sh(repo, "diff", f"{b_commit}^", b_commit, "--", "shared.txt")
    assert "-line 2 by a\n" in b_diff and "-line 2\n" not in b_diff


def test_without_start_git_s_merge_base_makes_edits_of_a_predecessor_conflict(
    repo: Path, fleet: Fleet
):
    # Why apply_one takes `start`: the scratch commits are new, so git's merge base for
    # b is the old base, and both sides "added" a.py differently.
    base = sh(repo, "rev-parse", "main").strip()
    a = fleet.attempt("a", base, {"a.py": "v1\n"})
    b = fleet.attempt("b", a, {"a.py": "v2\n"})
    results = fleet.land([("a", a), ("b", b)], use_start=False)
    assert results[1].conflicts == ["a.py"]
    sh(repo, "update-ref", "-d", scratch_ref(SPRINT))
    assert [r.applied for r in fleet.land([("a", a), ("b", b)])] == [True, True]


def test_task_waiting_for_two_starts_from_their_combination(repo: Path, fleet: Fleet):
    base = sh(repo, "rev-parse", "main").strip()
    a = fleet.attempt("a", base, {"a.txt": "a\n", "shared.txt": edit(LINES, 1, "1a")})
    c = fleet.attempt("c", base, {"c.txt": "c\n", "shared.txt": edit(LINES, 20, "20c")})
    d_start = ga.combine(repo, base, [a, c], "agentfleet: start of d")
    assert sh(repo, "log", "-1", "--format=%P", d_start).split() == [a, c]
    assert (
        sh(repo, "log", "-1", "--format=%an %s", d_start).strip()
        == "agentfleet agentfleet: start of d"
    )
    assert (
        sh(repo, "show", f"{d_start}:a.txt") == "a\n"
        and sh(repo, "show", f"{d_start}:c.txt") == "c\n"
    )
    both = edit(edit(LINES, 1, "1a"), 20, "20c")
    assert sh(repo, "show", f"{d_start}:shared.txt") == both
    d = fleet.attempt(
        "d", d_start, {"d.txt": "d\n", "shared.txt": edit(edit(both, 1, "1ad"), 20, "20cd")}
    )

    results = fleet.land([("a", a), ("c", c), ("d", d)])
    assert [r.applied for r in results] == [True, True, True]
    scratch = scratch_ref(SPRINT)
    assert subjects(repo, f"main..{scratch}") == ["d: done", "c: done", "a: done"]
    tree = sh(repo, "ls-tree", "--name-only", scratch).split()
    assert tree == ["a.txt", "c.txt", "d.txt", "shared.txt"]
    shared = sh(repo, "show", f"{scratch}:shared.txt").splitlines()
    assert (shared[0], shared[19], len(shared)) == ("1ad", "20cd", 20)
    # Heads already contained in others (or in base) add nothing.
    assert ga.combine(repo, base, [base], "x") == base
    assert ga.combine(repo, base, [a, a], "x") == a


def test_combine_reports_conflicting_heads(repo: Path, fleet: Fleet):
    base = sh(repo, "rev-parse", "main").strip()
    x = fleet.attempt("x", base, {"shared.txt": edit(LINES, 5, "five by x")})
    y = fleet.attempt("y", base, {"shared.txt": edit(LINES, 5, "five by y")})
    with pytest.raises(ConflictError) as caught:
        ga.combine(repo, base, [x, y], "start")
    assert caught.value.files == ["shared.txt"]


def test_conflict_reports_the_file_and_writes_no_ref(repo: Path, fleet: Fleet):
    base = sh(repo, "rev-parse", "main").strip()
    x = fleet.attempt("x", base, {"shared.txt": edit(LINES, 5, "five by x")})
    y = fleet.attempt("y", base, {"shared.txt": edit(LINES, 5, "five by y"), "y.txt": "y\n"})
    head = ga.start(repo, SPRINT, "main", base)
    first = ga.apply_one(
        repo, head, x, sprint=SPRINT, task_id="x", attempt_branch="bx", subject="x", start=base
    )
    ga.set_scratch(repo, SPRINT, first.commit, head)
    refs_before = sh(repo, "for-each-ref")
    second = ga.apply_one(
        repo,
        first.commit,
        y,
        sprint=SPRINT,
        task_id="y",
        attempt_branch="by",
        subject="y",
        start=base,
    )
    assert not second.applied and second.conflicts == ["shared.txt"]
    assert sh(repo, "for-each-ref") == refs_before


def test_an_attempt_with_nothing_new_is_empty(repo: Path, fleet: Fleet):
    base = sh(repo, "rev-parse", "main").strip()
    a = fleet.attempt("a", base, {"a.txt": "a\n"})
    twin = fleet.attempt("twin", base, {"a.txt": "a\n"})
    results = fleet.land([("a", a), ("twin", twin)])
    assert results[1] == ga.ApplyResult(applied=False, empty=True)


def test_trailers_identity_and_message(repo: Path, fleet: Fleet):
    base = sh(repo, "rev-parse", "main").strip()
    a = fleet.attempt("a", base, {"a.txt": "a\n"})
    head = ga.start(repo, SPRINT, "main", base)
    result = ga.apply_one(
        repo,
        head,
        a,
        sprint=SPRINT,
        task_id="a",
        attempt_branch="agentfleet-attempts/s1/a/1",
        subject="a: add a.txt",
        body="# Notes\nMade a.txt.\n\nSee: the plan",
        start=base,
    )
    sha = result.commit
    name, email = AGENTFLEET_IDENTITY
    assert sh(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>", sha).strip() == (
        f"{name} <{email}>|{name} <{email}>"
    )
    trailers = sh(repo, "log", "-1", "--format=%(trailers:only,unfold)", sha).strip().splitlines()
    assert trailers == [
        "Agentfleet-Sprint: s1",
        "Agentfleet-Task: a",
        "Agentfleet-Attempt: agentfleet-attempts/s1/a/1",
    ]
    assert ga.message_body(repo, sha) == "# Notes\nMade a.txt.\n\nSee: the plan"
    assert "a.txt" in ga.diffstat_of(repo, sha) and "1 file changed" in ga.diffstat_of(repo, sha)
    assert "shared.txt" in ga.diffstat_of(repo, base)  # a root commit
    assert ga.rev_parse(repo, "refs/heads/nope") is None


def test_rerun_applies_nothing_twice_and_keeps_user_commits(repo: Path, fleet: Fleet):
    base = sh(repo, "rev-parse", "main").strip()
    a = fleet.attempt("a", base, {"a.txt": "a\n"})
    fleet.land([("a", a)], target="agentfleet/s1")
    ga.finish(repo, SPRINT, "agentfleet/s1", expected_old=None)
    first = sh(repo, "rev-parse", "agentfleet/s1").strip()
    assert ga.rev_parse(repo, scratch_ref(SPRINT)) is None

    found = ga.applied_tasks(repo, "refs/heads/agentfleet/s1", SPRINT)
    assert found == {"a": ga.AppliedCommit(sha=first, attempt_branch="agentfleet-attempts/s1/a/1")}
    assert ga.applied_tasks(repo, "refs/heads/agentfleet/s1", "other-sprint") == {}

    # The user adds a commit of their own on the target between runs.
    user_tree = WorktreeManager(repo, repo.parent / "user").add(
        "agentfleet/s1", first, "u", reset=True
    )
    (user_tree / "user.txt").write_text("mine\n")
    fixture_commit(user_tree, "user: my own change")
    WorktreeManager(repo, repo.parent / "user").remove(user_tree)
    user_head = sh(repo, "rev-parse", "agentfleet/s1").strip()

    b = fleet.attempt("b", base, {"b.txt": "b\n"})
    results = fleet.land([("a", a), ("b", b)], target="agentfleet/s1")
    assert len(results) == 1 and results[0].applied  # a was not applied again
    ga.finish(repo, SPRINT, "agentfleet/s1", expected_old=user_head)
    assert subjects(repo, "main..agentfleet/s1") == ["b: done", "user: my own change", "a: done"]
    assert set(ga.applied_tasks(repo, "agentfleet/s1", SPRINT)) == {"a", "b"}
    assert sh(repo, "show", "agentfleet/s1:user.txt") == "mine\n"


def test_finish_is_guarded_by_the_old_value(repo: Path, fleet: Fleet):
    base = sh(repo, "rev-parse", "main").strip()
    sh(repo, "branch", "target", base)
    a = fleet.attempt("a", base, {"a.txt": "a\n"})
    fleet.land([("a", a)], target="target")
    built = ga.scratch_head(repo, SPRINT)
    sh(repo, "update-ref", "refs/heads/target", a)  # someone moves target meanwhile
    with pytest.raises(GitError, match="moved while sprint"):
        ga.finish(repo, SPRINT, "target", expected_old=base)
    assert sh(repo, "rev-parse", "target").strip() == a
    assert ga.scratch_head(repo, SPRINT) == built  # kept for the user
    with pytest.raises(GitError, match="moved while sprint"):
        ga.finish(repo, SPRINT, "target", expected_old=None)  # "must not exist"
    ga.discard(repo, SPRINT)
    ga.discard(repo, SPRINT)
    assert ga.scratch_head(repo, SPRINT) is None
    assert sh(repo, "for-each-ref", "refs/agentfleet/") == ""


def user_state(repo: Path) -> tuple[str, ...]:
    return (
        sh(repo, "symbolic-ref", "HEAD"),
        sh(repo, "rev-parse", "HEAD"),
        sh(repo, "status", "--porcelain=v1", "--untracked-files=all"),
        sh(repo, "ls-files", "--stage"),
        sh(repo, "diff"),
        sh(repo, "diff", "--cached"),
        (repo / "shared.txt").read_text(),
    )


def test_the_user_s_checkout_is_never_touched_even_when_it_is_the_target(repo: Path, fleet: Fleet):
    base = sh(repo, "rev-parse", "main").strip()
    a = fleet.attempt("a", base, {"a.txt": "a\n", "shared.txt": edit(LINES, 3, "3a")})
    (repo / "shared.txt").write_text(edit(LINES, 10, "user is typing"))
    (repo / "staged.txt").write_text("staged\n")
    sh(repo, "add", "staged.txt")
    (repo / "untracked.txt").write_text("u\n")
    before = user_state(repo)

    assert ga.checked_out_in(repo, "main") == [repo]
    assert ga.checked_out_in(repo, "refs/heads/main") == [repo]
    results = fleet.land([("a", a)], target="main", base="main")
    assert results[0].applied
    assert user_state(repo) == before
    with pytest.raises(GitError, match="checked out at"):
        ga.finish(repo, SPRINT, "main", expected_old=base)
    assert user_state(repo) == before
    assert sh(repo, "rev-parse", "main").strip() == base
    assert sh(repo, "show", f"{scratch_ref(SPRINT)}:a.txt") == "a\n"
    assert not (repo / "a.txt").exists()


def test_checked_out_in_sees_linked_worktrees(repo: Path, tmp_path: Path):
    manager = WorktreeManager(repo, tmp_path / "wt")
    path = manager.add("feature", "main", "feature")
    assert ga.checked_out_in(repo, "feature") == [path]
    assert ga.checked_out_in(repo, "nobody") == []


def commit_objects(repo: Path) -> set[str]:
    out = sh(repo, "cat-file", "--batch-all-objects", "--batch-check=%(objectname) %(objecttype)")
    return {line.split()[0] for line in out.splitlines() if line.endswith(" commit")}


def test_a_stack_of_independent_results_writes_one_commit_each(repo: Path, fleet: Fleet):
    # Their start is the merge base already: no stand-in commit is written for them.
    base = sh(repo, "rev-parse", "main").strip()
    heads = [fleet.attempt(t, base, {f"{t}.txt": f"{t}\n"}) for t in ("a", "b", "c")]
    before = commit_objects(repo)
    results = fleet.land(list(zip(("a", "b", "c"), heads, strict=True)))
    assert [r.applied for r in results] == [True, True, True]
    assert commit_objects(repo) - before == {r.commit for r in results}
    top = results[-1].commit
    assert sh(repo, "ls-tree", "--name-only", top).split() == ["a.txt", "b.txt", "c.txt",
                                                               "shared.txt"]
