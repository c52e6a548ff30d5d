"""Best-of-N: which of a task's candidates wins, and one sentence saying why. Pure.

Each attempt of a task is a ``Candidate``; ``choose`` applies, in order, the first
criterion that separates the candidates still in the running (issue 10)::

    1. passes      the agent completed, only files in ``paths`` changed, verify exited 0
    2. score       the ``score`` command's number, better by ``score_goal`` (only when set)
    3. votes       passing candidates whose diffs agree after normalising whitespace
    4. diff size   fewer lines added plus removed
    5. tokens      fewer tokens spent
    6. k           the lower attempt number

The first criterion that separates the passing candidates is the deciding one
(``Selection.criterion``); when several share its best value, the next criteria
decide among those only, and the sentence says so. Nothing here runs git or a
shell: the caller hands in the diff text, numstat figures and the score command's
output. A score output that does not end in a number raises ``ScoreError`` (an
``AgentfleetError`` and a ``ValueError``); ``apply_score`` turns it into the
candidate's failure reason.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, computed_field, field_validator

from agentfleet.codex.outcome import Usage
from agentfleet.errors import AgentfleetError

if TYPE_CHECKING:
    from agentfleet.results import AttemptResult

ScoreGoal = Literal["min", "max"]

# A score line is a plain decimal number; "12 ms" or "1_000" would be guesses.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
# How much of an offending score line goes into the reason: enough to recognise it.
_SHOWN_LINE = 80


class ScoreError(AgentfleetError, ValueError):
    """A ``score`` command's output that does not end in a number; its candidate fails."""


class Criterion(StrEnum):
    """What decided a selection, in the order the criteria are applied."""

    PASSES = "passes"
    SCORE = "score"
    VOTES = "votes"
    DIFF_SIZE = "diff size"
    TOKENS = "tokens"
    K = "k"
    REVIEW = "review"  # a person chose another candidate (``review: true``); not applied here


class Candidate(BaseModel):
    """One attempt of a task as best-of-N judges it."""

    k: int = Field(ge=1, description="the attempt's number, from 1")
    branch: str
    passed: bool = Field(description="the agent completed, paths respected, verify exited 0")
    reason: str = Field("", description="why it failed, one line")
    files: list[str] = Field(default_factory=list)
    added: int = Field(0, ge=0, description="lines added")
    removed: int = Field(0, ge=0, description="lines removed")
    fingerprint: str | None = Field(
        None, description="of the normalised diff: equal fingerprints vote for one another"
    )
    usage: Usage = Field(default_factory=Usage)
    duration_s: float = 0.0
    verify_exit_status: int | None = None
    verify_output_tail: str = ""
    score: float | None = None
    score_error: str | None = None
    final_message: str | None = None

    # outcome, diff_size and tokens are computed fields: in ``--report`` JSON, never
    # stored apart from the figures they come from.

    @field_validator("reason")
    @classmethod
    def _one_line(cls, value: str) -> str:
        # Reasons end up in table cells and one-line summaries; details stay in the
        # verify output tail and the attempt's own artifact.
        lines = [ln.strip() for ln in value.splitlines() if ln.strip()]
        return lines[0] if lines else ""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def outcome(self) -> str:
        """``passed`` or ``failed``."""
        return "passed" if self.passed else "failed"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def diff_size(self) -> int:
        """Lines added plus lines removed."""
        return self.added + self.removed

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tokens(self) -> int:
        """Tokens spent (input plus output, as ``Usage.total``)."""
        return self.usage.total

    @classmethod
    def from_attempt(cls, result: AttemptResult, *, numstat: str | None = None) -> Candidate:
        """The candidate of a finished attempt; its diff comes from the stored patch.

        ``numstat`` (``git diff --numstat start..head``) gives the diff size when at
        hand; otherwise the patch's own ``+``/``-`` lines are counted.
        """
        patch = result.patch.data().decode("utf-8", "replace") if result.patch else ""
        size = diff_size(parse_numstat(numstat)) if numstat is not None else count_diff(patch)
        outcome = result.outcome
        verify = result.verify
        return cls(
            k=result.attempt,
            branch=result.branch,
            passed=result.succeeded,
            reason=result.reason,
            files=list(result.files),
            added=size.added,
            removed=size.removed,
            fingerprint=fingerprint(patch) if result.head_sha else None,
            usage=outcome.usage if outcome is not None else Usage(),
            duration_s=result.duration_s,
            verify_exit_status=verify.exit_status if verify is not None else None,
            verify_output_tail=verify.output_tail if verify is not None else "",
            final_message=outcome.final_message if outcome is not None else None,
        )


