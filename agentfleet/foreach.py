"""One task template, many tasks: ``foreach`` expanded in the raw plan before it is checked.

A task with ``foreach`` is a template. Before the plan is validated it becomes one
task per item, and every later check (ids, dependencies, paths, waves) sees only
the expanded tasks, exactly as if a person had written them out::

    - id: types-{stem}
      prompt: Add type hints to {path}.
      foreach: {files: "src/**/*.py"}        # one task per file of the base commit
    - id: docs-{value}
      prompt: Document the {value} command.
      paths: ["docs/{value}.md"]
      foreach: {values: [plan, run, clean]}  # one task per value

Placeholders are substituted in ``id``, ``prompt``, ``paths`` and ``verify``:

- ``foreach: {files: GLOB}``: ``{path}`` (``src/pkg/a_b.py``), ``{name}`` (``a_b.py``),
  ``{stem}`` (``a_b``), ``{dir}`` (``src/pkg``; ``.`` at the root). ``GLOB`` is a
  gitignore-style pattern like ``paths`` (``src/**/*.py``, ``docs/``), matched against
  the files of the base commit (``git ls-tree -r``; submodules are not files).
  ``paths`` defaults to ``["{path}"]``.
- ``foreach: {values: [...]}``: ``{value}``.

How a value is written into each key:

- ``id``: sanitised to the id charset: lowercased, every run of characters other than
  ``a-z`` and ``0-9`` becomes one ``-``, and ``-`` is trimmed at both ends
  (``src/Foo_bar.py`` -> ``src-foo-bar-py``, ``__init__`` -> ``init``, ``.`` -> nothing);
  then repeated ``-`` in the whole id become one and ``-`` is trimmed at its ends
  (``t-{dir}-{stem}`` of ``setup.py`` is ``t-setup``). Two items whose ids come out
  equal are refused, naming the items.
- ``paths``: glob characters (``* ? [ ] \\``) are escaped, so a file named
  ``a[1].py`` stands for itself. (A file at the repository root has no ``/``, so its
  pattern also matches files of that name in folders; that can only serialize more.)
- ``verify``: shell-quoted (``shlex.quote``: ordinary paths are unchanged).
- ``prompt``: as is.

Other braces are left alone (prompts may hold code); only the placeholder names above are
read, and one that belongs to the other kind of ``foreach`` is a problem.

``depends_on`` may name a template's id to mean all of its expansions. ``max_items``
(default 200) refuses an expansion larger than that; an expansion of nothing is refused
too (most likely a typo in the glob). Pure: the caller lists the base's files.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from agentfleet.naming import ID_RE, ID_RULE
from agentfleet.patterns import matches, validate_pattern

DEFAULT_MAX_ITEMS = 200
FILE_PLACEHOLDERS = ("path", "name", "stem", "dir")
VALUE_PLACEHOLDERS = ("value",)
SUBSTITUTED_KEYS = ("id", "prompt", "paths", "verify")
SHOWN_EXPANSIONS = 3  # how many expanded ids ``agentfleet plan`` shows per template

_PLACEHOLDER_RE = re.compile(r"\{(path|name|stem|dir|value)\}")
_NOT_ID_CHARS = re.compile(r"[^a-z0-9]+")
_GLOB_CHARS = re.compile(r"([*?\[\]\\])")


@dataclass(frozen=True)
class Template:
    """A ``foreach`` task as written, and what it became."""

    id: str  # the template's id as written, e.g. "types-{stem}"
    kind: str  # "files" or "values"
    source: str  # the glob, or the values as text
    ids: list[str] = field(default_factory=list)  # the expanded ids, in item order

    def describe(self) -> str:
        """One line for ``agentfleet plan``: the template, its count, the first few ids."""
        n = len(self.ids)
        shown = ", ".join(self.ids[:SHOWN_EXPANSIONS])
        more = f", ... (+{n - SHOWN_EXPANSIONS} more)" if n > SHOWN_EXPANSIONS else ""
        over = f"files '{self.source}'" if self.kind == "files" else f"values {self.source}"
        return f"{self.id}: foreach {over} -> {n} task{'s' if n != 1 else ''}: {shown}{more}"


@dataclass
class Expansion:
    """The raw plan with every template expanded, the templates, and what was wrong."""

    raw: dict[str, Any]
    templates: list[Template] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (where, message)
    # Expanded id -> the template's label, so later problems can point at the template.
    origin: dict[str, str] = field(default_factory=dict)


def has_templates(raw: Any) -> bool:
    """Whether a raw plan mapping has any task with ``foreach``."""
    return any(isinstance(t, dict) and "foreach" in t for t in _raw_tasks(raw))


def needs_files(raw: Any) -> bool:
    """Whether a raw plan has a ``foreach: {files: ...}`` (the caller must list the base)."""
    return any(
        isinstance(t, dict) and isinstance(t.get("foreach"), dict) and "files" in t["foreach"]
        for t in _raw_tasks(raw)
    )


def _raw_tasks(raw: Any) -> list[Any]:
    tasks = raw.get("tasks") if isinstance(raw, dict) else None
    return tasks if isinstance(tasks, list) else []


def sanitize_id_part(text: str) -> str:
    """``text`` in the id charset: lowercase, other characters' runs as one '-', trimmed."""
    return _NOT_ID_CHARS.sub("-", text.lower()).strip("-")


