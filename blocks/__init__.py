"""Prefect Blocks: configuration shared between runs or secret, registered with
``prefect block register -m blocks``.

- ``agentfleet-agent`` (``AgentBlock``): an agent profile and its API key.
- ``agentfleet-repository`` (``RepositoryBlock``): a repository and its token.

A Block only validates and converts to a plain domain model (``agentfleet.block_refs``);
it never runs workflow logic. Per-machine settings live in ``agentfleet.settings``;
secrets are unwrapped at the last moment and reach agents through their environment.
"""

from blocks.agent import AgentBlock, agent_secret_env
from blocks.repository import RepositoryBlock

__all__ = ["AgentBlock", "RepositoryBlock", "agent_secret_env"]
