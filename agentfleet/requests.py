"""What a ``sprint`` flow run is asked to run, as the UI's run form or ``--param`` gives it.

Either ``plan_path``, a plan file on the worker (relative: to ``repository`` when given,
else to the worker's folder), or ``plan``, the plan itself as the same model the YAML
file validates against. ``repository`` is a folder on the worker or a saved
``agentfleet-repository`` block (``{block: NAME}``); a plan given as data without a
``repo`` of its own runs there. The plan gets exactly the checks of ``agentfleet run``,
every problem at once. Prefect-free: blocks load through the edge's ``BlockLoaders``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agentfleet.block_refs import REPOSITORY_BLOCK_TYPE
from agentfleet.checking import CheckedPlan, check_plan_data, load_and_check
from agentfleet.errors import ConfigError, PlanError, Problem
from agentfleet.plan import SyncMirror
from agentfleet.plan_blocks import BlockLoaders, load_block_values

PLAN_SOURCE = "plan"  # how problems of a plan given as data name it


def plain(value: Any) -> Any:
    """A parameter as JSON-shaped data: a model as the keys that were set, lists within."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=True)
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def repository_root(
    repository: Any, blocks: BlockLoaders | None, *, cwd: Path
) -> Path | None:
    """The folder ``repository`` names (a path, or a saved block's path); None if not given."""
    repository = plain(repository)
    if repository is None:
        return None
    if isinstance(repository, Mapping) and "block" in repository:
        name = repository["block"]
        source, problem = load_block_values(
            str(name), "repository.block", REPOSITORY_BLOCK_TYPE,
            blocks.repository if blocks else None,
        )
        if problem is not None:
            raise ConfigError(f"{problem[0]}: {problem[1]}")
        if source.path is None:
            raise ConfigError(
                f"repository.block: the block {name!r} names the URL {source.location}, "
                "where a plan_path cannot be read: give the plan itself (`plan`), or a "
                "plan file with `repo: {block: " + str(name) + "}` in it"
            )
        return source.path.expanduser().resolve()
    if not isinstance(repository, str) or not repository.strip():
        raise ConfigError(
            "repository: give a folder on the worker, or a saved repository block as "
            "{block: NAME}"
        )
    return (cwd / Path(repository).expanduser()).resolve()


def check_sprint_request(
    plan: Any,
    plan_path: str | Path | None,
    repository: Any = None,
    *,
    blocks: BlockLoaders | None,
    cwd: Path,
    mirror: SyncMirror | None = None,
) -> CheckedPlan:
    """The checked plan a sprint run was given; ``PlanError``/``ConfigError`` (exit 2).

    ``mirror`` fetches a remote ``repo`` into its mirror (``agentfleet.remote``).
    """
    if isinstance(plan, str | Path) and plan_path is None:
        raise ConfigError(
            f"plan: takes the plan itself (name, tasks, ...), not the text {str(plan)!r}; "
            "a plan file on the worker goes in plan_path"
        )
    if (plan is None) == (plan_path is None):
        raise ConfigError(
            "give either plan_path (a plan file on the worker) or plan (the plan itself)"
            + (", not both" if plan is not None else "")
        )
    given = plain(repository)
    raw = plain(plan)
    if (plan_path is None and isinstance(given, Mapping) and "block" in given
            and isinstance(raw, Mapping) and raw.get("repo") is None):
        # The block is the plan's repository, as `repo: {block: NAME}` in it would be:
        # a folder on the worker, or a remote fetched into its mirror.
        return check_plan_data({**without_nulls(raw), "repo": {"block": given["block"]}},
                               cwd / "plan.yaml", source=PLAN_SOURCE, blocks=blocks,
                               mirror=mirror)
    root = repository_root(repository, blocks, cwd=cwd)
    if plan_path is not None:
        path = Path(plan_path).expanduser()
        if not path.is_absolute():
            path = (root or cwd) / path
        return load_and_check(path, blocks, mirror=mirror)
    if not isinstance(raw, Mapping):
        raise PlanError([Problem(PLAN_SOURCE, "the plan must be a mapping of keys (name, "
                                              f"tasks, ...), got {type(raw).__name__}")])
    if root is None and raw.get("repo") is None:
        raise PlanError([Problem(
            f"{PLAN_SOURCE}: repo",
            "say which repository the sprint runs on: `repo` in the plan (a folder on the "
            "worker or {block: NAME}) or the `repository` parameter",
        )])
    # A plan given as data has no file: its `repo` is relative to the repository (or cwd).
    return check_plan_data(without_nulls(raw), (root or cwd) / "plan.yaml", source=PLAN_SOURCE,
                           blocks=blocks, mirror=mirror)


def without_nulls(value: Any) -> Any:
    """Mappings without their null keys: a form sends a field left empty as null, which in
    a plan given as data means unset (the key's default), as if the key were left out."""
    if isinstance(value, Mapping):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def plan_name_of(plan: Any, plan_path: str | Path | None, repository: Any = None) -> str:
    """The sprint's name for its flow run, read leniently (the checks come later)."""
    raw = plain(plan)
    if isinstance(raw, Mapping) and isinstance(raw.get("name"), str):
        return raw["name"]
    if plan_path is not None:
        import yaml

        path = Path(plan_path).expanduser()
        if isinstance(repository, str) and not path.is_absolute():
            path = Path(repository).expanduser() / path
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            data = None
        if isinstance(data, Mapping) and isinstance(data.get("name"), str):
            return data["name"]
        return Path(plan_path).stem
    return "(no plan)"