class Step(BaseModel):
    """One criterion that separated the candidates still in the running."""

    criterion: Criterion
    among: list[int] = Field(description="the ks still in the running before this criterion")
    leaders: list[int] = Field(description="the ks sharing its best value: they go on")
    best: float | int | None = Field(description="the leaders' value")
    next_best: float | int | None = Field(description="the best value of those left behind")


class Selection(BaseModel):
    """The outcome of ``choose``: the winner (None when nothing passed) and why."""

    candidates: list[Candidate]
    score_goal: ScoreGoal = "min"
    winner: Candidate | None
    criterion: Criterion | None = Field(
        description="the first criterion that separated the passing candidates; None: no winner"
    )
    sentence: str = Field(description='e.g. "k=2 won on score: 2.0 < 5.0"')
    votes: dict[int, int] = Field(default_factory=dict, description="k -> votes")
    steps: list[Step] = Field(
        default_factory=list,
        description="each criterion that separated; after the first, ties broken among leaders",
    )

    @property
    def winner_k(self) -> int | None:
        """The winner's k, or None."""
        return self.winner.k if self.winner is not None else None

    @property
    def reasons(self) -> dict[int, str]:
        """Why each failed candidate failed, by k."""
        return {c.k: c.reason or "failed" for c in self.candidates if not c.passed}


# -- score ------------------------------------------------------------------------------


def parse_score(output: str) -> float:
    """The number on the last non-empty line of a ``score`` command's output.

    Raises ``ScoreError`` saying what was there instead; the caller fails the
    candidate with that message as its reason.
    """
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    if not lines:
        raise ScoreError("score printed nothing; its last non-empty line must be a number")
    last = lines[-1]
    if not _NUMBER.fullmatch(last):
        shown = last if len(last) <= _SHOWN_LINE else last[: _SHOWN_LINE - 1] + "…"
        raise ScoreError(f"score's last non-empty line must be a number, got {shown!r}")
    value = float(last)
    # A 400-digit number overflows to inf, which would beat or lose to everything.
    if not math.isfinite(value):
        raise ScoreError(f"score's last non-empty line is not a finite number: {last[:20]!r}…")
    return value


def apply_score(candidate: Candidate, output: str) -> Candidate:
    """The candidate with its score read from ``output``, or failed with the reason why not.

    A candidate that already failed keeps its own reason: score runs after verify.
    """
    try:
        value = parse_score(output)
    except ScoreError as e:
        if not candidate.passed:
            return candidate.model_copy(update={"score_error": str(e)})
        return candidate.model_copy(
            update={"passed": False, "reason": str(e), "score_error": str(e), "score": None}
        )
    return candidate.model_copy(update={"score": value, "score_error": None})


# -- diffs ------------------------------------------------------------------------------


class DiffSize(BaseModel):
    """Lines added and removed, and the files they are in."""

    added: int = 0
    removed: int = 0
    files: list[str] = Field(default_factory=list)

    @property
    def lines(self) -> int:
        """Lines added plus lines removed: what best-of-N calls the diff's size."""
        return self.added + self.removed


NumstatRow = tuple[int | None, int | None, str]


def parse_numstat(text: str) -> list[NumstatRow]:
    """Rows of ``git diff --numstat``: (added, removed, path); None for a binary file's "-"."""
    rows: list[NumstatRow] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise ValueError(f"not a numstat line: {line!r}")
        added, removed, path = parts
        rows.append((_count(added, line), _count(removed, line), path))
    return rows


def _count(text: str, line: str) -> int | None:
    if text == "-":
        return None
    if not text.isdigit():
        raise ValueError(f"not a numstat line: {line!r}")
    return int(text)


def diff_size(numstat: Iterable[NumstatRow]) -> DiffSize:
    """The size of a diff from numstat rows; a binary file counts no lines, as in git."""
    size = DiffSize()
    for added, removed, path in numstat:
        size.added += added or 0
        size.removed += removed or 0
        size.files.append(path)
    return size


