"""Saved Blocks that a plan names, and the one precedence every agent key follows.

A plan may name saved Prefect Blocks (``blocks/``) instead of spelling everything out::

    repo: {block: orders-service}                     # an agentfleet-repository block
    agent: {block: team-codex, model: gpt-5.1-codex}  # an agentfleet-agent block, changed

Precedence of an agent key, highest first::

    task      the task's `agent:` keys
    plan      the plan's `agent:` keys (beside `block:` when it names one)
    block     the saved agentfleet-agent block's fields
    settings  AGENTFLEET_* variables or .env (AGENTFLEET_MODEL, AGENTFLEET_CODEX_PATH)
    defaults  AgentConfig's own (kind codex, sandbox workspace-write)

A key a layer leaves unset (or null) falls through to the layer below; ``env`` and
``config`` merge key by key, the higher layer winning per key. A block's
``reasoning_effort`` is its ``config`` key ``model_reasoning_effort`` (Codex's
``-c model_reasoning_effort=...``), so a plan or task overrides it there. The Codex
path: the block's, else ``AGENTFLEET_CODEX_PATH``, else ``node_modules/.bin/codex``
then PATH. The repository's base branch: the plan's ``base``, else the block's
``base_branch``, else the repository's current branch.

Prefect-free: blocks are fetched by a loader callable the edge passes in (the flow
passes ``AgentBlock.load``), and what comes back is converted to plain data with
no secret in it (``AgentProfile``, ``RepositorySource``). Secrets stay in the Block
until the last moment: the attempt asks the saved block for its secret environment
(``blocks.agent.agent_secret_env``) right before the agent starts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from agentfleet.agent_config import AgentConfig, AgentKind, AgentOverride, ConfigValue, Sandbox
from agentfleet.errors import ConfigError
from agentfleet.git_credentials import redact_url, url_problem
from agentfleet.masking import looks_secret
from agentfleet.naming import branch_name_problem
from agentfleet.settings import AgentfleetSettings

AGENT_BLOCK_TYPE = "agentfleet-agent"
REPOSITORY_BLOCK_TYPE = "agentfleet-repository"

# Prefect's own rule for block document names.
BLOCK_NAME_RE = re.compile(r"^[a-z0-9-]+$")
BLOCK_NAME_RULE = "lowercase letters, digits and '-' (Prefect's rule for block names)"

ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]
REASONING_EFFORT_KEY = "model_reasoning_effort"
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# The agent keys whose dicts merge key by key across layers (as agent_config.merge does).
MERGED_DICTS = ("env", "config")


def block_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a saved block, or None."""
    if not name or not BLOCK_NAME_RE.match(name):
        return f"{name!r} is not a block name: {BLOCK_NAME_RULE}"
    return None


def _check_block_name(value: str) -> str:
    problem = block_name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def api_key_env_problem(name: str) -> str | None:
    """Why an API key cannot be delivered in variable ``name``, or None.

    The name must look secret (``*KEY*``, ``*TOKEN*``...): the masker recognises
    secrets by their variable's name, so any other name would let an agent that
    prints its environment put the key into logs and results.
    """
    if not ENV_NAME_RE.match(name):
        return f"{name!r} is not an environment variable name"
    if not looks_secret(name):
        return (
            f"{name!r} does not look secret (a name containing KEY, TOKEN or SECRET): "
            "agentfleet masks only such variables' values in agent output"
        )
    return None


# -- what a plan writes ---------------------------------------------------------------------


class AgentBlockRef(AgentOverride):
    """A saved ``agentfleet-agent`` block with this plan's changes on top (unset: the block's)."""

    block: str = Field(
        description="The name of a saved `agentfleet-agent` block (`prefect block ls`); the "
        "other keys override the block's for this plan."
    )

    @field_validator("block")
    @classmethod
    def _block_name(cls, value: str) -> str:
        return _check_block_name(value)


class RepositoryBlockRef(BaseModel):
    """A saved ``agentfleet-repository`` block: the repository and its base branch."""

    model_config = ConfigDict(extra="forbid")

    block: str = Field(
        description="The name of a saved `agentfleet-repository` block (`prefect block ls`)."
    )

    @field_validator("block")
    @classmethod
    def _block_name(cls, value: str) -> str:
        return _check_block_name(value)


