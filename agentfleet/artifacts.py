"""What a person watching a sprint sees: artifact keys, markdown, table rows, event payloads.

Pure: built from ``AttemptResult`` and ``SprintReport``, no Prefect. ``tasks/observe.py``
publishes them as Prefect artifacts and events::

    per attempt  markdown  agentfleet-<sprint>-<task>-<k>  event agentfleet.attempt.completed|failed
    per sprint   table     agentfleet-<sprint>-summary     event agentfleet.sprint.applied|failed
                 progress  agentfleet-<sprint>-progress

Keys stay the same from run to run, so the Prefect UI lists each task's history
under one key. Nothing here reads the environment: no secret can get in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from agentfleet.codex.lines import shown_command
from agentfleet.results import AttemptResult, SprintReport

EVENT_PREFIX = "agentfleet"
ATTEMPT_COMPLETED = "agentfleet.attempt.completed"
ATTEMPT_FAILED = "agentfleet.attempt.failed"
SPRINT_APPLIED = "agentfleet.sprint.applied"
SPRINT_FAILED = "agentfleet.sprint.failed"

VERIFY_TAIL_LINES = 40
_KEY_JUNK = re.compile(r"[^a-z0-9]+")
# Prefect keeps artifact keys in an indexed column; long ones help nobody in the UI.
_KEY_MAX = 120


# -- keys ----------------------------------------------------------------------------


def artifact_key(*parts: str | int) -> str:
    """A Prefect artifact key from ``parts``: lowercase letters, digits and single dashes."""
    words = [_KEY_JUNK.sub("-", str(p).lower()).strip("-") for p in parts]
    key = "-".join(w for w in words if w)[:_KEY_MAX].strip("-")
    return key or "agentfleet"


def attempt_key(sprint: str, task_id: str, attempt: int) -> str:
    """The key of an attempt's markdown artifact: ``agentfleet-<sprint>-<task>-<k>``."""
    return artifact_key("agentfleet", sprint, task_id, attempt)


def summary_key(sprint: str) -> str:
    """The key of a sprint's table artifact: ``agentfleet-<sprint>-summary``."""
    return artifact_key("agentfleet", sprint, "summary")


def conflicts_key(sprint: str) -> str:
    """The key of a sprint's predicted-conflicts table: ``agentfleet-<sprint>-conflicts``."""
    return artifact_key("agentfleet", sprint, "conflicts")


def progress_key(sprint: str) -> str:
    """The key of a sprint's progress artifact: ``agentfleet-<sprint>-progress``."""
    return artifact_key("agentfleet", sprint, "progress")


def task_resource_id(sprint: str, task_id: str) -> str:
    """The Prefect resource id of a task of a sprint (what automations match on)."""
    return f"agentfleet.sprint.{sprint}.task.{task_id}"


def sprint_resource_id(sprint: str) -> str:
    """The Prefect resource id of a sprint."""
    return f"agentfleet.sprint.{sprint}"


def branch_resource_id(branch: str) -> str:
    """The Prefect resource id of a git branch agentfleet made or moved."""
    return f"agentfleet.branch.{branch}"


# -- markdown helpers ------------------------------------------------------------------