def file_values(path: str) -> dict[str, str]:
    """The placeholders of one file: ``{path}``, ``{name}``, ``{stem}``, ``{dir}``."""
    pure = PurePosixPath(path)
    parent = str(pure.parent)
    return {"path": path, "name": pure.name, "stem": pure.stem, "dir": parent}


def escape_glob(text: str) -> str:
    """A literal path as a pattern: glob characters escaped, so it matches only itself."""
    return _GLOB_CHARS.sub(r"\\\1", text)


def _substitute(text: str, values: dict[str, str], convert: Callable[[str], str]) -> str:
    return _PLACEHOLDER_RE.sub(
        lambda m: convert(values[m.group(1)]) if m.group(1) in values else m.group(0), text
    )


def expand(raw: dict[str, Any], files: Sequence[str] | None) -> Expansion:
    """Expand every ``foreach`` task of ``raw`` (not changed); ``files`` are the base's files.

    ``files`` may be None when the plan has no ``foreach: {files: ...}`` or the base
    could not be listed (then each files template is reported and left out). A template
    with a problem is left out of the expanded plan, and references to it are dropped,
    so that its one problem is not repeated by every check after it.
    """
    out = Expansion(raw=raw)
    tasks = raw.get("tasks")
    if not isinstance(tasks, list) or not has_templates(raw):
        return out
    ids = [t.get("id") if isinstance(t, dict) else None for t in tasks]
    plain_ids = {
        tid for t, tid in zip(tasks, ids, strict=True)
        if isinstance(tid, str) and isinstance(t, dict) and "foreach" not in t
    }
    expanded: list[Any] = []
    by_template: dict[str, list[str]] = {}  # template id -> expanded ids
    failed: set[str] = set()
    seen: dict[str, str] = {}  # expanded id -> its template label
    for index, task in enumerate(tasks):
        if not (isinstance(task, dict) and "foreach" in task):
            expanded.append(task)
            continue
        tid = task.get("id")
        label = tid if isinstance(tid, str) and tid and ids.count(tid) == 1 else str(index)
        where = f"tasks[{label}]"
        made, problems = _expand_one(task, where, files)
        for key, message in problems:
            out.problems.append((f"{where}.{key}" if key else where, message))
        if isinstance(tid, str):
            if problems:
                failed.add(tid)
            else:
                by_template[tid] = [t["id"] for t in made]
        if problems:
            continue
        clash = False
        for t in made:
            if t["id"] in plain_ids:
                out.problems.append((f"{where}.id", f"expands to '{t['id']}', the id of another "
                                     "task; ids must be unique"))
                clash = True
            elif t["id"] in seen and seen[t["id"]] != label:
                out.problems.append((f"{where}.id", f"expands to '{t['id']}', as "
                                     f"tasks[{seen[t['id']]}] does too; ids must be unique"))
                clash = True
            seen.setdefault(t["id"], label)
        template = Template(
            id=str(tid), kind=_kind(task["foreach"]),
            source=_source(task["foreach"]), ids=[t["id"] for t in made],
        )
        out.templates.append(template)
        for t in made:
            out.origin[t["id"]] = label
        if not clash:
            expanded.extend(made)
    # depends_on naming a template means all of its expansions.
    for task in expanded:
        if not isinstance(task, dict) or not isinstance(task.get("depends_on"), list):
            continue
        deps: list[Any] = []
        for dep in task["depends_on"]:
            if isinstance(dep, str) and dep in by_template and dep not in plain_ids:
                if task.get("id") in by_template[dep]:
                    out.problems.append((
                        f"tasks[{out.origin.get(task['id'], task['id'])}].depends_on",
                        f"depends on its own template '{dep}'",
                    ))
                    continue
                deps.extend(d for d in by_template[dep] if d not in deps)
            elif isinstance(dep, str) and dep in failed and dep not in plain_ids:
                continue  # the template's own problem is reported
            elif dep not in deps:
                deps.append(dep)
        task["depends_on"] = deps
    out.raw = {**raw, "tasks": expanded}
    # Problems found about the same template location once only.
    out.problems = list(dict.fromkeys(out.problems))
    return out


def _kind(spec: dict[str, Any]) -> str:
    return "files" if "files" in spec else "values"


def _source(spec: dict[str, Any]) -> str:
    if "files" in spec:
        return str(spec["files"])
    return "[" + ", ".join(str(v) for v in spec.get("values") or []) + "]"


