"""The Prefect task that runs one attempt: thin, the work is in ``agentfleet.attempt``."""

from __future__ import annotations

import logging

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed, State

from agentfleet.attempt import AttemptSpec, run_attempt
from agentfleet.codex.lines import LineCap, describe
from agentfleet.control import EARLY_STOP
from agentfleet.masking import Masker, mask_model
from agentfleet.metering.sprint import SprintMeter
from agentfleet.process import tracked_in
from agentfleet.start_ahead import Gate
from blocks.agent import agent_secret_env
from tasks.cache import cache_key, cached_state, finished, lookup
from tasks.limits import metered_spec, skipped, with_metered_usage
from tasks.observe import attempt_finished
from tasks.runtime import agent_env, attempt_control, run_control


class AttemptLog:
    """An attempt's log: every line starts ``<task>#<k>:`` and is masked; agent lines capped.

    ``prefect flow-run logs`` shows no task run names, so the prefix says whose line it is.
    """

    def __init__(
        self, logger: logging.Logger | logging.LoggerAdapter, spec: AttemptSpec, mask: Masker
    ) -> None:
        self.logger = logger
        self.prefix = f"{spec.task_id}#{spec.attempt}: "
        self.mask = mask
        self.cap = LineCap()

    def info(self, message: str) -> None:
        """One line of agentfleet's own (never capped)."""
        self.logger.info(self.prefix + self.mask(message))

    def warning(self, message: str) -> None:
        """One warning of agentfleet's own."""
        self.logger.warning(self.prefix + self.mask(message))

    def agent(self, line: str) -> None:
        """One line of what the agent did or printed, within the cap."""
        for shown in self.cap.admit(line):
            self.info(shown)

    def close(self) -> None:
        """Say how many agent lines the cap left out at the end."""
        for shown in self.cap.close():
            self.info(shown)


def sprint_metered(meter: object, name: str) -> SprintMeter | None:
    """The sprint's metering proxy when attempt ``name``'s Codex agent is routed through it
    here; None elsewhere (a pool's worker, whose sprint holds the ledger, or unmetered)."""
    return meter if isinstance(meter, SprintMeter) and meter.metered(name) else None


def held_start_gate(meter: SprintMeter | None, name: str) -> Gate | None:
    """Attempt ``name``'s gate on the sprint's metering proxy, for a start ahead of its
    agent slot; None when it is not metered here."""
    if meter is None:
        return None
    gates = meter.proxy.start_gates
    return Gate(hold=lambda: gates.hold(name), open=lambda: gates.open(name),
                shut=lambda: gates.shut(name), arrived=lambda: gates.arrived(name))


@task(
    name="attempt",
    task_run_name="{spec.task_id}#{spec.attempt}",
    # Reused across runs when nothing that decides the result changed: the task looks its
    # key up and stores its result itself (tasks/cache.py), so a cached failure stays
    # Failed. JSON keeps the persisted results readable and independent of pickle versions.
    cache_policy=NO_CACHE,
    persist_result=False,
    result_serializer="json",
)
def attempt(spec: AttemptSpec, agent_version: str | None = None) -> State:
    """One agent attempt in its own worktree, logged line by line as it happens.

    ``agent_version`` (``codex --version``, found once per run) is only part of the cache key.
    """
    key = cache_key(spec, agent_version)
    cached = lookup(key)
    if cached is not None:
        return cached_state(cached)
    # Which task and attempt this is: a `command` agent (or verify, score) may act on it.
    # The agent block's key joins it only now: never a parameter, a cache key or a result.
    env = agent_env(agent_secret_env(spec.agent_block),
                    {**spec.agent.env, "AGENTFLEET_TASK": spec.task_id,
                     "AGENTFLEET_ATTEMPT": str(spec.attempt)})
    log = AttemptLog(get_run_logger(), spec, Masker.from_env(env))

    def on_event(event: object) -> None:
        line = describe(event, spec.worktree_root)
        if line:
            log.agent(line)

    name = f"{spec.task_id}#{spec.attempt}"
    control = attempt_control(name)
    run = run_control()
    if run.meter is not None and (spent := run.meter.sprint_spent()):
        return skipped(spec, f"skipped: {spent}", log.warning)
    # A Codex agent's requests go through the sprint's metering proxy, for this run only.
    ran = metered_spec(spec, run.meter, name, env, log.info)
    metered_here = sprint_metered(run.meter, name)
    gate = held_start_gate(metered_here, name)
    with tracked_in(control.processes):
        result = run_attempt(ran, env=env, on_event=on_event, log=log.info,
                             cancel=control.cancel, guards=run.guards, ahead=run.ahead,
                             gate=gate)
    # On a worker (a HandedRoute) the sprint, which holds the ledger, puts in the proxy's count.
    if metered_here is not None:
        result = with_metered_usage(result, metered_here, name, log.warning)
    log.close()
    # What the agent printed or said may hold a secret of its environment: masked before
    # it is logged, published, persisted or reported.
    result = mask_model(result, log.mask, keep=("patch",))
    if result.succeeded:
        log.info(
            f"succeeded: {len(result.files)} files, {result.tokens:,} tokens, "
            f"{result.duration_s:.1f}s, branch {result.branch}"
        )
    elif control.stopped and control.reason == EARLY_STOP:
        # A sibling passed first: what this one did is neither its failure nor reusable.
        result.reason = f"stopped: {EARLY_STOP}"
        log.info(result.reason)
        attempt_finished(spec, result)
        return Failed(data=result, message=f"{result.reason} (not cached)")
    else:
        log.warning(f"failed: {result.reason}")
    attempt_finished(spec, result)
    return finished(spec, result, key, log.warning)
