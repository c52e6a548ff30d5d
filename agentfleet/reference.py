"""The plan file's reference, generated from the models' field descriptions.

The README carries it between ``<!-- plan-reference:start -->`` and
``<!-- plan-reference:end -->``; a unit test fails when that block is stale.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from agentfleet.agent_config import AgentConfig, Variant
from agentfleet.plan import DURATION, INHERITED_KEYS, Foreach, Limits, Plan, Task

START = "<!-- plan-reference:start -->"
END = "<!-- plan-reference:end -->"

_SECTIONS: list[tuple[str, type[BaseModel], str]] = [
    ("Plan keys", Plan, "The top level of the plan file."),
    (
        "`agent` keys",
        AgentConfig,
        "Under `agent:` of the plan; a task's `agent:` may set any "
        "of them too (its `env` and `config` merge with the plan's).",
    ),
    ("`limits` keys", Limits, "Under `limits:` of the plan."),
    (
        "`variants` entries",
        Variant,
        "Each item of `variants:` (plan or task): attempt k uses entry (k-1) mod len. Any "
        "`agent` key changes that attempt's agent (`env` and `config` merge); `hint` is "
        "appended to its prompt.",
    ),
    (
        "Task keys",
        Task,
        "Each item of `tasks:`. Keys that repeat a plan key override it for the task.",
    ),
    (
        "`foreach` keys",
        Foreach,
        "Under a task's `foreach:`, which makes it a template: give `files` or `values`. "
        "The task becomes one task per item before the plan is checked; `agentfleet plan` "
        "shows the template, how many tasks it became and the first few.",
    ),
]


def _type_name(annotation: Any, metadata: list[Any] | None = None) -> str:
    """A reader's name for a field type: ``text``, ``list of text``, ``duration`` ..."""
    if metadata and any(m is DURATION for m in metadata):
        return "duration"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0], list(args[1:]))
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(dict.fromkeys(names))
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"mapping of text to {_type_name(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return {str: "text", int: "whole number", float: "number", bool: "true/false"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def _default(name: str, info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "see below"
        return f"`{value}`" if value else "none"
    if info.default is None or info.default is PydanticUndefined:
        return "none"
    return f"`{info.default}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def plan_reference_markdown() -> str:
    """A markdown reference of every plan key, generated from the models."""
    out: list[str] = []
    for title, model, intro in _SECTIONS:
        out += [
            f"#### {title}",
            "",
            intro,
            "",
            "| Key | Type | Default | Description |",
            "|---|---|---|---|",
        ]
        for name, info in model.model_fields.items():
            type_name = _type_name(info.annotation, list(info.metadata))
            default = _default(name, info)
            if model is Task and (name in INHERITED_KEYS or name == "agent"):
                default = "the plan's"
            out.append(
                f"| `{name}` | {_cell(type_name)} | {_cell(default)} | "
                f"{_cell(info.description or '')} |"
            )
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def update_readme(text: str) -> str:
    """``text`` (a README) with the block between the plan-reference markers regenerated."""
    start = text.find(START)
    end = text.find(END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"the README has no {START} ... {END} block")
    head = text[: start + len(START)]
    return f"{head}\n{plan_reference_markdown()}{text[end:]}"


if __name__ == "__main__":  # python -m agentfleet.reference README.md: regenerate the block
    import sys
    from pathlib import Path

    for name in sys.argv[1:] or ["README.md"]:
        readme = Path(name)
        readme.write_text(update_readme(readme.read_text()))
