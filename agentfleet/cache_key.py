"""What decides an attempt's result, as one cache key; and which results may be reused.

Pure: the tree an attempt starts from and the agent's version are looked up at the
edge (``tasks/cache.py``) and passed in. The key holds the prompt as sent (with the
context of the tasks it waited for), the start **tree** (not the start commit: the
start commit of a waiting task is rebuilt each run with new dates), ``setup``,
``verify``, ``paths``, the agent's configuration with the *names* of its extra
environment variables only (never their values: they may be secrets, and a hash of a
short secret can be brute-forced), the agent's version and the attempt number.

Left out on purpose: the repository's location (a sprint may resume on another
machine that shares the result storage), timeouts and retry counts (they decide
only failures, and those that depend on them are never cached).
"""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel

from agentfleet.attempt import AttemptSpec
from agentfleet.results import AttemptResult

# Bump when the meaning of a cached result changes, so that old ones are not reused.
# 2: commits hold the worktree's files on the start (not the agent's HEAD), agentfleet's
# message, and the scope check refuses symlinks out of the repository.
KEY_VERSION = 2


class AttemptKey(BaseModel):
    """The parts of an attempt's cache key, in the clear (no secrets among them)."""

    version: int = KEY_VERSION
    sprint: str
    task_id: str
    attempt: int
    branch: str
    prompt: str
    start_tree: str
    paths: list[str] | None
    allow_external_symlinks: bool
    setup: str | None
    verify: str | None
    agent_kind: str
    agent_model: str | None
    agent_sandbox: str
    agent_profile: str | None
    agent_run: str | None
    agent_config: dict[str, str | int | float | bool]
    agent_env_names: list[str]
    agent_version: str | None
    score: str | None = None  # in the key only when set: keys of plans without it stay
    # A resolver's merge in progress (only when set): the merged commit's tree, the merge
    # base's tree, how the markers name it and the conflicting files.
    merge: list[str] | None = None


def key_parts(
    spec: AttemptSpec, start_tree: str, agent_version: str | None,
    merge_trees: tuple[str, str] | None = None,
) -> AttemptKey:
    """Everything that decides ``spec``'s result; ``agent_version`` counts for Codex only.

    ``merge_trees``: with ``spec.merge``, the trees of the merged commit and the merge base.
    """
    agent = spec.agent
    codex = agent.kind == "codex"
    return AttemptKey(
        sprint=spec.sprint,
        task_id=spec.task_id,
        attempt=spec.attempt,
        branch=spec.branch,
        prompt=spec.prompt,
        start_tree=start_tree,
        paths=spec.paths,
        allow_external_symlinks=spec.allow_external_symlinks,
        setup=spec.setup,
        verify=spec.verify,
        agent_kind=agent.kind,
        # A command agent ignores Codex's settings; they must not split its cache.
        agent_model=agent.model if codex else None,
        agent_sandbox=agent.sandbox if codex else "",
        agent_profile=agent.profile if codex else None,
        agent_run=agent.run if not codex else None,
        agent_config=dict(agent.config) if codex else {},
        agent_env_names=sorted(agent.env),
        agent_version=agent_version if codex else None,
        score=spec.score,
        merge=(
            [*merge_trees, spec.merge.label, *spec.merge.files]
            if spec.merge is not None and merge_trees is not None else None
        ),
    )


def attempt_key(
    spec: AttemptSpec, start_tree: str, agent_version: str | None,
    merge_trees: tuple[str, str] | None = None,
) -> str:
    """The cache key of an attempt: a SHA-256 over its parts, in canonical JSON."""
    key = key_parts(spec, start_tree, agent_version, merge_trees)
    # Parts added later are in the key only when set: older keys stay valid.
    unset = {name for name in ("score", "merge") if getattr(key, name) is None}
    parts = key.model_dump(mode="json", exclude=unset or None)
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "attempt-" + hashlib.sha256(canonical.encode()).hexdigest()


def is_cacheable(result: AttemptResult) -> bool:
    """Whether a result may stand in for running the attempt again.

    Cached: a success, and failures that the inputs decide once the agent finished its
    turn (verify failed on its own, files outside ``paths``, no file changed). Running
    those again would spend the same tokens to land, most likely, in the same place;
    edit the prompt or the check, or pass ``--no-cache``, to try again. Not cached:
    what chance or the machine decided (setup failed, the model or network failed, a
    timeout, an interrupt, a check killed or timed out): the next run tries afresh.
    """
    if result.succeeded:
        return True
    if result.outcome is None or not result.outcome.ok:
        return False
    if result.verify is not None and not result.verify.passed:
        return result.verify.exit_status is not None and not result.verify.timed_out
    return True
