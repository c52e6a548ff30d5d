"""agentfleet's one error hierarchy.

Every error a user can meet is an ``AgentfleetError``: its message says what is
wrong and where, and ``retryable`` says whether running the same thing again can
help (a 429 can, a bad plan cannot).

    AgentfleetError
    ├── ConfigError            settings, environment, Codex not found         (exit 2)
    │   └── ServerUnreachable  Prefect's API does not answer (with the report, if any)
    ├── PlanError              one or more problems in a plan file            (exit 2)
    │   └── ProposalRejected   the planner's answer still fails the checks    (exit 1)
    ├── PlanRejected           a person rejected the proposed plan (review_plan) (exit 1)
    ├── ReviewError            an answer that does not fit the review form     (exit 2)
    ├── SprintLocked           the same sprint already runs on this repo      (exit 2)
    ├── GitError               a git operation failed
    │   ├── NotARepository
    │   ├── ConflictError      changes git cannot merge on its own
    │   └── WorktreeTampered   an agent changed its worktree's .git pointer
    ├── AgentError             an agent process could not be run or was lost
    │   └── AgentNotFound
    └── VerificationError      setup / verify / final_verify could not be run

    SprintInterrupted (a KeyboardInterrupt) carries the report of a stopped sprint  (exit 130)

Foreign exceptions (``GitCommandError``, ``TimeoutExpired``, ``OSError``) are
translated at the boundary with ``raise ... from``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # results imports errors
    from agentfleet.results import SprintReport


class AgentfleetError(Exception):
    """Base of every error agentfleet raises on purpose."""

    exit_code: int = 1
    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class ConfigError(AgentfleetError):
    """The configuration (settings, environment, tools) cannot work as given."""

    exit_code = 2


class ServerUnreachable(ConfigError):
    """Prefect's API does not answer: its server is down or ``PREFECT_API_URL`` is wrong.

    ``report``: what the sprint did, when it ran to its report before Prefect could not
    record the run's end (its server gone meanwhile).
    """

    def __init__(self, message: str, report: SprintReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a plan: where it is and what is wrong."""

    where: str  # "plan.yaml: tasks[api].timeout", "plan.yaml:12" ...
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class PlanError(AgentfleetError):
    """A plan with one or more problems; all of them are listed at once."""

    exit_code = 2

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ProposalRejected(PlanError):
    """The planner's last answer still had problems after every re-ask (they are listed)."""

    exit_code = 1

    def __init__(self, problems: list[Problem], asks: int) -> None:
        self.asks = asks
        super().__init__(problems)

    def __reduce__(self) -> tuple[type, tuple[list[Problem], int]]:
        # Raised inside the sprint flow's planner task: it must survive pickling.
        return (type(self), (self.problems, self.asks))


class PlanRejected(AgentfleetError):
    """A goal plan's proposed tasks were rejected in review (``review_plan``): nothing ran."""


class ReviewError(AgentfleetError):
    """An answer to a review that does not fit its form (an unknown task or choice)."""

    exit_code = 2


class SprintLocked(AgentfleetError):
    """Another run of the same sprint on the same repository is alive."""

    exit_code = 2


class GitError(AgentfleetError):
    """A git operation failed; the message carries git's own words."""


class NotARepository(GitError):
    """The path is not (inside) a git repository."""

    exit_code = 2


class AgentError(AgentfleetError):
    """An agent could not be started, or its process was lost."""


class AgentNotFound(AgentError, ConfigError):
    """The agent's executable (e.g. the Codex CLI) is not installed where we look."""

    exit_code = 2


class SprintInterrupted(KeyboardInterrupt):
    """Ctrl-C or a cancelled flow run stopped the sprint; ``report`` says what finished.

    A KeyboardInterrupt, not an AgentfleetError: it must pass every ``except Exception``.
    """

    def __init__(self, report: SprintReport) -> None:
        super().__init__("interrupted")
        self.report = report


class VerificationError(AgentfleetError):
    """A setup or verify command could not be run at all (not: it failed)."""


class ConflictError(GitError):
    """Changes git cannot merge on its own; ``files`` are the conflicted paths."""

    def __init__(self, files: list[str], message: str | None = None) -> None:
        self.files = list(files)
        super().__init__(message or "conflict in " + ", ".join(self.files))


class WorktreeTampered(GitError):
    """An attempt's worktree no longer is what agentfleet created: its ``.git`` pointer (or
    the admin dir it names) was changed, removed or replaced, or the folder itself was."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"{WORKTREE_TAMPERED} ({detail})")


WORKTREE_TAMPERED = "the agent changed the worktree's .git"
