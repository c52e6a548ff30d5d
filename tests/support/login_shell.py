"""The shell Codex runs an agent's commands in (``<shell> -lc '<command>'``): the user's
login shell from the password database, not ``$SHELL`` (Codex 0.169, seen on this machine)."""

from __future__ import annotations

import os
import pwd


def login_shell() -> str:
    return pwd.getpwuid(os.getuid()).pw_shell
