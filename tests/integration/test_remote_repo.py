"""Sprints on a remote repository (``file://`` URL or a bare repository's folder).

The remote is a real bare repository in a tmp dir; agentfleet works in its own mirror
under the work dir and pushes the target and the applied attempt branches back.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from agentfleet.remote import mirror_path
from agentfleet.results import TaskOutcome
from tests.conftest import MakeRepo, bare_remote, files_at, run_git
from tests.integration.conftest import command, run_sprint


def test_a_sprint_on_a_file_url_lands_and_pushes_to_the_remote(
    harness: None, make_repo: MakeRepo, tmp_path: Path, work_dir: Path
) -> None:
    remote = bare_remote(make_repo, tmp_path)
    url = f"file://{remote}"
    plan = {
        "name": "far", "repo": url,
        "tasks": [command("alpha", "echo a > alpha.txt", paths=["alpha.txt"]),
                  command("beta", "echo b > beta.txt", paths=["beta.txt"])],
    }
    completed, report = run_sprint(tmp_path, plan)
    assert completed, report.summary_line()
    assert report.repo == url and report.target_moved
    # The remote's own target holds both, on top of the remote's main.
    assert files_at(remote, "agentfleet/far") == {"README.md", "alpha.txt", "beta.txt"}
    main = run_git(remote, "rev-parse", "main").strip()
    run_git(remote, "merge-base", "--is-ancestor", main, "agentfleet/far")
    pushed = run_git(remote, "for-each-ref", "--format=%(refname)",
                     "refs/heads/agentfleet-attempts")
    assert set(pushed.split()) == {"refs/heads/agentfleet-attempts/far/alpha/1",
                                   "refs/heads/agentfleet-attempts/far/beta/1"}
    # The work happened in the mirror under the work dir, with no worktree left in it.
    mirror = mirror_path(work_dir, url)
    assert run_git(mirror, "rev-parse", "--is-bare-repository").strip() == "true"
    assert len(run_git(mirror, "worktree", "list").splitlines()) == 1

    # Another machine (a fresh work dir) finds both on the remote's target: nothing runs.
    shutil.rmtree(work_dir)
    completed, again = run_sprint(tmp_path, plan)
    assert completed, again.summary_line()
    assert {t.outcome for t in again.tasks} == {TaskOutcome.ALREADY_APPLIED}


def test_the_run_form_s_repository_block_may_name_a_remote(
    harness: None, make_repo: MakeRepo, tmp_path: Path, work_dir: Path
) -> None:
    import flows.sprint as sprint_module
    from agentfleet.results import SprintReport
    from blocks.repository import RepositoryBlock

    remote = bare_remote(make_repo, tmp_path)
    RepositoryBlock(url=f"file://{remote}").save("far-remote", overwrite=True)
    report = tmp_path / "report.json"
    # As the UI's form sends it: the plan as data, the repository as a saved block.
    state = sprint_module.sprint(
        plan={"name": "formed", "agent": {"kind": "command"},
              "tasks": [command("alpha", "echo a > alpha.txt", paths=["alpha.txt"])]},
        repository={"block": "far-remote"}, report=str(report), no_cache=True,
        return_state=True,
    )
    assert state.is_completed(), state.message
    assert SprintReport.model_validate_json(report.read_text()).target_moved
    assert files_at(remote, "agentfleet/formed") == {"README.md", "alpha.txt"}


def test_a_bare_repository_folder_is_a_remote_and_each_run_fetches_first(
    harness: None, make_repo: MakeRepo, tmp_path: Path, work_dir: Path
) -> None:
    remote = bare_remote(make_repo, tmp_path)
    plan = {"name": "near", "repo": "remote.git", "target": "landed",
            "tasks": [command("alpha", "cat base.txt > alpha.txt", paths=["alpha.txt"])]}
    # Someone pushes to the remote's main: the run starts from it, not from a stale copy.
    clone = tmp_path / "clone"
    run_git(tmp_path, "clone", "-q", str(remote), str(clone))
    (clone / "base.txt").write_text("new base\n")
    run_git(clone, "add", "-A")
    run_git(clone, "-c", "user.name=U", "-c", "user.email=u@x", "commit", "-qm", "base")
    run_git(clone, "push", "-q", "origin", "main")
    completed, report = run_sprint(tmp_path, plan)
    assert completed, report.summary_line()
    assert run_git(remote, "show", "landed:alpha.txt") == "new base\n"
    assert report.repo == str(remote)

    # The remote's target moves meanwhile (another push): the next run lands on top of it.
    run_git(clone, "fetch", "-q", "origin", "landed:landed")
    run_git(clone, "switch", "-q", "landed")
    (clone / "theirs.txt").write_text("theirs\n")
    run_git(clone, "add", "-A")
    run_git(clone, "-c", "user.name=U", "-c", "user.email=u@x", "commit", "-qm", "theirs")
    run_git(clone, "push", "-q", "origin", "landed")
    plan["tasks"].append(command("beta", "echo b > beta.txt", paths=["beta.txt"]))
    completed, report = run_sprint(tmp_path, plan)
    assert completed, report.summary_line()
    outcomes = {t.task: t.outcome for t in report.tasks}
    assert outcomes == {"alpha": TaskOutcome.ALREADY_APPLIED, "beta": TaskOutcome.APPLIED}
    assert files_at(remote, "landed") >= {"alpha.txt", "beta.txt", "theirs.txt"}


def test_a_target_someone_pushes_to_during_the_sprint_is_landed_on_in_the_same_run(
    harness: None, make_repo: MakeRepo, tmp_path: Path, work_dir: Path
) -> None:
    remote = bare_remote(make_repo, tmp_path)
    clone = tmp_path / "clone"
    run_git(tmp_path, "clone", "-q", str(remote), str(clone))
    (clone / "theirs.txt").write_text("theirs\n")
    run_git(clone, "add", "-A")
    run_git(clone, "-c", "user.name=U", "-c", "user.email=u@x", "commit", "-qm", "theirs")
    # A teammate's push to the target lands while the agent works (after the run's fetch).
    push = f"git -C {clone} push -q origin HEAD:refs/heads/main"
    plan = {"name": "raced", "repo": f"file://{remote}", "target": "main",
            "tasks": [command("alpha", f"{push} && echo a > alpha.txt", paths=["alpha.txt"])]}
    completed, report = run_sprint(tmp_path, plan)
    assert completed, report.summary_line()
    assert report.target_moved and not report.push_failed
    assert files_at(remote, "main") == {"README.md", "alpha.txt", "theirs.txt"}
    theirs = run_git(clone, "rev-parse", "HEAD").strip()
    run_git(remote, "merge-base", "--is-ancestor", theirs, "main")  # kept, below ours


def _pool_plan(make_repo: MakeRepo, tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A bare remote and a one-task ``placement: pool`` plan on it: (remote, plan file)."""
    remote = bare_remote(make_repo, tmp_path)
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "repo": f"file://{remote}", "placement": "pool",
        "agent": {"kind": "command"},
        "tasks": [command("alpha", "echo a > alpha.txt", paths=["alpha.txt"])],
    }))
    return remote, path