def _expand_one(
    task: dict[str, Any], where: str, files: Sequence[str] | None
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """One template's tasks, or the problems that stop it (key below the task, message)."""
    spec = task.get("foreach")
    problems: list[tuple[str, str]] = []
    if not isinstance(spec, dict):
        return [], [("foreach", "expected a mapping: {files: GLOB} or {values: [...]}")]
    unknown = [k for k in spec if k not in ("files", "values", "max_items")]
    for key in unknown:
        problems.append(("foreach", f"unknown key '{key}' (valid keys: files, values, max_items)"))
    if ("files" in spec) == ("values" in spec):
        problems.append(("foreach", "give exactly one of files: (a glob) or values: (a list)"))
    max_items = spec.get("max_items", DEFAULT_MAX_ITEMS)
    if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
        problems.append(("foreach.max_items", f"expected a whole number of at least 1, got "
                         f"{max_items!r}"))
    tid = task.get("id")
    if not isinstance(tid, str) or not tid:
        problems.append(("id", "a foreach template needs an id, e.g. fix-{stem}"))
    if problems or not isinstance(tid, str):
        return [], problems

    items: list[dict[str, str]]
    names: tuple[str, ...]
    others: tuple[str, ...]
    kind = _kind(spec)
    if kind == "files":
        glob = spec["files"]
        if not isinstance(glob, str):
            return [], [("foreach.files", f"expected a glob as text, got {glob!r}")]
        why = validate_pattern(glob)
        if why:
            return [], [("foreach.files", why)]
        if files is None:
            return [], [("foreach.files", "cannot be expanded: the base commit's files could "
                         "not be listed (see the repository's problem)")]
        found = [f for f in files if matches(glob, f)]
        if not found:
            return [], [("foreach.files", f"'{glob}' matches no file of the base commit")]
        items = [file_values(f) for f in found]
        names, others = FILE_PLACEHOLDERS, VALUE_PLACEHOLDERS
    else:
        values = spec["values"]
        if not isinstance(values, list) or not values:
            return [], [("foreach.values", "expected a non-empty list of values")]
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, str | int | float)]
        if bad:
            return [], [("foreach.values", f"values must be text or numbers, got {bad[0]!r}")]
        items = [{"value": str(v)} for v in values]
        names, others = VALUE_PLACEHOLDERS, FILE_PLACEHOLDERS
    if len(items) > max_items:
        what = f"files '{spec['files']}' matches" if kind == "files" else "values has"
        return [], [("foreach", f"{what} {len(items)} items, more than max_items ({max_items}): "
                     "narrow it, or raise foreach.max_items if you mean it")]

    for key in SUBSTITUTED_KEYS:
        for text in _texts(task.get(key)):
            wrong = sorted({m for m in _PLACEHOLDER_RE.findall(text) if m in others})
            if wrong:
                have = ", ".join("{" + n + "}" for n in names)
                problems.append((key, f"{', '.join('{' + w + '}' for w in wrong)} belongs to "
                                 f"the other kind of foreach; foreach {kind} gives {have}"))
    if len(items) > 1 and not any(f"{{{n}}}" in tid for n in names):
        problems.append(("id", f"'{tid}' is the same for every item: put a placeholder in it "
                         f"({', '.join('{' + n + '}' for n in names)})"))
    if problems:
        return [], problems

    made: list[dict[str, Any]] = []
    for item in items:
        made.append(_instance(task, item, kind))
    by_id: dict[str, list[str]] = {}
    for item, t in zip(items, made, strict=True):
        by_id.setdefault(t["id"], []).append(item.get("path", item.get("value", "")))
    for new_id, sources in by_id.items():
        if len(sources) > 1:
            what = "files" if kind == "files" else "values"
            hint = ("; use {path} or {dir} in the id to tell them apart" if kind == "files"
                    else "")
            problems.append(("id", f"'{tid}' gives '{new_id}' for more than one item ({what} "
                             f"{', '.join(sources)}){hint}"))
    for t, item in zip(made, items, strict=True):
        if not ID_RE.match(t["id"]):
            shown = item.get("path", item.get("value", ""))
            problems.append(("id", f"'{tid}' gives '{t['id']}' for {shown}, which is not a "
                             f"valid id: use {ID_RULE}"))
            break
    return ([] if problems else made), problems


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _instance(task: dict[str, Any], item: dict[str, str], kind: str) -> dict[str, Any]:
    """One expanded task: the template without ``foreach``, placeholders substituted."""
    new = {k: v for k, v in task.items() if k != "foreach"}
    # An empty value ({dir} of a root file) must not leave '--' or a trailing '-'.
    new["id"] = re.sub("-{2,}", "-", _substitute(task["id"], item, sanitize_id_part)).strip("-")
    if isinstance(task.get("prompt"), str):
        new["prompt"] = _substitute(task["prompt"], item, str)
    if isinstance(task.get("verify"), str):
        new["verify"] = _substitute(task["verify"], item, shlex.quote)
    paths = task.get("paths", ["{path}"] if kind == "files" else None)
    if isinstance(paths, list):
        new["paths"] = [_substitute(p, item, escape_glob) if isinstance(p, str) else p
                        for p in paths]
    elif paths is not None:
        new["paths"] = paths  # the key's own validation reports it
    if isinstance(task.get("depends_on"), list):
        new["depends_on"] = list(task["depends_on"])
    return new
