"""The plan file: a sprint of tasks in YAML, validated into pydantic models.

``load_plan`` reports every problem of a plan at once (``PlanError``), each
naming the file, the task and the key, in words a user can act on. Adding a key
is one line in ``Plan`` or ``Task``; a task key that overrides a plan key of the
same name is read through ``Plan.effective``.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from agentfleet.agent_config import AgentConfig, AgentOverride, Variant, agent_problem, merge
from agentfleet.block_refs import UNION_TAGS, PlanAgent, PlanRepo
from agentfleet.durations import HINT, parse_duration
from agentfleet.errors import GitError, PlanError, Problem
from agentfleet.foreach import DEFAULT_MAX_ITEMS, Template, expand, has_templates, needs_files
from agentfleet.git_credentials import redact_url
from agentfleet.guardrails import budget_problems
from agentfleet.naming import (
    ATTEMPTS_NAMESPACE,
    ID_PATTERN,
    ID_RE,
    ID_RULE,
    branch_name_problem,
    default_target,
)
from agentfleet.patterns import validate_pattern
from agentfleet.plan_blocks import BlockLoaders, PlanBlocks, resolve_plan_blocks
from agentfleet.remote import location_problem, remote_location

STAGES = ("foundation", "feature", "tests", "docs")
Stage = Literal["foundation", "feature", "tests", "docs"]
EarlyStop = Literal["none", "first_pass"]
OnReviewTimeout = Literal["auto", "fail"]
ScoreGoal = Literal["min", "max"]
MAX_ATTEMPTS = 8


class _DurationMarker:
    """Marks a field as a duration for the generated reference."""


DURATION = _DurationMarker()


def _duration_input(value: Any) -> Any:
    # YAML reads `timeout: 90` as a number; keep the user's spelling as text.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ValueError(f"bad duration {value!r} ({HINT})")
    return value


def _check_duration(value: str) -> str:
    if parse_duration(value) <= 0:
        raise ValueError(f"bad duration '{value}': it must be more than 0 ({HINT})")
    return value


Duration = Annotated[
    str,
    BeforeValidator(_duration_input),
    AfterValidator(_check_duration),
    WithJsonSchema(
        {"type": ["string", "number"], "examples": ["90s", "20m", "1h30m"]}, mode="validation"
    ),
    DURATION,
]


# A prompt reaches the agent on stdin and in a file (AGENTFLEET_PROMPT only when small):
# beyond this it is material, not instructions, and belongs in the repository.
MAX_PROMPT_BYTES = 128 * 1024


def _check_prompt(value: str) -> str:
    if not value.strip():
        raise ValueError("empty prompt: say what the agent should do")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_PROMPT_BYTES:
        raise ValueError(
            f"the prompt is {size / 1024:,.0f} KiB, more than {MAX_PROMPT_BYTES // 1024} KiB: "
            "put the material in a file of the repository and tell the agent to read it"
        )
    return value


def _check_path(value: str) -> str:
    problem = validate_pattern(value)
    if problem:
        raise ValueError(problem)
    return value


Id = Annotated[str, Field(pattern=ID_PATTERN)]
Prompt = Annotated[str, AfterValidator(_check_prompt)]
PathPattern = Annotated[str, AfterValidator(_check_path)]
StrictCount = Annotated[int, Field(strict=True)]
DEFAULT_POOL = "agentfleet-agents"
Complexity = Literal["simple", "complex"]
ModelName = Annotated[str, Field(min_length=1, pattern=r"^\S+$")]
# A Prefect limit name that a `prefect gcl` command line takes as it is.
PoolName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")]
ConflictStrategy = Literal["rerun", "resolve", "overwrite", "skip"]


class ModelRouting(BaseModel):
    """The model of each task `complexity`."""

    model_config = ConfigDict(extra="forbid")

    simple: ModelName | None = Field(
        None, description="Default: the setting `AGENTFLEET_MODEL_SIMPLE`."
    )
    complex: ModelName | None = Field(
        None, description="Default: the setting `AGENTFLEET_MODEL_COMPLEX`."
    )


class Limits(BaseModel):
    """How much of the machine a sprint may use at once."""

    model_config = ConfigDict(extra="forbid")

    concurrency: StrictCount = Field(
        4, ge=1, description="How many agents of this sprint may run at once."
    )
    pool: PoolName = Field(
        DEFAULT_POOL,
        description="The Prefect global concurrency limit whose slots the agents of every "
        "sprint on the server share (one per running agent); created with "
        "`AGENTFLEET_POOL_SIZE` slots when missing.",
    )
    checks: StrictCount | None = Field(
        None, ge=1,
        description="How many attempts of this sprint may commit, `verify` and `score` at "
        "once (they use this machine, not the model); default: `concurrency`.",
    )
    starts_per_minute: float | None = Field(
        None, gt=0,
        description="At most this many agent starts a minute, across every sprint sharing "
        "the pool (a Prefect global limit with slot decay, `<pool>-starts`).",
    )

    start_ahead: StrictCount | None = Field(
        None, ge=0,
        description="How many attempts waiting for an agent slot may start their Codex agent "
        "ahead (worktree and `setup` ready), the metering proxy holding its first model "
        "request until the slot is theirs: the next agent then asks the model as soon as "
        "one ends. Each held agent takes about 200 MB. Default: `concurrency`; 0: none.",
    )

    tokens: StrictCount | None = Field(
        None, ge=1,
        description="Tokens the sprint's Codex agents may spend in all (every attempt, rerun "
        "and continuation): once spent, running agents are refused their next request and "
        "no attempt starts.",
    )

    @property
    def checks_cap(self) -> int:
        """``checks``, or ``concurrency`` when unset."""
        return self.checks if self.checks is not None else self.concurrency

    @property
    def start_ahead_cap(self) -> int:
        """``start_ahead``, or ``concurrency`` when unset."""
        return self.start_ahead if self.start_ahead is not None else self.concurrency


class Foreach(BaseModel):
    """A task template's items: one task per file of the base, or per value."""

    model_config = ConfigDict(extra="forbid")

    files: PathPattern | None = Field(
        None,
        description="A gitignore-style pattern (like `paths`) matched against the base "
        "commit's files: one task per file, with `{path}`, `{name}`, `{stem}` and `{dir}` "
        "substituted in `id` (sanitised to the id charset), `prompt`, `paths` (default "
        "`[\"{path}\"]`) and `verify`.",
    )
    values: list[str | int | float] | None = Field(
        None, description="One task per value, `{value}` substituted as for `files`."
    )
    max_items: StrictCount = Field(
        DEFAULT_MAX_ITEMS, ge=1, description="Refuse an expansion into more tasks than this."
    )


