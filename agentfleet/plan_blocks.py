"""A plan's saved Blocks put in place before the plan is checked.

``agent: {block: team-codex, model: x}`` becomes the agent the block and the plan make
together (settings < block < plan; tasks still override it as usual), and
``repo: {block: orders-service}`` becomes the block's folder, its ``base_branch`` the
plan's ``base`` unless the plan says one. The checked plan then holds plain values;
what a block contributes beyond them (the Codex path, and the name of the block whose
secret the agent gets in its environment) is kept in ``PlanBlocks``.

Prefect-free: the edge passes the loaders (``BlockLoaders``); a block that cannot be
loaded is a plan problem naming the key and the block.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentfleet.block_refs import (
    AGENT_BLOCK_TYPE,
    REPOSITORY_BLOCK_TYPE,
    AgentBlockRef,
    AgentLoader,
    RepositoryBlockRef,
    RepositoryLoader,
    block_name_problem,
    load_agent_profile,
    load_repository_source,
    merge_layers,
    settings_layer,
)
from agentfleet.errors import ConfigError
from agentfleet.settings import AgentfleetSettings


@dataclass(frozen=True)
class BlockLoaders:
    """How the edge loads saved blocks, and the machine's settings (the lowest layer)."""

    agent: AgentLoader | None = None
    repository: RepositoryLoader | None = None
    settings: AgentfleetSettings | None = None


@dataclass(frozen=True)
class PlanBlocks:
    """What a plan's blocks add to its checked values. Names only, never a secret."""

    agent_block: str | None = None  # the agentfleet-agent block whose secrets agents get
    codex_path: Path | None = None  # the agent block's (above AGENTFLEET_CODEX_PATH)
    secret_env_names: tuple[str, ...] = ()
    repository_block: str | None = None


@dataclass
class Resolved:
    """A plan's data with its blocks in place, what they add, and what went wrong."""

    raw: dict[str, Any]
    blocks: PlanBlocks = field(default_factory=PlanBlocks)
    problems: list[tuple[str, str]] = field(default_factory=list)


def _named_block(value: Any) -> str | None:
    """The block a ``{block: NAME, ...}`` mapping names (None: not such a mapping)."""
    if isinstance(value, Mapping) and "block" in value:
        return value["block"] if isinstance(value["block"], str) else repr(value["block"])
    return None


def load_block_values(
    name: str, key: str, block_type: str, load: Any
) -> tuple[Any, tuple[str, str] | None]:
    """A named block's plain values (``AgentProfile`` or ``RepositorySource``, by
    ``block_type``) through ``load``, or the problem: (``key``, message)."""
    problem = block_name_problem(name)
    if problem:
        return None, (key, problem)
    if load is None:
        return None, (key, f"names the saved {block_type} block {name!r}, but no Prefect "
                           "server is at hand to load it from")
    try:
        if block_type == AGENT_BLOCK_TYPE:
            return load_agent_profile(AgentBlockRef(block=name), load), None
        return load_repository_source(RepositoryBlockRef(block=name), load), None
    except ConfigError as exc:
        # The loader's message starts with its own key ("agent.block: ..."): ours instead.
        return None, (key, str(exc).split(": ", 1)[-1])


def resolve_plan_blocks(raw: Mapping[str, Any], loaders: BlockLoaders | None) -> Resolved:
    """``raw`` with the blocks it names loaded and their values in place (see the module)."""
    loaders = loaders or BlockLoaders()
    out = Resolved(raw=dict(raw))
    blocks: dict[str, Any] = {}
    settings = loaders.settings
    agent = raw.get("agent")
    agent_name = _named_block(agent)
    if agent_name is not None:
        assert isinstance(agent, Mapping)
        profile, problem = load_block_values(agent_name, "agent.block", AGENT_BLOCK_TYPE,
                                             loaders.agent)
        if problem:
            out.problems.append(problem)
        else:
            own = {k: v for k, v in agent.items() if k != "block"}
            out.raw["agent"] = merge_layers(settings_layer(settings), profile.layer(), own)
            blocks.update(agent_block=agent_name, codex_path=profile.codex_path,
                          secret_env_names=profile.secret_env_names)
    else:
        machine = settings_layer(settings)
        if any(v is not None for v in machine.values()) and isinstance(agent, Mapping | None):
            out.raw["agent"] = merge_layers(machine, agent)
    repo = raw.get("repo")
    repo_name = _named_block(repo)
    if repo_name is not None:
        source, problem = load_block_values(repo_name, "repo.block", REPOSITORY_BLOCK_TYPE,
                                            loaders.repository)
        if problem:
            out.problems.append(problem)
        else:
            # A URL is a remote: fetched into a mirror, with the block's token (remote.py).
            out.raw["repo"] = (str(source.path.expanduser()) if source.path is not None
                               else source.url)
            if raw.get("base") is None and source.base_branch is not None:
                out.raw["base"] = source.base_branch
            blocks["repository_block"] = repo_name
    out.blocks = PlanBlocks(**blocks)
    return out