@dataclass
class _FileDiff:
    """One file of a unified diff: header, metadata lines, and both sides' hunk lines."""

    header: str
    path: str = ""
    meta: list[str] = field(default_factory=list)
    old: list[str] = field(default_factory=list)  # context and removed lines, in order
    new: list[str] = field(default_factory=list)  # context and added lines, in order
    added: int = 0
    removed: int = 0
    in_binary: bool = False


_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")
# Lines whose content follows from the change itself or from line positions: two
# candidates with the same change up to whitespace differ in exactly these.
_DROPPED_META = ("index ", "similarity index ", "dissimilarity index ")


def _parse_diff(diff_text: str) -> list[_FileDiff]:
    """The files of a unified (git) diff; hunk bodies are read by their header's counts.

    Reading by counts, as ``git apply`` does, keeps a removed SQL comment
    (``--- x``) from being taken for a file header.
    """
    files: list[_FileDiff] = []
    current: _FileDiff | None = None
    # Not ``splitlines``: a form feed or U+2028 inside a source line is not a line
    # break to git, and splitting there would throw the hunk counts off.
    lines = diff_text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if line.startswith("diff --git ") or (
            # A plain ``diff -u`` has no "diff --git" line: its "--- " starts the file.
            line.startswith("--- ") and (current is None or current.old or current.new)
        ):
            current = _FileDiff(header=_path_line(line), path=_header_path(line))
            files.append(current)
            continue
        if current is None:
            continue  # a preamble (commit message, "From ..." lines): not the change
        if current.in_binary:
            current.meta.append(line.rstrip())
            continue
        hunk = _HUNK.match(line)
        if hunk:
            old_left = int(hunk.group(1)) if hunk.group(1) is not None else 1
            new_left = int(hunk.group(2)) if hunk.group(2) is not None else 1
            while i < len(lines) and (old_left > 0 or new_left > 0):
                body = lines[i]
                tag, text = (body[:1], body[1:]) if body else (" ", "")
                if tag == " ":
                    current.old.append(text)
                    current.new.append(text)
                    old_left -= 1
                    new_left -= 1
                elif tag == "-":
                    current.old.append(text)
                    current.removed += 1
                    old_left -= 1
                elif tag == "+":
                    current.new.append(text)
                    current.added += 1
                    new_left -= 1
                elif tag != "\\":  # "\ No newline at end of file": whitespace
                    break  # a truncated hunk: read on as headers
                i += 1
            # A trailing "\ No newline" belongs to the hunk just read.
            while i < len(lines) and lines[i].startswith("\\"):
                i += 1
            continue
        if line.startswith(("--- ", "+++ ")):
            # The paths are in the header already; a plain diff's "+++ " names the new
            # side, which tells two new files ("--- /dev/null") apart.
            if line.startswith("+++ ") and current.header.startswith("--- "):
                current.header += " " + _path_line(line)
            path = _path_line(line)[4:]
            if path != "/dev/null":
                current.path = path[2:] if path.startswith(("a/", "b/")) else path
            continue
        if line.startswith(_DROPPED_META):
            continue
        if line.startswith("GIT binary patch"):
            current.in_binary = True
        current.meta.append(line.rstrip())
    return files


def _header_path(line: str) -> str:
    """The path a file header names, until its "--- "/"+++ " lines say better."""
    if line.startswith("--- "):
        path = _path_line(line)[4:]
        return path[2:] if path.startswith("a/") else path
    same = re.fullmatch(r"diff --git a/(.+) b/\1", line.rstrip())
    return same.group(1) if same else line.removeprefix("diff --git ").rstrip()


def _path_line(line: str) -> str:
    # ``diff -u`` puts a timestamp after a tab; it says nothing about the change.
    return line.split("\t", 1)[0].rstrip()


def _squeeze(line: str) -> str:
    # As ``git diff -w``: whitespace anywhere in a line is not part of the change.
    return "".join(line.split())