class Task(BaseModel):
    """One piece of work for one agent in its own worktree."""

    model_config = ConfigDict(extra="forbid")

    id: Id = Field(description=f"The task's name: {ID_RULE}; unique in the plan.")
    prompt: Prompt = Field(
        description="What the agent should do, in words; at most 128 KiB, no NUL byte."
    )
    paths: Annotated[list[PathPattern], Field(min_length=1)] | None = Field(
        None,
        description="Gitignore-style patterns of the files the task may change, relative to "
        "the repository root (`*` stays within one folder, `**` crosses folders). Tasks whose "
        "paths may overlap run one after the other; unset means any file, so the task "
        "runs after (or before) every other task.",
    )
    depends_on: list[Id] = Field(
        default_factory=list,
        description="Ids of tasks that must succeed first; this task starts from their results.",
    )
    stage: Stage = Field(
        "feature",
        description="`foundation`, `feature`, `tests` or `docs`: among tasks free to go, "
        "earlier stages are applied to the target first.",
    )
    agent: AgentOverride | None = Field(
        None, description="Changes to the plan's `agent` for this task (dicts merge)."
    )
    setup: str | None = Field(None, description="Overrides the plan's `setup` for this task.")
    verify: str | None = Field(None, description="Overrides the plan's `verify` for this task.")
    timeout: Duration | None = Field(
        None, description="Overrides the plan's `timeout` for this task."
    )
    on_conflict: ConflictStrategy | None = Field(
        None, description="Overrides the plan's `on_conflict` for this task."
    )
    retries: Annotated[StrictCount, Field(ge=0)] | None = Field(
        None, description="Overrides the plan's `retries` for this task."
    )
    idle_timeout: Duration | None = Field(
        None, description="Overrides the plan's `idle_timeout` for this task."
    )
    attempts: Annotated[StrictCount, Field(ge=1, le=MAX_ATTEMPTS)] | None = Field(
        None, description="Overrides the plan's `attempts` for this task."
    )
    variants: Annotated[list[Variant], Field(min_length=1)] | None = Field(
        None, description="Overrides the plan's `variants` for this task."
    )
    early_stop: EarlyStop | None = Field(
        None, description="Overrides the plan's `early_stop` for this task."
    )
    score: str | None = Field(None, description="Overrides the plan's `score` for this task.")
    score_goal: ScoreGoal | None = Field(
        None, description="Overrides the plan's `score_goal` for this task."
    )
    review: bool = Field(
        False,
        description="The choice among the task's candidates waits for a person (Prefect UI "
        "form, `agentfleet review`, or the terminal of `agentfleet run`), who picks a "
        "candidate that passed or rejects the task; tasks not waiting on it go on meanwhile.",
    )
    review_timeout: Duration | None = Field(
        None, description="Overrides the plan's `review_timeout` for this task."
    )
    on_review_timeout: OnReviewTimeout | None = Field(
        None, description="Overrides the plan's `on_review_timeout` for this task."
    )
    max_tokens: Annotated[StrictCount, Field(ge=1)] | None = Field(
        None, description="Overrides the plan's `max_tokens` for this task."
    )
    complexity: Complexity | None = Field(
        None,
        description="`simple` or `complex`: picks the model from the plan's `models` "
        "unless the task's agent names a `model`.",
    )
    foreach: Foreach | None = Field(
        None,
        description="Makes the task a template, expanded before the plan is checked: "
        "`{files: GLOB}` or `{values: [...]}`, with `max_items` (see `foreach` keys). "
        "`depends_on` may name a template's id to mean all of its tasks.",
    )


