"""The Prefect task that lands the winners on the target (``agentfleet.landing``)."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from agentfleet.landing import Landing, LandingPolicy, RunAttempt, conflict_rows, land
from agentfleet.masking import Masker, mask_model
from agentfleet.remote import RemoteRepository
from agentfleet.results import AttemptResult
from agentfleet.verified import VerifiedTrees
from tasks.observe import conflicts_predicted
from tasks.remote import remote_access
from tasks.runtime import agent_env, run_control


# NO_CACHE: run_attempt is a callable (no input to hash), and landing is never reused.
@task(name="sequential-apply", cache_policy=NO_CACHE)
def sequential_apply(
    *,
    repo: Path,
    sprint: str,
    base_sha: str,
    target: str,
    order: list[str],
    results: dict[str, AttemptResult],
    blocked_by: dict[str, list[str]],
    final_verify: str | None,
    verify_timeout_s: float,
    worktree_root: Path,
    redo: list[str] | None = None,
    prompts: dict[str, str] | None = None,
    lease_dir: Path | None = None,
    policy: LandingPolicy | None = None,
    depends_on: dict[str, list[str]] | None = None,
    run_attempt: RunAttempt | None = None,
    remote: RemoteRepository | None = None,
    verified_dir: Path | None = None,
    reuse_verified: bool = True,
) -> Landing:
    """Apply results in apply order onto a scratch ref, verify, move the target.

    ``remote``: the repository is its mirror; git reaches it with its token, if any.
    ``verified_dir``: where passing ``final_verify`` runs are recorded, and with
    ``reuse_verified`` found again: a tree that passed in the same environment is not
    verified twice (``agentfleet.verified``). None: always verify, record nothing.
    """
    logger = get_run_logger()
    env = agent_env({}, {})
    access = remote_access(remote)
    verified = None
    if verified_dir is not None:
        verified = VerifiedTrees(verified_dir, env, run=f"flow run {flow_run.id}",
                                 reuse=reuse_verified)
    landing = land(
        repo=repo,
        sprint=sprint,
        base_sha=base_sha,
        target=target,
        order=order,
        results=results,
        blocked_by=blocked_by,
        final_verify=final_verify,
        verify_timeout_s=verify_timeout_s,
        worktree_root=worktree_root,
        env=env,
        log=logger.info,
        cancel=run_control().cancel,
        redo=redo or [],
        prompts=prompts,
        lease_dir=lease_dir,
        policy=policy,
        depends_on=depends_on,
        run_attempt=run_attempt,
        remote_env=access.env,
        verified=verified,
    )
    conflicts_predicted(sprint, conflict_rows(landing))
    # final_verify's output goes into the report and the console: no secret of its env.
    return mask_model(landing, Masker([*Masker.from_env(env).values, *access.secrets]),
                      keep=("tasks",))
