"""A `command` agent (no sandbox) attacking git from its worktree: real git, real processes.

Each test runs the exact attack as the agent's shell command through ``run_attempt`` and
then holds the user's repository to the byte (refs, HEAD, index, reflogs, working tree):
whatever the agent did, agentfleet's own git never acts on another repository.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from agentfleet.agent_config import AgentConfig
from agentfleet.attempt import AttemptSpec, run_attempt
from agentfleet.commit_text import NOTE_LIMIT, agent_note, attempt_message
from agentfleet.gitcmd import AGENTFLEET_IDENTITY
from agentfleet.landing import LandingRequest, land
from agentfleet.masking import Masker
from tests.conftest import run_git

BRANCH = "agentfleet-attempts/s1/t/1"
TAMPERED = "the agent changed the worktree's .git"
ID = "-c user.name=Mallory -c user.email=mallory@example.com"

Snap = Callable[..., dict[str, object]]


@pytest.fixture
def repo(make_repo) -> Path:
    """The user's repository: two commits on main, a file staged, one uncommitted."""
    path = make_repo(files={"README.md": "hello\n", "src/app.py": "print(1)\n"})
    (path / "src" / "app.py").write_text("print(2)\n")
    run_git(path, "commit", "-qam", "second")
    (path / "staged.txt").write_text("staged\n")
    run_git(path, "add", "staged.txt")
    (path / "README.md").write_text("edited, not committed\n")
    return path


def spec(repo: Path, work: Path, run: str, **kw: object) -> AttemptSpec:
    fields: dict[str, object] = dict(
        sprint="s1", task_id="t", attempt=1, branch=BRANCH, repo=repo,
        worktree_root=work / "worktrees" / "repo-key" / "s1",
        start_sha=run_git(repo, "rev-parse", "HEAD").strip(), prompt="do it", paths=None,
        agent=AgentConfig(kind="command", run=run), timeout_s=30, retries=0, grace_s=1,
        lease_dir=work / "leases" / "repo-key" / "s1",
    )  # fmt: skip
    fields.update(kw)
    return AttemptSpec(**fields)  # type: ignore[arg-type]


def attack(repo: Path, work: Path, run: str, **kw: object):
    return run_attempt(spec(repo, work, run, **kw), env=dict(os.environ))


def branch(repo: Path) -> str | None:
    out = run_git(repo, "for-each-ref", "--format=%(objectname)", f"refs/heads/{BRANCH}")
    return out.strip() or None


def assert_nothing_left(work: Path) -> None:
    """No worktree, lease or empty folder of the attempt under the work dir."""
    left = sorted(str(p.relative_to(work)) for p in work.rglob("*")) if work.exists() else []
    assert left in ([], ["leases", "worktrees"]), left


# -- the .git pointer ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "run",
    [
        'echo "gitdir: {repo}/.git" > .git',  # point the worktree at the user's repository
        "rm .git",  # no pointer: git would look upwards
        "rm .git && ln -s {repo}/.git .git",  # the user's .git itself
        "rm .git && git init -q . && echo x > y.txt",  # a repository of its own in place
        "echo 'gitdir: {repo}/.git/worktrees/other' > .git",
    ],
)
def test_a_changed_git_pointer_fails_and_nothing_is_committed_anywhere(
    repo: Path, tmp_path: Path, byte_snapshot: Snap, run: str
) -> None:
    before = byte_snapshot(repo)
    result = attack(repo, tmp_path / "work", "echo pwned > pwned.txt && "
                    + run.format(repo=repo) + " && echo done")
    assert not result.succeeded
    assert result.reason == TAMPERED
    assert result.head_sha is None and branch(repo) is None
    assert byte_snapshot(repo) == before
    assert not (repo / "pwned.txt").exists()
    assert_nothing_left(tmp_path / "work")


def test_deleting_git_inside_an_enclosing_repository_commits_nothing_there(
    make_repo, repo: Path, tmp_path: Path, byte_snapshot: Snap
) -> None:
    # A home folder kept in git, with agentfleet's work dir (~/.cache/agentfleet) inside it.
    home = make_repo(name="home", files={".bashrc": "alias ll='ls -l'\n"})
    work = home / ".cache" / "agentfleet"
    enclosing, user = byte_snapshot(home, skip=(".cache",)), byte_snapshot(repo)

    result = attack(repo, work, "echo new > new.txt && rm .git && echo done")

    assert result.reason == TAMPERED and result.head_sha is None
    assert byte_snapshot(home, skip=(".cache",)) == enclosing
    assert run_git(home, "status", "--porcelain", "--untracked-files=no") == ""
    assert byte_snapshot(repo) == user
    assert branch(repo) is None
    assert_nothing_left(work)


