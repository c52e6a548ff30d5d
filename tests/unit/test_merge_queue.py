"""Landing as a merge queue, on real repositories with real `command` agents.

Conflict strategies (overwrite, skip, rerun, resolve), predicted conflicts, and the
bisection of a stack that breaks ``final_verify``. Reruns and resolvers run as real
attempts (``agentfleet.attempt.run_attempt``) through the ``run_attempt`` callable the
flow gives landing.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from agentfleet.agent_config import AgentConfig
from agentfleet.attempt import AttemptSpec, run_attempt
from agentfleet.landing import AttemptRequest, LandingPolicy, conflict_rows
from agentfleet.naming import attempt_branch
from agentfleet.results import AttemptResult, SprintReport, TaskOutcome
from tests.support.git_env import fixture_commit, sh, user_repo
from tests.unit.test_landing import SPRINT, TARGET, commit_files, do_land, result

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("no_git_identity")]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return user_repo(tmp_path / "repo", {"README.md": "hello\n"})


def runner(repo: Path, tmp_path: Path, run: str, verify: str | None = None,
           paths: list[str] | None = None):
    """A ``run_attempt`` for landing: each request is a real attempt of a command agent."""
    requests: list[AttemptRequest] = []

    def run_one(request: AttemptRequest) -> AttemptResult:
        requests.append(request)
        spec = AttemptSpec(
            sprint=SPRINT, task_id=request.task_id, attempt=request.attempt,
            branch=attempt_branch(SPRINT, request.task_id, request.attempt), repo=repo,
            worktree_root=tmp_path / "wt", start_sha=request.start_sha, prompt=request.prompt,
            paths=paths, agent=AgentConfig(kind="command", run=run), verify=verify, timeout_s=60,
            merge=request.merge,
        )  # fmt: skip
        return run_attempt(spec, env=dict(os.environ))

    run_one.requests = requests  # type: ignore[attr-defined]
    return run_one


def two_conflicting(repo: Path) -> tuple[str, dict[str, AttemptResult]]:
    """Tasks a and b that both rewrite shared.txt's one line, from the same start."""
    base = commit_files(repo, sh(repo, "rev-parse", "main").strip(),
                        {"shared.txt": "line\n"}, "shared")
    a = commit_files(repo, base, {"shared.txt": "line by a\n"}, "a")
    b = commit_files(repo, base, {"shared.txt": "line by b\n"}, "b")
    return base, {
        "a": result(repo, "a", base, a, files=["shared.txt"], prompt="say a"),
        "b": result(repo, "b", base, b, files=["shared.txt"], prompt="say b"),
    }


def by_task(landing) -> dict:
    return {t.task: t for t in landing.tasks}


def test_overwrite_takes_this_tasks_version_and_names_what_is_lost(repo: Path, tmp_path: Path):
    base, results = two_conflicting(repo)
    landing = do_land(repo, tmp_path, ["a", "b"], results, base_sha=base,
                      policy=LandingPolicy(default="overwrite"))
    assert [c.model_dump() for c in landing.predicted_conflicts] == []  # target: base, no clash
    b = by_task(landing)["b"]
    assert b.outcome is TaskOutcome.APPLIED
    assert b.detail == "overwrote shared.txt: the changes of a to them are lost"
    assert sh(repo, "show", f"{TARGET}:shared.txt") == "line by b\n"
    assert landing.target_moved


def test_skip_keeps_the_branch_and_says_how_to_finish_by_hand(repo: Path, tmp_path: Path):
    base, results = two_conflicting(repo)
    # The target already holds a's change: b's conflict is predicted before applying.
    sh(repo, "branch", TARGET, results["a"].head_sha)
    landing = do_land(repo, tmp_path, ["b"], {"b": results["b"]}, base_sha=base,
                      policy=LandingPolicy(default="skip"))
    assert conflict_rows(landing) == [{
        "task": "b", "files": "shared.txt", "outcome": "conflict",
        "detail": by_task(landing)["b"].detail,
    }]
    b = by_task(landing)["b"]
    assert b.outcome is TaskOutcome.CONFLICT
    assert f"git switch {TARGET} && git cherry-pick {base[:12]}..{results['b'].branch}" in b.detail
    assert sh(repo, "rev-parse", results["b"].branch).strip() == results["b"].head_sha
    assert sh(repo, "rev-parse", TARGET).strip() == results["a"].head_sha  # not moved