# Task keys that fall back to the plan key of the same name when unset.
INHERITED_KEYS = ("setup", "verify", "timeout", "retries", "idle_timeout", "attempts",
                  "variants", "early_stop", "score", "score_goal", "review_timeout",
                  "on_review_timeout", "max_tokens")


class Plan(BaseModel):
    """A sprint: tasks to run in parallel worktrees and land on one target branch."""

    model_config = ConfigDict(extra="forbid")

    name: Id = Field(description=f"The sprint's name: {ID_RULE}. Names branches and refs.")
    repo: PlanRepo = Field(
        None,
        description="The git repository, relative to the plan file's folder (default: that "
        "folder), or a saved `agentfleet-repository` block: `{block: NAME}`. A git URL or a "
        "bare repository is a remote (see Remote repositories).",
    )
    base: str | None = Field(
        None,
        description="The branch agents start from; default: the repository's current branch.",
    )
    target: str | None = Field(
        None,
        description="The branch the verified results land on; default: `agentfleet/<name>`. "
        f"May not lie in `{ATTEMPTS_NAMESPACE}`; `refs/heads/x` means the branch `x`; a tag "
        "(`refs/tags/x`, or a name that is already a tag) is refused.",
    )
    agent: PlanAgent = Field(
        default_factory=AgentConfig,
        description="The agent every task uses (see `agent` keys), or a saved "
        "`agentfleet-agent` block with changes: `{block: NAME, model: ...}`.",
    )
    setup: str | None = Field(
        None,
        description="Shell command run in each new worktree before the agent "
        "(e.g. install dependencies).",
    )
    verify: str | None = Field(
        None,
        description="Shell command run in the task's worktree after the agent; exit status 0 "
        "passes. Default: none (every attempt passes).",
    )
    final_verify: str | None = Field(
        None,
        description="Shell command run on the built target once all results are applied.",
    )
    timeout: Duration = Field(
        "30m",
        description="How long one attempt may run, all of it: `setup`, the agent (with its "
        "retries) and `verify`; e.g. `90s`, `20m`, `1h30m` (a bare number is seconds).",
    )
    retries: StrictCount = Field(
        2,
        ge=0,
        description="How many more times an agent run that failed transiently (429, 5xx, "
        "a dropped stream) is tried; other failures and a failed verify are not retried.",
    )
    idle_timeout: Duration | None = Field(
        None,
        description="Stop an attempt as stuck after this long with no agent event while no "
        "command of the agent is running (a long test run is not idleness). Default: none.",
    )
    keep_failed_worktrees: bool = Field(
        False,
        description="Keep the worktree of a failed attempt for inspection (the report says "
        "where) instead of removing it; `agentfleet clean` removes it later.",
    )
    keep_setup_products: bool = Field(
        False,
        description="When an attempt reuses a finished attempt's worktree, keep the ignored "
        "files the last `setup` there made (e.g. `node_modules`, `.venv`) that nothing "
        "changed since, if this attempt's `setup` is the same command; everything else "
        "untracked or ignored goes. Default: all of it goes.",
    )
    allow_external_symlinks: bool = Field(
        False,
        description="Let an attempt add symlinks whose target leaves the repository (an "
        "absolute path, `..` above its root, or into `.git`); by default such a symlink "
        "fails the attempt's scope check.",
    )
    attempts: StrictCount = Field(
        1,
        ge=1,
        le=MAX_ATTEMPTS,
        description="How many attempts of each task run, each in its own worktree on branch "
        "`agentfleet-attempts/<sprint>/<task>/<k>`; the best candidate is chosen and landed "
        "(passes, then `score`, then consensus, then the smaller diff, fewer tokens, lower k).",
    )
    variants: Annotated[list[Variant], Field(min_length=1)] | None = Field(
        None,
        description="Different approaches: attempt k uses entry (k-1) mod len; an entry may "
        "set any `agent` key and `hint`, text appended to the prompt. Default: none.",
    )
    early_stop: EarlyStop = Field(
        "none",
        description="`none` or `first_pass`: once one attempt passes every gate (and no "
        "`score` is set), stop the task's other attempts and start no more.",
    )
    score: str | None = Field(
        None,
        description="Shell command run after `verify` in each candidate's worktree; its last "
        "non-empty output line must be a number, which ranks the passing candidates.",
    )
    score_goal: ScoreGoal = Field(
        "min", description="`min` or `max`: which `score` is better."
    )
    limits: Limits = Field(
        default_factory=Limits, description="Resource limits (see `limits` keys)."
    )
    models: ModelRouting | None = Field(
        None,
        description="The model for each task `complexity`: `{simple: NAME, complex: NAME}` "
        "(default: the settings `AGENTFLEET_MODEL_SIMPLE`, `AGENTFLEET_MODEL_COMPLEX`).",
    )
    max_tokens: Annotated[StrictCount, Field(ge=1)] | None = Field(
        None,
        description="Tokens (input plus output, as the metering proxy counts them) one "
        "attempt of a Codex agent may spend, retries and continuations included; the request "
        "after the one that reached it is refused and the attempt ends over budget.",
    )
    overlap: Literal["serialize", "merge"] = Field(
        "serialize",
        description="Tasks whose `paths` overlap (and which do not depend on each other): "
        "`serialize` runs them one after the other; `merge` runs them in parallel from the "
        "same start and combines their results by git's three-way merge at apply (only "
        "real conflicts go to `on_conflict`).",
    )
    on_conflict: ConflictStrategy = Field(
        "rerun",
        description="What a task whose result conflicts with the target at apply does: "
        "`rerun` (its agent runs again from the stack's head, told what changed; at most "
        "`max_reruns` times, then `skip`), `resolve` (a `resolver` agent resolves the "
        "conflict markers; must leave none and pass `verify`, else `skip`), `overwrite` "
        "(its version of each conflicting file wins; what is lost is reported) or `skip` "
        "(not applied, branch kept, the report says how to merge by hand).",
    )
    max_reruns: StrictCount = Field(
        1, ge=0, description="How many times `on_conflict: rerun` runs a task again."
    )
    resolver: AgentOverride | None = Field(
        None,
        description="The agent of `on_conflict: resolve`: changes to the task's agent "
        "(default: the task's agent itself).",
    )
    on_final_verify_failure: Literal["bisect", "fail"] = Field(
        "bisect",
        description="When `final_verify` fails: `bisect` finds the first task that breaks "
        "it, ejects it and the tasks depending on it, and lands the rest (exit 1); `fail` "
        "moves nothing.",
    )
    push: str | None = Field(
        None,
        description="A remote name or URL: after the target moves, push it there, leased on "
        "the value the remote had (someone else's push is never overwritten; a refused push "
        "exits 1). Default: no push.",
    )
    push_attempts: bool = Field(
        False, description="With `push`: also push every applied task's attempt branch."
    )
    placement: Literal["local", "pool"] = Field(
        "local",
        description="Where attempts run: `local`, in the sprint's own process; `pool`, each "
        "as a flow run of the `attempt` deployment on the work pool `AGENTFLEET_ATTEMPT_POOL` "
        "(needs a remote `repo`, which the workers fetch from and push to).",
    )
    max_ejections: StrictCount = Field(
        2, ge=0, description="How many times bisection may eject a task before giving up."
    )
    tasks: list[Task] = Field(
        default_factory=list,
        description="The tasks of the sprint (see task keys); required unless `goal` is given.",
    )
    goal: str | None = Field(
        None,
        description="Instead of `tasks`: what the sprint should achieve, in words; the "
        "planner agent proposes the tasks (checked like these) when the sprint runs.",
    )
    planner: AgentOverride | None = Field(
        None,
        description="The planner's agent (`agentfleet decompose`, `goal`): changes to the "
        "plan's `agent`, whose sandbox defaults to `read-only` for it.",
    )
    review_plan: bool = Field(
        False,
        description="With `goal`: pause for a person to approve or reject the proposed plan "
        "before any task runs.",
    )
    review_timeout: Duration = Field(
        "1h",
        description="How long a review (a task's `review`, `review_plan`) waits for an "
        "answer before `on_review_timeout` decides.",
    )
    on_review_timeout: OnReviewTimeout = Field(
        "auto",
        description="`auto` (take the automatic choice; approve the proposed plan) or `fail` "
        "(fail the task; reject the plan) when nobody answers a review in time.",
    )

    _path: Path | None = PrivateAttr(None)

    @property
    def path(self) -> Path | None:
        """The plan file this plan was read from, if any."""
        return self._path

    @property
    def repo_path(self) -> Path:
        """The repository folder: ``repo`` resolved against the plan file's folder."""
        if not isinstance(self.repo, str | None):
            raise ValueError("the plan's repo names a block: check the plan to resolve it")
        folder = self._path.parent if self._path is not None else Path.cwd()
        return (folder / (self.repo or ".")).resolve()

    @property
    def agent_config(self) -> AgentConfig:
        """The plan's agent; a checked plan has its block (if any) resolved into it."""
        if not isinstance(self.agent, AgentConfig):
            raise ValueError("the plan's agent names a block: check the plan to resolve it")
        return self.agent

    @field_validator("base", "target")
    @classmethod
    def _bare_branch(cls, value: str | None) -> str | None:
        # 'refs/heads/keep' is the branch 'keep'; anything else under refs/ is refused
        # by _semantic_problems.
        return branch_of(value) if value is not None else None

    @property
    def target_branch(self) -> str:
        """The branch results land on, default applied."""
        return self.target or default_target(self.name)

    @property
    def timeout_seconds(self) -> float:
        """The plan-level timeout in seconds."""
        return parse_duration(self.timeout)

    @property
    def timeout_s(self) -> float:
        """The plan-level timeout in seconds (same as ``timeout_seconds``)."""
        return self.timeout_seconds

    @property
    def task_ids(self) -> list[str]:
        """Task ids in plan order."""
        return [t.id for t in self.tasks]

    def task(self, task_id: str) -> Task:
        """The task with this id (KeyError if there is none)."""
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise KeyError(task_id)

    def _task(self, task: Task | str) -> Task:
        return self.task(task) if isinstance(task, str) else task

    def effective(self, task: Task | str, key: str) -> Any:
        """A task's value of an inherited key: its own when set, else the plan's."""
        if key not in INHERITED_KEYS:
            raise KeyError(f"{key!r} is not a key tasks inherit from the plan")
        own = getattr(self._task(task), key)
        return getattr(self, key) if own is None else own

    def task_timeout(self, task: Task | str) -> float:
        """Seconds one attempt of the task may run."""
        return parse_duration(self.effective(task, "timeout"))

    @property
    def planner_agent(self) -> AgentConfig:
        """The planner's agent: the plan's, read-only unless ``planner`` says otherwise."""
        return merge(self.agent_config.model_copy(update={"sandbox": "read-only"}),
                     self.planner)

    def task_agent(self, task: Task | str) -> AgentConfig:
        """The task's agent: the plan's with the task's override merged in."""
        return merge(self.agent_config, self._task(task).agent)

    def task_setup(self, task: Task | str) -> str | None:
        """The setup command of the task's worktree, or None."""
        return self.effective(task, "setup")

    def task_verify(self, task: Task | str) -> str | None:
        """The verify command of the task, or None (every attempt passes)."""
        return self.effective(task, "verify")

    def task_on_conflict(self, task: Task | str) -> ConflictStrategy:
        """The task's conflict strategy: its own ``on_conflict``, else the plan's."""
        own = self._task(task).on_conflict
        return self.on_conflict if own is None else own

    def resolver_agent(self, task: Task | str) -> AgentConfig:
        """The agent resolving the task's conflicts: the task's, with ``resolver`` merged in."""
        return merge(self.task_agent(task), self.resolver)

    def task_retries(self, task: Task | str) -> int:
        """How many more times a failed attempt of the task is tried."""
        return self.effective(task, "retries")

    def task_attempts(self, task: Task | str) -> int:
        """How many attempts of the task run."""
        return self.effective(task, "attempts")

    def task_variant(self, task: Task | str, k: int) -> Variant | None:
        """The variant attempt ``k`` (from 1) uses: entry (k-1) mod len, or None."""
        variants = self.effective(task, "variants")
        return variants[(k - 1) % len(variants)] if variants else None

    def task_early_stop(self, task: Task | str) -> str:
        """``none`` or ``first_pass``."""
        return self.effective(task, "early_stop")

    def task_score(self, task: Task | str) -> str | None:
        """The score command of the task, or None."""
        return self.effective(task, "score")

    def task_score_goal(self, task: Task | str) -> ScoreGoal:
        """``min`` or ``max``."""
        return self.effective(task, "score_goal")

    def task_review(self, task: Task | str) -> bool:
        """Whether the task's choice waits for a person."""
        return self._task(task).review

    def task_review_timeout(self, task: Task | str) -> float:
        """Seconds the task's review waits for an answer."""
        return parse_duration(self.effective(task, "review_timeout"))

    def task_on_review_timeout(self, task: Task | str) -> OnReviewTimeout:
        """``auto`` or ``fail``: what an unanswered review of the task ends in."""
        return self.effective(task, "on_review_timeout")

    def task_idle_timeout(self, task: Task | str) -> float | None:
        """Seconds without an event (and no command running) before an attempt is stuck."""
        value = self.effective(task, "idle_timeout")
        return None if value is None else parse_duration(value)