# -- HEAD, refs and commits the agent made ------------------------------------------------


@pytest.mark.parametrize(
    "run",
    [
        f"echo a > a.txt && git add a.txt && git {ID} commit -qm mine "
        "&& git reset -q --soft HEAD~1",
        "echo a > a.txt && git reset -q --soft HEAD~1",  # the branch below the start
        "git switch -q -c other && echo a > a.txt",
        f"git switch -q -c other && echo a > a.txt && git add -A && git {ID} commit -qm x",
        "echo a > a.txt && git checkout -q --detach && git reset -q --soft HEAD~1",
        "echo a > a.txt && git update-ref -d HEAD",  # the attempt branch deleted
        "echo a > a.txt && git symbolic-ref HEAD refs/heads/main",  # HEAD on the user's branch
        # The attempt branch made a symbolic ref: writing through it would move main.
        f"echo a > a.txt && git symbolic-ref refs/heads/{BRANCH} refs/heads/main",
    ],
)
def test_the_files_are_committed_onto_the_start_whatever_head_says(
    repo: Path, tmp_path: Path, byte_snapshot: Snap, run: str
) -> None:
    before = byte_snapshot(repo)
    start = run_git(repo, "rev-parse", "HEAD").strip()
    result = attack(repo, tmp_path / "work", run)

    assert result.succeeded, result.reason
    assert result.files == ["a.txt"]
    assert branch(repo) == result.head_sha
    assert run_git(repo, "rev-parse", f"{result.head_sha}^@").split() == [start]
    assert run_git(repo, "show", f"{BRANCH}:a.txt") == "a\n"
    name, email = AGENTFLEET_IDENTITY
    assert run_git(repo, "log", "-1", "--format=%an <%ae>", BRANCH).strip() == f"{name} <{email}>"
    assert run_git(repo, "branch", "--list", "other") == ""
    assert byte_snapshot(repo) == before
    assert_nothing_left(tmp_path / "work")


def test_a_failed_attempt_deletes_its_branch_never_what_it_was_made_to_name(
    repo: Path, tmp_path: Path, byte_snapshot: Snap
) -> None:
    before = byte_snapshot(repo)
    result = attack(repo, tmp_path / "work",
                    f"git symbolic-ref refs/heads/{BRANCH} refs/heads/main && exit 1")
    assert result.reason.startswith("agent failed_fatal")
    assert branch(repo) is None
    assert byte_snapshot(repo) == before


def test_a_symbolic_ref_the_agent_creates_is_removed_not_its_target(
    repo: Path, tmp_path: Path, byte_snapshot: Snap
) -> None:
    before = byte_snapshot(repo)
    result = attack(repo, tmp_path / "work",
                    "git symbolic-ref refs/heads/alias refs/heads/main && echo a > a.txt")
    assert result.succeeded
    assert result.warnings == [
        "refs created in the repository while the agent ran, removed: refs/heads/alias"
    ]
    assert byte_snapshot(repo) == before


def test_branches_and_tags_the_agent_creates_are_reported_and_removed(
    repo: Path, tmp_path: Path, byte_snapshot: Snap
) -> None:
    before = byte_snapshot(repo)
    result = attack(
        repo, tmp_path / "work",
        "git branch evil && git tag v9 && git tag -a -m m v10 HEAD~1 "
        "&& git update-ref refs/hidden/x HEAD && echo c > c.txt",
    )
    assert result.succeeded, result.reason
    [warning] = result.warnings
    assert warning == (
        "refs created in the repository while the agent ran, removed: "
        "refs/heads/evil, refs/hidden/x, refs/tags/v10, refs/tags/v9"
    )
    assert byte_snapshot(repo) == before  # reflog of evil included


def test_refs_of_other_attempts_and_sprints_are_left_alone(repo: Path, tmp_path: Path) -> None:
    # What concurrent attempts and another sprint's landing create meanwhile.
    result = attack(
        repo, tmp_path / "work",
        "git branch agentfleet-attempts/s1/other/1 && git update-ref refs/agentfleet/scratch/s2 "
        "HEAD && git update-ref -m 'agentfleet: sprint s2' refs/heads/release HEAD "
        "&& echo c > c.txt",
    )
    assert result.succeeded and result.warnings == []
    refs = run_git(repo, "for-each-ref", "--format=%(refname)").split()
    assert {"refs/heads/agentfleet-attempts/s1/other/1", "refs/agentfleet/scratch/s2",
            "refs/heads/release"} <= set(refs)