def test_rerun_runs_again_on_the_stack_and_sees_the_other_sides_change(
    repo: Path, tmp_path: Path
):
    base, results = two_conflicting(repo)
    seen = tmp_path / "prompt.txt"
    # The rerun keeps a's line and adds its own: it saw a's change in its worktree.
    run = runner(repo, tmp_path, f'cat > {seen}; echo "and by b" >> shared.txt')
    landing = do_land(repo, tmp_path, ["a", "b"], results, base_sha=base,
                      policy=LandingPolicy(default="rerun"), run_attempt=run)
    b = by_task(landing)["b"]
    assert b.outcome is TaskOutcome.APPLIED, b.detail
    assert b.attempt_branch == attempt_branch(SPRINT, "b", 2)
    [request] = run.requests
    assert request.kind == "rerun" and request.attempt == 2
    assert request.start_sha == by_task(landing)["a"].applied_commit
    prompt = seen.read_text()
    assert prompt.startswith("say b") and "shared.txt" in prompt
    assert "+line by a" in prompt and "by a" in prompt  # a's diff, in the prompt
    assert sh(repo, "show", f"{TARGET}:shared.txt") == "line by a\nand by b\n"


def test_rerun_is_tried_at_most_max_reruns_times_then_skipped(repo: Path, tmp_path: Path):
    base, results = two_conflicting(repo)
    run = runner(repo, tmp_path, "exit 3")
    landing = do_land(repo, tmp_path, ["a", "b"], results, base_sha=base,
                      policy=LandingPolicy(default="rerun", max_reruns=1), run_attempt=run)
    b = by_task(landing)["b"]
    assert b.outcome is TaskOutcome.CONFLICT and "its rerun failed" in b.detail
    assert len(run.requests) == 1


MARKERS = "^(<<<<<<<|=======|>>>>>>>)"


def test_a_resolver_that_leaves_a_marker_is_rejected(repo: Path, tmp_path: Path):
    base, results = two_conflicting(repo)
    run = runner(repo, tmp_path, "echo more >> shared.txt")
    landing = do_land(repo, tmp_path, ["a", "b"], results, base_sha=base,
                      policy=LandingPolicy(default="resolve"), run_attempt=run)
    b = by_task(landing)["b"]
    assert b.outcome is TaskOutcome.CONFLICT
    assert "the resolver failed: conflict markers left in shared.txt" in b.detail
    assert sh(repo, "show", f"{TARGET}:shared.txt") == "line by a\n"


def test_a_resolver_that_resolves_passes(repo: Path, tmp_path: Path):
    base, results = two_conflicting(repo)
    seen = tmp_path / "prompt.txt"
    run = runner(
        repo, tmp_path,
        f"cat > {seen}; grep -v -E '{MARKERS}' shared.txt > t; mv t shared.txt",
        verify="! grep -q -E '^<<<<<<<' shared.txt",
    )  # fmt: skip
    landing = do_land(repo, tmp_path, ["a", "b"], results, base_sha=base,
                      policy=LandingPolicy(default="resolve"), run_attempt=run)
    b = by_task(landing)["b"]
    assert b.outcome is TaskOutcome.APPLIED, b.detail
    assert run.requests[0].kind == "resolve"
    assert "say a" in seen.read_text() and "say b" in seen.read_text()  # both sides' intent
    assert sh(repo, "show", f"{TARGET}:shared.txt") == "line by a\nline by b\n"


