"""The plan file: a sprint of tasks in YAML, validated into pydantic models.

``load_plan`` reports every problem of a plan at once (``PlanError``), each
naming the file, the task and the key, in words a user can act on. Adding a key
is one line in ``Plan`` or ``Task``; a task key that overrides a plan key of the
same name is read through ``Plan.effective``.

The package: ``model`` (the keys, as pydantic models), ``reading`` (YAML, blocks,
templates, a remote's mirror), ``messages`` (pydantic's errors in a plan's words) and
``checks`` (what no single key shows). Import from here.
"""

from agentfleet.plan.model import (
    DEFAULT_POOL,
    DURATION,
    INHERITED_KEYS,
    MAX_ATTEMPTS,
    MAX_PROMPT_BYTES,
    STAGES,
    Complexity,
    ConflictStrategy,
    EarlyStop,
    Foreach,
    Limits,
    ModelRouting,
    OnReviewTimeout,
    Plan,
    ScoreGoal,
    Stage,
    Task,
    plan_json_schema,
)
from agentfleet.plan.reading import (
    ListFiles,
    PlanReading,
    SyncMirror,
    load_plan,
    read_plan,
    read_plan_data,
)

__all__ = [
    "DEFAULT_POOL", "DURATION", "INHERITED_KEYS", "MAX_ATTEMPTS", "MAX_PROMPT_BYTES", "STAGES",
    "Complexity", "ConflictStrategy", "EarlyStop", "Foreach", "Limits", "ListFiles",
    "ModelRouting", "OnReviewTimeout", "Plan", "PlanReading", "ScoreGoal", "Stage",
    "SyncMirror", "Task", "load_plan", "plan_json_schema", "read_plan", "read_plan_data",
]