def plan_json_schema() -> dict[str, Any]:
    """The JSON Schema of the plan file, for ``agentfleet schema`` and editors."""
    schema = Plan.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "agentfleet plan",
        **{k: v for k, v in schema.items() if k != "title"},
        # Either the tasks, or a goal the planner turns into tasks.
        "oneOf": [{"required": ["tasks"]}, {"required": ["goal"]}],
    }


# ---------------------------------------------------------------- reading


@dataclass
class PlanReading:
    """What could be read of a plan file: the plan if valid, and every problem found.

    ``repo_path``, ``base`` and ``target`` are known whenever the file parsed far
    enough, so that repository problems can be reported with plan problems.
    """

    source: str
    plan: Plan | None = None
    problems: list[Problem] = field(default_factory=list)
    repo_path: Path | None = None  # for a remote: its mirror, once fetched
    remote: str | None = None  # the remote `repo` names (a URL or a bare repository)
    remote_block: str | None = None  # the repository block holding the remote's token
    base: str | None = None
    target: str | None = None
    # Each task's readable path patterns, by its label ("tasks[api]"), even in a plan
    # with problems: the repository checks on them are reported with the rest.
    task_paths: dict[str, list[str]] = field(default_factory=dict)
    templates: list[Template] = field(default_factory=list)  # foreach tasks, expanded
    blocks: PlanBlocks = field(default_factory=PlanBlocks)  # what saved blocks add


