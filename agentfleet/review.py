"""A person in the loop: choices that wait for review, the one form, the answers. Pure.

A task with ``review: true`` is judged as usual, then waits (``Reviews.hold``)
instead of landing its automatic choice, while the sprint runs everything that
does not wait on it. When nothing else can run, the flow pauses with one form
(``answer_fields`` and ``form_markdown``: every pending review, its candidates with
diffstat, verify, score and votes, and the automatic choice). An answer
(``Reviews.answer``) picks a candidate that passed or rejects, per task. A review
nobody answers within its ``review_timeout`` ends by ``on_review_timeout``
(``Reviews.expired``): ``auto`` takes the automatic choice, ``fail`` fails the task.

A goal plan's proposal (``review_plan``) is the same kind of item with the choices
approve and reject. Times are the caller's clock (``time.monotonic``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from agentfleet.durations import format_duration
from agentfleet.errors import ReviewError
from agentfleet.results import AttemptResult
from agentfleet.selection import Candidate, Criterion, Selection

OnTimeout = Literal["auto", "fail"]
REJECT = "reject"
APPROVE = "approve"
PLAN = "plan"  # the item of a goal plan's proposal
PAUSE_KEY_PREFIX = "agentfleet-review-"  # + sprint + "-" + a unique suffix


def choice_of(k: int) -> str:
    """How the form spells candidate ``k``."""
    return f"k={k}"


def k_of(choice: str) -> int | None:
    """The candidate a choice picks (``k=2`` -> 2); None for approve and reject."""
    if choice.startswith("k=") and choice[2:].isdigit():
        return int(choice[2:])
    return None


@dataclass
class ReviewItem:
    """One question of the form: a task's choice, or a goal plan's proposal."""

    key: str  # the task id, or PLAN
    title: str
    markdown: str  # what the person reads before answering
    choices: list[str]
    default: str  # the automatic choice: what ``on_review_timeout: auto`` takes
    timeout_s: float
    on_timeout: OnTimeout
    deadline: float


@dataclass(frozen=True)
class Decision:
    """How one review ended: the choice, and whether a person or the clock made it."""

    key: str
    choice: str
    by: Literal["review", "timeout"]
    line: str  # for the log

    @property
    def k(self) -> int | None:
        """The candidate picked, if any."""
        return k_of(self.choice)

    @property
    def rejected(self) -> bool:
        """Whether the task fails (or the plan is refused)."""
        return self.choice == REJECT


def pause_key(sprint: str, suffix: str) -> str:
    """The Prefect pause key of a review of ``sprint``: ``agentfleet review`` finds it by it."""
    return f"{PAUSE_KEY_PREFIX}{sprint}-{suffix}"


def is_pause_of(key: str | None, sprint: str) -> bool:
    """Whether a Prefect pause key is a review pause of ``sprint``."""
    return bool(key) and key.startswith(f"{PAUSE_KEY_PREFIX}{sprint}-")  # type: ignore[union-attr]


# ---------------------------------------------------------------- items


def diffstat(c: Candidate) -> str:
    """A candidate's change in one cell: files and lines."""
    if not c.files and not c.diff_size:
        return "no change"
    n = len(c.files)
    shown = ", ".join(c.files[:3]) + (f" +{n - 3} more" if n > 3 else "")
    return f"{n} file{'s' if n != 1 else ''} (+{c.added} -{c.removed}): {shown}"


def candidates_markdown(selection: Selection) -> str:
    """The table a reviewer reads: per candidate its branch, diffstat, verify, score, votes."""
    lines = ["| k | outcome | branch | diffstat | verify | score | votes | reason |",
             "|---|---|---|---|---|---|---|---|"]
    for c in selection.candidates:
        verify = "-" if c.verify_exit_status is None else f"exit {c.verify_exit_status}"
        score = "-" if c.score is None else f"{c.score:g}"
        cells = [str(c.k), c.outcome, f"`{c.branch}`", diffstat(c), verify, score,
                 str(selection.votes.get(c.k, 0)), c.reason]
        lines.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
    return "\n".join(lines)


