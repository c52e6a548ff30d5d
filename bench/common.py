"""What every measure shares: the result row, goals, timing, the table, machine facts, git.

A measure compares agentfleet with a baseline timed in the same run, on the same
machine, minutes apart at most: the ratio is the figure that means something on a
shared, noisy machine; absolute seconds are there for scale only.
"""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
AGENTFLEET = VENV_BIN / "agentfleet"
CODEX = PROJECT_ROOT / "node_modules" / ".bin" / "codex"

MEASURED = "measured"
NOT_MEASURABLE = "not measurable yet"

# Git as in CI: nobody's global configuration (hooks, signing, templates) in the timings.
GIT_ENV = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"}
IDENTITY = ["-c", "user.name=Bench", "-c", "user.email=bench@example.com",
            "-c", "commit.gpgsign=false"]


@dataclass(frozen=True)
class Goal:
    """What a row must reach: ``ratio <= limit``, ``value < limit`` (seconds, ms, MB), or none."""

    text: str
    check: Callable[[Row], bool] | None = None


@dataclass
class Row:
    """One line of the table and of ``results.json``."""

    name: str
    title: str
    baseline_label: str
    baseline_s: float | None = None
    agentfleet_s: float | None = None
    ratio: float | None = None
    ratio_of: str = "agentfleet / baseline"
    goal: str = "—"
    met: bool | None = None
    status: str = MEASURED
    notes: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def judge(self, goal: Goal) -> Row:
        """Record the goal's text and whether this row meets it (None: no goal or no figure)."""
        self.goal = goal.text
        if goal.check is not None and self.status == MEASURED and self.ratio is not None:
            self.met = bool(goal.check(self))
        return self

    def to_json(self) -> dict[str, Any]:
        """The row as plain data."""
        return asdict(self)


def not_measurable(name: str, title: str, baseline_label: str, goal: str, why: str) -> Row:
    """A row for a measure whose feature is not built yet: no figure, a reason."""
    return Row(name=name, title=title, baseline_label=baseline_label, goal=goal,
               status=NOT_MEASURABLE, notes=why)


def ratio_le(limit: float) -> Goal:
    """Goal: agentfleet's time is at most ``limit`` times the baseline's."""
    return Goal(f"≤ {limit:g}", lambda r: r.ratio is not None and r.ratio <= limit)


def seconds_lt(limit: float) -> Goal:
    """Goal: agentfleet's time is under ``limit`` seconds."""
    return Goal(f"< {limit:g} s", lambda r: r.agentfleet_s is not None and r.agentfleet_s < limit)


def median(values: list[float]) -> float:
    """The median; values are never empty here."""
    return statistics.median(values)


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """``with stopwatch() as t: ...``; afterwards ``t[0]`` holds the seconds it took."""
    box: list[float] = []
    started = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - started)


def git(repo: Path, *args: str, input: str | None = None) -> str:
    """Run git in ``repo``; its stdout; raise with git's message on failure."""
    done = subprocess.run(
        ["git", "-C", str(repo), *args], input=input, capture_output=True, text=True,
        env={**os.environ, **GIT_ENV},
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {done.stderr.strip()}")
    return done.stdout


def init_repo(path: Path) -> Path:
    """An empty repository on ``main`` with a bench identity in its own config."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    return configure_repo(path)


def configure_repo(path: Path) -> Path:
    """Give a repository the bench identity; no automatic gc in the middle of a timing."""
    for key, value in (("user.name", "Bench"), ("user.email", "bench@example.com"),
                       ("commit.gpgsign", "false"), ("gc.auto", "0")):
        git(path, "config", key, value)
    return path


def commit_all(repo: Path, message: str) -> str:
    """Commit everything in ``repo``; the new sha."""
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--no-verify", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without AGENTFLEET_* and PREFECT_*, plus git's and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTFLEET_", "PREFECT_"))}
    env.update(GIT_ENV)
    env.update(extra)
    return env


def _version(cmd: list[str]) -> str | None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout or done.stderr).strip().splitlines()[0] if done.returncode == 0 else None


def machine_facts() -> dict[str, Any]:
    """Where and when: cores, load, Python, git, Codex and Prefect versions, the date (UTC)."""
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    try:
        from importlib.metadata import version

        prefect_version = version("prefect")
    except Exception:  # noqa: BLE001 - a fact we can do without
        prefect_version = None
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "load_average": load,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "git": _version(["git", "--version"]),
        "codex": _version([str(CODEX), "--version"]) if CODEX.exists() else None,
        "prefect": prefect_version,
        "node": _version(["node", "--version"]) if shutil.which("node") else None,
    }


def fmt_s(seconds: float | None) -> str:
    """Seconds for the table: ms below one second."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def table(rows: list[Row]) -> str:
    """The printed table: measure, baseline, agentfleet, ratio, goal, met?"""
    head = ["measure", "baseline", "agentfleet", "ratio", "goal", "met?"]
    lines = []
    for r in rows:
        if r.status != MEASURED:
            lines.append([r.name, r.baseline_label, r.status, "—", r.goal, "—"])
            continue
        base = r.baseline_label
        if r.baseline_s is not None:
            base = f"{base} {fmt_s(r.baseline_s)}"
        ratio = "—" if r.ratio is None else f"{r.ratio:.3f}"
        ours = fmt_s(r.agentfleet_s)
        if r.details.get("finished") is False:  # stopped at a cap: figures are lower bounds
            ours, ratio = f"> {ours} (stopped)", f"> {ratio}"
        met = "—" if r.met is None else ("yes" if r.met else "no")
        lines.append([r.name, base, ours, ratio, r.goal, met])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=False)]

    def render(cells: list[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out = [render(head), render(["-" * w for w in widths])]
    out += [render(cells) for cells in lines]
    return "\n".join(out)


def say(message: str) -> None:
    """Progress on stderr, so a piped table stays clean."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
