"""Reading a plan file or plan data: YAML, blocks, templates, a remote's mirror, every problem."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from agentfleet.errors import GitError, PlanError, Problem
from agentfleet.foreach import Template, expand, has_templates, needs_files
from agentfleet.git_credentials import redact_url
from agentfleet.naming import (
    ID_RE,
    branch_name_problem,
    branch_of,
    default_target,
)
from agentfleet.patterns import validate_pattern
from agentfleet.plan.checks import ref_problem, semantic_problems
from agentfleet.plan.messages import Ids, describe, task_label, translate
from agentfleet.plan.model import Plan
from agentfleet.plan_blocks import BlockLoaders, PlanBlocks, resolve_plan_blocks
from agentfleet.remote import location_problem, remote_location


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
            f"the plan must be a mapping of keys (name:, tasks:, ...), got {describe(raw)}",
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
    if isinstance(base, str) and not ref_problem("base", base):
        base = branch_of(base)
        reading.base = None if branch_name_problem(base) else base
    target = raw.get("target")
    name = raw.get("name")
    if isinstance(target, str):
        reading.target = None if ref_problem("target", target) else branch_of(target)
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
        ids = Ids(t.get("id") if isinstance(t, dict) else None for t in tasks)
        for index, task in enumerate(tasks):
            paths = task.get("paths") if isinstance(task, dict) else None
            if isinstance(paths, list):
                readable = [p for p in paths if isinstance(p, str) and validate_pattern(p) is None]
                reading.task_paths[f"tasks[{task_label(task, index, ids)}]"] = readable

    lines: list[tuple[str, str]] = []
    try:
        plan = Plan.model_validate(raw)
    except ValidationError as exc:
        plan = None
        lines += translate(exc, raw)
    lines += semantic_problems(raw)
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