def test_an_agents_own_commit_is_replaced_by_agentfleets(
    repo: Path, tmp_path: Path, byte_snapshot: Snap
) -> None:
    before = byte_snapshot(repo)
    start = run_git(repo, "rev-parse", "HEAD").strip()
    result = attack(
        repo, tmp_path / "work",
        f"echo d > d.txt && git add d.txt && git {ID} commit -qm 'my own message' "
        "&& echo e > e.txt",
    )
    assert result.succeeded
    assert result.files == ["d.txt", "e.txt"]
    assert run_git(repo, "rev-parse", f"{BRANCH}^").strip() == start
    message = run_git(repo, "log", "-1", "--format=%B", BRANCH)
    assert message.startswith("agentfleet: t (attempt 1)\n\n2 files changed, 2 insertions(+)")
    assert "Mallory" not in run_git(repo, "log", "-1", "--format=%an%ae%cn%ce", BRANCH)
    assert byte_snapshot(repo) == before


# -- nested repositories and submodules ------------------------------------------------------


@pytest.mark.parametrize("commit", [True, False])
def test_a_nested_repository_fails_the_attempt_naming_its_folder(
    repo: Path, tmp_path: Path, byte_snapshot: Snap, commit: bool
) -> None:
    before = byte_snapshot(repo)
    nested = "mkdir -p vendor/lib && cd vendor/lib && git init -q && echo v > v.txt"
    if commit:
        nested += f" && git add . && git {ID} commit -qm v"
    result = attack(repo, tmp_path / "work", f"echo ok > ok.txt && ({nested})")
    assert not result.succeeded
    assert result.reason == (
        "the agent created a nested git repository in vendor/lib: its files are not "
        "committed (remove its .git to commit them as files)"
    )
    assert result.head_sha is None and branch(repo) is None
    assert byte_snapshot(repo) == before


@pytest.fixture
def with_submodule(repo: Path) -> Path:
    """The repository with a submodule at mods/sub (never checked out in a worktree)."""
    sha = run_git(repo, "rev-parse", "HEAD").strip()
    (repo / ".gitmodules").write_text('[submodule "sub"]\n\tpath = mods/sub\n\turl = ../sub\n')
    run_git(repo, "add", ".gitmodules")
    run_git(repo, "update-index", "--add", "--cacheinfo", f"160000,{sha},mods/sub")
    run_git(repo, "commit", "-qm", "submodule")
    return repo


def test_files_in_an_uninitialised_submodule_folder_are_reported(
    with_submodule: Path, tmp_path: Path
) -> None:
    result = attack(with_submodule, tmp_path / "w1", "echo x > mods/sub/file.txt")
    assert result.reason == (
        "files written into the uninitialised submodule folder mods/sub are not committed"
    )
    result = attack(with_submodule, tmp_path / "w2", "echo x > mods/sub/f.txt; echo y > y.txt")
    assert result.succeeded and result.files == ["y.txt"]
    assert result.warnings == [
        "files written into the uninitialised submodule folder mods/sub are not committed"
    ]


# -- symlinks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("run", "link"),
    [("ln -s /etc/passwd pw.txt", "pw.txt"), ("ln -s ../../x src/up.txt", "src/up.txt"),
     ("ln -s .. parent", "parent"), ("ln -s ../.git/config src/cfg", "src/cfg")],
)
def test_a_symlink_out_of_the_repository_fails_the_scope_check(
    repo: Path, tmp_path: Path, byte_snapshot: Snap, run: str, link: str
) -> None:
    before = byte_snapshot(repo)
    result = attack(repo, tmp_path / "work", f"{run} && ln -s ../README.md src/readme.md")
    assert not result.succeeded
    assert result.reason == f"symlink {link} points outside the repository"
    assert result.head_sha is not None  # committed, as for files outside paths: kept to see
    allowed = attack(repo, tmp_path / "work2", run, allow_external_symlinks=True)
    assert allowed.succeeded and allowed.files == [link]
    assert byte_snapshot(repo) == before


def test_symlinks_inside_the_repository_pass(repo: Path, tmp_path: Path) -> None:
    result = attack(repo, tmp_path / "work", "ln -s ../README.md src/r.md && ln -s src s")
    assert result.succeeded and result.files == ["s", "src/r.md"]


# -- what a failed attempt leaves ---------------------------------------------------------------


