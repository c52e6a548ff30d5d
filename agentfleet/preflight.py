"""What ``agentfleet run`` (and the ``sprint`` flow) check before anything runs.

A checked plan says nothing of where the run writes: the report file, the work dir
(worktrees, locks, leases) and which tasks to run again. Each problem is one line,
and the run stops with exit 2 before a lock, a branch or a folder exists.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from pathlib import Path

from agentfleet.decompose import Decomposition
from agentfleet.errors import ConfigError


def run_problems(
    *,
    repo_root: Path,
    task_ids: Sequence[str],
    work_dir: Path,
    report: str | Path | None = None,
    redo: Sequence[str] = (),
) -> list[str]:
    """Why a run with these settings cannot start, one line per problem ([] when it can)."""
    problems: list[str] = []
    root = Path(repo_root).resolve()
    work = Path(work_dir).expanduser().resolve()
    if work == root or root in work.parents:
        problems.append(
            f"the work dir {work} (AGENTFLEET_WORK_DIR) is inside the repository {root}: "
            "agents' worktrees would become files of it; choose a folder outside it"
        )
    elif work.exists() and not work.is_dir():
        problems.append(f"the work dir {work} (AGENTFLEET_WORK_DIR) is not a folder")
    if report is not None:
        problems += _report_problems(Path(report))
    for task in dict.fromkeys(redo):
        if task not in task_ids:
            close = difflib.get_close_matches(task, list(task_ids), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            problems.append(f"--redo {task}: the plan has no task '{task}'{hint}")
    return problems


def _report_problems(path: Path) -> list[str]:
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        return [f"--report {path}: is a folder; name a file"]
    if not folder.exists():
        return [f"--report {path}: the folder {folder} does not exist; create it first"]
    if not folder.is_dir():
        return [f"--report {path}: {folder} is not a folder"]
    if not os.access(folder, os.W_OK | os.X_OK):
        return [f"--report {path}: the folder {folder} is not writable"]
    return []


def check_run(
    *,
    repo_root: Path,
    task_ids: Sequence[str],
    work_dir: Path,
    report: str | Path | None = None,
    redo: Sequence[str] = (),
) -> None:
    """``run_problems``, raised as one ``ConfigError`` (exit 2) when there are any."""
    problems = run_problems(
        repo_root=repo_root, task_ids=task_ids, work_dir=work_dir, report=report, redo=redo
    )
    if problems:
        raise ConfigError("\n".join(problems))


def redo_closure(dec: Decomposition, redo: Sequence[str]) -> list[str]:
    """The tasks ``--redo`` runs again: those named and every task depending on them."""
    wanted = set(redo)
    for task in dec.order:  # dependencies come first in apply order
        if any(d in wanted for d in dec.depends_on.get(task, [])):
            wanted.add(task)
    return [t for t in dec.order if t in wanted]