def test_the_resolver_finds_a_git_merge_in_progress_and_may_finish_it(
    repo: Path, tmp_path: Path
):
    base, results = two_conflicting(repo)
    seen = tmp_path / "seen"
    # What a person sees after `git merge`: MERGE_HEAD, "both modified", unmerged entries,
    # markers naming both sides. Then it resolves and stages the file, as a person would.
    run = runner(
        repo, tmp_path,
        f"git rev-parse MERGE_HEAD > {seen}.head; git status --porcelain > {seen}.status; "
        f"git ls-files -u > {seen}.unmerged; cp shared.txt {seen}.file; "
        f"grep -v -E '{MARKERS}' shared.txt > t; mv t shared.txt; git add shared.txt",
    )  # fmt: skip
    landing = do_land(repo, tmp_path, ["a", "b"], results, base_sha=base,
                      policy=LandingPolicy(default="resolve"), run_attempt=run)
    b = by_task(landing)["b"]
    assert b.outcome is TaskOutcome.APPLIED, b.detail
    [request] = run.requests
    assert request.merge is not None and request.merge.files == ["shared.txt"]
    assert Path(f"{seen}.head").read_text().strip() == results["b"].head_sha
    assert Path(f"{seen}.status").read_text() == "UU shared.txt\n"
    assert len(Path(f"{seen}.unmerged").read_text().splitlines()) == 3  # base, ours, theirs
    assert Path(f"{seen}.file").read_text() == (
        f"<<<<<<< HEAD\nline by a\n=======\nline by b\n>>>>>>> {results['b'].branch}\n"
    )
    # The resolver started from the stack (a's commit), not from a tree with markers.
    assert request.start_sha == by_task(landing)["a"].applied_commit
    assert sh(repo, "show", f"{TARGET}:shared.txt") == "line by a\nline by b\n"
    assert sh(repo, "rev-parse", f"{TARGET}^").strip() == request.start_sha


def test_a_resolver_that_changes_a_file_not_in_conflict_is_rejected(
    repo: Path, tmp_path: Path
):
    base, results = two_conflicting(repo)
    resolve = f"grep -v -E '{MARKERS}' shared.txt > t; mv t shared.txt; echo x > other.txt"
    landing = do_land(repo, tmp_path, ["a", "b"], results, base_sha=base,
                      policy=LandingPolicy(default="resolve"),
                      run_attempt=runner(repo, tmp_path, resolve))
    b = by_task(landing)["b"]
    assert b.outcome is TaskOutcome.CONFLICT
    assert "changed files that were not in conflict: other.txt" in b.detail
    # Within the task's paths, another file may change.
    landing = do_land(repo, tmp_path, ["a", "b"], results, base_sha=base,
                      policy=LandingPolicy(default="resolve"),
                      run_attempt=runner(repo, tmp_path, resolve, paths=["*.txt"]))
    assert by_task(landing)["b"].outcome is TaskOutcome.APPLIED, by_task(landing)["b"].detail
    assert sh(repo, "show", f"{TARGET}:other.txt") == "x\n"


def test_a_resolver_merges_only_the_tasks_own_change_when_its_start_is_not_on_the_stack(
    repo: Path, tmp_path: Path
):
    base, results = two_conflicting(repo)
    # b started from a commit the target never had (as a task that waited for another).
    start = commit_files(repo, base, {"dep.txt": "dep\n"}, "a dependency")
    b = commit_files(repo, start, {"shared.txt": "line by b\n"}, "b")
    results["b"] = result(repo, "b", start, b, files=["shared.txt"], prompt="say b")
    run = runner(repo, tmp_path, f"grep -v -E '{MARKERS}' shared.txt > t; mv t shared.txt")
    landing = do_land(repo, tmp_path, ["a", "b"], results, base_sha=base,
                      policy=LandingPolicy(default="resolve"), run_attempt=run)
    assert by_task(landing)["b"].outcome is TaskOutcome.APPLIED, by_task(landing)["b"].detail
    assert sh(repo, "show", f"{TARGET}:shared.txt") == "line by a\nline by b\n"
    assert "dep.txt" not in sh(repo, "ls-tree", "--name-only", TARGET).split()
    # The resolver's start: the stack, with b's start as a second parent (the merge base).
    parents = sh(repo, "rev-list", "--parents", "-n1", run.requests[0].start_sha).split()[1:]
    assert parents == [by_task(landing)["a"].applied_commit, start]


def five(repo: Path) -> tuple[str, dict[str, AttemptResult]]:
    base = sh(repo, "rev-parse", "main").strip()
    results = {}
    for i in range(1, 6):
        head = commit_files(repo, base, {f"t{i}.txt": f"{i}\n"}, f"t{i}")
        results[f"t{i}"] = result(repo, f"t{i}", base, head, files=[f"t{i}.txt"])
    return base, results