def _agent_shape(value: Any) -> str:
    if isinstance(value, AgentBlockRef):
        return "block"
    if isinstance(value, Mapping) and "block" in value:
        return "block"
    return "inline"


PlanAgent = Annotated[
    Union[  # noqa: UP007 (an Annotated union needs Union under `from __future__`)
        Annotated[AgentConfig, Tag("inline")],
        Annotated[AgentBlockRef, Tag("block")],
    ],
    Discriminator(_agent_shape),
]
"""A plan's ``agent:``: the agent spelled out, or ``{block: NAME, ...changes}``."""

PlanRepo = Union[  # noqa: UP007
    Annotated[
        Union[  # noqa: UP007
            Annotated[str, Tag("path")],
            Annotated[RepositoryBlockRef, Tag("block")],
        ],
        Discriminator(lambda v: "block" if _agent_shape(v) == "block"
                      or isinstance(v, RepositoryBlockRef) else "path"),
    ],
    None,
]
"""A plan's ``repo:``: a folder relative to the plan file, or ``{block: NAME}``."""

# The tags of these unions, which pydantic puts in an error's location after the key.
UNION_TAGS = ("inline", "path", "block")


# -- what a saved block converts to ---------------------------------------------------------


class AgentProfile(BaseModel):
    """A saved agent block as plain data, its secret left out: the ``block`` layer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: AgentKind = Field("codex", description=AgentConfig.model_fields["kind"].description)
    codex_path: Path | None = Field(
        None, description="The Codex CLI to run; unset: `AGENTFLEET_CODEX_PATH`, then the "
        "project's node_modules/.bin/codex, then PATH."
    )
    model: str | None = Field(None, description=AgentConfig.model_fields["model"].description)
    profile: str | None = Field(
        None, description=AgentConfig.model_fields["profile"].description
    )
    sandbox: Sandbox | None = Field(
        None, description=AgentConfig.model_fields["sandbox"].description
    )
    reasoning_effort: ReasoningEffort | None = Field(
        None, description="Codex's reasoning effort (`-c model_reasoning_effort=...`)."
    )
    config: dict[str, ConfigValue] = Field(
        default_factory=dict, description=AgentConfig.model_fields["config"].description
    )
    run: str | None = Field(None, description=AgentConfig.model_fields["run"].description)
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment variables for the agent, not secret (they are "
        "stored and shown as they are).",
    )
    secret_env_names: tuple[str, ...] = Field(
        (), description="The variables the block's secrets are delivered in (names only)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> AgentProfile:
        configured = self.config.get(REASONING_EFFORT_KEY)
        if self.reasoning_effort is not None and configured not in (None, self.reasoning_effort):
            raise ValueError(
                f"reasoning_effort {self.reasoning_effort!r} contradicts config."
                f"{REASONING_EFFORT_KEY} {configured!r}: set one of them"
            )
        clash = sorted(set(self.env) & set(self.secret_env_names))
        if clash:
            raise ValueError(
                f"env sets {', '.join(clash)}, which carries the block's secret: "
                "leave it out of env"
            )
        return self

    def layer(self) -> dict[str, Any]:
        """The ``AgentConfig`` keys this block sets (its reasoning effort as a ``config`` key)."""
        values = self.model_dump(
            include={"kind", "model", "profile", "sandbox", "config", "run", "env"}
        )
        if self.reasoning_effort is not None:
            values["config"] = {REASONING_EFFORT_KEY: self.reasoning_effort, **values["config"]}
        return values


class RepositorySource(BaseModel):
    """A saved repository block as plain data, its token left out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path | None = Field(
        None, description="The repository's folder on the worker (absolute, or from `~`)."
    )
    url: str | None = Field(
        None, description="The repository's git URL (https://..., ssh://..., git@host:path)."
    )
    base_branch: str | None = Field(
        None, description="The branch agents start from unless the plan says `base`."
    )
    has_token: bool = Field(False, description="Whether the block holds a token for the URL.")

    @model_validator(mode="after")
    def _consistent(self) -> RepositorySource:
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of `path` (a folder) and `url` (a git URL)")
        if self.path is not None:
            if self.has_token:
                raise ValueError("a token is for a `url`; a local `path` needs none")
            if not (self.path.is_absolute() or str(self.path).startswith("~")):
                raise ValueError(
                    f"path {str(self.path)!r} must be absolute (or start with ~): a saved "
                    "block has no folder to be relative to"
                )
        if self.url is not None:
            problem = url_problem(self.url, with_token=self.has_token)
            if problem:
                raise ValueError(f"url {redact_url(self.url)!r}: {problem}")
        if self.base_branch is not None:
            problem = branch_name_problem(self.base_branch)
            if problem:
                raise ValueError(f"base_branch {self.base_branch!r}: {problem}")
        return self

    @property
    def location(self) -> str:
        """The path or URL, safe to print."""
        return str(self.path) if self.path is not None else redact_url(self.url or "")


