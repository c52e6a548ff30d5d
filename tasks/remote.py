"""How git reaches a remote repository on this machine: its environment and token."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import cast

from agentfleet.remote import GitAccess, RemoteRepository, mirrors
from agentfleet.settings import AgentfleetSettings


def git_access(block: str | None = None) -> GitAccess:
    """The machine's environment for git, plus the repository block's token (unwrapped now).

    The token goes to git's fetch, ls-remote and push only: never to an agent, ``verify``
    or ``final_verify``.
    """
    env = dict(os.environ)
    if block is None:
        return GitAccess.of(env)
    from blocks.repository import RepositoryBlock

    saved = cast(RepositoryBlock, RepositoryBlock.load(block))  # sync here: not a coroutine
    return GitAccess.of(env, saved.git_env(env), saved.secret_values())


def remote_access(remote: RemoteRepository | None) -> GitAccess:
    """``git_access`` for ``remote`` (the machine's own for a local repository)."""
    return git_access(remote.block if remote is not None else None)


def machine_mirror(
    log: Callable[[str], None] = lambda _: None,
) -> Callable[[str, str | None], Path]:
    """Fetching a plan's remote repo into its mirror under this machine's work dir."""
    return mirrors(AgentfleetSettings().work_dir,
                   lambda _location, block: git_access(block), log=log)
