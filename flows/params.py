"""The edge of the flows' parameters: saved blocks loaded through Prefect, run names.

A flow run is named for what it runs (``sprint orders-v2``, ``best-of-n <prompt>``,
``apply <target>``), read from its parameters when the run starts.
"""

from __future__ import annotations

from typing import Any

from agentfleet.plan_blocks import BlockLoaders
from agentfleet.requests import plan_name_of
from agentfleet.settings import AgentfleetSettings

RUN_NAME_WIDTH = 60


def load_agent_block(name: str) -> Any:
    """The saved ``agentfleet-agent`` block ``name``."""
    from blocks.agent import AgentBlock

    return AgentBlock.load(name)


def load_repository_block(name: str) -> Any:
    """The saved ``agentfleet-repository`` block ``name``."""
    from blocks.repository import RepositoryBlock

    return RepositoryBlock.load(name)


def saved_blocks(settings: AgentfleetSettings | None = None) -> BlockLoaders:
    """Loaders of the saved ``agentfleet-*`` blocks on the current Prefect server."""
    return BlockLoaders(agent=load_agent_block, repository=load_repository_block,
                        settings=settings or AgentfleetSettings())


def _parameters() -> dict[str, Any]:
    from prefect.runtime import flow_run

    return dict(flow_run.parameters or {})


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= RUN_NAME_WIDTH else text[: RUN_NAME_WIDTH - 3] + "..."


def sprint_run_name() -> str:
    """``sprint <plan name>``."""
    params = _parameters()
    name = plan_name_of(params.get("plan"), params.get("plan_path"), params.get("repository"))
    return f"sprint {_short(name)}"


def best_of_n_run_name() -> str:
    """``best-of-n <name>`` when one was given, else ``best-of-n <the prompt's start>``."""
    params = _parameters()
    name = params.get("name")
    what = name if name and name != "best-of-n" else str(params.get("prompt") or "")
    return f"best-of-n {_short(what)}"


def apply_run_name() -> str:
    """``apply <target>``."""
    return f"apply {_short(str(_parameters().get('target') or ''))}"
