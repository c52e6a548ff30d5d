"""The ``apply`` flow: land branches made elsewhere on a target, as a merge queue.

For branches made by hand, by the Codex app's worktree threads or by other tools: each
is checked against the target (``git merge-tree``), applied in the order given with
``on_conflict`` (``resolve`` with a ``resolver`` agent, ``overwrite`` or ``skip``),
verified with ``final_verify`` (a failing stack is bisected), and the target moves by
compare-and-swap; ``push`` then pushes it with a lease. ``repo`` may be a remote (a git
URL or a bare repository): it is fetched into its mirror first, worked on there as a
sprint does, and the moved target is pushed back to it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.states import Completed, Failed
from prefect.task_runners import ThreadPoolTaskRunner

from agentfleet.agent_config import AgentConfig
from agentfleet.attempt import AttemptSpec
from agentfleet.errors import AgentfleetError
from agentfleet.gitcmd import git
from agentfleet.landing import AttemptRequest, LandingPolicy, LandingRequest
from agentfleet.leases import lease_dir
from agentfleet.locks import repo_key
from agentfleet.naming import attempt_branch, is_attempt_branch
from agentfleet.remote import REMOTE_NAME, RemoteRepository, fetch_refs, remote_location
from agentfleet.requests import plain
from agentfleet.results import AttemptResult, SprintReport
from agentfleet.settings import AgentfleetSettings
from agentfleet.standalone import APPLY_SPRINT, apply_start, branch_candidates, check_apply
from flows.embedded import start_embedded_server
from flows.params import apply_run_name
from tasks.abandoned import mend_abandoned, sprint_lock
from tasks.apply import sequential_apply
from tasks.attempt import attempt
from tasks.cache import settle
from tasks.remote import git_access, machine_mirror


# The ignore: Prefect 3.9's own annotation of task_runner rejects its ThreadPoolTaskRunner.
@flow(name="apply", flow_run_name=apply_run_name,
      task_runner=ThreadPoolTaskRunner(max_workers=8))  # type: ignore[arg-type]
def apply(
    repo: str,
    target: str,
    branches: list[str],
    final_verify: str | None = None,
    on_conflict: Literal["resolve", "overwrite", "skip"] = "skip",
    resolver: AgentConfig | None = None,
    on_final_verify_failure: Literal["bisect", "fail"] = "bisect",
    push: str | None = None,
    base: str | None = None,
    concurrency: int = 2,
    verify_timeout_s: float = 1800,
    report: str | None = None,
) -> SprintReport:
    """Apply ``branches`` (in order) onto ``target`` in ``repo``, verify, move, push.

    A ``target`` that does not exist is created from ``base`` (default: ``repo``'s HEAD).

    Args:
        repo: The git repository: a folder on the worker, or a remote (a git URL or a
            bare repository), fetched first and pushed to (the target) after.
        target: The branch to land them on (created from base when it does not exist).
        branches: The branches to apply, in order; each lands its own change.
        final_verify: Shell command run on the result before the target moves.
        on_conflict: What a conflicting branch does: resolve (with resolver), overwrite
            or skip.
        resolver: The agent resolving conflicts (with on_conflict resolve).
        on_final_verify_failure: bisect (eject the breaking branch, land the rest) or fail.
        push: A remote to push the moved target to, leased on its value (a remote repo:
            itself, unless this names another).
        base: Where a target that does not exist starts (default: repo's HEAD).
        concurrency: How many bisection verifications may run at once.
        verify_timeout_s: Seconds final_verify may run.
        report: Also write the report (JSON) to this file on the worker.
    """
    logger = get_run_logger()
    started = time.monotonic()
    check_apply(on_conflict, resolver)
    agent = AgentConfig.model_validate(plain(resolver)) if resolver is not None else None
    settings = AgentfleetSettings()
    remote = _remote(repo, list(branches), logger.info)
    if remote is not None:
        root, push = remote.mirror, push or REMOTE_NAME
    else:
        root = Path(git(Path(repo), "rev-parse", "--show-toplevel").strip())
    worktree_root = settings.worktree_root(repo_key(root), APPLY_SPRINT)
    leases = lease_dir(settings.work_dir, repo_key(root), APPLY_SPRINT)

    def run_resolver(request: AttemptRequest) -> AttemptResult:
        assert agent is not None
        spec = AttemptSpec(
            sprint=APPLY_SPRINT, task_id=request.task_id, attempt=request.attempt,
            branch=attempt_branch(APPLY_SPRINT, request.task_id, request.attempt), repo=root,
            worktree_root=worktree_root, start_sha=request.start_sha, prompt=request.prompt,
            paths=None, agent=agent, verify=final_verify, timeout_s=verify_timeout_s,
            lease_dir=leases, merge=request.merge,
        )  # fmt: skip
        return settle(attempt.submit(spec), spec, logger.info)

    lock = sprint_lock(settings.lock_dir, root, APPLY_SPRINT)
    with lock:
        mend_abandoned(lock, logger.warning)  # an earlier apply's flow run left Running
        base_sha, creating = apply_start(root, target, base)
        if creating:
            logger.info(creating)
        _, order, results = branch_candidates(root, target, list(branches), base)
        landing = sequential_apply(
            LandingRequest(
                repo=root, sprint=APPLY_SPRINT, base_sha=base_sha, target=target, order=order,
                results=results, final_verify=final_verify,
                verify_timeout_s=verify_timeout_s, worktree_root=worktree_root, lease_dir=leases,
                policy=LandingPolicy(
                    default=on_conflict, on_final_verify_failure=on_final_verify_failure,
                    concurrency=concurrency, push=push, mirror=remote is not None,
                ),
            ),
            run_attempt=run_resolver if agent is not None else None,
            remote=remote,
        )  # fmt: skip
        result = SprintReport(
            sprint=APPLY_SPRINT, repo=remote.shown if remote is not None else str(root),
            base=target, target=target, tasks=landing.tasks,
            final_verify=landing.final_verify, target_moved=landing.target_moved,
            target_up_to_date=landing.target_up_to_date, target_sha=landing.target_sha,
            target_note=landing.note or (
                f"{target} created from {base or 'HEAD'} ({base_sha[:10]})"
                if creating and landing.target_moved else ""
            ),
            push_failed=landing.pushed is False,
            duration_s=time.monotonic() - started,
        )  # fmt: skip
        completes, summary = result.flow_end()
        lock.ending(completes, summary)
    if report:
        Path(report).write_text(result.model_dump_json(indent=2) + "\n")
    logger.info("\n" + result.table())
    logger.info(summary)
    if not completes:
        return Failed(message=summary)  # type: ignore[return-value]
    return Completed(message=summary, data=result)  # type: ignore[return-value]


def _remote(repo: str, branches: list[str], log: Callable[[str], None]) -> RemoteRepository | None:
    """A remote ``repo`` fetched into its mirror (with the named attempt branches, which a
    mirror's fetch leaves out), or None for a local repository."""
    location = remote_location(repo, Path.cwd())
    if location is None:
        return None
    remote = RemoteRepository(location=location, mirror=machine_mirror(log)(location, None))
    fetch_refs(remote, [b for b in branches if is_attempt_branch(b)], git_access())
    return remote


def apply_and_report(**parameters: Any) -> SprintReport:
    """Run the flow in this process (``agentfleet apply``) and return its report."""
    check_apply(parameters.get("on_conflict", "skip"), parameters.get("resolver"))
    start_embedded_server()
    with tempfile.TemporaryDirectory(prefix="agentfleet-report-") as tmp:
        path = Path(tmp) / "report.json"
        state = apply(**parameters, report=str(path), return_state=True)
        if path.exists():
            return SprintReport.model_validate_json(path.read_text())
        error = state.result(raise_on_failure=False)
        if isinstance(error, BaseException):
            raise error
        raise AgentfleetError(f"the apply flow ended {state.name} without a report: "
                              f"{state.message}")