# -- resolution -----------------------------------------------------------------------------


class ResolvedAgent(BaseModel):
    """A task's agent with every layer applied. Holds no secret: only where it comes from."""

    model_config = ConfigDict(frozen=True)

    agent: AgentConfig = Field(description="The agent, all layers merged.")
    codex_path: Path | None = Field(
        None, description="The block's Codex path, else AGENTFLEET_CODEX_PATH; None: search."
    )
    block: str | None = Field(
        None, description="The saved agentfleet-agent block whose secrets the agent gets."
    )
    secret_env_names: tuple[str, ...] = Field(
        (), description="The variables the block's secrets arrive in (names only)."
    )


class ResolvedRepository(BaseModel):
    """Where a plan's repository is and the base branch it asks for."""

    model_config = ConfigDict(frozen=True)

    path: Path | None = Field(None, description="The local folder; None for a URL.")
    url: str | None = Field(None, description="The git URL, when the block names one.")
    base: str | None = Field(
        None, description="The plan's `base`, else the block's; None: the current branch."
    )
    block: str | None = Field(None, description="The saved repository block, if one was named.")
    has_token: bool = Field(False, description="Whether git needs the block's token.")


def merge_layers(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Layers, lowest first, merged into one: a None value never overrides; dicts merge per key."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if value is None:
                continue
            if (key in MERGED_DICTS and isinstance(merged.get(key), Mapping)
                    and isinstance(value, Mapping)):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = dict(value) if isinstance(value, Mapping) else value
    return merged


def settings_layer(settings: AgentfleetSettings | None) -> dict[str, Any]:
    """The agent keys per-machine settings give a default for."""
    return {} if settings is None else {"model": settings.model}


def plan_layer(plan_agent: AgentConfig | AgentBlockRef) -> dict[str, Any]:
    """The agent keys the plan itself sets (defaults it did not write do not count)."""
    if isinstance(plan_agent, AgentBlockRef):
        return plan_agent.model_dump(exclude={"block"}, exclude_none=True)
    return plan_agent.model_dump(exclude_unset=True)


def task_layer(task: AgentOverride | None) -> dict[str, Any]:
    """The agent keys a task sets."""
    return {} if task is None else task.model_dump(exclude_none=True)


def resolve_agent(
    plan_agent: AgentConfig | AgentBlockRef,
    task: AgentOverride | None = None,
    *,
    profile: AgentProfile | None = None,
    settings: AgentfleetSettings | None = None,
) -> ResolvedAgent:
    """A task's agent: task > plan > block > settings > defaults (see the module docstring).

    ``profile`` is the loaded block the plan names (``load_agent_profile``); required
    exactly when ``plan_agent`` names a block.
    """
    names_block = isinstance(plan_agent, AgentBlockRef)
    if names_block and profile is None:
        raise ValueError("the plan's agent names a block: pass its profile (load_agent_profile)")
    if not names_block and profile is not None:
        raise ValueError("the plan's agent names no block, yet a profile was given")
    values = merge_layers(
        settings_layer(settings),
        profile.layer() if profile is not None else None,
        plan_layer(plan_agent),
        task_layer(task),
    )
    codex_path = profile.codex_path if profile is not None else None
    if codex_path is None and settings is not None:
        codex_path = settings.codex_path
    return ResolvedAgent(
        agent=AgentConfig.model_validate(values),
        codex_path=codex_path,
        block=plan_agent.block if isinstance(plan_agent, AgentBlockRef) else None,
        secret_env_names=profile.secret_env_names if profile is not None else (),
    )


def resolve_repository(
    plan_repo: str | RepositoryBlockRef | None,
    plan_base: str | None,
    *,
    plan_folder: Path,
    source: RepositorySource | None = None,
) -> ResolvedRepository:
    """The plan's repository: a folder relative to ``plan_folder``, or the block's (loaded)."""
    if isinstance(plan_repo, RepositoryBlockRef):
        if source is None:
            raise ValueError("the plan's repo names a block: pass its source")
        return ResolvedRepository(
            path=source.path.expanduser() if source.path is not None else None,
            url=source.url,
            base=plan_base or source.base_branch,
            block=plan_repo.block,
            has_token=source.has_token,
        )
    if source is not None:
        raise ValueError("the plan's repo names no block, yet a source was given")
    return ResolvedRepository(path=(plan_folder / (plan_repo or ".")).resolve(), base=plan_base)


# -- loading through the edge's callable ----------------------------------------------------


class ConvertsToAgentProfile(Protocol):
    """What ``AgentBlock.load`` returns: a block that converts itself to plain data."""

    def to_profile(self) -> AgentProfile: ...


class ConvertsToRepositorySource(Protocol):
    """What ``RepositoryBlock.load`` returns."""

    def to_source(self) -> RepositorySource: ...


AgentLoader = Callable[[str], "AgentProfile | ConvertsToAgentProfile"]
RepositoryLoader = Callable[[str], "RepositorySource | ConvertsToRepositorySource"]


def _load(load: Callable[[str], Any], name: str, block_type: str, where: str) -> Any:
    try:
        return load(name)
    except KeyError as exc:
        raise ConfigError(
            f"{where}: no saved {block_type} block named {name!r} "
            "(`prefect block ls` lists them)"
        ) from exc
    except ValueError as exc:
        # Prefect says "Unable to find block document named ..." with a ValueError; a
        # saved block that no longer validates is a ValueError (ValidationError) too.
        raise ConfigError(f"{where}: cannot load the {block_type} block {name!r}: {exc}") from exc
    except Exception as exc:  # the API unreachable: running again may work
        raise ConfigError(
            f"{where}: cannot load the {block_type} block {name!r}: {exc}", retryable=True
        ) from exc


def load_agent_profile(
    plan_agent: AgentConfig | AgentBlockRef, load: AgentLoader
) -> AgentProfile | None:
    """The profile of the block the plan's agent names (None if it names none); ``ConfigError``."""
    if not isinstance(plan_agent, AgentBlockRef):
        return None
    loaded = _load(load, plan_agent.block, AGENT_BLOCK_TYPE, "agent.block")
    return loaded if isinstance(loaded, AgentProfile) else loaded.to_profile()


def load_repository_source(
    plan_repo: str | RepositoryBlockRef | None, load: RepositoryLoader
) -> RepositorySource | None:
    """The source of the block the plan's repo names (None if it names none); ``ConfigError``."""
    if not isinstance(plan_repo, RepositoryBlockRef):
        return None
    loaded = _load(load, plan_repo.block, REPOSITORY_BLOCK_TYPE, "repo.block")
    return loaded if isinstance(loaded, RepositorySource) else loaded.to_source()


def agent_environment(
    base: Mapping[str, str], secret_env: Mapping[str, str], agent: AgentConfig
) -> dict[str, str]:
    """The agent's environment: the machine's, then the block's secrets, then ``agent.env``.

    The same precedence as every key: the block's API key replaces the machine's
    ``OPENAI_API_KEY``, and a plan or task ``env`` that sets it wins over the block.
    """
    return {**base, **secret_env, **agent.env}