def test_bisection_ejects_the_task_that_breaks_final_verify_within_the_bound(
    repo: Path, tmp_path: Path
):
    _, results = five(repo)
    order = list(results)
    landing = do_land(repo, tmp_path, order, results, final_verify="test ! -e t3.txt",
                      policy=LandingPolicy(on_final_verify_failure="bisect", concurrency=1))
    outcomes = by_task(landing)
    assert outcomes["t3"].outcome is TaskOutcome.EJECTED
    assert "broke final_verify (exit 1)" in outcomes["t3"].detail
    assert [t for t in order if outcomes[t].applied] == ["t1", "t2", "t4", "t5"]
    # The stack's failure, ⌈log2 5⌉ bisection steps, then the stack without t3.
    assert landing.verifications <= 1 + math.ceil(math.log2(5)) + 1
    assert landing.final_verify is not None and landing.final_verify.passed
    assert landing.target_moved and landing.ejected == ["t3"]
    names = sh(repo, "ls-tree", "--name-only", TARGET).split()
    assert "t3.txt" not in names and {"t1.txt", "t2.txt", "t4.txt", "t5.txt"} <= set(names)
    report = SprintReport(sprint=SPRINT, repo=str(repo), base="main", target=TARGET,
                          tasks=landing.tasks, final_verify=landing.final_verify,
                          target_moved=True, target_up_to_date=True)
    assert report.exit_status == 1


def test_bisection_ejects_dependents_and_verifies_prefixes_at_once(
    repo: Path, tmp_path: Path
):
    _, results = five(repo)
    order = list(results)
    log: list[str] = []
    landing = do_land(
        repo, tmp_path, order, results, final_verify="test ! -e t2.txt", log=log.append,
        depends_on={"t4": ["t2"], "t5": ["t4"]},
        policy=LandingPolicy(on_final_verify_failure="bisect", concurrency=3),
    )  # fmt: skip
    outcomes = by_task(landing)
    assert sorted(landing.ejected) == ["t2", "t4", "t5"]
    assert "depends on t2" in outcomes["t4"].detail
    assert [t for t in order if outcomes[t].applied] == ["t1", "t3"]
    assert any("verifications" in line for line in log)
    assert landing.target_moved


def test_fail_keeps_the_target_where_it_was(repo: Path, tmp_path: Path):
    _, results = five(repo)
    landing = do_land(repo, tmp_path, list(results), results, final_verify="test ! -e t3.txt",
                      policy=LandingPolicy(on_final_verify_failure="fail"))
    assert not landing.target_moved and landing.verifications == 1
    assert sh(repo, "branch", "--list", TARGET) == ""


def test_ejections_stop_at_max_ejections(repo: Path, tmp_path: Path):
    _, results = five(repo)
    landing = do_land(
        repo, tmp_path, list(results), results,
        final_verify="test ! -e t2.txt && test ! -e t3.txt && test ! -e t4.txt",
        policy=LandingPolicy(on_final_verify_failure="bisect", max_ejections=2),
    )  # fmt: skip
    assert landing.ejected == ["t2", "t3"]
    assert not landing.target_moved and "final_verify failed" in landing.note


def bare(tmp_path: Path) -> Path:
    remote = tmp_path / "remote.git"
    sh(tmp_path, "init", "-q", "--bare", str(remote))
    return remote


def test_push_to_a_bare_repository_with_attempt_branches(repo: Path, tmp_path: Path):
    remote = bare(tmp_path)
    _, results = five(repo)
    landing = do_land(repo, tmp_path, ["t1", "t2"], {t: results[t] for t in ("t1", "t2")},
                      policy=LandingPolicy(push=str(remote), push_attempts=True))
    assert landing.target_moved and landing.pushed is True
    assert sh(remote, "rev-parse", TARGET).strip() == sh(repo, "rev-parse", TARGET).strip()
    assert sh(remote, "rev-parse", results["t1"].branch).strip() == results["t1"].head_sha


