"""Which agent runs a task, and how: the plan's ``agent:`` mapping."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

AgentKind = Literal["codex", "command"]
Sandbox = Literal["read-only", "workspace-write", "danger-full-access"]
ConfigValue = str | int | float | bool


class AgentConfig(BaseModel, extra="forbid"):
    """The agent that works on a task: the Codex CLI, or any shell command."""

    kind: AgentKind = Field(
        "codex",
        description="`codex` runs `codex exec` with the task's prompt; `command` runs the shell "
        "command in `run` instead.",
    )
    model: str | None = Field(
        None, description="The model Codex uses (`-m`); unset means Codex's own configured model."
    )
    sandbox: Sandbox = Field(
        "workspace-write",
        description="Codex's sandbox (`-s`): `read-only`, `workspace-write` or "
        "`danger-full-access`.",
    )
    profile: str | None = Field(
        None, description="A Codex profile from the user's `config.toml` (`-p`)."
    )
    run: str | None = Field(
        None, description="The shell command of a `command` agent (required when `kind: command`)."
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables for the agent."
    )
    config: dict[str, ConfigValue] = Field(
        default_factory=dict,
        description="Extra Codex `-c key=value` overrides, passed only when given.",
    )


class AgentOverride(BaseModel, extra="forbid"):
    """A task's changes to the plan's ``agent``; unset keys keep the plan's value."""

    kind: AgentKind | None = Field(None, description=AgentConfig.model_fields["kind"].description)
    model: str | None = Field(None, description=AgentConfig.model_fields["model"].description)
    sandbox: Sandbox | None = Field(
        None, description=AgentConfig.model_fields["sandbox"].description
    )
    profile: str | None = Field(None, description=AgentConfig.model_fields["profile"].description)
    run: str | None = Field(None, description=AgentConfig.model_fields["run"].description)
    env: dict[str, str] | None = Field(
        None, description="Extra environment variables, merged over the plan's (task wins)."
    )
    config: dict[str, ConfigValue] | None = Field(
        None, description="Extra Codex `-c` overrides, merged over the plan's (task wins)."
    )


class Variant(AgentOverride):
    """One way of attempting a task: agent changes for attempt k, and a hint for its prompt."""

    hint: str | None = Field(
        None, description="Text appended to the prompt of the attempts using this variant "
        "(e.g. \"prefer an index over a query rewrite\")."
    )

    def agent_override(self) -> AgentOverride:
        """The variant's agent keys alone (without ``hint``)."""
        return AgentOverride.model_validate(
            self.model_dump(exclude_unset=True, exclude={"hint"})
        )


# The dict keys merge key by key; every other key is replaced when the override sets it.
_MERGED_DICTS = ("env", "config")


def merge(base: AgentConfig, over: AgentOverride | None) -> AgentConfig:
    """The agent a task gets: ``base`` with the override applied (dicts merge, override wins)."""
    if over is None:
        return base
    values = base.model_dump()
    for key, value in over.model_dump(exclude_unset=True).items():
        if value is None:
            continue
        if key in _MERGED_DICTS:
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return AgentConfig.model_validate(values)


def agent_problem(agent: AgentConfig) -> tuple[str, str] | None:
    """Key and message of why an agent is unusable, or None (``kind: command`` needs ``run``)."""
    if agent.kind == "command" and not (agent.run and agent.run.strip()):
        return "run", "required when the agent kind is 'command' (the shell command to run)"
    return None
