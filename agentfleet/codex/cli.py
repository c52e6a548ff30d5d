"""Finding and calling the Codex CLI, and reading what it leaves in its home folder.

The command line of ``codex exec --json`` for an agent config (the user's profile and
``-c`` settings kept, agentfleet's isolation added only where the plan sets nothing),
the ``CODEX_HOME`` an agent runs with, and a thread's tokens from its session file.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import sys
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

from agentfleet.agent_config import AgentConfig
from agentfleet.codex.outcome import Usage
from agentfleet.errors import AgentNotFound


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_codex(configured: Path | None, project_root: Path | None, path_env: str | None) -> Path:
    """The Codex CLI: the configured path, else ``node_modules/.bin/codex``, else on PATH."""
    if configured is not None:
        configured = Path(configured).expanduser()
        if _executable(configured):
            return configured
        raise AgentNotFound(
            f"Codex CLI not found at {configured} (AGENTFLEET_CODEX_PATH): "
            "no executable file there"
        )
    looked = []
    if project_root is not None:
        local = Path(project_root) / "node_modules" / ".bin" / "codex"
        if _executable(local):
            return local
        looked.append(str(local))
    if path_env:
        # which() with an explicit path never reads os.environ.
        found = shutil.which("codex", path=path_env)
        if found:
            return Path(found)
        looked.append("PATH")
    raise AgentNotFound(
        f"Codex CLI not found (looked in {', '.join(looked) or 'nowhere'}): run `npm ci` in the "
        "project to install the pinned @openai/codex, or set AGENTFLEET_CODEX_PATH"
    )


# The npm package's launcher (``bin/codex.js``) picks the platform package by Node's
# ``process.platform`` and ``process.arch``.
_PLATFORMS = {
    ("linux", "x86_64"): ("codex-linux-x64", "x86_64-unknown-linux-musl"),
    ("linux", "aarch64"): ("codex-linux-arm64", "aarch64-unknown-linux-musl"),
    ("darwin", "x86_64"): ("codex-darwin-x64", "x86_64-apple-darwin"),
    ("darwin", "arm64"): ("codex-darwin-arm64", "aarch64-apple-darwin"),
}
# What the launcher sets for the binary: only Codex's update hints read these.
_MANAGED_BY = ("CODEX_MANAGED_BY_NPM", "CODEX_MANAGED_BY_BUN", "CODEX_MANAGED_BY_PNPM",
               "CODEX_MANAGED_BY_VITE_PLUS")


def native_launch(codex: Path, env: Mapping[str, str]) -> tuple[Path, dict[str, str]]:
    """What to start for ``codex``, and with what environment.

    When ``codex`` is @openai/codex's npm launcher (installed by npm, not pnpm or bun),
    the platform binary it would start, with the environment it would give it: the
    launcher is a Node script that, on Node before 22, stays the binary's parent for the
    whole run, costing each agent's start about 0.2 s and as much CPU. Anything else
    (a binary, a wrapper of the user's, a layout not recognised) is started as it is.
    """
    native = _npm_native(codex.resolve())
    if native is None:
        return codex, dict(env)
    binary, package_root = native
    launched = {k: v for k, v in env.items() if k not in _MANAGED_BY}
    launched |= {"CODEX_MANAGED_PACKAGE_ROOT": str(package_root), "CODEX_MANAGED_BY_NPM": "1"}
    return binary, launched


@lru_cache(maxsize=8)
def _npm_native(launcher: Path) -> tuple[Path, Path] | None:
    """(platform binary, package root) for the npm launcher ``launcher``, else None."""
    package_root = launcher.parent.parent
    names = _PLATFORMS.get((sys.platform, platform.machine()))
    if names is None or launcher.name != "codex.js" or launcher.parent.name != "bin":
        return None
    try:
        manifest = json.loads((package_root / "package.json").read_text())
    except (OSError, ValueError):
        return None
    scope = package_root.parent  # .../node_modules/@openai
    # npm's flat layout only: for pnpm (``.modules.yaml``) and bun's global installs the
    # launcher sets other variables.
    if (manifest.get("name") != "@openai/codex" or scope.name != "@openai"
            or (scope.parent / ".modules.yaml").exists() or ".bun" in package_root.parts):
        return None
    package, triple = names
    for vendor in (package_root / "node_modules" / "@openai" / package / "vendor",
                   scope / package / "vendor", package_root / "vendor"):
        binary = vendor / triple / "bin" / "codex"
        if _executable(binary):
            return binary, package_root
    return None


def toml_value(value: str | int | float | bool) -> str:
    """``value`` as a TOML literal for ``-c key=value``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    # A JSON string is a valid TOML basic string (same escapes).
    return json.dumps(value, ensure_ascii=False)


EXCLUDE_SLASH_TMP = "sandbox_workspace_write.exclude_slash_tmp"
EXCLUDE_TMPDIR = "sandbox_workspace_write.exclude_tmpdir_env_var"


def isolation_overrides(agent: AgentConfig, private_tmp: bool) -> dict[str, bool]:
    """The ``-c`` settings agentfleet adds to keep a ``workspace-write`` agent to its worktree.

    Codex's ``workspace-write`` also lets commands write ``/tmp`` and ``$TMPDIR``, where
    sibling worktrees or the user's repository may live. ``exclude_slash_tmp`` closes
    ``/tmp``; ``$TMPDIR`` stays writable only when it is the agent's private folder
    (Codex 0.169 then adds it to the writable roots itself: no ``writable_roots``, which
    as a ``-c`` flag would replace the user's own list). A key the plan's ``agent.config``
    sets is left to it: the user's explicit choice wins.
    """
    if agent.kind != "codex" or agent.sandbox != "workspace-write":
        return {}
    wanted = {EXCLUDE_SLASH_TMP: True}
    if not private_tmp:
        wanted[EXCLUDE_TMPDIR] = True
    return {key: value for key, value in wanted.items() if key not in agent.config}


def codex_argv(
    codex: Path, agent: AgentConfig, extra: Sequence[str] = (), *, private_tmp: bool = False
) -> list[str]:
    """``codex exec --json`` with the flags the agent config asks for; prompt from stdin.

    Plus ``isolation_overrides``: ``private_tmp`` says whether ``$TMPDIR`` is the agent's own.
    """
    argv = [str(codex), "exec", "--json", "-s", agent.sandbox]
    if agent.model:
        argv += ["-m", agent.model]
    if agent.profile:
        argv += ["-p", agent.profile]
    for key, value in {**agent.config, **isolation_overrides(agent, private_tmp)}.items():
        argv += ["-c", f"{key}={toml_value(value)}"]
    # "-" reads the prompt from stdin: argv is capped at 128 KiB per string.
    return [*argv, *extra, "-"]


def codex_home(env: Mapping[str, str]) -> Path | None:
    """Codex's home folder for an agent with environment ``env``."""
    if env.get("CODEX_HOME"):
        return Path(env["CODEX_HOME"])
    return Path(env["HOME"]) / ".codex" if env.get("HOME") else None


def rollout_usage(home: Path | None, thread_id: str | None) -> Usage | None:
    """The tokens a Codex thread spent, from its session file; None when not found.

    ``--json`` reports usage only with ``turn.completed``: a failed turn's tokens (a
    429 after some requests, a full context window) appear only in Codex's own session
    file ``$CODEX_HOME/sessions/YYYY/MM/DD/rollout-*-<thread>.jsonl``, as ``token_count``
    events whose ``total_token_usage`` is cumulative. Best effort: its format is Codex's.
    """
    if home is None or not thread_id:
        return None
    found = None
    for path in sorted((home / "sessions").glob(f"*/*/*/rollout-*-{thread_id}.jsonl")):
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if '"token_count"' not in line:
                continue
            try:
                info = json.loads(line).get("payload", {}).get("info") or {}
                total = info.get("total_token_usage")
                if isinstance(total, dict):
                    usage = Usage.model_validate(
                        {k: v for k, v in total.items() if k in Usage.model_fields}
                    )
                    # The largest, not the last: after a full context window Codex writes
                    # one more with zeros (and total_tokens set to the window's size).
                    if found is None or usage.total > found.total:
                        found = usage
            except (ValueError, AttributeError):
                continue
    return found