def task_item(task_id: str, selection: Selection, *, timeout_s: float, on_timeout: OnTimeout,
              now: float) -> ReviewItem | None:
    """The review of a judged task; None when no candidate passed (nothing to choose)."""
    if selection.winner is None:
        return None
    passing = [c.k for c in selection.candidates if c.passed]
    auto = choice_of(selection.winner.k)
    markdown = (f"### Task `{task_id}`\n\nAutomatic choice: **{auto}** ({selection.sentence})"
                f"\n\n{candidates_markdown(selection)}\n")
    return ReviewItem(
        key=task_id, title=f"task {task_id}: pick a candidate or reject the task",
        markdown=markdown, choices=[*map(choice_of, passing), REJECT], default=auto,
        timeout_s=timeout_s, on_timeout=on_timeout, deadline=now + timeout_s,
    )


def plan_item(proposal_markdown: str, *, timeout_s: float, on_timeout: OnTimeout,
              now: float) -> ReviewItem:
    """The review of a goal plan's proposed tasks (``review_plan``)."""
    return ReviewItem(
        key=PLAN, title="the proposed plan: approve to run it, reject to run nothing",
        markdown=proposal_markdown, choices=[APPROVE, REJECT], default=APPROVE,
        timeout_s=timeout_s, on_timeout=on_timeout, deadline=now + timeout_s,
    )


# ---------------------------------------------------------------- the form


def form_markdown(items: Iterable[ReviewItem], sprint: str) -> str:
    """The form's description: every pending review, what to answer, and when it times out."""
    items = list(items)
    head = [f"# agentfleet review: sprint `{sprint}`", "",
            f"{len(items)} review{'s' if len(items) != 1 else ''} waiting. Answer each below "
            "(or `agentfleet review " + sprint + "` in a terminal).", ""]
    body = []
    for item in items:
        fallback = item.default if item.on_timeout == "auto" else REJECT
        body += [item.markdown.rstrip(), "",
                 f"Choices: {', '.join(f'`{c}`' for c in item.choices)}. Unanswered after "
                 f"{format_duration(item.timeout_s)}: `{fallback}` "
                 f"(on_review_timeout: {item.on_timeout}).", ""]
    return "\n".join(head + body)


def answer_fields(items: Iterable[ReviewItem]) -> dict[str, Any]:
    """The form's fields for ``pydantic.create_model``: one per item, its choices, the default."""
    return {
        item.key: (Literal[tuple(item.choices)], Field(item.default, description=item.title))
        for item in items
    }


# ---------------------------------------------------------------- waiting


@dataclass
class Reviews:
    """The reviews a run is waiting for, by key."""

    pending: dict[str, ReviewItem] = field(default_factory=dict)

    def hold(self, item: ReviewItem) -> None:
        """Wait for a person on ``item``."""
        self.pending[item.key] = item

    def seconds_left(self, now: float) -> float | None:
        """Until the nearest deadline (0 when one passed); None when nothing waits."""
        if not self.pending:
            return None
        return max(0.0, min(i.deadline for i in self.pending.values()) - now)

    def expired(self, now: float) -> list[Decision]:
        """The reviews whose time is up, ended by their ``on_review_timeout``."""
        out = []
        for key, item in list(self.pending.items()):
            if item.deadline <= now:
                del self.pending[key]
                out.append(timed_out(item))
        return out

    def answer(self, answers: Mapping[str, str]) -> list[Decision]:
        """The reviews a person answered (``ReviewError`` for an unknown key or choice)."""
        problems = [f"no review of '{k}' is waiting" for k in answers if k not in self.pending]
        problems += [
            f"{k}: '{v}' is not one of {', '.join(self.pending[k].choices)}"
            for k, v in answers.items() if k in self.pending and v not in self.pending[k].choices
        ]
        if problems:
            raise ReviewError("; ".join(problems))
        out = []
        for key, choice in answers.items():
            item = self.pending.pop(key)
            auto = "" if choice == item.default else f" (the automatic choice was {item.default})"
            out.append(Decision(key, choice, "review", f"{key}: {choice} by review{auto}"))
        return out


