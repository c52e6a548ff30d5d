"""Checks no single key shows: ids, dependencies, cycles, branch names, agents, variants."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import (
    ValidationError,
)

from agentfleet.agent_config import AgentConfig, AgentOverride, Variant, agent_problem, merge
from agentfleet.guardrails import budget_problems
from agentfleet.naming import (
    ATTEMPTS_NAMESPACE,
    ID_RE,
    branch_name_problem,
    branch_of,
)
from agentfleet.plan.messages import Ids, task_label


def ref_problem(key: str, name: str) -> str | None:
    """Why ``name`` (a plan's target or base) is a ref that is not a branch, or None."""
    if name.startswith("refs/") and not name.startswith("refs/heads/"):
        kind = "a tag" if name.startswith("refs/tags/") else "not a branch"
        return (
            f"'{name}' is {kind}: {key} must be a branch name (e.g. 'release', or "
            "'refs/heads/release')"
        )
    return None


def semantic_problems(raw: dict[str, Any]) -> list[tuple[str, str]]:
    """Problems no single key shows: ids, dependencies, branch names, agents, NUL bytes."""
    problems: list[tuple[str, str]] = _nul_problems(raw)
    target = raw.get("target")
    if isinstance(target, str) and (why := ref_problem("target", target)) is not None:
        problems.append(("target", why))
    elif isinstance(target, str):
        bare = branch_of(target)
        if bare.startswith(ATTEMPTS_NAMESPACE) or bare + "/" == ATTEMPTS_NAMESPACE:
            problems.append(
                (
                    "target",
                    f"'{target}' is inside {ATTEMPTS_NAMESPACE}, which agentfleet reserves for "
                    "attempt branches; choose another target",
                )
            )
        elif (why := branch_name_problem(bare)) is not None:
            problems.append(("target", why))
    base = raw.get("base")
    if isinstance(base, str) and (why := ref_problem("base", base)) is not None:
        problems.append(("base", why))
    elif isinstance(base, str) and (why := branch_name_problem(branch_of(base))) is not None:
        problems.append(("base", why))

    goal = raw.get("goal")
    if goal is not None and "tasks" in raw:
        problems.append(("goal", "give either goal: (the planner proposes the tasks) or "
                         "tasks:, not both"))
    elif goal is None and "tasks" not in raw:
        problems.append(("tasks", "required key is missing (or give a goal: for the planner "
                         "to propose the tasks)"))
    elif goal is None and raw.get("tasks") == []:
        problems.append(("tasks", "the plan has no tasks: add at least one under tasks:"))
    elif isinstance(goal, str) and not goal.strip():
        problems.append(("goal", "empty goal: say what the sprint should achieve"))
    problems.extend(_planner_problems(raw))

    tasks = raw.get("tasks")
    if not isinstance(tasks, list):
        return problems
    ids = Ids(t.get("id") if isinstance(t, dict) else None for t in tasks)
    valid = [tid for tid in ids if isinstance(tid, str) and ID_RE.match(tid)]
    first_index: dict[str, int] = {}
    for index, tid in enumerate(ids):
        if not isinstance(tid, str):
            continue
        if tid in first_index:
            problems.append(
                (
                    f"tasks[{index}].id",
                    f"duplicate id '{tid}' (tasks[{first_index[tid]}] has it too); ids must be "
                    "unique",
                )
            )
        else:
            first_index[tid] = index

    graph: dict[str, list[str]] = {}
    for index, task in enumerate(tasks):
        if not isinstance(task, dict):
            continue
        label = task_label(task, index, ids)
        tid = task.get("id")
        deps = task.get("depends_on")
        if not isinstance(deps, list):
            continue
        for dep in deps:
            if not isinstance(dep, str) or not ID_RE.match(dep):
                continue  # the key's own validation reports it
            if dep == tid:
                problems.append((f"tasks[{label}].depends_on", f"task '{tid}' depends on itself"))
            elif dep not in first_index:
                close = difflib.get_close_matches(dep, valid, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                problems.append((f"tasks[{label}].depends_on", f"unknown task '{dep}'{hint}"))
        if isinstance(tid, str) and first_index.get(tid) == index:
            graph[tid] = [d for d in deps if isinstance(d, str) and d in first_index and d != tid]
    for cycle in _cycles(graph, list(first_index)):
        problems.append(
            (
                f"tasks[{cycle[0]}].depends_on",
                "dependency cycle: "
                + " -> ".join([*cycle, cycle[0]])
                + " (each depends on the next); remove one of these dependencies",
            )
        )
    problems.extend(_agent_problems(raw, tasks, ids))
    problems.extend(budget_problems(raw))
    return problems


def _nul_problems(raw: dict[str, Any]) -> list[tuple[str, str]]:
    """Text holding a NUL byte: no process can be given it (argv, environment or stdin)."""
    out: list[tuple[str, str]] = []
    ids = (
        Ids(t.get("id") if isinstance(t, dict) else None for t in raw["tasks"])
        if isinstance(raw.get("tasks"), list)
        else Ids([])
    )
    todo: list[tuple[str, Any]] = [("", raw)]
    while todo:
        where, node = todo.pop()
        if isinstance(node, str):
            if "\0" in node:
                out.append((where, "contains a NUL byte (\\0), which no command or agent can "
                                   "be given: remove it"))
        elif isinstance(node, dict):
            for key, value in node.items():
                todo.append((f"{where}.{key}" if where else str(key), value))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                label = task_label(value, index, ids) if where == "tasks" else str(index)
                todo.append((f"{where}[{label}]", value))
    return sorted(out)


def _planner_problems(raw: dict[str, Any]) -> list[tuple[str, str]]:
    """The planner reads the repository with Codex: a ``command`` agent cannot plan."""
    if raw.get("goal") is None and raw.get("planner") is None:
        return []
    try:
        agent = AgentConfig.model_validate(raw.get("agent") or {})
        over = AgentOverride.model_validate(raw["planner"]) if raw.get("planner") else None
    except ValidationError:
        return []  # the keys' own validation reports it
    if merge(agent, over).kind != "codex":
        where = "planner.kind" if over is not None and over.kind else "planner"
        return [(where, "the planner is a Codex agent: set planner: {kind: codex} (the "
                 "tasks may still use command agents)")]
    return []


def _cycles(graph: dict[str, list[str]], order: list[str]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one task (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    # Iterative: a chain of thousands of dependent tasks is deeper than Python's stack.
    for root in order:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(graph.get(root, [])))]
        while work:
            v, successors = work[-1]
            for w in successors:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(graph.get(w, []))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[v])
                if low[v] == index[v]:
                    component = set()
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.add(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        components.append(component)
    cycles = []
    for component in components:
        start = min(component, key=order.index)
        cycles.append(_cycle_from(start, graph, component))
    return sorted(cycles, key=lambda c: order.index(c[0]))


def _cycle_from(start: str, graph: dict[str, list[str]], component: set[str]) -> list[str]:
    # Breadth-first inside the component finds the shortest way back to start.
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in graph.get(v, []):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return list(reversed(path))
                if w in component and w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    return [start]  # pragma: no cover - a component always has a cycle


def _agent_problems(raw: dict[str, Any], tasks: list[Any], ids: list[Any]) -> list[tuple[str, str]]:
    """``kind: command`` needs ``run``, judged on each task's merged agent."""
    plan_agent = raw.get("agent")
    try:
        base = AgentConfig.model_validate(plan_agent if plan_agent is not None else {})
    except ValidationError:
        return []  # the key's own validation reports it
    out: list[tuple[str, str]] = []
    missing_at_plan = []
    for index, task in enumerate(tasks):
        if not isinstance(task, dict):
            continue
        over_raw = task.get("agent")
        try:
            over = AgentOverride.model_validate(over_raw) if over_raw is not None else None
        except ValidationError:
            continue
        found = agent_problem(merge(base, over))
        if found is None:
            continue
        key, message = found
        if over is not None and over.kind is not None:
            out.append((f"tasks[{task_label(task, index, ids)}].agent.{key}", message))
        else:
            missing_at_plan.append((index, task))
    if missing_at_plan and len(missing_at_plan) == sum(isinstance(t, dict) for t in tasks):
        out.append(("agent.run", agent_problem(base)[1]))  # type: ignore[index]
    else:
        for index, task in missing_at_plan:
            out.append(
                (
                    f"tasks[{task_label(task, index, ids)}].agent.run",
                    "required because the plan's agent kind is 'command'",
                )
            )
    out.extend(_variant_problems(raw, tasks, ids, base))
    return out


def _variant_problems(
    raw: dict[str, Any], tasks: list[Any], ids: list[Any], base: AgentConfig
) -> list[tuple[str, str]]:
    """A variant that makes an attempt's agent unusable (``kind: command`` without ``run``)."""
    out: list[tuple[str, str]] = []
    for index, task in enumerate(tasks):
        if not isinstance(task, dict):
            continue
        own = task.get("variants")
        variants = own if own is not None else raw.get("variants")
        where = f"tasks[{task_label(task, index, ids)}].variants" if own is not None \
            else "variants"
        if not isinstance(variants, list):
            continue
        try:
            over = AgentOverride.model_validate(task["agent"]) if task.get("agent") else None
            agent = merge(base, over)
        except ValidationError:
            continue
        for number, entry in enumerate(variants):
            try:
                variant = Variant.model_validate(entry)
            except ValidationError:
                continue  # the key's own validation reports it
            found = agent_problem(merge(agent, variant.agent_override()))
            if found is not None:
                problem = (f"{where}[{number}].{found[0]}", found[1])
                if problem not in out:
                    out.append(problem)
    return out
