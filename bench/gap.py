"""Idle gap across sprints: two `agentfleet run` processes sharing a pool of agent slots.

Each round runs two sprints of ``pool + 1`` Codex tasks, each at ``limits.concurrency:
4``, on one Prefect global concurrency limit of ``pool`` slots (``limits.pool``, made
with ``AGENTFLEET_POOL_SIZE``). Sprint A starts first and fills the pool; sprint B
starts once A's agents ask the model, so its agents wait on the pool. A slot freed in
A goes first to A's own waiting agent (woken at once, in its process), then to B's
(which ask the server again every 0.5 s): the handoffs across processes are the ones
this measures. Each task asks the scripted model twice (a patch, the final message).

From the scripted model's request log: per freed slot of the full pool, the k-th
agent's last response → the (pool+k)-th agent's first request, labelled by which
sprint freed it and which took it; counted only when the taker had already been
refused a slot (its "waiting for a free slot" line came first). The model holds A's
first answers until B's first agent is refused a slot (a latch, not a guess at how long
B takes to start on a loaded machine), so B waits by the time A's agents end. The row
is the median of the handoffs across sprints (goal < 2 s), against those within one
sprint in the same runs: the within gap is Codex's own start-up plus agentfleet's, the
difference is what crossing the process boundary adds.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from agentfleet.testing import RecordedRequest, Script
from bench.common import Row, commit_all, init_repo, median, say, seconds_lt
from bench.sprints import AgentfleetRun, Context, Session, run_agentfleet, sessions, write_plan

ROWS = ("idle-gap-across-sprints",)
START_TIMEOUT_S = 300


@dataclass(frozen=True)
class Size:
    """How big each round is."""

    rounds: int
    pool: int
    delay_s: float  # the model's answer time, each request


FULL = Size(rounds=3, pool=3, delay_s=2.0)
SMOKE = Size(rounds=1, pool=2, delay_s=0.3)
SPRINTS = ("a", "b")


@dataclass(frozen=True)
class Handoff:
    """One freed slot of the full pool: whose agent ended, whose started next, how long
    the slot sat idle (last response → first request, as the model saw them)."""

    freed_by: str
    taken_by: str
    ended: Session
    started: Session

    @property
    def gap_s(self) -> float:
        """Seconds the slot sat idle."""
        return self.started.first_request - self.ended.last_response

    @property
    def across(self) -> bool:
        """Taken by another sprint than the one that freed it."""
        return self.freed_by != self.taken_by


def owned_sessions(requests: Iterable[RecordedRequest], owner_of: dict[str, str]
                   ) -> list[tuple[str, Session]]:
    """The Codex sessions of the requests whose rule ``owner_of`` names, with their owner
    (a sprint), in order of their first request."""
    by_owner: dict[str, list[RecordedRequest]] = {}
    for r in requests:
        if r.rule in owner_of:
            by_owner.setdefault(owner_of[r.rule], []).append(r)
    found = [(o, s) for o, rs in by_owner.items() for s in sessions(rs)]
    return sorted(found, key=lambda pair: pair[1].first_request)


def handoffs(found: list[tuple[str, Session]], pool: int) -> list[Handoff]:
    """Per freed slot of a full pool of ``pool`` slots: the k-th session to end → the
    (pool+k)-th to start (``idle_gaps``' pairing), with whose sessions they were."""
    starts = sorted(found, key=lambda pair: pair[1].first_request)
    ends = sorted(found, key=lambda pair: pair[1].last_response)
    return [Handoff(ends[k][0], starts[pool + k][0], ends[k][1], starts[pool + k][1])
            for k in range(max(0, len(found) - pool))]


def most_at_once(found: list[tuple[str, Session]]) -> int:
    """The most sessions live at one moment (first request to last response)."""
    edges = sorted([(s.first_request, 1) for _, s in found]
                   + [(s.last_response, -1) for _, s in found])
    live = peak = 0
    for _, step in edges:
        live += step
        peak = max(peak, live)
    return peak


def rule(round_: int, sprint: str, k: int) -> str:
    """The scripted model's rule (and the prompt's tag) of one task."""
    return f"g{round_}{sprint}{k}"


def latch(round_: int) -> str:
    """The scripted model's latch holding sprint A's first answers of a round."""
    return f"gap{round_}-b-waits"


def script(size: Size) -> Script:
    """Two requests per task, each answered after ``delay_s`` (A's first, also once B
    waits: ``latch``)."""
    return Script.model_validate({"rules": [
        {"name": rule(n, s, k), "match": f"[{rule(n, s, k)}]", "responses": [
            {"delay_s": size.delay_s, "after": latch(n) if s == "a" else None, "steps": [
                {"do": "patch", "patch": (
                    f"*** Begin Patch\n*** Add File: t{k}.txt\n+task {k}\n*** End Patch\n")}]},
            {"delay_s": size.delay_s, "steps": [{"do": "message", "text": f"Added t{k}.txt."}]},
        ]}
        for n in range(size.rounds) for s in SPRINTS for k in range(1, size.pool + 2)
    ]})


def make_plan(run_dir: Path, round_: int, sprint: str, size: Size, pool: str) -> Path:
    """One sprint of ``pool + 1`` independent tasks on its own repository."""
    repo = init_repo(run_dir / "repo")
    (repo / "README.md").write_text(f"gap bench, sprint {sprint}\n")
    commit_all(repo, "gap bench")
    return write_plan(run_dir / "plan.yaml", {
        "name": f"bench-gap-{sprint}", "repo": "repo", "timeout": "10m", "retries": 0,
        "limits": {"concurrency": 4, "pool": pool},
        "tasks": [{"id": f"t{k}", "prompt": f"[{rule(round_, sprint, k)}] Add t{k}.txt.",
                   "paths": [f"t{k}.txt"]} for k in range(1, size.pool + 2)],
    })


def run_round(ctx: Context, work: Path, round_: int, size: Size) -> list[Handoff]:
    """Sprint A, then B once A's agents are at work; the round's handoffs."""
    # A pool of its own per round and run: slots of an earlier one never count here.
    pool = f"bench-gap-{os.getpid()}-{time.monotonic_ns()}"
    runs: dict[str, AgentfleetRun] = {}
    errors: list[BaseException] = []

    model = ctx.model()

    def seen(line: str) -> None:
        # B's first agent in line asks the server (the rest queue behind it, in-process).
        if _WAITING.search(line):
            model.open_latch(latch(round_))

    def start(sprint: str) -> threading.Thread:
        run_dir = work / f"round-{round_}-{sprint}"
        run_dir.mkdir(parents=True)
        env = {**ctx.server_env(run_dir), "AGENTFLEET_POOL_SIZE": str(size.pool)}
        plan = make_plan(run_dir, round_, sprint, size, pool)

        def body() -> None:
            try:
                runs[sprint] = run_agentfleet(ctx, plan, env,
                                              on_line=seen if sprint == "b" else None)
            except BaseException as exc:  # noqa: BLE001 - raised below, in the caller
                errors.append(exc)
            finally:
                if sprint == "b":  # B gone without waiting: A must not hang on the latch
                    model.open_latch(latch(round_))

        thread = threading.Thread(target=body, name=f"bench-gap-{sprint}")
        thread.start()
        return thread

    first = start("a")
    deadline = time.monotonic() + START_TIMEOUT_S
    while not any(r.rule and r.rule.startswith(rule(round_, "a", "")) for r in model.requests):
        if errors or not first.is_alive() or time.monotonic() > deadline:
            first.join()
            raise RuntimeError(f"sprint a of round {round_} made no model request: {errors}")
        time.sleep(0.05)
    second = start("b")
    # Should B never say it waits (its log changed), A goes on after the start timeout.
    timer = threading.Timer(START_TIMEOUT_S, model.open_latch, (latch(round_),))
    timer.daemon = True
    timer.start()
    first.join()
    timer.cancel()
    second.join()
    if errors:
        raise errors[0]
    owner = {rule(round_, s, k): s for s in SPRINTS for k in range(1, size.pool + 2)}
    found = owned_sessions(model.requests, owner)
    if len(found) != 2 * (size.pool + 1) or most_at_once(found) > size.pool:
        raise RuntimeError(f"round {round_}: {len(found)} sessions, at most "
                           f"{most_at_once(found)} at once on a pool of {size.pool}")
    # Only slots freed while their taker already waited for one: a gap of an agent not
    # yet started (its sprint still starting up) is no idle slot.
    task_of = {r.thread_id: int(r.rule[len(rule(round_, "a", "")):]) for r in model.requests
               if r.rule in owner}
    since = {s: waiting_since(run) for s, run in runs.items()}
    return [h for h in handoffs(found, size.pool)
            if since[h.taken_by].get(task_of[h.started.thread_id], h.ended.last_response)
            < h.ended.last_response]


def waiting_since(run: AgentfleetRun) -> dict[int, float]:
    """Per task number: when its agent was first refused a slot of the pool (its log line)."""
    found: dict[int, float] = {}
    for at, line in run.lines:
        m = _WAITING.search(line)
        if m:
            found.setdefault(int(m[1]), at)
    return found


_WAITING = re.compile(r" - t(\d+)#\d+: waiting for a free slot of the shared pool")


def measure(ctx: Context, work: Path) -> list[Row]:
    """Rounds of two sprints sharing a pool; the median handoff across and within sprints."""
    size = SMOKE if ctx.smoke else FULL
    ctx.model().set_script(script(size))
    ctx.warm_server()
    found: list[Handoff] = []
    for n in range(size.rounds):
        say(f"gap: round {n + 1} of {size.rounds}, two sprints of {size.pool + 1} Codex tasks "
            f"on a pool of {size.pool}")
        found += run_round(ctx, work, n, size)
    across = [h.gap_s for h in found if h.across]
    within = [h.gap_s for h in found if not h.across]
    if not across or not within:
        raise RuntimeError(f"expected handoffs to waiting agents across and within sprints: "
                           f"{found}")
    ours, base = median(across), median(within)
    return [Row(
        "idle-gap-across-sprints",
        f"idle gap across two sprints (two processes) sharing a pool of {size.pool}: an agent's "
        f"last response → the other sprint's next agent's first request (median; running "
        f"server, model {size.delay_s:g} s a request)",
        "within a sprint", base, ours, ours / base if base > 0 else None,
        ratio_of="across / within (medians)",
        notes=f"{len(across)} handoffs across, {len(within)} within, {size.rounds} round(s)",
        details={"across_s": [round(g, 3) for g in across],
                 "within_s": [round(g, 3) for g in within], **size.__dict__},
    ).judge(seconds_lt(2.0))]
