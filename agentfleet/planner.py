"""The planner agent: Codex reads the repository and proposes a checked plan for a goal.

``propose`` runs Codex read-only in a temporary worktree of the base with a prompt
that states the goal and the seed's decision tree, and asks for the tasks as JSON
(``--output-schema``: ``answer_schema``, derived from the plan model; the final
message comes back through ``-o FILE``). The answer goes through the same checks
as a hand-written plan (the caller's ``check``); when it fails them, the planner
is asked again with the problems listed, at most ``MAX_REASKS`` times. The
accepted answer becomes ordinary plan YAML (``plan_yaml``), one comment per task
saying why it runs in parallel or waits.

Codex's structured output takes a strict subset of JSON Schema: every object has
``additionalProperties: false`` and lists all its properties as required; an
optional key is nullable instead (``strict_schema``), and ``null`` in an answer
means "not set".
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from agentfleet.agent_config import AgentConfig
from agentfleet.agents import AgentRequest, run_agent
from agentfleet.codex.outcome import Ending, Usage
from agentfleet.errors import AgentError, PlanError, Problem
from agentfleet.worktrees import temporary_worktree

if TYPE_CHECKING:
    from agentfleet.checking import CheckedPlan

MAX_REASKS = 2  # so at most three asks in all
PROPOSED_KEYS = ("id", "prompt", "paths", "depends_on", "stage", "verify")
WHY_KEY = "why"

DECISION_TREE = """\
Parallelize when:
- Tasks modify different files or directories
- Tasks are independent (no data dependency between them)
- Each task can be verified independently (its own tests, its own lint check)
Serialize when:
- Tasks modify the same files
- Task B depends on the output of Task A
- You need human judgment between steps"""

# Keywords Codex's structured output (OpenAI strict mode) accepts; others are dropped.
_KEPT_KEYWORDS = {
    "type", "properties", "required", "additionalProperties", "items", "enum", "const",
    "anyOf", "description",
}


# ---------------------------------------------------------------- the schema


def strict_schema(schema: dict[str, Any], defs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``schema`` as Codex's structured output wants it.

    ``$ref`` inlined; every object closed (``additionalProperties: false``) with all
    its properties required, those that were optional made nullable; keywords strict
    mode refuses (``pattern``, ``minItems``, ``default``, ``title`` ...) dropped.
    """
    defs = dict(defs or {}) | dict(schema.get("$defs", {}))

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(n) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            merged = {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
            return walk(merged)
        out = {k: walk(v) for k, v in node.items() if k in _KEPT_KEYWORDS - {"properties"}}
        if "properties" in node:
            required = set(node.get("required", []))
            props = {}
            for name, sub in node["properties"].items():
                props[name] = walk(sub) if name in required else _nullable(walk(sub))
            out["properties"] = props
            out["required"] = list(props)
            out["additionalProperties"] = False
            out["type"] = "object"
        return out

    return walk({k: v for k, v in schema.items() if k != "$defs"})


def _nullable(node: dict[str, Any]) -> dict[str, Any]:
    if "anyOf" in node:
        if not any(alt.get("type") == "null" for alt in node["anyOf"]):
            node = {**node, "anyOf": [*node["anyOf"], {"type": "null"}]}
        return node
    description = node.get("description")
    inner = {k: v for k, v in node.items() if k != "description"}
    out: dict[str, Any] = {"anyOf": [inner, {"type": "null"}]}
    if description:
        out["description"] = description
    return out


def answer_schema() -> dict[str, Any]:
    """The JSON Schema of a planner's answer: the plan's task keys it proposes, plus ``why``."""
    from agentfleet.plan import Task  # the plan model is the one source of the keys

    task = Task.model_json_schema(mode="validation")
    properties = {k: task["properties"][k] for k in PROPOSED_KEYS}
    # A task's verify overrides the plan's; to the planner it is the task's own check.
    properties["verify"] = {
        **properties["verify"],
        "description": "A shell command of this repository's own tests or linters, run in the "
        "task's worktree after the agent, that exits 0 only when the task is done; null when "
        "nothing fits.",
    }
    properties[WHY_KEY] = {
        "type": "string",
        "description": "One sentence: why this task may run in parallel with the others, "
        "or why it must wait for another.",
    }
    item = {
        "type": "object",
        "description": task.get("description", ""),
        "properties": properties,
        "required": [k for k in PROPOSED_KEYS if k in task.get("required", [])] + [WHY_KEY],
    }
    answer = {
        "type": "object",
        "properties": {"tasks": {"type": "array", "items": item,
                                 "description": "The tasks that together reach the goal."}},
        "required": ["tasks"],
    }
    return strict_schema(answer, task.get("$defs", {}))


# ---------------------------------------------------------------- the prompt


def planner_prompt(goal: str, problems: list[Problem] | None = None,
                   previous: str | None = None) -> str:
    """What the planner is asked: the goal, the decision tree, the answer's rules.

    A re-ask adds the problems the previous answer had, and that answer.
    """
    lines = [
        "You are the planner of agentfleet. agentfleet runs one coding agent per task, each "
        "in its own git worktree of this repository, many at the same time, and lands the "
        "verified results on one branch. Read the repository (you may only read: change "
        "nothing) and split the goal below into tasks.",
        "",
        "GOAL:",
        goal.strip(),
        "",
        "Decide what runs in parallel with this decision tree:",
        DECISION_TREE,
        "",
        "Answer with JSON matching the given schema, one entry per task:",
        "- id: lowercase letters, digits and '-', starting with a letter or digit; unique.",
        "- prompt: everything the task's agent needs to know; agents do not share context, so "
        "name the files, functions and conventions involved.",
        "- paths: gitignore-style patterns, relative to the repository root, of every file the "
        "task may change (src/api/orders.py, src/api/*.py, tests/**). Write a folder with a "
        "trailing '/' (src/api/): a bare folder name matches only files of that name. A "
        "pattern without '/' (README.md) matches that name in every folder. null means any "
        "file, and such a task runs alone.",
        "- depends_on: ids of tasks whose results this task needs; it starts from their "
        "results. No cycles.",
        "- stage: foundation, feature, tests or docs; results land in that order.",
        "- verify: a shell command from this repository's own tests or linters, run in the "
        "task's worktree afterwards, that exits 0 only when the task is done; null when the "
        "repository has nothing that fits.",
        "- why: one sentence on why the task may run in parallel, or why it waits.",
        "Tasks with different files and no dependency between them run at the same time: "
        "prefer small independent tasks, and do not invent work beyond the goal.",
    ]
    if problems:
        lines += [
            "",
            "Your previous answer was refused by agentfleet's plan checks. The problems:",
            *[f"- {p.where}: {p.message}" if p.where else f"- {p.message}" for p in problems],
            "Answer again with the whole corrected list of tasks.",
        ]
        if previous:
            lines += ["", "Your previous answer:", previous.strip()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- reading an answer


@dataclass
class Answer:
    """One answer of the planner, read: its tasks as plan data, and the reasons it gave."""

    text: str
    tasks: list[dict[str, Any]] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def read_answer(text: str | None) -> Answer:
    """The planner's final message as plan tasks: ``null`` keys dropped, ``why`` set aside."""
    answer = Answer(text=text or "")
    if not text or not text.strip():
        answer.problems.append(Problem("answer", "the planner gave no answer"))
        return answer
    try:
        data = json.loads(text)
    except ValueError as exc:
        answer.problems.append(Problem("answer", f"not JSON ({exc}): answer with the JSON of "
                                                 "the schema only"))
        return answer
    tasks = data.get("tasks") if isinstance(data, dict) else None
    if not isinstance(tasks, list):
        answer.problems.append(Problem("answer", "expected an object with a list 'tasks'"))
        return answer
    for item in tasks:
        if not isinstance(item, dict):
            answer.tasks.append(item)
            continue
        task = {k: v for k, v in item.items() if v is not None and k != WHY_KEY}
        if task.get("depends_on") == []:
            del task["depends_on"]
        why = item.get(WHY_KEY)
        if isinstance(why, str) and why.strip() and isinstance(item.get("id"), str):
            answer.reasons[item["id"]] = why.strip()
        answer.tasks.append(task)
    return answer


# ---------------------------------------------------------------- asking


Check = Callable[[list[dict[str, Any]], int], "CheckedPlan"]


@dataclass(frozen=True)
class PlannerRequest:
    """One planning: the goal, where to read, which agent, and the checks an answer must pass.

    ``check(tasks, ask)`` returns the checked plan with those tasks or raises
    ``PlanError``: the same checks as ``agentfleet plan`` (``ask`` from 1, to name the
    answer in problems).
    """

    goal: str
    repo: Path
    base_sha: str
    agent: AgentConfig
    check: Check
    env: Mapping[str, str]
    work_root: Path  # the temporary worktree goes under it (outside the repository)
    timeout_s: float = 1800.0
    codex_path: Path | None = None
    grace_s: float = 5.0
    max_reasks: int = MAX_REASKS
    log: Callable[[str], None] = lambda _: None


@dataclass
class Proposal:
    """What the planner proposed: the checked plan (None if refused), asks, tokens, problems."""

    checked: CheckedPlan | None
    tasks: list[dict[str, Any]]
    reasons: dict[str, str]
    asks: int
    usage: Usage
    problems: list[Problem]  # the last answer's; empty when accepted
    answers: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        """Whether the last answer passed every check."""
        return self.checked is not None and not self.problems


def propose(req: PlannerRequest) -> Proposal:
    """Ask the planner (re-asking with the problems, at most ``max_reasks`` times).

    Raises ``AgentError`` when Codex itself fails (a failed turn, a timeout); a refused
    answer is a ``Proposal`` with problems, for the caller to report.
    """
    usage = Usage()
    answers: list[str] = []
    answer = Answer(text="")
    problems: list[Problem] = []
    req.work_root.mkdir(parents=True, exist_ok=True)
    with temporary_worktree(req.repo, req.base_sha, req.work_root, prefix="planner") as tree:
        files = req.work_root / f"{tree.name}.planner"
        files.mkdir(parents=True, exist_ok=True)
        schema_file = files / "answer-schema.json"
        schema_file.write_text(json.dumps(answer_schema(), indent=2) + "\n", encoding="utf-8")
        try:
            for ask in range(1, req.max_reasks + 2):
                prompt = planner_prompt(req.goal, problems or None, answer.text or None)
                req.log(f"planner: ask {ask}" + (f" ({len(problems)} problems)" if problems
                                                 else ""))
                out_file = files / f"answer-{ask}.json"
                out_file.unlink(missing_ok=True)  # Codex keeps an old file on failure
                outcome = run_agent(AgentRequest(
                    worktree=tree, prompt=prompt, agent=req.agent, timeout_s=req.timeout_s,
                    env=req.env, codex_path=req.codex_path, grace_s=req.grace_s,
                    extra_codex_args=("--output-schema", str(schema_file), "-o", str(out_file)),
                ))
                usage = usage + outcome.usage
                if outcome.ending is not Ending.COMPLETED:
                    raise AgentError(f"the planner failed on ask {ask}: "
                                     f"{outcome.error or outcome.ending.value}")
                text = (out_file.read_text(encoding="utf-8") if out_file.exists()
                        else outcome.final_message)
                answers.append(text or "")
                answer = read_answer(text)
                problems = list(answer.problems)
                checked = None
                if not problems:
                    try:
                        checked = req.check(answer.tasks, ask)
                    except PlanError as exc:
                        problems = list(exc.problems)
                if not problems and checked is not None:
                    return Proposal(checked, answer.tasks, answer.reasons, ask, usage, [],
                                    answers)
        finally:
            shutil.rmtree(files, ignore_errors=True)
    return Proposal(None, answer.tasks, answer.reasons, len(answers), usage, problems, answers)


# ---------------------------------------------------------------- writing the plan


class _Dumper(yaml.SafeDumper):
    """Multi-line text as ``|`` blocks, so prompts read as written."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def task_comments(checked: CheckedPlan, reasons: Mapping[str, str]) -> dict[str, list[str]]:
    """Per task, why it runs in parallel or waits: agentfleet's decomposition, the planner's why."""
    dec = checked.decomposition
    out: dict[str, list[str]] = {}
    for tid in dec.order:
        wave = dec.wave_of(tid)
        peers = [t for t in dec.waves[wave] if t != tid]
        lines = []
        waits = [s.reason.split(": ", 1)[-1] for s in dec.serializations if s.second == tid]
        if waits:
            lines.append(f"wave {wave + 1}: waits for {', '.join(dec.waits_on[tid])} "
                         f"({'; '.join(waits)})")
        else:
            lines.append(f"wave {wave + 1}: waits for nothing (its files are its own and it "
                         "depends on no task)")
        if peers:
            lines.append(f"runs in parallel with {', '.join(peers)}")
        if reasons.get(tid):
            lines.append(f"planner: {reasons[tid]}")
        out[tid] = lines
    return out


def plan_yaml(header: Mapping[str, Any], checked: CheckedPlan, reasons: Mapping[str, str],
              goal: str | None = None) -> str:
    """The plan file: ``header`` keys, then the tasks, each under a comment saying why."""
    comments = task_comments(checked, reasons)
    lines = ["# Proposed by the agentfleet planner; edit freely, then `agentfleet run` this file."]
    if goal:
        lines += [f"# goal: {line}" for line in goal.strip().splitlines()]
    text = "\n".join(lines) + "\n"
    if header:
        text += _dump(dict(header))
    text += "tasks:\n"
    for task in checked.plan.tasks:
        raw = task.model_dump(exclude_unset=True, exclude_none=True)
        for line in comments.get(task.id, []):
            text += f"  # {line}\n"
        body = _dump([raw])
        text += "".join(f"  {line}\n" if line else "\n" for line in body.splitlines())
    return text


def usage_line(proposal: Proposal) -> str:
    """The planner's tokens, as reported."""
    u = proposal.usage
    return (f"planner: {proposal.asks} ask{'s' if proposal.asks != 1 else ''}, tokens: "
            f"{u.input_tokens} in ({u.cached_input_tokens} cached), {u.output_tokens} out")


def proposal_markdown(proposal: Proposal, goal: str) -> str:
    """The proposed tasks and their waves as markdown (the sprint's decompose artifact)."""
    lines = ["# Proposed plan", "", f"**Goal:** {goal.strip()}", "", usage_line(proposal), ""]
    if proposal.checked is None:
        lines += ["Refused after every ask:", ""]
        lines += [f"- {p}" for p in proposal.problems]
        return "\n".join(lines) + "\n"
    dec = proposal.checked.decomposition
    plan = proposal.checked.plan
    comments = task_comments(proposal.checked, proposal.reasons)
    for n, wave in enumerate(dec.waves, start=1):
        lines += [f"## Wave {n}", "", "| Task | Stage | Paths | Why |", "|---|---|---|---|"]
        for tid in wave:
            task = plan.task(tid)
            paths = ", ".join(task.paths) if task.paths is not None else "(any file)"
            why = "; ".join(comments[tid]).replace("|", "\\|")
            paths = paths.replace("|", "\\|")
            lines.append(f"| `{tid}` | {task.stage} | {paths} | {why} |")
        lines.append("")
    return "\n".join(lines)


def plan_for_goal(
    checked: CheckedPlan,
    *,
    env: Mapping[str, str],
    work_root: Path,
    codex_path: Path | None = None,
    grace_s: float = 5.0,
    log: Callable[[str], None] = lambda _: None,
) -> Proposal:
    """The sprint's decompose stage: the planner's tasks for a plan with ``goal``.

    Each answer is checked as the plan file itself with ``tasks`` in place of ``goal``
    (its agent, verify, limits ... apply); an accepted ``Proposal.checked`` is the plan
    the sprint continues with. The planner is ``plan.planner_agent``, given the plan's
    timeout. Raises ``AgentError`` when Codex fails; a refused answer comes back with
    ``problems`` (raise ``ProposalRejected`` to stop the sprint).
    """
    from agentfleet.checking import check_plan_data

    plan = checked.plan
    if plan.goal is None:
        raise ValueError("plan_for_goal needs a plan with goal:")
    raw = plan.model_dump(mode="json", exclude_unset=True)
    raw.pop("goal", None)
    raw.pop("tasks", None)
    plan_path = plan.path or checked.repo.root / "plan.yaml"

    remote = checked.remote

    def check(tasks: list[dict[str, Any]], ask: int) -> CheckedPlan:
        # A remote repo: its mirror is fetched already; the answer is checked against it.
        proposed = check_plan_data(
            {**raw, "tasks": tasks}, plan_path, source=f"{plan_path.name}: planner answer {ask}",
            mirror=(lambda _location, _block: remote.mirror) if remote is not None else None,
        )
        # The plan's saved blocks were loaded already and their values are in ``raw``;
        # their names carry over (an agent block's key reaches each agent by its name).
        return replace(proposed, blocks=checked.blocks, remote=remote)

    return propose(PlannerRequest(
        goal=plan.goal, repo=checked.repo.root, base_sha=checked.repo.base_sha,
        agent=plan.planner_agent, check=check, env=env, work_root=work_root,
        timeout_s=plan.timeout_seconds, codex_path=codex_path, grace_s=grace_s, log=log,
    ))
