"""One way to run the git CLI: ``git -C repo ...``, failures as ``GitError`` with git's words.

agentfleet uses git plumbing that GitPython does not model (``merge-tree --write-tree``,
``commit-tree``, ``update-ref`` with an old value, ``worktree``), so everything goes
through :func:`git`. Commits carry agentfleet's own identity, given on the command line,
so they never depend on the user's (or a CI machine's missing) git configuration.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from agentfleet.errors import AgentfleetError, GitError, NotARepository

AGENTFLEET_IDENTITY: tuple[str, str] = ("agentfleet", "agentfleet@localhost")

_OID_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


def identity_args(identity: tuple[str, str] = AGENTFLEET_IDENTITY) -> list[str]:
    """``-c`` options that make a commit's author and committer ``identity``, signing off."""
    name, email = identity
    return [
        "-c", f"user.name={name}",
        "-c", f"user.email={email}",
        # A user's commit.gpgSign=true would need their key (and a pinentry) per commit.
        "-c", "commit.gpgSign=false",
    ]  # fmt: skip


def identity_env(
    base: Mapping[str, str], identity: tuple[str, str] = AGENTFLEET_IDENTITY
) -> dict[str, str]:
    """``base`` plus the GIT_AUTHOR_*/GIT_COMMITTER_* variables for ``identity``."""
    name, email = identity
    return {
        **base,
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }


def run_git(
    repo: Path,
    *args: str,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``git -C repo args`` and return the finished process, whatever its exit status."""
    cmd = ["git", "-C", str(repo), *args]
    try:
        return subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            text=True,
            encoding="utf-8",
            # Paths are bytes to git; keep undecodable ones round-trippable.
            errors="surrogateescape",
            env=dict(env) if env is not None else None,
            check=False,
        )
    except FileNotFoundError as e:
        raise GitError("git is not installed (or not on PATH)") from e


def git(
    repo: Path,
    *args: str,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> str:
    """Run ``git -C repo args`` and return its stdout; raise ``GitError`` when it fails.

    ``env`` is git's whole environment when given (nothing is merged in); None inherits.
    A command refused because another git process holds a lock file (the user's editor
    refreshing the index, say) is run again, for up to about 1.5 s: git changed nothing.
    """
    for attempt in Retrying(retry=retry_if_exception(_retryable), stop=stop_after_attempt(6),
                            wait=wait_exponential(multiplier=0.05, max=1.0), reraise=True):
        with attempt:
            proc = run_git(repo, *args, input=input, env=env)
            if check and proc.returncode != 0:
                try:
                    proc.check_returncode()
                except subprocess.CalledProcessError as e:
                    raise git_error(repo, args, proc.returncode, proc.stderr) from e
    return proc.stdout


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, AgentfleetError) and exc.retryable


def git_error(repo: Path, args: Sequence[str], status: int, stderr: str) -> GitError:
    """The error for a failed git command: which command, where, and what git said."""
    said = " ".join(stderr.split()) or "(no message)"
    # What git said first: a report's one-line detail is cut, and the command line (with
    # its -c options and full object ids) is the least useful part of it.
    message = f"git {_verb(args)} failed (exit {status}): {said} [`git {_shown(args)}` in {repo}]"
    if "not a git repository" in stderr or "cannot change to" in stderr:
        return NotARepository(message)
    # Another git process held a lock file (index.lock, a ref's .lock): try again later.
    busy = ".lock': File exists" in stderr
    return GitError(message, retryable=busy)


def _verb(args: Sequence[str]) -> str:
    """The subcommand in ``args``: the first word after the ``-c``/``-C`` options."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("-c", "-C", "--git-dir", "--work-tree"):
            skip = True
        elif not arg.startswith("-"):
            return arg
    return "command"


def _shown(args: Sequence[str]) -> str:
    """``args`` without ``-c`` settings, object ids cut to 10 characters."""
    shown, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "-c":
            skip = True
        else:
            shown.append(arg[:10] if is_oid(arg) else arg)
    return " ".join(shown)


def is_oid(text: str) -> bool:
    """Whether ``text`` is a full object id (SHA-1 or SHA-256)."""
    return bool(_OID_RE.match(text))


def compose_message(message: str, trailers: Mapping[str, str] | None = None) -> str:
    """A commit message: ``message`` tidied, then ``trailers`` as git's last paragraph."""
    text = message.strip() or "agentfleet: changes"
    if trailers:
        # A blank line before the block is what makes git parse it as trailers.
        text += "\n\n" + "\n".join(f"{k}: {_one_line(v)}" for k, v in trailers.items())
    return text + "\n"


def _one_line(value: str) -> str:
    # A newline inside a trailer value would end the trailer and corrupt the block.
    return " ".join(value.split())