def timed_out(item: ReviewItem) -> Decision:
    """What an unanswered review ends in: the automatic choice (``auto``) or reject (``fail``)."""
    choice = item.default if item.on_timeout == "auto" else REJECT
    return Decision(
        item.key, choice, "timeout",
        f"{item.key}: review not answered within {format_duration(item.timeout_s)}; "
        f"on_review_timeout: {item.on_timeout}, so {choice}",
    )


# ---------------------------------------------------------------- outcome


def decided(decision: Decision, results: Mapping[int, AttemptResult],
            selection: Selection) -> tuple[AttemptResult, Selection]:
    """The task's result after its review, and its selection saying who chose."""
    auto = selection.winner_k
    if decision.k is not None:
        chosen = next(c for c in selection.candidates if c.k == decision.k)
        update: dict[str, Any] = {"winner": chosen}
        if decision.by == "timeout":
            update["sentence"] = f"{selection.sentence}; review timed out: it stands"
        elif decision.k == auto:
            update["sentence"] = f"{selection.sentence}; confirmed by review"
        else:
            update["sentence"] = f"k={decision.k} chosen by review (automatic: k={auto})"
            update["criterion"] = Criterion.REVIEW
        return results[decision.k], selection.model_copy(update=update)
    reason = ("rejected by review" if decision.by == "review"
              else "review timed out (on_review_timeout: fail)")
    reason += f"; the automatic choice was k={auto}"
    first = results[min(results)]
    failed = AttemptResult(task_id=first.task_id, attempt=first.attempt, branch=first.branch,
                           start_sha=first.start_sha, succeeded=False, reason=reason)
    return failed, selection.model_copy(update={"sentence": reason})


# ---------------------------------------------------------------- answering from a terminal


def read_choice(text: str, choices: list[str], default: str) -> str | None:
    """A typed answer as a choice: Enter takes ``default``; ``2`` means ``k=2``; ``r`` reject."""
    text = text.strip().lower()
    if not text:
        return default
    if text.isdigit():
        text = choice_of(int(text))
    text = {"r": REJECT, "a": APPROVE, "y": APPROVE, "yes": APPROVE, "n": REJECT,
            "no": REJECT}.get(text, text)
    return text if text in choices else None


def parse_answers(pairs: Iterable[str], fields: Mapping[str, tuple[list[str], str]], *,
                  auto: bool) -> dict[str, str]:
    """``agentfleet review``'s ``--answer TASK=CHOICE`` as the form's answers.

    ``fields``: each waiting review's choices and automatic choice. With ``auto``, reviews
    not named take their automatic choice; without, every review must be named.
    """
    answers: dict[str, str] = {}
    problems = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or key not in fields:
            waiting = ", ".join(fields)
            problems.append(f"'{pair}': expected TASK=CHOICE with TASK one of: {waiting}"
                            if not sep else f"no review of '{key}' is waiting (waiting: {waiting})")
            continue
        choices, default = fields[key]
        choice = read_choice(value, choices, default)
        if choice is None:
            problems.append(f"{key}: '{value}' is not one of {', '.join(choices)}")
        else:
            answers[key] = choice
    missing = [k for k in fields if k not in answers]
    if missing and not auto and not problems:
        problems.append(f"no answer for {', '.join(missing)}: add --answer "
                        f"{missing[0]}=CHOICE, or --auto to take the automatic choice")
    if problems:
        raise ReviewError("; ".join(problems))
    return {k: answers.get(k, fields[k][1]) for k in fields}


def locator_path(work_dir: Path, sprint: str) -> Path:
    """Where a paused run notes its server and flow run, for ``agentfleet review``.

    A run on Prefect's embedded server has an API no other process knows of otherwise.
    """
    return work_dir / "reviews" / f"{sprint}.json"