# Lists the files of a base branch (None: HEAD) of a repository; None when it cannot.
ListFiles = Callable[[Path, str | None], list[str] | None]
# Brings the mirror of a remote (URL or bare repository) up to date; returns its folder.
# Called with the remote and the repository block whose token git needs (or None).
SyncMirror = Callable[[str, str | None], Path]


def _read_remote(
    reading: PlanReading,
    repo: str | None,
    folder: Path,
    mirror: SyncMirror | None,
    problem: Callable[[str, str], None],
) -> None:
    """A remote ``repo``: its mirror, fetched now, stands for the repository."""
    reading.remote = remote_location(repo, folder)
    if reading.remote is None:
        return
    reading.repo_path = None
    wrong = location_problem(reading.remote)
    if wrong:
        problem("repo", f"{redact_url(reading.remote)!r} {wrong}")
    elif mirror is None:
        problem("repo", "a remote repository is fetched only by `agentfleet plan`, "
                "`agentfleet run` and the sprint flow; use a local clone here")
    else:
        try:
            reading.repo_path = mirror(reading.remote, reading.remote_block)
        except GitError as exc:
            problem("repo", str(exc))


def load_plan(path: Path) -> Plan:
    """Read and validate a plan file; raises ``PlanError`` listing every problem."""
    reading = read_plan(path)
    if reading.problems or reading.plan is None:
        raise PlanError(reading.problems)
    return reading.plan


