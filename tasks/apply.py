"""The Prefect task that lands the winners on the target (``agentfleet.landing``)."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from agentfleet.errors import GitError
from agentfleet.landing import Landing, LandingRequest, RunAttempt, conflict_rows, land
from agentfleet.masking import Masker, mask_model
from agentfleet.remote import RemoteRepository, fetch_refs
from agentfleet.verified import VerifiedTrees
from tasks.observe import conflicts_predicted
from tasks.remote import remote_access
from tasks.runtime import agent_env, run_control


# NO_CACHE: run_attempt is a callable (no input to hash), and landing is never reused.
@task(name="sequential-apply", cache_policy=NO_CACHE)
def sequential_apply(
    request: LandingRequest,
    *,
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
    if remote is not None:
        # The mirror follows its remote: a target someone pushed to while the agents worked
        # is landed on as it is now, not refused at the push (their commits stay below).
        try:
            fetch_refs(remote, [request.target], access)
        except GitError as exc:
            if "couldn't find remote ref" not in str(exc):  # else: a target made by this run
                logger.warning(f"{request.target} not fetched again from {remote.shown} "
                               f"before landing: {exc}")
    verified = None
    if verified_dir is not None:
        verified = VerifiedTrees(verified_dir, env, run=f"flow run {flow_run.id}",
                                 reuse=reuse_verified)
    landing = land(request, env=env, log=logger.info, cancel=run_control().cancel,
                   run_attempt=run_attempt, remote_env=access.env, verified=verified)
    conflicts_predicted(request.sprint, conflict_rows(landing))
    # final_verify's output goes into the report and the console: no secret of its env.
    return mask_model(landing, Masker([*Masker.from_env(env).values, *access.secrets]),
                      keep=("tasks",))
