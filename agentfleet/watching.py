"""What ``agentfleet status`` and ``agentfleet show`` print, from what the Prefect API holds.

Pure formatting: the Prefect side (``flows/watching.py``) reads flow runs and artifacts
and hands them over as plain models; nothing here talks to a server. An attempt is read
back from the markdown artifact ``agentfleet.artifacts.attempt_markdown`` wrote, by its
``## `` sections, so what a terminal shows is what the UI shows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from agentfleet.artifacts import artifact_key

# Prefect's state types, as a person reads them in the status table.
_OUTCOMES = {"COMPLETED": "applied", "FAILED": "failed", "CRASHED": "crashed",
             "CANCELLED": "cancelled", "CANCELLING": "cancelling", "RUNNING": "running",
             "SCHEDULED": "scheduled", "PENDING": "pending", "PAUSED": "paused"}


class SprintRunView(BaseModel):
    """One flow run of ``sprint``, with its summary table (if it got that far)."""

    id: str
    name: str
    state_type: str
    state_name: str = ""
    message: str = ""
    start: datetime | None = None
    end: datetime | None = None
    run_time_s: float = 0.0
    summary_key: str | None = None
    summary: list[dict[str, Any]] = Field(default_factory=list)
    url: str | None = None


class AttemptArtifact(BaseModel):
    """An attempt's markdown artifact: its key, one-line description and report."""

    key: str
    description: str = ""
    markdown: str = ""
    created: datetime | None = None


def table_rows(data: Any) -> list[dict[str, Any]]:
    """A table artifact's rows: Prefect stores the list of dicts as JSON text."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return []
    return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []


def sprint_of(run: SprintRunView) -> str:
    """The sprint's name: from the run's name (``sprint orders-v2``), else its summary key."""
    if run.name.startswith("sprint ") and len(run.name) > 7:
        return run.name[7:]
    if run.summary_key:
        return run.summary_key.removeprefix("agentfleet-").removesuffix("-summary")
    return run.name


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def run_duration(run: SprintRunView, now: datetime) -> float:
    """Seconds the run ran: Prefect's run time, or from its start until now while it runs."""
    if run.run_time_s:
        return run.run_time_s
    if run.start is not None:
        end = run.end or now
        # total_seconds(): Prefect's datetimes are pendulum's, whose difference cannot be
        # divided by a timedelta (AttributeError '_to_microseconds').
        return max((end - run.start).total_seconds(), 0.0)
    return 0.0


def status_row(run: SprintRunView, now: datetime) -> dict[str, str]:
    """The status table's cells for one run."""
    outcome = _OUTCOMES.get(run.state_type, run.state_type.lower())
    if run.summary:
        applied = sum(1 for r in run.summary if str(r.get("applied", "no")) not in ("no", ""))
        tasks = f"{applied}/{len(run.summary)}"
        tokens = f"{sum(int(r.get('tokens') or 0) for r in run.summary):,}"
    else:
        tasks, tokens = "-", "-"
    started = run.start.strftime("%Y-%m-%d %H:%M") if run.start else "-"
    return {
        "sprint": sprint_of(run), "flow run": run.name if run.name != f"sprint {sprint_of(run)}"
        else run.id[:8], "started": started, "outcome": outcome, "applied": tasks,
        "tokens": tokens, "duration": _duration(run_duration(run, now)),
        "link": run.url or run.id,
    }


def status_table(runs: Sequence[SprintRunView], now: datetime) -> str:
    """``agentfleet status``: one line per recent sprint run, newest first."""
    if not runs:
        return "no sprint runs on this server yet\n"
    rows = [status_row(r, now) for r in runs]
    header = list(rows[0])
    widths = {h: max(len(h), *(len(r[h]) for r in rows)) for h in header[:-1]}
    lines = ["  ".join(h.ljust(widths[h]) for h in header[:-1]) + "  " + header[-1]]
    for r in rows:
        lines.append("  ".join(r[h].ljust(widths[h]) for h in header[:-1]) + "  " + r["link"])
    return "\n".join(lines) + "\n"


# -- show -------------------------------------------------------------------------------


def attempt_key_prefix(sprint: str, task: str | None = None) -> str:
    """The artifact key every attempt of ``sprint`` (or of its ``task``) starts with."""
    return artifact_key("agentfleet", sprint, *([task] if task else [])) + "-"


