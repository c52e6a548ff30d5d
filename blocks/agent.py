"""The ``agentfleet-agent`` Block: an agent profile a team shares, with its API key."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr, model_validator

from agentfleet.agent_config import AgentKind, ConfigValue, Sandbox
from agentfleet.block_refs import (
    AGENT_BLOCK_TYPE,
    DEFAULT_API_KEY_ENV,
    AgentProfile,
    ReasoningEffort,
    api_key_env_problem,
)

_FIELDS = AgentProfile.model_fields


class AgentBlock(Block):
    """A coding agent for agentfleet: Codex (or a shell command), its model and settings,
    and an API key that reaches the agent through its environment only.

    A plan names it as `agent: {block: NAME}`; the plan's and the tasks' own `agent`
    keys override it, and it overrides the AGENTFLEET_* settings.
    """

    # A validation error must not print the input: it holds the secret in clear.
    model_config = ConfigDict(hide_input_in_errors=True)

    _block_type_name = "agentfleet agent"
    _block_type_slug = AGENT_BLOCK_TYPE
    _description = (
        "A coding agent for agentfleet sprints: Codex CLI settings and the API key it gets "
        "in its environment (never on its command line, in a log or in a result)."
    )

    kind: AgentKind = Field("codex", description=_FIELDS["kind"].description)
    codex_path: str | None = Field(None, description=_FIELDS["codex_path"].description)
    model: str | None = Field(None, description=_FIELDS["model"].description)
    profile: str | None = Field(None, description=_FIELDS["profile"].description)
    sandbox: Sandbox | None = Field(None, description=_FIELDS["sandbox"].description)
    reasoning_effort: ReasoningEffort | None = Field(
        None, description=_FIELDS["reasoning_effort"].description
    )
    config: dict[str, ConfigValue] = Field(
        default_factory=dict, description=_FIELDS["config"].description
    )
    run: str | None = Field(None, description=_FIELDS["run"].description)
    env: dict[str, str] = Field(default_factory=dict, description=_FIELDS["env"].description)
    api_key: SecretStr | None = Field(
        None,
        description="The API key, stored encrypted; delivered to the agent in the variable "
        "`api_key_env` and nowhere else. Unset: the worker's own environment (or Codex "
        "login) is used.",
    )
    api_key_env: str = Field(
        DEFAULT_API_KEY_ENV,
        description="The environment variable the API key is delivered in; its name must "
        "look secret (contain KEY, TOKEN or SECRET) so agentfleet masks it in output.",
    )

    @model_validator(mode="after")
    def _converts(self) -> AgentBlock:
        # A block that cannot become an agent fails when it is saved, not mid-sprint.
        problem = api_key_env_problem(self.api_key_env)
        if problem:
            raise ValueError(f"api_key_env: {problem}")
        self.to_profile()
        return self

    def _has_key(self) -> bool:
        return self.api_key is not None and bool(self.api_key.get_secret_value())

    def to_profile(self) -> AgentProfile:
        """The block as plain data for ``agentfleet.block_refs``: everything but the key."""
        return AgentProfile(
            kind=self.kind,
            codex_path=self.codex_path or None,
            model=self.model or None,
            profile=self.profile or None,
            sandbox=self.sandbox,
            reasoning_effort=self.reasoning_effort,
            config=dict(self.config),
            run=self.run or None,
            env=dict(self.env),
            secret_env_names=(self.api_key_env,) if self._has_key() else (),
        )

    def secret_env(self) -> dict[str, str]:
        """The variables that carry the key to the agent, unwrapped: call it at the last moment."""
        if not self._has_key():
            return {}
        assert self.api_key is not None
        return {self.api_key_env: self.api_key.get_secret_value()}


def agent_secret_env(block: str | None) -> dict[str, str]:
    """The secret environment of the saved agent block named ``block`` ({} for None).

    For the attempt task, right before the agent starts: the key never travels in a
    task's parameters, its cache key or its persisted result.
    """
    if block is None:
        return {}
    loaded = AgentBlock.load(block)
    assert isinstance(loaded, AgentBlock)  # sync context: load() returns the block itself
    return loaded.secret_env()
