"""Whether Codex's sandbox can start here: asked only when a change of the agent failed in
a turn that completed.

Codex runs the agent's patches and commands in its sandbox (bubblewrap on Linux). Where
bubblewrap may not make namespaces (a container under Docker's default seccomp profile,
a kernel or a parent namespace that allows none), every patch fails ("Failed to write
file ...") and every command exits 1, yet the turn completes: an attempt that "changed no
file", for no reason the agent could see. ``codex sandbox -- true`` fails then too, in
bubblewrap's own words, which the attempt's reason then carries.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

PROBE_TIMEOUT_S = 30.0


def sandbox_refusal(program: Path, env: Mapping[str, str], cwd: Path) -> str | None:
    """Why ``codex sandbox -- true`` fails here (its last line of output that is not a
    warning), or None when it runs, or when it cannot be told (the probe could not run or
    hung)."""
    try:
        done = subprocess.run(
            [str(program), "sandbox", "--", "true"], cwd=cwd, env=dict(env),
            stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
            timeout=PROBE_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode == 0:
        return None
    said = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    # Codex's own warnings come first; the sandbox's error last.
    errors = [line for line in said if not line.startswith("WARNING")] or said
    return errors[-1] if errors else f"`codex sandbox -- true` exited {done.returncode}"


def no_change_reason(refused: str | None) -> str:
    """An attempt's reason when it changed no file; ``refused``: ``sandbox_refusal``'s."""
    if refused is None:
        return "the agent changed no file"
    return (f"the agent changed no file: Codex's sandbox cannot start here ({refused}); "
            "let it make namespaces (in a Docker container: --security-opt "
            "seccomp=unconfined), or, where a container is itself the sandbox, give the "
            "agent sandbox: danger-full-access")