def read_plan(
    path: Path,
    list_files: ListFiles | None = None,
    *,
    blocks: BlockLoaders | None = None,
    mirror: SyncMirror | None = None,
) -> PlanReading:
    """Read a plan file, collecting every problem instead of stopping at the first.

    ``foreach`` templates are expanded first, against the files ``list_files`` gives
    (default: ``git ls-tree`` of the plan's base in its repository). Saved blocks the
    plan names are loaded through ``blocks``.
    """
    path = Path(path)
    source = str(path)
    reading = PlanReading(source=source)

    def problem(where: str, message: str) -> None:
        reading.problems.append(Problem(f"{source}: {where}" if where else source, message))

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problem("", "no such plan file")
        return reading
    except IsADirectoryError:
        problem("", "is a folder, not a plan file")
        return reading
    except (OSError, UnicodeDecodeError) as exc:
        problem("", f"cannot read the plan file: {exc}")
        return reading

    raw, yaml_problems = _parse_yaml(text, source)
    reading.problems.extend(yaml_problems)
    if yaml_problems and raw is None:
        return reading
    if raw is None:
        problem("", "the plan file is empty (it needs at least name: and tasks:)")
        return reading
    if not isinstance(raw, dict):
        problem(
            "",
            f"the plan must be a mapping of keys (name:, tasks:, ...), got {_describe(raw)}",
        )
        return reading

    return read_plan_data(raw, path, reading=reading, list_files=list_files, blocks=blocks,
                          mirror=mirror)


def read_plan_data(
    raw: dict[str, Any],
    path: Path,
    *,
    source: str | None = None,
    reading: PlanReading | None = None,
    list_files: ListFiles | None = None,
    blocks: BlockLoaders | None = None,
    mirror: SyncMirror | None = None,
) -> PlanReading:
    """Check a plan's data as if read from the file ``path`` (which need not exist).

    The same checks as a plan file gets: a planner's answer goes through here too.
    ``mirror`` fetches a remote ``repo`` into its mirror (without it a remote is refused).
    """
    path = Path(path)
    reading = reading if reading is not None else PlanReading(source=source or str(path))
    source = reading.source

    def problem(where: str, message: str) -> None:
        reading.problems.append(Problem(f"{source}: {where}" if where else source, message))

    # Saved blocks first: the checks below see the values they give.
    resolved = resolve_plan_blocks(raw, blocks)
    raw, reading.blocks = resolved.raw, resolved.blocks
    for where, message in resolved.problems:
        problem(where, message)

    # What the repository check needs, read leniently from the raw mapping.
    repo = raw.get("repo", None)
    if repo is None or isinstance(repo, str):
        reading.repo_path = (path.resolve().parent / (repo or ".")).resolve()
        # A remote named by a repository block is fetched with the block's token.
        reading.remote_block = reading.blocks.repository_block
        _read_remote(reading, repo, path.resolve().parent, mirror, problem)
    base = raw.get("base")
    if isinstance(base, str) and not _ref_problem("base", base):
        base = branch_of(base)
        reading.base = None if branch_name_problem(base) else base
    target = raw.get("target")
    name = raw.get("name")
    if isinstance(target, str):
        reading.target = None if _ref_problem("target", target) else branch_of(target)
    elif target is None and isinstance(name, str) and ID_RE.match(name):
        reading.target = default_target(name)

    origin: dict[str, str] = {}
    if has_templates(raw):
        files = None
        if needs_files(raw) and reading.repo_path is not None:
            if list_files is None:
                from agentfleet.repository import base_files

                list_files = base_files
            files = list_files(reading.repo_path, reading.base)
        expansion = expand(raw, files)
        for where, message in expansion.problems:
            problem(where, message)
        raw, origin = expansion.raw, expansion.origin
        reading.templates = expansion.templates
    # Each (expanded) task's readable paths, for the repository checks.
    tasks = raw.get("tasks")
    if isinstance(tasks, list):
        ids = _Ids(t.get("id") if isinstance(t, dict) else None for t in tasks)
        for index, task in enumerate(tasks):
            paths = task.get("paths") if isinstance(task, dict) else None
            if isinstance(paths, list):
                readable = [p for p in paths if isinstance(p, str) and validate_pattern(p) is None]
                reading.task_paths[f"tasks[{_task_label(task, index, ids)}]"] = readable

    lines: list[tuple[str, str]] = []
    try:
        plan = Plan.model_validate(raw)
    except ValidationError as exc:
        plan = None
        lines += _translate(exc, raw)
    lines += _semantic_problems(raw)
    # A problem of an expanded task is the template's: said once, at the template.
    for where, message in dict.fromkeys(_at_template(w, origin) for w in lines):
        problem(where, message)

    if plan is not None and not reading.problems:
        plan._path = path.resolve()
        reading.plan = plan
    return reading


