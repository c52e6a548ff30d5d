"""Pydantic's validation errors in a plan's words: the key, the task, what was expected."""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import (
    BaseModel,
    ValidationError,
)

from agentfleet.block_refs import UNION_TAGS
from agentfleet.naming import (
    ID_RULE,
)
from agentfleet.plan.model import Plan


def describe(value: Any) -> str:
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


class Ids(list):  # type: ignore[type-arg]
    """Task ids in plan order, knowing which occur once (a plan may have thousands)."""

    def __init__(self, ids: Iterable[Any]) -> None:
        super().__init__(ids)
        seen: set[Any] = set()
        repeated: set[Any] = set()
        for tid in self:
            if isinstance(tid, str):
                (repeated if tid in seen else seen).add(tid)
        self.unique = seen - repeated


def task_label(raw_task: Any, index: int, ids: list[Any]) -> str:
    tid = raw_task.get("id") if isinstance(raw_task, dict) else None
    once = tid in ids.unique if isinstance(ids, Ids) else ids.count(tid) == 1
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
        Ids(t.get("id") if isinstance(t, dict) else None for t in raw.get("tasks") or [])
        if (isinstance(raw, dict) and isinstance(raw.get("tasks"), list))
        else []
    )
    for key in loc:
        if isinstance(node, list) and isinstance(key, int):
            label = str(key)
            if kept == ["tasks"] and 0 <= key < len(node):
                label = task_label(node[key], key, ids)
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


def translate(exc: ValidationError, raw: dict[str, Any]) -> list[tuple[str, str]]:
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
            got[where] = f"{describe(value)}{hint}"
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
            message = f"{describe(value)} is not one of {ctx.get('expected')}"
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
