"""Per-machine settings, read once at the edge (CLI, flows) and passed down.

Everything here differs between machines (where Codex is, where worktrees go);
what is shared or secret belongs in a Block (``blocks/``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _default_work_dir() -> Path:
    return Path.home() / ".cache" / "agentfleet"


class AgentfleetSettings(BaseSettings):
    """``AGENTFLEET_*`` environment variables (or a ``.env`` file)."""

    model_config = SettingsConfigDict(env_prefix="AGENTFLEET_", env_file=".env", extra="ignore")

    codex_path: Path | None = Field(
        default=None,
        description="The Codex CLI to run; default: node_modules/.bin/codex of this project, "
        "then `codex` on PATH.",
    )
    model: str | None = Field(
        default=None,
        description="The model Codex uses when no task, plan or agent block names one; "
        "unset: Codex's own configured model.",
    )
    work_dir: Path = Field(
        default_factory=_default_work_dir,
        description="Where agentfleet keeps worktrees, locks and leases "
        "(outside every repository).",
    )
    stop_grace_s: float = Field(
        default=5.0, description="Seconds between SIGTERM and SIGKILL when an agent is stopped."
    )
    retry_backoff_s: float = Field(
        default=2.0, ge=0,
        description="The first wait before an agent run that failed transiently is retried; "
        "it doubles each retry (with jitter, at most 60 s).",
    )

    attempt_pool: str = Field(
        default="agentfleet",
        description="The work pool of the `attempt` deployment that runs a `placement: pool` "
        "sprint's attempts (the sprint checks that the deployment is on it).",
    )

    attempt_stale_s: float = Field(
        default=30.0, ge=4,  # workers beat every HEARTBEAT_S (2 s)
        description="A `placement: pool` attempt run whose worker has not beaten for this many "
        "seconds is taken for crashed and run again elsewhere (within the task's retries).",
    )
    proxy_host: str = Field(
        default="127.0.0.1",
        description="Where the sprint's metering proxy listens. Workers of a `placement: pool` "
        "sprint on other machines need an address they can reach (e.g. `0.0.0.0`): see the "
        "README's security note.",
    )
    proxy_port: int = Field(
        default=0, ge=0, le=65535,
        description="The metering proxy's port; 0: any free port (say which in "
        "`AGENTFLEET_PROXY_URL` only when it is fixed).",
    )
    proxy_url: str | None = Field(
        default=None,
        description="Where a `placement: pool` sprint's workers reach its metering proxy, e.g. "
        "`http://sprint-host` (the bound port is added when the URL names none); "
        "unset: `http://127.0.0.1:<port>`, for workers on the sprint's machine.",
    )
    # From the pinned Codex 0.169's model list: gpt-6-luna is "Fast and affordable model for
    # easier tasks", gpt-6.1-sol "Latest workhorse model for coding and everyday work".
    model_simple: str = Field(
        default="gpt-6-luna",
        description="The model of tasks with `complexity: simple` when the plan's `models` "
        "names none.",
    )
    model_complex: str = Field(
        default="gpt-6.1-sol",
        description="The model of tasks with `complexity: complex` when the plan's `models` "
        "names none.",
    )
    pool_size: int = Field(
        default=8, ge=1,
        description="The slots of the plan's `limits.pool` when agentfleet creates that "
        "Prefect global concurrency limit (it never changes an existing one).",
    )

    def worktree_root(self, repo_key: str, sprint: str) -> Path:
        """The folder holding one sprint's worktrees on one repository."""
        return self.work_dir / "worktrees" / repo_key / sprint

    @property
    def default_models(self) -> dict[str, str]:
        """The model of each task complexity when the plan's ``models`` names none."""
        return {"simple": self.model_simple, "complex": self.model_complex}

    @property
    def lock_dir(self) -> Path:
        return self.work_dir / "locks"