def _at_template(line: tuple[str, str], origin: dict[str, str]) -> tuple[str, str]:
    where, message = line
    if origin and where.startswith("tasks[") and "]" in where:
        label, rest = where[len("tasks["):].split("]", 1)
        if label in origin:
            return f"tasks[{origin[label]}]{rest}", message
    return where, message


# libyaml's parser when PyYAML has it: a plan of thousands of tasks parses ten times faster.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_SafeLoader):  # type: ignore[misc, valid-type]
    """A safe loader that notes duplicate keys, which plain YAML silently overwrites."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[int, Any]] = []


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            if key in seen:
                loader.duplicates.append((key_node.start_mark.line + 1, key))
            seen.add(key)
        except TypeError:  # an unhashable key; construct_mapping reports it
            pass
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse_yaml(text: str, source: str) -> tuple[Any, list[Problem]]:
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        what = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        context_mark = getattr(exc, "context_mark", None)
        if context and context_mark is not None and context_mark is not mark:
            context = f"{context} at line {context_mark.line + 1}"
        detail = f"{what} ({context})" if context else what
        return None, [Problem(where, f"YAML does not parse: {detail}")]
    finally:
        loader.dispose()
    problems = [
        Problem(f"{source}:{line}", f"duplicate key '{key}' (the later value would silently win)")
        for line, key in loader.duplicates
    ]
    return data, problems


# ---------------------------------------------------------------- messages


def _describe(value: Any) -> str:
    """A value as a user would recognize it from their YAML."""
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        short = value if len(value) <= 40 else value[:37] + "..."
        return f"the text '{short}'"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


_EXPECTED = {
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
}


def _model_at(loc: Iterable[Any]) -> type[BaseModel] | None:
    """The model whose keys are valid at a location (for 'did you mean')."""
    model: type[BaseModel] | None = Plan
    for key in loc:
        if isinstance(key, int):
            continue
        if model is None or key not in model.model_fields:
            return None
        model = _inner_model(model.model_fields[key].annotation)
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


class _Ids(list):  # type: ignore[type-arg]
    """Task ids in plan order, knowing which occur once (a plan may have thousands)."""

    def __init__(self, ids: Iterable[Any]) -> None:
        super().__init__(ids)
        seen: set[Any] = set()
        repeated: set[Any] = set()
        for tid in self:
            if isinstance(tid, str):
                (repeated if tid in seen else seen).add(tid)
        self.unique = seen - repeated


def _task_label(raw_task: Any, index: int, ids: list[Any]) -> str:
    tid = raw_task.get("id") if isinstance(raw_task, dict) else None
    once = tid in ids.unique if isinstance(ids, _Ids) else ids.count(tid) == 1
    if isinstance(tid, str) and tid and once:
        return tid
    return str(index)


def _where(loc: tuple[Any, ...], raw: Any) -> tuple[str, list[Any], Any, bool]:
    """Render a pydantic location against the raw data.

    Returns the text, the location actually inside the data (union tags
    dropped), the value there, and whether the location exists in the data.
    """
    text = ""
    node: Any = raw
    kept: list[Any] = []
    exists = True
    ids = (
        _Ids(t.get("id") if isinstance(t, dict) else None for t in raw.get("tasks") or [])
        if (isinstance(raw, dict) and isinstance(raw.get("tasks"), list))
        else []
    )
    for key in loc:
        if isinstance(node, list) and isinstance(key, int):
            label = str(key)
            if kept == ["tasks"] and 0 <= key < len(node):
                label = _task_label(node[key], key, ids)
            text += f"[{label}]"
            node = node[key] if 0 <= key < len(node) else None
        elif isinstance(node, dict):
            text += f".{key}" if text else str(key)
            exists = key in node
            node = node.get(key)
        else:
            break  # below a scalar only pydantic's union member tags remain
        kept.append(key)
    return text, kept, node, exists


def _translate(exc: ValidationError, raw: dict[str, Any]) -> list[tuple[str, str]]:
    """pydantic's errors as (where, message) lines a user can act on, merged per location."""
    out: dict[str, list[str]] = {}
    expected: dict[str, list[str]] = {}
    got: dict[str, str] = {}
    for err in exc.errors(include_url=False):
        kind = err["type"]
        loc = tuple(err["loc"])
        if len(loc) >= 2 and loc[0] in ("agent", "repo") and loc[1] in UNION_TAGS:
            loc = loc[:1] + loc[2:]  # the tag of the union (inline or block), not a key
        where, kept, value, exists = _where(loc, raw)
        key = kept[-1] if kept else None
        if kind == "extra_forbidden":
            # Reported at the mapping that holds the unknown key.
            parent = _where(tuple(kept[:-1]), raw)[0]
            model = _model_at(kept[:-1])
            message = f"unknown key '{key}'"
            if model is not None:
                close = difflib.get_close_matches(str(key), list(model.model_fields), n=1)
                if close:
                    message += f"; did you mean '{close[0]}'?"
                else:
                    message += f" (valid keys: {', '.join(model.model_fields)})"
            out.setdefault(parent, []).append(message)
            continue
        if kind == "missing":
            out.setdefault(where, []).append("required key is missing")
            continue
        if kind in _EXPECTED:
            expected.setdefault(where, []).append(_EXPECTED[kind])
            hint = ""
            if kind == "list_type" and isinstance(value, str):
                hint = f" (write [{value}], or one '- {value}' line per item)"
            elif kind == "string_type" and isinstance(value, int | float | bool):
                hint = " (put it in quotes to make it text)"
            got[where] = f"{_describe(value)}{hint}"
            out.setdefault(where, [])
            continue
        ctx = err.get("ctx") or {}
        if kind in ("value_error", "assertion_error"):
            message = str(ctx.get("error", err["msg"]))
        elif (
            kind == "string_pattern_mismatch"
            and key in ("id", "name")
            or (
                kind == "string_pattern_mismatch"
                and where.startswith("tasks")
                and ".depends_on" in where
            )
        ):
            what = "name" if key == "name" else "id"
            message = f"'{value}' is not a valid {what}: use {ID_RULE}"
        elif kind == "literal_error":
            message = f"{_describe(value)} is not one of {ctx.get('expected')}"
        elif kind in ("greater_than_equal", "greater_than"):
            bound = ctx.get("ge", ctx.get("gt"))
            message = f"must be at least {bound}, got {value}"
        elif kind == "too_short" and key == "tasks":
            message = "the plan has no tasks: add at least one under tasks:"
        elif kind == "too_short" and key == "paths":
            message = (
                "empty list: list the files the task may change, or leave paths out to allow "
                "every file"
            )
        elif kind == "too_short":
            message = "must not be empty"
        else:
            message = err["msg"]
        out.setdefault(where, []).append(message)
    lines = []
    for where, messages in out.items():
        if where in expected:
            kinds = list(dict.fromkeys(expected[where]))
            wanted = kinds[0] if len(kinds) == 1 else ", ".join(kinds[:-1]) + " or " + kinds[-1]
            messages = [f"expected {wanted}, got {got[where]}", *messages]
        for message in dict.fromkeys(messages):
            lines.append((where, message))
    return lines


