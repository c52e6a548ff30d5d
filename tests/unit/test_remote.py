"""Remote repositories: URL handling, the mirror's fetch, and a token kept out of sight."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentfleet.checking import load_and_check, render_plan
from agentfleet.errors import GitError, PlanError
from agentfleet.remote import (
    GitAccess,
    RemoteRepository,
    delete_remote_refs,
    fetch_refs,
    is_bare_repository,
    location_problem,
    mirror_path,
    mirrors,
    push_branches,
    push_refs,
    remote_location,
    start_ref,
    sync_mirror,
)
from blocks.repository import RepositoryBlock
from tests.conftest import MakeRepo, run_git
from tests.support.git_http import git_http_server

TOKEN = "ghp_unit0test0token0value0123456789"


def _bare(make_repo: MakeRepo, tmp_path: Path, name: str = "remote.git") -> Path:
    seed = make_repo("seed-" + name)
    bare = tmp_path / name
    run_git(tmp_path, "clone", "-q", "--bare", str(seed), str(bare))
    return bare


def _access() -> GitAccess:
    return GitAccess.of(os.environ)


@pytest.mark.parametrize("url", [
    "https://github.com/org/repo.git", "ssh://git@host:2222/org/repo.git",
    "git@github.com:org/repo.git", "file:///srv/git/repo.git", "http://127.0.0.1:8080/r",
])
def test_git_urls_are_accepted(url: str) -> None:
    assert location_problem(url) is None
    assert remote_location(url, Path("/anywhere")) == url


@pytest.mark.parametrize(("url", "said"), [
    ("https://me:ghp_secret@github.com/org/repo.git", "holds a password or token"),
    ("ftp://host/repo.git", "not a git transport"),
    ("https:///repo.git", "has no host"),
])
def test_bad_urls_are_refused(url: str, said: str) -> None:
    problem = location_problem(url)
    assert problem is not None and said in problem


def test_a_url_with_a_token_in_it_is_a_plan_problem_that_never_shows_the_token(
    tmp_path: Path,
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("name: s\nrepo: https://me:ghp_hidden0value@example.com/o/r.git\n"
                    "tasks: [{id: a, prompt: p}]\n")
    with pytest.raises(PlanError) as caught:
        load_and_check(plan, mirror=mirrors(tmp_path / "work", _access()))
    assert "holds a password or token" in str(caught.value)
    assert "ghp_hidden0value" not in str(caught.value)
    assert not (tmp_path / "work").exists()  # nothing fetched, nothing created


def test_a_bare_folder_is_a_remote_and_a_working_tree_is_not(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    bare = _bare(make_repo, tmp_path)
    local = make_repo("local")
    run_git(local, "remote", "add", "origin", f"file://{bare}")  # has a remote: still local
    assert is_bare_repository(bare) and not is_bare_repository(local)
    assert remote_location("remote.git", tmp_path) == str(bare)
    assert remote_location("local", tmp_path) is None
    assert remote_location("missing", tmp_path) is None


def test_mirror_paths_are_per_remote_and_named_after_it(tmp_path: Path) -> None:
    a = mirror_path(tmp_path, "https://github.com/org/orders.git")
    b = mirror_path(tmp_path, "git@github.com:org/orders.git")
    assert a.parent == tmp_path.resolve() / "remotes"
    assert a.name.startswith("orders-") and b.name.startswith("orders-") and a != b
    assert mirror_path(tmp_path, "https://github.com/org/orders.git") == a


def test_the_mirror_follows_the_remote_and_keeps_its_attempt_branches(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    remote = _bare(make_repo, tmp_path)
    run_git(remote, "branch", "gone", "main")
    url = f"file://{remote}"
    mirror = sync_mirror(url, mirror_path(tmp_path / "work", url), _access())
    assert run_git(mirror, "config", "remote.origin.url").strip() == url
    assert "refs/heads/gone" in run_git(mirror, "for-each-ref")
    run_git(mirror, "branch", "agentfleet-attempts/s/a/1", "main")
    # The remote moves on: a branch deleted, main advanced.
    run_git(remote, "branch", "-D", "gone")
    work = tmp_path / "clone"
    run_git(tmp_path, "clone", "-q", str(remote), str(work))
    run_git(work, "-c", "user.name=U", "-c", "user.email=u@x", "commit", "-q",
            "--allow-empty", "-m", "next")
    run_git(work, "push", "-q", "origin", "main")
    sync_mirror(url, mirror, _access())
    refs = run_git(mirror, "for-each-ref", "--format=%(refname)").split()
    assert "refs/heads/gone" not in refs
    assert "refs/heads/agentfleet-attempts/s/a/1" in refs  # made here: never pruned
    assert run_git(mirror, "rev-parse", "main") == run_git(remote, "rev-parse", "main")
    # The remote's default branch changes: the mirror's (a plan's default base) follows.
    run_git(remote, "branch", "trunk", "main")
    run_git(remote, "symbolic-ref", "HEAD", "refs/heads/trunk")
    sync_mirror(url, mirror, _access())
    assert run_git(mirror, "symbolic-ref", "HEAD").strip() == "refs/heads/trunk"


def test_a_remote_that_cannot_be_cloned_leaves_nothing_behind(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/missing.git"
    mirror = mirror_path(tmp_path / "work", url)
    with pytest.raises(GitError) as caught:
        sync_mirror(url, mirror, _access())
    assert "cloning" in str(caught.value) and caught.value.retryable
    assert [p.name for p in mirror.parent.iterdir()] == [mirror.name + ".lock"]


def test_a_plan_on_a_remote_checks_against_its_mirror(make_repo: MakeRepo, tmp_path: Path) -> None:
    remote = _bare(make_repo, tmp_path)
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"name: s\nrepo: file://{remote}\ntasks: [{{id: a, prompt: p}}]\n")
    checked = load_and_check(plan, mirror=mirrors(tmp_path / "work", _access()))
    assert checked.remote is not None and checked.remote.location == f"file://{remote}"
    assert checked.repo.root == checked.remote.mirror
    assert checked.repo.base == "main" and not checked.repo.dirty
    assert render_plan(checked).startswith(f"plan 's': 1 task in file://{remote} (mirror ")
    # Without a way to fetch (a caller that cannot reach remotes), the plan says so.
    with pytest.raises(PlanError, match="a remote repository is fetched only by"):
        load_and_check(plan)


def test_a_bare_remote_whose_head_names_a_branch_never_pushed_needs_a_base(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    # `git init --bare`, then main pushed: HEAD still names master, which has no commits.
    remote = tmp_path / "made-by-hand.git"
    run_git(tmp_path, "init", "-q", "--bare", "--initial-branch=master", str(remote))
    run_git(make_repo("work"), "push", "-q", str(remote), "main")
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"name: s\nrepo: file://{remote}\ntasks: [{{id: a, prompt: p}}]\n")
    with pytest.raises(PlanError) as raised:
        load_and_check(plan, mirror=mirrors(tmp_path / "work", _access()))
    assert [str(p) for p in raised.value.problems] == [
        f"{plan}: base: HEAD of file://{remote} names the branch 'master', which has no "
        "commits, and the plan gives no base; set base: to the branch agents should start "
        "from (branches: main)"]
    plan.write_text(f"name: s\nrepo: file://{remote}\nbase: main\n"
                    "tasks: [{id: a, prompt: p}]\n")
    checked = load_and_check(plan, mirror=mirrors(tmp_path / "work", _access()))
    assert checked.repo.base == "main" and checked.repo.base_sha


def test_a_token_reaches_the_server_as_a_header_and_is_stored_nowhere(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    served = tmp_path / "served"
    served.mkdir()
    _bare(make_repo, served, "orders.git")
    with git_http_server(served, TOKEN) as server:
        url = server.url("orders.git")
        mirror = mirror_path(tmp_path / "work", url)
        # Without the token: refused at once, no prompt, nothing left behind.
        with pytest.raises(GitError) as caught:
            sync_mirror(url, mirror, _access())
        assert not mirror.exists()
        assert "no credentials" in str(caught.value) and not caught.value.retryable
        block = RepositoryBlock(url=url, token=TOKEN)
        access = GitAccess.of(os.environ, block.git_env(os.environ), block.secret_values())
        sync_mirror(url, mirror, access)
        assert run_git(mirror, "rev-parse", "main").strip()
        # Pushing back with it works too.
        run_git(mirror, "branch", "agentfleet-attempts/s/a/1", "main")
        push_branches(RemoteRepository(location=url, mirror=mirror),
                      ["agentfleet-attempts/s/a/1"], access)
        assert any(auth for _, auth in server.seen)
    assert run_git(served / "orders.git", "rev-parse", "agentfleet-attempts/s/a/1").strip()
    stored = "".join(p.read_text(errors="replace") for p in mirror.rglob("*")
                     if p.is_file() and p.stat().st_size < 1_000_000)
    assert TOKEN not in stored and block.secret_values()[1] not in stored
    assert TOKEN not in str(caught.value)


def test_pool_placement_needs_a_remote_repo(make_repo: MakeRepo, tmp_path: Path) -> None:
    make_repo("local")
    plan = tmp_path / "plan.yaml"
    plan.write_text("name: s\nrepo: local\nplacement: pool\ntasks: [{id: a, prompt: p}]\n")
    with pytest.raises(PlanError, match="placement: `pool` runs attempts on workers elsewhere"):
        load_and_check(plan, mirror=mirrors(tmp_path / "work", _access()))
    remote = _bare(make_repo, tmp_path)
    plan.write_text(f"name: s\nrepo: {remote}\nplacement: pool\ntasks: [{{id: a, prompt: p}}]\n")
    assert load_and_check(plan, mirror=mirrors(tmp_path / "work", _access())).remote is not None


def test_a_remote_repo_implies_pushing_the_target_and_attempt_branches() -> None:
    from agentfleet.landing import policy_of
    from agentfleet.plan import Plan

    plan = Plan.model_validate({"name": "s", "tasks": [{"id": "a", "prompt": "p"}]})
    assert (policy_of(plan).push, policy_of(plan).push_attempts) == (None, False)
    remote = policy_of(plan, remote=True)
    assert (remote.push, remote.push_attempts) == ("origin", True)
    elsewhere = plan.model_copy(update={"push": "backup"})
    assert policy_of(elsewhere, remote=True).push == "backup"


def test_start_refs_travel_to_the_remote_and_back(make_repo: MakeRepo, tmp_path: Path) -> None:
    remote = _bare(make_repo, tmp_path)
    url = f"file://{remote}"
    access = _access()
    sprint_side = RemoteRepository(
        location=url, mirror=sync_mirror(url, mirror_path(tmp_path / "a", url), access))
    worker_side = RemoteRepository(
        location=url, mirror=sync_mirror(url, mirror_path(tmp_path / "b", url), access))
    # The sprint makes a commit only its mirror has, and hands it over as a start ref.
    tree = run_git(sprint_side.mirror, "rev-parse", "main^{tree}").strip()
    start = run_git(sprint_side.mirror, "-c", "user.name=a", "-c", "user.email=a@x",
                    "commit-tree", tree, "-p", "main", "-m", "start").strip()
    ref = start_ref("s", "a", 1)
    push_refs(sprint_side, {ref: start}, access)
    fetch_refs(worker_side, [ref], access)
    assert run_git(worker_side.mirror, "rev-parse", ref).strip() == start
    delete_remote_refs(sprint_side, [ref], access)
    assert not run_git(remote, "for-each-ref", "refs/agentfleet")


def test_agentfleet_plan_fetches_a_remote_and_exits_2_when_it_cannot(
    make_repo: MakeRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from agentfleet.cli import main

    monkeypatch.setenv("AGENTFLEET_WORK_DIR", str(tmp_path / "work"))
    remote = _bare(make_repo, tmp_path)
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"name: s\nrepo: file://{remote}\ntasks: [{{id: a, prompt: p}}]\n")
    assert main(["plan", str(plan)]) == 0
    assert f"in file://{remote} (mirror {tmp_path / 'work'}" in capsys.readouterr().out
    plan.write_text(f"name: s\nrepo: file://{tmp_path}/gone.git\ntasks: [{{id: a, prompt: p}}]\n")
    assert main(["plan", str(plan)]) == 2
    err = capsys.readouterr().err
    assert "repo: cloning file://" in err and "gone.git" in err