def test_a_push_refused_because_the_remote_moved_keeps_the_local_result(
    repo: Path, tmp_path: Path
):
    remote = bare(tmp_path)
    base, results = five(repo)
    # Someone pushes the target while final_verify runs.
    someone = f"git -C {repo} push -q {remote} {base}:refs/heads/{TARGET}"
    log: list[str] = []
    landing = do_land(repo, tmp_path, ["t1"], {"t1": results["t1"]}, final_verify=someone,
                      policy=LandingPolicy(push=str(remote)), log=log.append)
    assert landing.target_moved and landing.pushed is False
    assert "push to" in landing.push_note and "refused" in landing.push_note
    assert "Fetch" in landing.push_note
    assert sh(remote, "rev-parse", TARGET).strip() == base  # their push stays
    assert sh(repo, "rev-parse", TARGET).strip() == landing.target_sha  # ours, here
    report = SprintReport(sprint=SPRINT, repo=str(repo), base="main", target=TARGET,
                          tasks=landing.tasks, final_verify=landing.final_verify,
                          target_moved=True, target_up_to_date=True, push_failed=True)
    assert report.exit_status == 1


def test_hand_made_branches_land_in_order_and_rerun_is_refused(repo: Path, tmp_path: Path):
    from agentfleet.errors import ConfigError
    from agentfleet.standalone import APPLY_SPRINT, branch_candidates, check_apply

    base = sh(repo, "rev-parse", "main").strip()
    sh(repo, "branch", "release", base)
    for name, file, text in [("one", "shared.txt", "one\n"), ("feat/two", "two.txt", "two\n"),
                             ("three", "shared.txt", "three\n")]:
        sh(repo, "branch", name, commit_files(repo, base, {file: text}, name))
    with pytest.raises(ConfigError, match="rerun needs a task's prompt"):
        check_apply("rerun", None)
    with pytest.raises(ConfigError, match="resolver"):
        check_apply("resolve", None)
    target_sha, order, results = branch_candidates(repo, "release", ["one", "feat/two", "three"])
    assert target_sha == base and order == ["one", "feat-two", "three"]
    assert results["feat-two"].files == ["two.txt"] and results["three"].start_sha == base
    landing = do_land(repo, tmp_path, order, results, sprint=APPLY_SPRINT, target="release",
                      base_sha=target_sha, policy=LandingPolicy(default="skip"))
    assert [t.outcome for t in landing.tasks] == [
        TaskOutcome.APPLIED, TaskOutcome.APPLIED, TaskOutcome.CONFLICT
    ]
    assert landing.predicted_conflicts == []  # each alone applies on release
    assert sh(repo, "show", "release:shared.txt") == "one\n"


class Prefixes:
    """A stand-in for ``final_verify`` on prefixes: a prefix fails once it holds the culprit."""

    def __init__(self, culprit: int, concurrency: int) -> None:
        self.culprit, self.concurrency = culprit, concurrency
        self.runs = self.rounds = 0

    def run(self, commits: list[str]):
        from agentfleet.results import CheckResult

        self.runs += len(commits)
        self.rounds += 1
        return [CheckResult(command="v", passed=int(c) < self.culprit,
                            exit_status=int(int(c) >= self.culprit)) for c in commits]


def bisect_all(n: int, concurrency: int) -> list[Prefixes]:
    """Bisect a failing stack of ``n`` for each possible culprit; the verifiers it used."""
    from agentfleet.landing import bisect
    from agentfleet.results import CheckResult

    failed = CheckResult(command="v", passed=False, exit_status=1)
    stack = [(f"t{i}", str(i)) for i in range(1, n + 1)]  # prefix i's head is "i"
    verifiers = []
    for culprit in range(1, n + 1):
        verifier = Prefixes(culprit, concurrency)
        found, _ = bisect(verifier, "0", stack, failed)  # type: ignore[arg-type]
        assert found == f"t{culprit}"
        verifiers.append(verifier)
    return verifiers


@pytest.mark.parametrize("concurrency", [1, 2, 3, 8])
def test_bisection_stays_within_log2_n_verifications_at_any_concurrency(concurrency: int):
    for n in range(1, 17):
        for v in bisect_all(n, concurrency):
            # The bound, ⌈log2 n⌉ + 1, counts the whole stack's own failing run.
            assert 1 + v.runs <= math.ceil(math.log2(n)) + 1, (n, v.culprit)
    if concurrency > 1:  # where the bound leaves slack, prefixes verified at once save rounds
        for n in (3, 5, 6, 9, 12):
            rounds = sum(v.rounds for v in bisect_all(n, concurrency))
            assert rounds < sum(v.rounds for v in bisect_all(n, 1)), n