def test_a_pool_sprint_without_the_attempt_deployment_says_how_to_deploy_it(
    harness: None, make_repo: MakeRepo, tmp_path: Path, work_dir: Path
) -> None:
    import flows.sprint as sprint_module
    from agentfleet.errors import ConfigError

    remote, path = _pool_plan(make_repo, tmp_path, "pooled")
    with pytest.raises(ConfigError, match="needs the deployment 'attempt/attempt'"):
        sprint_module.run_and_report(path, report=None, no_cache=True)
    assert "agentfleet/pooled" not in run_git(remote, "branch", "--list")


def test_agentfleet_run_without_the_attempt_deployment_says_so_before_any_flow_run(
    harness: None, make_repo: MakeRepo, tmp_path: Path, work_dir: Path,
    capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from agentfleet import cli

    remote, path = _pool_plan(make_repo, tmp_path, "pooled-cli")
    assert cli.main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "error: placement: pool needs the deployment 'attempt/attempt'" in err
    assert "Traceback" not in err
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=["sprint pooled-cli"])))
    assert runs == []
    assert "agentfleet/pooled-cli" not in run_git(remote, "branch", "--list")


def test_a_pool_no_worker_polls_or_a_paused_one_is_told_before_the_runs_wait(
    harness: None,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate

    from tasks.pool import check_attempt_deployment

    pool = "attempts-nobody-polls"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        flow_id = client.create_flow_from_name("attempt")
        deployment = client.create_deployment(flow_id=flow_id, name="attempt",
                                              work_pool_name=pool)
        try:
            assert check_attempt_deployment(pool) == (
                f"no worker polls work pool '{pool}': the attempts' flow runs wait until one "
                f"does (`agentfleet worker --pool {pool}`, or Prefect's worker of the pool's "
                "type)")
            client.send_worker_heartbeat(pool, "a-worker")  # as a polling worker does
            assert check_attempt_deployment(pool) is None
            client.update_work_pool(pool, WorkPoolUpdate(is_paused=True))
            assert check_attempt_deployment(pool) == (
                f"work pool '{pool}' is paused: the attempts' flow runs wait until it is "
                f"resumed (`prefect work-pool resume {pool}`)")
        finally:  # the harness serves the other tests, which have no attempt deployment
            client.delete_deployment(deployment)
            client.delete_work_pool(pool)


def test_a_repository_block_s_token_is_handed_to_git_and_masked(
    harness: None, tmp_path: Path
) -> None:
    from agentfleet.remote import RemoteRepository
    from blocks.repository import RepositoryBlock
    from tasks.remote import remote_access

    token = "ghp_integration0token0value0123"
    url = "https://git.example.com/acme/orders.git"
    RepositoryBlock(url=url, token=token).save("orders-remote", overwrite=True)
    access = remote_access(RemoteRepository(location=url, mirror=tmp_path, block="orders-remote"))
    header = next(v for k, v in access.env.items() if k.startswith("GIT_CONFIG_VALUE_")
                  and v.startswith("Authorization:"))
    assert token not in header  # base64 of user:token, scoped to the URL's origin
    assert any(v == "http.https://git.example.com/.extraHeader" for v in access.env.values())
    assert access.mask(f"said {token} and {header.split()[-1]}") == "said **** and ****"
    # Without a block: the machine's own credentials, and git never prompts.
    plain = remote_access(RemoteRepository(location=url, mirror=tmp_path))
    assert plain.env["GIT_TERMINAL_PROMPT"] == "0" and not plain.secrets


def test_a_remote_behind_a_token_is_fetched_with_its_repository_block(
    harness: None, make_repo: MakeRepo, tmp_path: Path, work_dir: Path
) -> None:
    from agentfleet.errors import GitError
    from blocks.repository import RepositoryBlock
    from tasks.remote import machine_mirror
    from tests.support.git_http import git_http_server

    token = "glpat-integration0token0value0"
    served = tmp_path / "served"
    served.mkdir()
    run_git(tmp_path, "clone", "-q", "--bare", str(make_repo("seed")), str(served / "o.git"))
    with git_http_server(served, token) as server:
        url = server.url("o.git")
        RepositoryBlock(url=url, token=token).save("orders-http", overwrite=True)
        with pytest.raises(GitError, match="no credentials"):
            machine_mirror()(url, None)  # the machine's own credentials: none here
        mirror = machine_mirror()(url, "orders-http")
    assert mirror.is_relative_to(work_dir)
    assert run_git(mirror, "config", "remote.origin.url").strip() == url
    assert token not in (mirror / "config").read_text()