def normalise_diff(diff_text: str) -> str:
    """The change a diff makes, with whitespace and line positions taken out.

    Two candidates whose diffs differ only in indentation, spacing, blank lines,
    trailing newlines, blob ids (``index`` lines) or hunk positions (``@@`` headers)
    normalise to the same text, so they count as votes for one another (Agentless's
    majority vote, done on the diff's text).
    """
    out: list[str] = []
    for f in sorted(_parse_diff(diff_text), key=lambda f: f.header):
        # Context lines stay in both sides as anchors, so the same change cut into
        # different hunks (a nearby whitespace edit merges two) lines up again.
        old = [s for s in map(_squeeze, f.old) if s]
        new = [s for s in map(_squeeze, f.new) if s]
        changes: list[str] = []
        matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                continue
            changes.append("@@")
            changes += ["-" + s for s in old[i1:i2]]
            changes += ["+" + s for s in new[j1:j2]]
        if not changes and not f.meta:
            continue  # a whitespace-only change to this file: no change at all
        out += [f.header, *f.meta, *changes]
    return "\n".join(out) + ("\n" if out else "")


def fingerprint(diff_text: str) -> str:
    """A short hash of ``normalise_diff(diff_text)``: equal for agreeing candidates."""
    return hashlib.sha256(normalise_diff(diff_text).encode("utf-8")).hexdigest()[:16]


def count_diff(diff_text: str) -> DiffSize:
    """Lines added and removed by a unified diff, counted from its hunks (no git needed)."""
    files = _parse_diff(diff_text)
    return DiffSize(
        added=sum(f.added for f in files),
        removed=sum(f.removed for f in files),
        files=[f.path for f in files],
    )


# -- choosing ---------------------------------------------------------------------------


def votes(candidates: Iterable[Candidate]) -> dict[int, int]:
    """Votes per k: how many passing candidates (itself included) share its fingerprint.

    A failed candidate neither gets nor casts votes: agreeing with a broken change
    is no evidence for it. A passing candidate without a fingerprint votes for itself.
    """
    candidates = list(candidates)  # read twice below; a generator would be empty the second time
    passing = [c for c in candidates if c.passed]
    counts = Counter(c.fingerprint for c in passing if c.fingerprint is not None)
    result: dict[int, int] = {}
    for c in candidates:
        if not c.passed:
            result[c.k] = 0
        elif c.fingerprint is None:
            result[c.k] = 1
        else:
            result[c.k] = counts[c.fingerprint]
    return result


def _score_key(goal: ScoreGoal) -> Callable[[Candidate], float]:
    def key(c: Candidate) -> float:
        # A passing candidate without a score (only possible when the caller mixed
        # scored and unscored ones) ranks after every scored one.
        if c.score is None:
            return math.inf
        return c.score if goal == "min" else -c.score

    return key


def _value(criterion: Criterion, c: Candidate, counts: dict[int, int]) -> float | int | None:
    """The figure shown for ``c`` under ``criterion``."""
    if criterion is Criterion.SCORE:
        return c.score
    if criterion is Criterion.VOTES:
        return counts[c.k]
    if criterion is Criterion.DIFF_SIZE:
        return c.diff_size
    if criterion is Criterion.TOKENS:
        return c.tokens
    return c.k


def _shown(value: float | int | None) -> str:
    if value is None:
        return "no score"
    if isinstance(value, float):
        return repr(value)
    return f"{value:,}"


def _ks(ks: Sequence[int]) -> str:
    """"k=1 and k=2", "k=1, k=2 and k=4"."""
    named = [f"k={k}" for k in ks]
    return named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]


def _clause(step: Step, goal: ScoreGoal, first: bool) -> str:
    """"on score: 2.0 < 5.0": what one step decided, against the best of those it left."""
    w, r = _shown(step.best), _shown(step.next_best)
    if step.criterion is Criterion.SCORE:
        return f"on score: {w} {'<' if goal == 'min' else '>'} {r}"
    if step.criterion is Criterion.VOTES:
        return f"on votes: {w} > {r}"
    if step.criterion is Criterion.DIFF_SIZE:
        return f"on smaller diff: {w} < {r} lines"
    if step.criterion is Criterion.TOKENS:
        return f"on fewer tokens: {w} < {r}"
    return "on lower k (all else equal)" if first else "on lower k"


def _sentence(winner: int, steps: Sequence[Step], goal: ScoreGoal) -> str:
    """"k=2 won on votes: 2 > 1, then between k=2 and k=3 on fewer tokens: 900 < 1,000"."""
    parts = [f"k={winner} won {_clause(steps[0], goal, first=True)}"]
    for step in steps[1:]:
        word = "between" if len(step.among) == 2 else "among"
        parts.append(f"then {word} {_ks(step.among)} {_clause(step, goal, first=False)}")
    return ", ".join(parts)