def parse_task_ref(ref: str) -> tuple[str, int | None]:
    """``task`` or ``task#k`` (as task runs are named) -> (task, k or None)."""
    task, sep, k = ref.partition("#")
    if sep and k.isdigit():
        return task, int(k)
    return ref, None


def attempt_number(key: str, sprint: str, task: str) -> int | None:
    """k of an attempt artifact of ``task``, None for another task's (``db`` vs ``db-x``)."""
    match = re.fullmatch(re.escape(attempt_key_prefix(sprint, task)) + r"(\d+)", key)
    return int(match.group(1)) if match else None


def sections(markdown: str) -> tuple[str, list[tuple[str, str]], dict[str, str]]:
    """An attempt report split up: its title, its facts table, and its ``## `` sections."""
    title = ""
    facts: list[tuple[str, str]] = []
    found: dict[str, str] = {}
    current: str | None = None
    body: list[str] = []
    for line in markdown.splitlines():
        if line.startswith("# ") and not title:
            title = line[2:].strip()
        elif line.startswith("## "):
            if current is not None:
                found[current] = "\n".join(body).strip("\n")
            current, body = line[3:].strip(), []
        elif current is None and line.startswith("| ") and line.count("|") >= 3:
            cells = [c.strip() for c in line.strip().strip("|").split("|", 1)]
            if cells[0] and len(cells) == 2:
                facts.append((cells[0], cells[1].replace("\\|", "|").strip("`")))
        elif current is not None:
            body.append(line)
    if current is not None:
        found[current] = "\n".join(body).strip("\n")
    return title, facts, found


def _unfence(text: str) -> str:
    """A section's text without its code fence (the fence is for markdown, not a terminal)."""
    lines = text.strip("\n").splitlines()
    if len(lines) >= 2 and re.fullmatch(r"`{3,}\w*", lines[0]) and re.fullmatch(r"`{3,}",
                                                                                lines[-1]):
        lines = lines[1:-1]
    elif lines and re.fullmatch(r"`{3,}\w*", lines[0]):
        closing = next((i for i in range(1, len(lines)) if re.fullmatch(r"`{3,}", lines[i])),
                       None)
        if closing is not None:
            lines = lines[1:closing] + ([""] + lines[closing + 1:] if closing + 1 < len(lines)
                                        else [])
    return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" if line else "" for line in text.splitlines())


def show_attempt(artifact: AttemptArtifact) -> str:
    """One attempt for a terminal: facts, prompt, final message, diffstat, ``verify``'s tail."""
    title, facts, found = sections(artifact.markdown)
    out = [f"== {title or artifact.key}"]
    out += [f"{k}: {v}" for k, v in facts]
    shown = [name for name in found if name.startswith("Prompt")]
    shown += [n for n in ("Final message", "Error", "Output (last lines)", "Files changed")
              if n in found]
    shown += [n for n in found if n.startswith(("setup:", "verify:"))]
    for name in shown:
        text = _unfence(found[name]).strip("\n")
        out += ["", f"-- {name}", _indent(text) if text and text != "_none_" else "  (none)"]
    return "\n".join(out).rstrip() + "\n"


def show_sprint(
    sprint: str,
    run: SprintRunView | None,
    attempts: Iterable[AttemptArtifact],
    now: datetime,
) -> str:
    """``agentfleet show SPRINT``: its latest run's line and one line per attempt."""
    out = []
    if run is not None:
        row = status_row(run, now)
        out.append(f"sprint {sprint}: {row['outcome']}, {row['applied']} tasks applied, "
                   f"{row['tokens']} tokens, {row['duration']}  {row['link']}")
        if run.message:
            out.append(run.message)
    # Attempt keys end in their k; the sprint's other markdown (its plan) is not an attempt.
    listed = sorted((a for a in attempts if re.search(r"-\d+$", a.key)), key=lambda a: a.key)
    if listed:
        out += ["", "attempts (agentfleet show SPRINT TASK, or TASK#K, for one):"]
        out += [f"  {a.description or a.key}" for a in listed]
    else:
        out.append("no attempt artifacts for this sprint")
    return "\n".join(out) + "\n"
