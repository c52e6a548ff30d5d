"""The seed's decision tree as code: which tasks may run together, and in what order results land.

Parallelize when tasks change different files and neither needs the other's
output; serialize when they may change the same files, or one depends on the
other. Results are applied foundation first, then features, tests, docs.

Pure: reads only the plan, never the repository.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Literal

from pydantic import BaseModel, ConfigDict

from agentfleet.patterns import first_overlap, may_overlap, overlapping_pairs
from agentfleet.plan import STAGES, Plan

ReasonKind = Literal["depends_on", "indirect_dependency", "paths_overlap", "no_paths"]


class Serialization(BaseModel):
    """Why ``second`` waits for ``first`` instead of running alongside it."""

    model_config = ConfigDict(frozen=True)

    first: str
    second: str
    reason_kind: ReasonKind
    reason: str


class Decomposition(BaseModel):
    """A plan decided: apply order, who waits for whom and why, and what may run together."""

    model_config = ConfigDict(frozen=True)

    order: list[str]
    waits_on: dict[str, list[str]]
    depends_on: dict[str, list[str]]
    serializations: list[Serialization]
    waves: list[list[str]]
    warnings: list[str]
    no_paths: list[str] = []  # tasks without paths, in apply order

    def wave_of(self, task_id: str) -> int:
        """The wave (from 0) a task belongs to."""
        for n, wave in enumerate(self.waves):
            if task_id in wave:
                return n
        raise KeyError(task_id)

    def _waits_closure(self, task_id: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self.waits_on.get(task_id, []))
        while stack:
            u = stack.pop()
            if u not in seen:
                seen.add(u)
                stack.extend(self.waits_on.get(u, []))
        return seen

    def can_run_together(self, a: str, b: str) -> bool:
        """Whether two tasks may run at the same time: no common file, no dependency either way.

        Waiting is transitive: if ``c`` waits for ``b`` and ``b`` for ``a``, ``c``
        cannot run alongside ``a`` even when they share no file.
        """
        if a == b:
            return False
        return a not in self._waits_closure(b) and b not in self._waits_closure(a)

    def blocked_by(self, failed: set[str]) -> dict[str, str]:
        """Tasks that cannot run because a task they depend on (transitively) failed, and which.

        Only ``depends_on`` blocks: a task that merely waited for an overlapping
        task runs anyway once that one is done, failed or not.
        """
        rank = {t: i for i, t in enumerate(self.order)}
        blocked: dict[str, str] = {}
        for t in self.order:
            if t in failed:
                continue
            causes = [
                d if d in failed else blocked[d]
                for d in self.depends_on.get(t, [])
                if d in failed or d in blocked
            ]
            if causes:
                blocked[t] = min(causes, key=lambda c: rank.get(c, len(rank)))
        return blocked

    def serialization_lines(self) -> list[str]:
        """Every serialization's reason for display, one line per task without paths."""
        lines = [s.reason for s in self.serializations if s.reason_kind != "no_paths"]
        involved = {
            t
            for s in self.serializations
            if s.reason_kind == "no_paths"
            for t in (s.first, s.second)
        }
        for t in self.no_paths:
            if t in involved:
                lines.append(
                    f"{t} serializes with every task: it declares no paths "
                    "(declare paths: to let it run in parallel)"
                )
        return lines


def apply_order(plan: Plan) -> list[str]:
    """Dependencies first; among tasks free to go, earliest stage, then plan order."""
    index = {t.id: i for i, t in enumerate(plan.tasks)}
    rank = {t.id: (STAGES.index(t.stage), index[t.id]) for t in plan.tasks}
    deps = {t.id: set(t.depends_on) - {t.id} for t in plan.tasks}
    dependents: dict[str, list[str]] = {t.id: [] for t in plan.tasks}
    for t, ds in deps.items():
        for d in ds:
            dependents[d].append(t)
    waiting = {t: len(ds) for t, ds in deps.items()}
    ready = [(rank[t], t) for t, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, t = heapq.heappop(ready)
        order.append(t)
        for u in dependents[t]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, (rank[u], u))
    if len(order) != len(plan.tasks):
        raise ValueError("the plan's dependencies form a cycle")  # load_plan reports it first
    return order


def _dependency_path(deps: dict[str, list[str]], start: str, goal: str) -> list[str]:
    """The shortest chain start -> ... -> goal along depends_on."""
    parent: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        if v == goal:
            path = [v]
            while parent[path[-1]] is not None:
                path.append(parent[path[-1]])  # type: ignore[arg-type]
            return list(reversed(path))
        for w in deps.get(v, []):
            if w not in parent:
                parent[w] = v
                queue.append(w)
    return [start, goal]