def test_apply_onto_a_missing_target_creates_it_from_the_base(repo: Path, tmp_path: Path):
    from agentfleet.errors import ConfigError
    from agentfleet.standalone import APPLY_SPRINT, apply_start, branch_candidates

    base = sh(repo, "rev-parse", "main").strip()
    sh(repo, "branch", "one", commit_files(repo, base, {"one.txt": "1\n"}, "one"))
    with pytest.raises(ConfigError, match="its base 'nope' names no commit.*--base"):
        apply_start(repo, "release", "nope")
    sha, note = apply_start(repo, "release")
    assert sha == base and note is not None and "does not exist: it is created from HEAD" in note
    start, order, results = branch_candidates(repo, "release", ["one"], "main")
    landing = do_land(repo, tmp_path, order, results, sprint=APPLY_SPRINT, target="release",
                      base_sha=start, policy=LandingPolicy(default="skip"))
    assert landing.target_moved
    assert sh(repo, "rev-parse", "release^").strip() == base
    assert sh(repo, "show", "release:one.txt") == "1\n"


def test_a_push_made_before_landing_is_never_overwritten(repo: Path, tmp_path: Path):
    remote = bare(tmp_path)
    base, results = five(repo)
    sh(repo, "branch", TARGET, base)
    sh(repo, "remote", "add", "origin", str(remote))
    sh(repo, "push", "-q", "origin", TARGET)  # origin/<target> is base: the value last fetched
    # While the agents run, someone else pushes onto the target from another clone.
    other = tmp_path / "other"
    sh(tmp_path, "clone", "-q", "-b", TARGET, str(remote), str(other))
    (other / "theirs.txt").write_text("theirs\n")
    fixture_commit(other, "theirs")
    sh(other, "push", "-q", "origin", TARGET)
    theirs = sh(other, "rev-parse", "HEAD").strip()
    for push in ("origin", str(remote)):  # leased on origin/<target>; a URL: on what is there
        landing = do_land(repo, tmp_path, ["t1"], {"t1": results["t1"]},
                          policy=LandingPolicy(push=push))
        assert landing.target_moved and landing.pushed is False, landing.push_note
        assert sh(remote, "rev-parse", TARGET).strip() == theirs  # their push stays
        sh(repo, "branch", "-f", TARGET, base)
    assert "holds commits" in landing.push_note and "Fetch" in landing.push_note
    # agentfleet's mirror of a remote: the next run fetches it, so that is what to do.
    landing = do_land(repo, tmp_path, ["t1"], {"t1": results["t1"]},
                      policy=LandingPolicy(push="origin", mirror=True))
    assert landing.pushed is False and "Fetch" not in landing.push_note
    assert (f"Run the sprint again: it lands on {TARGET} as it is there now, from its "
            "results") in landing.push_note


def test_a_retry_finds_the_merge_in_progress_as_git_left_it(repo: Path, tmp_path: Path):
    from agentfleet.merging import MergeInProgress, begin_merge
    from agentfleet.worktrees import WorktreeManager, restore_worktree, snapshot_worktree

    base, results = two_conflicting(repo)
    manager = WorktreeManager(repo, tmp_path / "wt")
    path = manager.add("resolver", results["a"].head_sha, "resolver")
    worktree = manager.pinned(path)
    merge = MergeInProgress(commit=results["b"].head_sha, label=results["b"].branch,
                            files=["shared.txt"])
    assert begin_merge(worktree, merge) == ["shared.txt"]
    before = sh(path, "status", "--porcelain")
    snapshot = snapshot_worktree(worktree)  # what each agent session starts from
    assert sh(path, "status", "--porcelain") == before == "UU shared.txt\n"
    # A try that failed transiently after aborting the merge and writing elsewhere.
    sh(path, "merge", "--abort")
    (path / "stray.txt").write_text("x\n")
    restore_worktree(worktree, snapshot)
    assert sh(path, "status", "--porcelain") == "UU shared.txt\n"
    assert sh(path, "rev-parse", "MERGE_HEAD").strip() == results["b"].head_sha
    assert "<<<<<<< HEAD" in (path / "shared.txt").read_text()
    manager.remove(path)