# ---------------------------------------------------------------- cross-key checks


def branch_of(name: str) -> str:
    """A plan's branch name as git's short name: ``refs/heads/keep`` is ``keep``."""
    return name.removeprefix("refs/heads/")


def _ref_problem(key: str, name: str) -> str | None:
    """Why ``name`` (a plan's target or base) is a ref that is not a branch, or None."""
    if name.startswith("refs/") and not name.startswith("refs/heads/"):
        kind = "a tag" if name.startswith("refs/tags/") else "not a branch"
        return (
            f"'{name}' is {kind}: {key} must be a branch name (e.g. 'release', or "
            "'refs/heads/release')"
        )
    return None


def _semantic_problems(raw: dict[str, Any]) -> list[tuple[str, str]]:
    """Problems no single key shows: ids, dependencies, branch names, agents, NUL bytes."""
    problems: list[tuple[str, str]] = _nul_problems(raw)
    target = raw.get("target")
    if isinstance(target, str) and (why := _ref_problem("target", target)) is not None:
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
    if isinstance(base, str) and (why := _ref_problem("base", base)) is not None:
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
    ids = _Ids(t.get("id") if isinstance(t, dict) else None for t in tasks)
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
        label = _task_label(task, index, ids)
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
        _Ids(t.get("id") if isinstance(t, dict) else None for t in raw["tasks"])
        if isinstance(raw.get("tasks"), list)
        else _Ids([])
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
                label = _task_label(value, index, ids) if where == "tasks" else str(index)
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
            out.append((f"tasks[{_task_label(task, index, ids)}].agent.{key}", message))
        else:
            missing_at_plan.append((index, task))
    if missing_at_plan and len(missing_at_plan) == sum(isinstance(t, dict) for t in tasks):
        out.append(("agent.run", agent_problem(base)[1]))  # type: ignore[index]
    else:
        for index, task in missing_at_plan:
            out.append(
                (
                    f"tasks[{_task_label(task, index, ids)}].agent.run",
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
        where = f"tasks[{_task_label(task, index, ids)}].variants" if own is not None \
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