def _fence(text: str, lang: str = "text") -> str:
    """``text`` in a code fence longer than any run of backticks inside it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text.rstrip()}\n{fence}"


def _code(text: str) -> str:
    """``text`` as inline code in a table cell: one line, pipes escaped."""
    text = " ".join(text.split()).replace("|", "\\|")
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _tail(text: str, lines: int) -> str:
    kept = text.rstrip().splitlines()
    if len(kept) <= lines:
        return "\n".join(kept)
    return f"… ({len(kept) - lines} lines before)\n" + "\n".join(kept[-lines:])


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s"


# -- per attempt -------------------------------------------------------------------------


def attempt_status(result: AttemptResult) -> str:
    """``succeeded`` or ``failed``: the outcome word of an attempt."""
    return "succeeded" if result.succeeded else "failed"


def attempt_markdown(result: AttemptResult, *, sprint: str) -> str:
    """The attempt's report: prompt as sent, final message, commands, diffstat, verify, cost."""
    outcome = result.outcome
    title = f"# {result.task_id} #{result.attempt}: {attempt_status(result)}"
    facts: list[tuple[str, str]] = [("sprint", _cell(sprint))]
    facts.append(("outcome", attempt_status(result) + (f": {_cell(result.reason)}"
                                                       if result.reason else "")))
    if outcome is not None:
        facts.append(("agent ended", outcome.ending.value))
    # A failed attempt that committed nothing keeps no branch (agentfleet.attempt).
    branch = _code(result.branch) if result.head_sha else "none (nothing committed)"
    facts.append(("branch", branch))
    facts.append(("start", _code(result.start_sha[:10])))
    if result.head_sha:
        facts.append(("commit", _code(result.head_sha[:10])))
    if outcome is not None:
        u = outcome.usage
        facts.append((
            "tokens",
            f"{u.total:,} ({u.input_tokens:,} input, {u.cached_input_tokens:,} cached, "
            f"{u.output_tokens:,} output)",
        ))
        if outcome.thread_id:
            facts.append(("codex thread", _code(outcome.thread_id)))
    else:
        facts.append(("tokens", "0"))
    agent_time = f", agent {_duration(outcome.duration_s)}" if outcome is not None else ""
    tries = f", {result.tries} agent runs" if result.tries > 1 else ""
    facts.append(("duration", f"{_duration(result.duration_s)}{agent_time}{tries}"))

    parts = [title, "", "| | |", "|---|---|"]
    parts += [f"| {k} | {v} |" for k, v in facts]

    parts += ["", "## Prompt (as sent, with agentfleet's context)", "", _fence(result.prompt)]

    parts += ["", "## Final message", ""]
    final = outcome.final_message if outcome is not None else None
    parts.append(_fence(final) if final else "_none_")

    if outcome is not None and outcome.error:
        parts += ["", "## Error", "", _fence(outcome.error)]
        # The reason is one line ("command exited 3"); what the agent said is here.
        if not outcome.ok and outcome.stderr_tail.strip():
            parts += ["", "## Output (last lines)", "", _fence(outcome.stderr_tail)]

    parts += ["", "## Commands", ""]
    commands = outcome.commands if outcome is not None else []
    if commands:
        parts += ["| command | exit |", "|---|---|"]
        for c in commands:
            code = str(c.exit_code) if c.exit_code is not None else c.status
            parts.append(f"| {_code(shown_command(c.command))} | {code} |")
    else:
        parts.append("_none_")

    parts += ["", "## Files changed", ""]
    parts.append(_fence(result.diffstat) if result.diffstat.strip() else "_none_")

    for name, check in (("setup", result.setup), ("verify", result.verify)):
        if check is None:
            continue
        verdict = "passed" if check.passed else (
            "timed out" if check.timed_out else f"failed (exit {check.exit_status})"
        )
        parts += ["", f"## {name}: {verdict}", "",
                  f"{_code(check.command)} in {_duration(check.duration_s)}"]
        if check.output_tail.strip():
            parts += ["", _fence(_tail(check.output_tail, VERIFY_TAIL_LINES))]

    if outcome is not None and outcome.warnings:
        parts += ["", "## Warnings from the agent", ""]
        parts += [f"- {_cell(w)}" for w in outcome.warnings[-10:]]
    return "\n".join(parts) + "\n"


def attempt_description(result: AttemptResult) -> str:
    """One line for the artifact list: outcome, tokens, duration."""
    reason = f" ({result.reason})" if result.reason else ""
    return (
        f"{result.task_id}#{result.attempt} {attempt_status(result)}{reason}, "
        f"{result.tokens:,} tokens, {_duration(result.duration_s)}"
    )[:500]


# -- per sprint ---------------------------------------------------------------------------


def summary_rows(
    report: SprintReport, results: Mapping[str, AttemptResult] | None = None
) -> list[dict[str, Any]]:
    """The sprint's table: task, attempts, outcome, tokens, duration, applied."""
    results = results or {}
    rows: list[dict[str, Any]] = []
    for t in report.tasks:
        result = results.get(t.task)
        rows.append({
            "task": t.task,
            "attempts": result.tries if result is not None else 0,
            "outcome": t.outcome.value,
            "detail": t.detail,
            "tokens": t.tokens,
            "duration": _duration(t.duration_s),
            "applied": (t.applied_commit or "")[:10] if t.applied else "no",
            "branch": t.attempt_branch or "",
        })
    return rows


def summary_description(report: SprintReport) -> str:
    """One line for the artifact list: the report's summary line."""
    return report.summary_line()[:500]


