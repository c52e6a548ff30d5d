"""What a sprint produced: per attempt, per task, per sprint. Pure pydantic models.

These travel between Prefect tasks (they are the persisted results) and end up in
the CLI's summary table and ``--report`` JSON.
"""

from __future__ import annotations

import base64
from enum import StrEnum
from typing import Literal

from pydantic import Field, field_validator

from agentfleet.codex.outcome import AttemptOutcome
from agentfleet.process import ShellResult
from agentfleet.selection import Candidate
from agentfleet.text import JsonSafeModel

# A reason in the table and the report is one line: an agent's whole output is not one.
DETAIL_MAX = 300
TABLE_DETAIL_MAX = 100
FAILED_OUTPUT_LINES = 20


def one_line(text: str, limit: int = DETAIL_MAX) -> str:
    """``text`` on one line (whitespace runs as one space), cut to ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def last_lines(text: str, n: int = FAILED_OUTPUT_LINES) -> str:
    """The last ``n`` lines of ``text``."""
    return "\n".join(text.rstrip().splitlines()[-n:])


class CheckResult(JsonSafeModel):
    """One run of a shell check (``setup``, ``verify``, ``final_verify``)."""

    command: str
    passed: bool
    exit_status: int | None
    output_tail: str = ""
    duration_s: float = 0.0
    timed_out: bool = False
    # final_verify only: not run, the earlier pass of the same tree, command and
    # environment stands (agentfleet/verified.py); names that run and when.
    reused_from: str | None = None

    @classmethod
    def from_shell(cls, result: ShellResult) -> CheckResult:
        """The record of a finished shell command."""
        return cls(
            command=result.command,
            passed=result.passed,
            exit_status=result.exit_status,
            output_tail=result.output_tail,
            duration_s=result.duration_s,
            timed_out=result.timed_out,
        )


class CommitPatch(JsonSafeModel):
    """An attempt's commit as data (``git diff --binary start..head`` and its message).

    Persisted with the result, so a cache hit can recreate the attempt branch on any
    clone whose start tree matches, with no worktree (``agentfleet.restore``).
    """

    diff: str = Field(description="the binary patch; base64 of its bytes when not UTF-8")
    encoding: Literal["utf-8", "base64"] = "utf-8"
    message: str = ""
    tree: str = Field("", description="the commit's tree: tells a branch that still holds it")
    omitted_bytes: int | None = Field(
        None, description="set when the patch was too large to keep (its size, about): "
        "then ``diff`` is empty and only the attempt branch holds the commit",
    )

    @classmethod
    def of(cls, data: bytes, message: str) -> CommitPatch:
        """A patch from git's bytes, kept readable when they are UTF-8."""
        try:
            return cls(diff=data.decode("utf-8"), message=message)
        except UnicodeDecodeError:
            return cls(diff=base64.b64encode(data).decode(), encoding="base64", message=message)

    def data(self) -> bytes:
        """The patch's bytes, as git wrote them."""
        if self.encoding == "base64":
            return base64.b64decode(self.diff)
        return self.diff.encode("utf-8")


class AttemptResult(JsonSafeModel):
    """One agent attempt at one task, from worktree to committed branch."""

    task_id: str
    attempt: int
    branch: str
    start_sha: str
    head_sha: str | None = Field(None, description="the attempt's commit; None when it made none")
    succeeded: bool
    reason: str = Field("", description="why it failed, in words, when it did")
    prompt: str = ""
    outcome: AttemptOutcome | None = None
    setup: CheckResult | None = None
    verify: CheckResult | None = None
    score: CheckResult | None = Field(
        None, description="the `score` command, run after verify passed; best-of-N reads its "
        "last line"
    )
    files: list[str] = []
    diffstat: str = ""
    duration_s: float = 0.0
    tries: int = Field(1, description="agent runs: transient retries and continuations included")
    continuations: int = Field(0, description="fresh sessions after a full context window")
    patch: CommitPatch | None = Field(
        None, description="the commit as a binary patch, to restore the branch from the cache"
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="what agentfleet undid or left out (refs the agent created, files it "
        "cannot commit)",
    )
    ran_on: str | None = Field(
        None, description="a `placement: pool` attempt's worker and host, e.g. `w2 (build-3)`"
    )

    @property
    def tokens(self) -> int:
        return self.outcome.usage.total if self.outcome else 0

    def __repr__(self) -> str:
        # Prefect logs a failed task run's state with its data: one line, not the patch.
        status = "succeeded" if self.succeeded else f"failed: {self.reason[:200]}"
        return f"AttemptResult({self.task_id}#{self.attempt}, {status})"


class TaskOutcome(StrEnum):
    APPLIED = "applied"
    ALREADY_APPLIED = "already applied"
    FAILED = "failed"
    BLOCKED = "blocked"
    CONFLICT = "conflict"
    EJECTED = "ejected"  # applied, then taken out again: it broke final_verify
    NOT_APPLIED = "not applied"
    NOT_RUN = "not run"  # interrupted before it started


