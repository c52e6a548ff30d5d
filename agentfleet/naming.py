"""Every branch and ref name agentfleet creates, in one pure place.

Attempt branches live in their own namespace so that ``clean`` can find and
remove them without ever touching a user's branch; a plan's target may not be
put inside that namespace.
"""

from __future__ import annotations

import re

ID_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
ID_RE = re.compile(ID_PATTERN)
ID_RULE = "lowercase letters, digits and '-', starting with a letter or digit"

ATTEMPTS_NAMESPACE = "agentfleet-attempts/"
TARGET_NAMESPACE = "agentfleet/"
SCRATCH_NAMESPACE = "refs/agentfleet/scratch/"


def is_valid_id(value: str) -> bool:
    """Whether ``value`` is a valid sprint name or task id."""
    return bool(ID_RE.match(value))


def attempt_branch(sprint: str, task_id: str, k: int) -> str:
    """Attempt ``k`` (from 1) of a task: ``agentfleet-attempts/<sprint>/<task>/<k>``."""
    if k < 1:
        raise ValueError(f"attempt numbers start at 1, got {k}")
    return f"{ATTEMPTS_NAMESPACE}{sprint}/{task_id}/{k}"


def attempts_prefix(sprint: str, task_id: str | None = None) -> str:
    """The branch prefix of all attempts of a sprint (or of one task), ending in '/'."""
    if task_id is None:
        return f"{ATTEMPTS_NAMESPACE}{sprint}/"
    return f"{ATTEMPTS_NAMESPACE}{sprint}/{task_id}/"


def is_attempt_branch(branch: str) -> bool:
    """Whether a branch name lies in agentfleet's reserved attempts namespace."""
    return branch.removeprefix("refs/heads/").startswith(ATTEMPTS_NAMESPACE)


def default_target(name: str) -> str:
    """The target branch of a plan that names none: ``agentfleet/<name>``."""
    return f"{TARGET_NAMESPACE}{name}"


def scratch_ref(sprint: str) -> str:
    """The private ref used while building a target: ``refs/agentfleet/scratch/<sprint>``."""
    return f"{SCRATCH_NAMESPACE}{sprint}"


# git's ref-format rules (git-check-ref-format(1)) as applied by `--branch`.
_FORBIDDEN_CHARS = set(" ~^:?*[\\")


def branch_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid git branch name (``git check-ref-format --branch``), or None."""
    if not name:
        return "a branch name cannot be empty"
    if name.startswith("-"):
        return f"'{name}' is not a valid branch name: it cannot start with '-'"
    if name == "HEAD":
        return "'HEAD' is not a valid branch name"
    if name == "@":
        return "'@' is not a valid branch name"
    bad = sorted({c for c in name if c in _FORBIDDEN_CHARS or ord(c) < 0x20 or ord(c) == 0x7F})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        return f"'{name}' is not a valid branch name: it contains {shown}"
    if name.startswith("/") or name.endswith("/"):
        return f"'{name}' is not a valid branch name: it cannot start or end with '/'"
    if "//" in name:
        return f"'{name}' is not a valid branch name: it cannot contain '//'"
    if ".." in name:
        return f"'{name}' is not a valid branch name: it cannot contain '..'"
    if "@{" in name:
        return f"'{name}' is not a valid branch name: it cannot contain '@{{'"
    if name.endswith("."):
        return f"'{name}' is not a valid branch name: it cannot end with '.'"
    for part in name.split("/"):
        if part.startswith("."):
            return f"'{name}' is not a valid branch name: no part of it can start with '.'"
        if part.endswith(".lock"):
            return f"'{name}' is not a valid branch name: no part of it can end with '.lock'"
    return None


def branch_of(name: str) -> str:
    """A plan's branch name as git's short name: ``refs/heads/keep`` is ``keep``."""
    return name.removeprefix("refs/heads/")
