"""The plan's keys as pydantic models: a plan, its tasks, limits and templates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    WithJsonSchema,
    field_validator,
)

from agentfleet.agent_config import AgentConfig, AgentOverride, Variant, merge
from agentfleet.block_refs import PlanAgent, PlanRepo
from agentfleet.durations import HINT, parse_duration
from agentfleet.foreach import DEFAULT_MAX_ITEMS
from agentfleet.naming import (
    ATTEMPTS_NAMESPACE,
    ID_PATTERN,
    ID_RULE,
    branch_of,
    default_target,
)
from agentfleet.patterns import validate_pattern

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
        # by semantic_problems.
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