class TaskReport(JsonSafeModel):
    """One row of the summary."""

    task: str
    outcome: TaskOutcome
    detail: str = ""
    attempt_branch: str | None = None
    files: list[str] = []
    tokens: int = 0
    duration_s: float = 0.0
    applied_commit: str | None = None
    verify_tail: str = Field(
        "", description="a failed task's last lines of verify's output (the artifact has more)"
    )
    candidates: list[Candidate] = Field(
        default_factory=list, description="every attempt of a task run more than once (best-of-N)"
    )
    votes: dict[int, int] = Field(default_factory=dict, description="k -> consensus votes")
    winner: int | None = Field(None, description="the k that was chosen, if any")
    criterion: str | None = Field(None, description="what decided the choice (issue 10's order)")
    selection: str = Field("", description='the sentence, e.g. "k=2 won on score: 2.0 < 5.0"')
    ran_on: str | None = Field(None, description="the worker that ran it (`placement: pool`)")

    @field_validator("detail")
    @classmethod
    def _one_line(cls, value: str) -> str:
        return one_line(value)

    @property
    def applied(self) -> bool:
        return self.outcome in (TaskOutcome.APPLIED, TaskOutcome.ALREADY_APPLIED)

    def choice(self) -> str:
        """`` [k=2 of 3, on score]`` for a task with several attempts; '' otherwise."""
        if not self.candidates:
            return ""
        n = len(self.candidates)
        if self.winner is None:
            return f" [none of {n} passed]"
        return f" [k={self.winner} of {n}, on {self.criterion}]"


class SprintReport(JsonSafeModel):
    """The whole sprint: what ``agentfleet run`` prints and ``--report`` writes."""

    sprint: str
    repo: str
    base: str
    target: str
    tasks: list[TaskReport]
    final_verify: CheckResult | None = None
    target_moved: bool = False
    target_up_to_date: bool = Field(
        False, description="the target holds every applied result (moved now, or before)"
    )
    target_sha: str | None = None
    target_note: str = ""
    interrupted: bool = False
    push_failed: bool = False  # the target moved here, but pushing it was refused
    planner_tokens: int = Field(0, description="the planner's tokens (a plan with goal:)")

    @field_validator("target_note")
    @classmethod
    def _one_line(cls, value: str) -> str:
        return one_line(value, limit=1000)
    duration_s: float = 0.0

    @property
    def exit_status(self) -> int:
        """0: all applied, verified and on target; 130: interrupted; 1: anything else."""
        if self.interrupted:
            return 130
        all_applied = all(t.applied for t in self.tasks)
        verified = self.final_verify is None or self.final_verify.passed
        landed = all_applied and verified and self.target_up_to_date and not self.push_failed
        return 0 if landed else 1

    @property
    def tokens(self) -> int:
        return self.planner_tokens + sum(t.tokens for t in self.tasks)

    def table(self) -> str:
        """The summary as a plain-text table."""
        header: tuple[str, ...] = (
            "task", "outcome", "attempt branch", "files", "tokens", "duration", "applied")
        rows: list[tuple[str, ...]] = [
            (
                t.task,
                t.outcome.value
                + (f" ({one_line(t.detail, TABLE_DETAIL_MAX)})" if t.detail else "")
                + t.choice(),
                t.attempt_branch or "-",
                str(len(t.files)),
                f"{t.tokens:,}",
                f"{t.duration_s:.1f}s",
                (t.applied_commit or "")[:10] if t.applied else "no",
            )
            for t in self.tasks
        ]
        if any(t.ran_on for t in self.tasks):  # a pool sprint: where each ran
            header += ("worker",)
            rows = [(*row, t.ran_on or "-") for row, t in zip(rows, self.tasks, strict=True)]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                 for r in [header, *rows]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def failure_details(self) -> str:
        """For each task whose verify failed, the last lines of its output ('' if none)."""
        blocks = [
            f"{t.task}: {'final_verify' if t.outcome is TaskOutcome.EJECTED else 'verify'} "
            f"failed, last {FAILED_OUTPUT_LINES} lines of its output:\n"
            + "\n".join(f"  {line}" for line in t.verify_tail.splitlines())
            for t in self.tasks
            if t.verify_tail and not t.applied
        ]
        return "\n\n".join(blocks)

    def flow_end(self) -> tuple[bool, str]:
        """Whether the flow run that made this report completes (all landed, as exit 0),
        and its message: the summary line."""
        return self.exit_status == 0, self.summary_line()

    def summary_line(self) -> str:
        """One closing sentence: where the target is and whether it was verified."""
        applied = sum(t.applied for t in self.tasks)
        fv = (
            "no final_verify"
            if self.final_verify is None
            else ("final_verify FAILED" if not self.final_verify.passed
                  else f"final_verify passed (reused: {self.final_verify.reused_from})"
                  if self.final_verify.reused_from else "final_verify passed")
        )
        where = (
            f"{self.target} -> {self.target_sha[:10]}"
            if self.target_sha and self.target_moved
            else f"{self.target} at {self.target_sha[:10]} (unchanged)"
            if self.target_sha
            else f"{self.target} not moved"
        )
        note = f"; {self.target_note}" if self.target_note else ""
        missing = [f"{t.task} {t.outcome.value}" for t in self.tasks if not t.applied]
        # The flow run's state message is this line: it names what did not land.
        unapplied = f" (not applied: {', '.join(missing)})" if missing else ""
        return (
            f"sprint {self.sprint}: {applied}/{len(self.tasks)} tasks applied{unapplied}, {fv}, "
            f"{where}, {self.tokens:,} tokens, {self.duration_s:.1f}s{note}"
        )