def choose(candidates: Iterable[Candidate], score_goal: ScoreGoal = "min") -> Selection:
    """The winner among ``candidates`` by issue 10's criteria, and the sentence saying why.

    The first criterion that separates the passing candidates decides; when several
    share its best value, the following criteria pick among those only.
    """
    if score_goal not in ("min", "max"):
        raise ValueError(f"score_goal must be 'min' or 'max', not {score_goal!r}")
    ordered = sorted(candidates, key=lambda c: c.k)
    seen = Counter(c.k for c in ordered)
    doubled = sorted(k for k, n in seen.items() if n > 1)
    if doubled:
        raise ValueError(f"two candidates share k: {', '.join(f'k={k}' for k in doubled)}")
    counts = votes(ordered)
    passing = [c for c in ordered if c.passed]

    def selection(winner: Candidate | None, criterion: Criterion | None, sentence: str,
                  steps: list[Step] | None = None) -> Selection:
        return Selection(candidates=ordered, score_goal=score_goal, winner=winner,
                         criterion=criterion, sentence=sentence, votes=counts,
                         steps=steps or [])

    if not passing:
        if not ordered:
            return selection(None, None, "no candidates")
        reasons = "; ".join(f"k={c.k}: {c.reason or 'failed'}" for c in ordered)
        return selection(None, None, f"no candidate passed ({reasons})")
    if len(passing) == 1:
        return selection(passing[0], Criterion.PASSES,
                         f"k={passing[0].k} won: the only candidate that passed")

    keys: list[tuple[Criterion, Callable[[Candidate], float]]] = [
        (Criterion.SCORE, _score_key(score_goal)),
        (Criterion.VOTES, lambda c: -counts[c.k]),
        (Criterion.DIFF_SIZE, lambda c: c.diff_size),
        (Criterion.TOKENS, lambda c: c.tokens),
        (Criterion.K, lambda c: c.k),
    ]
    pool = passing
    steps: list[Step] = []
    for criterion, key in keys:
        if criterion is Criterion.SCORE and all(c.score is None for c in pool):
            continue  # no score command: the criterion does not apply
        best = min(key(c) for c in pool)
        leaders = [c for c in pool if key(c) == best]
        if len(leaders) == len(pool):
            continue  # all equal here: this criterion separates nobody
        behind = min((c for c in pool if key(c) != best), key=key)
        steps.append(Step(
            criterion=criterion,
            among=[c.k for c in pool],
            leaders=[c.k for c in leaders],
            best=_value(criterion, leaders[0], counts),
            next_best=_value(criterion, behind, counts),
        ))
        pool = leaders
        if len(pool) == 1:
            winner = pool[0]
            return selection(winner, steps[0].criterion,
                             _sentence(winner.k, steps, score_goal), steps)
    raise AssertionError("k is unique, so the last criterion always separates")


# -- what a person sees -----------------------------------------------------------------


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def candidates_table(selection: Selection) -> list[dict[str, Any]]:
    """One row per candidate, criteria in the order applied, the winner marked.

    The rows of the ``select`` task's table artifact; unset values read "-".
    """
    rows: list[dict[str, Any]] = []
    for c in selection.candidates:
        rows.append({
            "k": c.k,
            "winner": "yes" if c.k == selection.winner_k else "",
            "outcome": c.outcome,
            "score": c.score if c.score is not None else "-",
            "votes": selection.votes.get(c.k, 0),
            "diff size": c.diff_size,
            "tokens": c.tokens,
            "reason": c.reason,
            "files": len(c.files),
            "added": c.added,
            "removed": c.removed,
            "verify exit": c.verify_exit_status if c.verify_exit_status is not None else "-",
            "duration": _duration(c.duration_s),
            "branch": c.branch,
        })
    return rows


def _cell(value: Any) -> str:
    return " ".join(str(value).split()).replace("|", "\\|")


def candidates_markdown(selection: Selection) -> str:
    """The sentence and a short table of the candidates, for the console and reports."""
    columns = ("k", "winner", "outcome", "score", "votes", "diff size", "tokens", "reason")
    rows = candidates_table(selection)
    lines = [
        f"**{_cell(selection.sentence)}**",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in rows:
        cells = [row[col] for col in columns]
        cells[columns.index("tokens")] = f"{row['tokens']:,}"
        lines.append("| " + " | ".join(_cell(v) for v in cells) + " |")
    return "\n".join(lines) + "\n"
