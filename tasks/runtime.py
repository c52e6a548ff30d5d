"""Process-wide state of a running sprint: the one cancel switch every agent polls.

An interrupt (Ctrl-C) or a cancelled flow run sets it; agents stop at once
(their whole process group) and unfinished worktrees are removed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

from agentfleet import process

CANCEL = threading.Event()


def stop_everything() -> None:
    """Stop every agent and shell check of this process now."""
    CANCEL.set()
    process.stop_all()


def agent_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The agent's environment: ours plus the plan's ``agent.env``, read at the last moment."""
    env = dict(os.environ)
    env.update(extra)
    return env
