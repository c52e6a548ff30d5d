"""``apply``, ``best-of-n`` and ``decompose`` on a remote repository, as ``run`` takes it.

The remote is a real bare repository in a tmp dir, named by a ``file://`` URL or by its
folder; each command fetches it into its mirror under the work dir first and pushes
back what ``run`` would push (the moved target, the attempt branches).
"""

from __future__ import annotations

from pathlib import Path

from agentfleet.remote import mirror_path
from agentfleet.results import SprintReport
from flows.apply import apply
from tests.conftest import MakeRepo, bare_remote, files_at, run_git
from tests.integration.test_best_of_n import ROOT, K, agentfleet


def test_the_apply_flow_fetches_a_file_url_first_and_pushes_the_target_back(
    harness: None, make_repo: MakeRepo, tmp_path: Path, work_dir: Path
) -> None:
    remote = bare_remote(make_repo, tmp_path, {"one": "one.txt", "two": "two.txt"})
    url = f"file://{remote}"
    state = apply(repo=url, target="release", branches=["one", "two"],
                  final_verify="test -f one.txt", return_state=True)
    assert state.is_completed(), state.message
    report = state.result()
    assert report.repo == url and report.target_moved
    assert files_at(remote, "release") == {"README.md", "one.txt", "two.txt"}
    # It worked in its bare mirror under the work dir, never in the remote itself.
    mirror = mirror_path(work_dir, url)
    assert run_git(mirror, "rev-parse", "release") == run_git(remote, "rev-parse", "release")

    # Someone pushes another branch: the next apply fetches it before landing.
    other = tmp_path / "other"
    run_git(tmp_path, "clone", "-q", url, str(other))
    run_git(other, "switch", "-q", "-c", "three")
    (other / "three.txt").write_text("three\n")
    run_git(other, "add", "-A")
    run_git(other, "-c", "user.name=Other", "-c", "user.email=other@example.com",
            "commit", "-q", "-m", "three")
    run_git(other, "push", "-q", "origin", "three")
    state = apply(repo=url, target="release", branches=["three"], return_state=True)
    assert state.is_completed(), state.message
    assert files_at(remote, "release") == {"README.md", "one.txt", "two.txt", "three.txt"}


def test_a_push_refused_by_a_teammate_s_push_says_to_apply_again(
    harness: None, make_repo: MakeRepo, tmp_path: Path
) -> None:
    remote = bare_remote(make_repo, tmp_path, {"one": "one.txt"})
    run_git(remote, "branch", "release", "main")
    clone = tmp_path / "clone"
    run_git(tmp_path, "clone", "-q", "-b", "release", str(remote), str(clone))
    (clone / "theirs.txt").write_text("theirs\n")
    run_git(clone, "add", "-A")
    run_git(clone, "-c", "user.name=U", "-c", "user.email=u@x", "commit", "-qm", "theirs")
    # The teammate pushes while final_verify runs: after the fetch, before the push.
    push = f"git -C {clone} push -q origin release"
    written = tmp_path / "report.json"
    state = apply(repo=f"file://{remote}", target="release", branches=["one"],
                  final_verify=push, report=str(written), return_state=True)
    assert state.is_failed()  # the target is not where it was asked for
    report = SprintReport.model_validate_json(written.read_text())
    assert report.push_failed and report.target_moved, report.target_note
    assert files_at(remote, "release") == {"README.md", "theirs.txt"}  # theirs stays
    # The mirror is agentfleet's: running the apply again is the whole remedy.
    assert ("Run `agentfleet apply` with the same branches again: it lands on release as "
            "it is there now") in report.target_note
    assert "rebase" not in report.target_note
    state = apply(repo=f"file://{remote}", target="release", branches=["one"],
                  return_state=True)
    assert state.is_completed(), state.message
    assert files_at(remote, "release") == {"README.md", "one.txt", "theirs.txt"}


def test_the_commands_take_a_remote_repo_as_run_does(
    harness: None, make_repo: MakeRepo, tmp_path: Path
) -> None:
    remote = bare_remote(make_repo, tmp_path, {"one": "one.txt"})
    work, storage = tmp_path / "work", tmp_path / "results"

    # apply --repo: a bare repository's folder.
    done = agentfleet("apply", "--repo", str(remote), "--target", "release", "one",
                      cwd=ROOT, work=work, storage=storage)
    assert done.returncode == 0, done.stdout + done.stderr
    assert files_at(remote, "release") == {"README.md", "one.txt"}

    # best-of-n --repo: a file:// URL. Without a target nothing lands; the candidates'
    # branches are pushed to the remote, where the winner's is looked at.
    url = f"file://{remote}"
    done = agentfleet("best-of-n", "write n", "--repo", url, "--attempts", "2",
                      "--run", f"echo {K} > n.txt", "--score", "cat n.txt",
                      "--score-goal", "max", "--paths", "n.txt",
                      cwd=ROOT, work=work, storage=storage)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("winner: k=2 agentfleet-attempts/best-of-n/task/2")
    assert run_git(remote, "show", "agentfleet-attempts/best-of-n/task/2:n.txt") == "2\n"
    assert run_git(remote, "branch", "--list", "agentfleet/*") == ""
    # With a target, the winner lands there and the target is pushed.
    done = agentfleet("best-of-n", "write n", "--repo", url, "--attempts", "1",
                      "--run", f"echo {K} > n.txt", "--paths", "n.txt", "--target", "landed",
                      "--name", "landing", cwd=ROOT, work=work, storage=storage)
    assert done.returncode == 0, done.stdout + done.stderr
    assert run_git(remote, "show", "landed:n.txt") == "1\n"

    # decompose --repo: the URL is fetched and checked before the planner costs a token.
    done = agentfleet("decompose", "split it", "--repo", url, "--base", "nosuch",
                      cwd=ROOT, work=work, storage=storage)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "nosuch" in done.stderr and "not a git repository" not in done.stderr, done.stderr
    assert (mirror_path(work, url) / "HEAD").is_file()