def progress(states: Mapping[str, str]) -> tuple[float, str]:
    """Percent of tasks finished, and a line saying how many of each state.

    ``states`` maps each task to its scheduler state (``pending``, ``running``,
    ``succeeded``, ``failed``, ``blocked``, ``done_before``).
    """
    total = len(states)
    counts: dict[str, int] = {}
    for state in states.values():
        counts[str(state)] = counts.get(str(state), 0) + 1
    unfinished = counts.get("pending", 0) + counts.get("running", 0)
    finished = total - unfinished
    percent = 100.0 if total == 0 else round(100.0 * finished / total, 1)
    shown = ", ".join(
        f"{n} {name.replace('_', ' ')}" for name, n in sorted(counts.items()) if n
    )
    return percent, f"{finished}/{total} tasks finished ({shown})"


# -- events -------------------------------------------------------------------------------


class EventSpec(BaseModel):
    """A Prefect event as data: what ``emit_event`` takes."""

    event: str
    resource: dict[str, str]
    related: list[dict[str, str]] = Field(default_factory=list)
    payload: dict[str, Any] = Field(default_factory=dict)


def attempt_event(result: AttemptResult, *, sprint: str) -> EventSpec:
    """``agentfleet.attempt.completed`` or ``.failed``: resource = the task of the sprint."""
    outcome = result.outcome
    return EventSpec(
        event=ATTEMPT_COMPLETED if result.succeeded else ATTEMPT_FAILED,
        resource={
            "prefect.resource.id": task_resource_id(sprint, result.task_id),
            "prefect.resource.name": f"{result.task_id}#{result.attempt}",
            "agentfleet.sprint": sprint,
            "agentfleet.task": result.task_id,
            "agentfleet.attempt": str(result.attempt),
            "agentfleet.branch": result.branch,
        },
        related=[
            {
                "prefect.resource.id": sprint_resource_id(sprint),
                "prefect.resource.role": "sprint",
                "prefect.resource.name": sprint,
            },
            {
                "prefect.resource.id": branch_resource_id(result.branch),
                "prefect.resource.role": "branch",
                "prefect.resource.name": result.branch,
            },
        ],
        payload={
            "outcome": attempt_status(result),
            "reason": result.reason,
            "ending": outcome.ending.value if outcome is not None else None,
            "tokens": result.tokens,
            "duration_s": round(result.duration_s, 2),
            "files": len(result.files),
            "agent_runs": result.tries,
            "commit": result.head_sha,
        },
    )


def sprint_event(report: SprintReport) -> EventSpec:
    """``agentfleet.sprint.applied`` (every task on a verified target) or ``.failed``."""
    applied = report.exit_status == 0
    not_applied = {t.task: t.outcome.value for t in report.tasks if not t.applied}
    if applied:
        reason = ""
    elif report.interrupted:
        reason = "interrupted"
    elif not_applied:
        reason = "not applied: " + ", ".join(f"{k} ({v})" for k, v in not_applied.items())
    elif report.final_verify is not None and not report.final_verify.passed:
        reason = f"final_verify failed (exit {report.final_verify.exit_status})"
    else:
        reason = report.target_note or "the target did not move"
    return EventSpec(
        event=SPRINT_APPLIED if applied else SPRINT_FAILED,
        resource={
            "prefect.resource.id": sprint_resource_id(report.sprint),
            "prefect.resource.name": report.sprint,
            "agentfleet.sprint": report.sprint,
            "agentfleet.target": report.target,
            "agentfleet.base": report.base,
        },
        related=[
            {
                "prefect.resource.id": branch_resource_id(report.target),
                "prefect.resource.role": "target",
                "prefect.resource.name": report.target,
            },
            *(
                {
                    "prefect.resource.id": task_resource_id(report.sprint, t.task),
                    "prefect.resource.role": "task",
                    "prefect.resource.name": t.task,
                }
                for t in report.tasks
            ),
        ],
        payload={
            "outcome": "applied" if applied else "failed",
            "reason": reason,
            "applied": sum(t.applied for t in report.tasks),
            "tasks": len(report.tasks),
            "not_applied": not_applied,
            "tokens": report.tokens,
            "duration_s": round(report.duration_s, 2),
            "target_sha": report.target_sha,
            "target_moved": report.target_moved,
            "final_verify_passed": (
                None if report.final_verify is None else report.final_verify.passed
            ),
        },
    )