@pytest.mark.parametrize(("run", "reason"), [
    ("echo x > x.txt; exit 3", "agent failed_fatal"),
    ("true", "the agent changed no file"),
])
def test_a_failed_attempt_that_committed_nothing_keeps_no_branch_and_no_folder(
    repo: Path, tmp_path: Path, run: str, reason: str
) -> None:
    result = attack(repo, tmp_path / "work", run)
    assert result.reason.startswith(reason)
    assert branch(repo) is None
    assert_nothing_left(tmp_path / "work")


# -- the commit message ----------------------------------------------------------------------


def test_the_agents_output_is_masked_and_cut_in_the_commit_message(
    repo: Path, tmp_path: Path
) -> None:
    secret = "sk-sentinel-0123456789"
    run = ("echo a > a.txt && printf 'key=%s %s\\n' \"$MY_API_KEY\" "
           "\"$(head -c 20000 /dev/zero | tr '\\0' y)\"")
    result = run_attempt(
        spec(repo, tmp_path / "work", run), env={**os.environ, "MY_API_KEY": secret}
    )
    assert result.succeeded
    message = run_git(repo, "log", "-1", "--format=%B", BRANCH)
    assert message.startswith(
        "agentfleet: t (attempt 1)\n\n1 file changed, 1 insertion(+)\n\n"
        "The agent's final message:\n\nkey=**** yyy"
    )
    assert secret not in message
    assert len(message.encode()) < NOTE_LIMIT + 300


def test_agent_note_masks_before_it_cuts() -> None:
    secret = "s3cret-value-xyz"
    text = "y" * (NOTE_LIMIT - 5) + secret
    note = agent_note(text, Masker([secret]))
    assert "s3cr" not in note and note.startswith("y" * 100)
    assert agent_note(None, Masker()) == ""
    assert agent_note("a\0b", Masker()) == "ab"
    message = attempt_message("api", 2, " a | 1 +\n 1 file changed, 1 insertion(+)", None,
                              Masker())
    assert message == "agentfleet: api (attempt 2)\n\n1 file changed, 1 insertion(+)"


def test_landing_writes_agentfleets_subject_and_the_masked_note(
    repo: Path, tmp_path: Path
) -> None:
    secret = "sk-sentinel-0123456789"
    env = {**os.environ, "MY_API_KEY": secret}
    attempt = spec(repo, tmp_path / "work", 'echo a > a.txt && echo "used $MY_API_KEY"')
    result = run_attempt(attempt, env=env)
    assert result.succeeded

    landing = land(LandingRequest(
        repo=repo, sprint="s1", base_sha=attempt.start_sha, target="agentfleet/s1",
        order=["t"], results={"t": result}, verify_timeout_s=10,
        worktree_root=tmp_path / "work" / "verify",
    ), env=env)  # fmt: skip

    assert landing.target_moved
    subject, _, body = run_git(repo, "log", "-1", "--format=%B", "agentfleet/s1").partition("\n")
    assert subject == "t: 1 file changed, 1 insertion(+)"
    assert "used ****" in body and secret not in body


@pytest.mark.parametrize("flag", ["--assume-unchanged", "--skip-worktree"])
def test_a_change_hidden_by_index_flags_is_still_committed(
    repo: Path, tmp_path: Path, flag: str
) -> None:
    result = attack(
        repo, tmp_path / "work", f"echo hidden > src/app.py && git update-index {flag} src/app.py"
    )
    assert result.succeeded and result.files == ["src/app.py"]
    assert run_git(repo, "show", f"{BRANCH}:src/app.py") == "hidden\n"


def test_a_garbled_index_does_not_stop_the_commit(repo: Path, tmp_path: Path) -> None:
    # The worktree's index lives in its admin dir: $(git rev-parse --git-dir)/index.
    result = attack(repo, tmp_path / "work",
                    'echo a > a.txt && echo garbage > "$(git rev-parse --git-dir)/index"')
    assert result.succeeded and result.files == ["a.txt"]


def test_a_hook_the_agent_plants_does_not_run_in_agentfleets_git(
    repo: Path, tmp_path: Path
) -> None:
    proof = tmp_path / "hook-ran"
    hook = (f"mkdir -p {repo}/.git/hooks && printf '#!/bin/sh\\ntouch {proof}\\n' "
            f"> {repo}/.git/hooks/reference-transaction && "
            f"chmod +x {repo}/.git/hooks/reference-transaction")
    result = attack(repo, tmp_path / "work", f"{hook} && echo a > a.txt")
    assert result.succeeded
    assert not proof.exists()