def decompose(plan: Plan) -> Decomposition:
    """Decide a plan: apply order, waits, serializations with reasons, waves and warnings."""
    order = apply_order(plan)
    rank = {t: i for i, t in enumerate(order)}
    tasks = {t.id: t for t in plan.tasks}
    depends_on = {
        t.id: sorted(set(t.depends_on) - {t.id}, key=rank.__getitem__) for t in plan.tasks
    }
    # Ancestors as bit sets (bit n: the task of rank n): a chain of thousands of tasks
    # costs kilobytes, not a set per task of every task before it.
    ancestors: dict[str, int] = {}
    for t in order:
        bits = 0
        for d in depends_on[t]:
            bits |= ancestors[d] | (1 << rank[d])
        ancestors[t] = bits

    waits_on: dict[str, list[str]] = {t: [] for t in order}
    serializations: list[Serialization] = []
    for second, firsts in _candidates(plan, order, rank, depends_on).items():
        for first in firsts:
            found = _serialization(plan, tasks, depends_on, ancestors, rank, first, second)
            if found is not None:
                waits_on[second].append(first)
                serializations.append(found)

    level: dict[str, int] = {}
    for t in order:
        level[t] = 1 + max((level[u] for u in waits_on[t]), default=-1)
    waves: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for t in order:
        waves[level[t]].append(t)

    warnings = []
    if len(plan.tasks) > 1 and plan.overlap == "serialize":
        for task in plan.tasks:
            if task.paths is None:
                warnings.append(
                    f"task '{task.id}' has no paths: it serializes with every other task; "
                    "declare paths to run it in parallel"
                )
    return Decomposition(
        order=order,
        waits_on=waits_on,
        depends_on=depends_on,
        serializations=serializations,
        waves=waves,
        warnings=warnings,
        no_paths=[t for t in order if tasks[t].paths is None],
    )


def _candidates(
    plan: Plan, order: list[str], rank: dict[str, int], depends_on: dict[str, list[str]]
) -> dict[str, list[str]]:
    """For each task, in apply order, the earlier tasks it may have to wait for.

    A superset of the serializations: dependencies, tasks without paths, and tasks whose
    paths may overlap, found by ``overlapping_pairs`` instead of trying every pair.
    """
    patterns: dict[str, list[str]] = {}  # pattern -> the tasks declaring it
    no_paths: list[str] = []
    for task in plan.tasks:
        if task.paths is None:
            no_paths.append(task.id)
        for pattern in dict.fromkeys(task.paths or []):
            patterns.setdefault(pattern, []).append(task.id)
    distinct = list(patterns)
    related: dict[str, set[str]] = {t: set(depends_on[t]) for t in order}

    def relate(a: str, b: str) -> None:
        if a != b:
            related[a].add(b)
            related[b].add(a)

    for owners in patterns.values():
        for a in owners:
            for b in owners:
                relate(a, b)
    for i, j in overlapping_pairs(distinct):
        for a in patterns[distinct[i]]:
            for b in patterns[distinct[j]]:
                relate(a, b)
    for lone in no_paths:
        for other in order:
            relate(lone, other)
    return {
        t: sorted((u for u in related[t] if rank[u] < rank[t]), key=rank.__getitem__)
        for t in order
    }


def _serialization(
    plan: Plan,
    tasks: dict,  # type: ignore[type-arg]
    depends_on: dict[str, list[str]],
    ancestors: dict[str, int],
    rank: dict[str, int],
    first: str,
    second: str,
) -> Serialization | None:
    """Why ``second`` must wait for ``first`` (earlier in apply order), or None."""
    if first in depends_on[second]:
        return Serialization(
            first=first,
            second=second,
            reason_kind="depends_on",
            reason=f"{first} -> {second}: {second} depends on {first}",
        )
    paths_a, paths_b = tasks[first].paths, tasks[second].paths
    overlap = first_overlap(paths_a, paths_b)
    if overlap is None:
        return None
    if ancestors[second] >> rank[first] & 1:
        chain = " -> ".join(_dependency_path(depends_on, second, first))
        return Serialization(
            first=first,
            second=second,
            reason_kind="indirect_dependency",
            reason=f"{first} -> {second}: {second} depends on {first} indirectly ({chain})",
        )
    if plan.overlap == "merge":
        # Run together from the same start; git's three-way merge combines them at apply.
        return None
    if paths_a is None or paths_b is None:
        if paths_a is None and paths_b is None:
            why = "neither declares paths, so each may change any file"
        else:
            lone = first if paths_a is None else second
            why = f"'{lone}' declares no paths, so it may change any file"
        return Serialization(
            first=first, second=second, reason_kind="no_paths", reason=f"{first} -> {second}: {why}"
        )
    example = f"both match {overlap.witness}" if overlap.witness else "may match the same files"
    example += _depth_hint(overlap.a, overlap.b)
    return Serialization(
        first=first,
        second=second,
        reason_kind="paths_overlap",
        reason=f"{first} -> {second}: paths overlap ({overlap.a} and {overlap.b} {example})",
    )


def _depth_hint(a: str, b: str) -> str:
    """A hint when a bare folder pattern like ``web/`` overlaps only because it matches at depth."""
    for p, other in ((a, b), (b, a)):
        name = p[:-1]
        if p.endswith("/") and "/" not in name and not any(c in name for c in "*?[\\"):
            if not may_overlap(f"{name}/**", other):
                return f"; {p} matches a folder '{name}' at any depth, {name}/** only the top one"
    return ""
