"""The planner's pure parts: the answer schema Codex gets, the prompt, reading an answer."""

from __future__ import annotations

import json
from typing import Any

from agentfleet.errors import Problem
from agentfleet.plan import STAGES
from agentfleet.planner import (
    DECISION_TREE,
    PROPOSED_KEYS,
    answer_schema,
    planner_prompt,
    read_answer,
    strict_schema,
)

# What OpenAI's strict structured output refuses; Codex sends the schema as is.
REFUSED = {"pattern", "minItems", "maxItems", "minLength", "maxLength", "default", "title",
           "examples", "format", "$ref", "$defs"}


def objects(node: Any) -> list[dict]:
    """Every object schema inside ``node``."""
    found = []
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            found.append(node)
        for value in node.values():
            found += objects(value)
    elif isinstance(node, list):
        for value in node:
            found += objects(value)
    return found


def keywords(node: Any) -> set[str]:
    if isinstance(node, dict):
        keys = set(node) - {"properties"} if "properties" in node else set(node)
        out = set(keys)
        for key, value in node.items():
            if key == "properties":
                for sub in value.values():
                    out |= keywords(sub)
            else:
                out |= keywords(value)
        return out
    if isinstance(node, list):
        return set().union(*(keywords(v) for v in node)) if node else set()
    return set()


def test_the_answer_schema_meets_codex_structured_output_rules():
    schema = answer_schema()
    assert schema["type"] == "object"
    for obj in objects(schema):
        assert obj["additionalProperties"] is False
        assert obj["required"] == list(obj["properties"])
    assert not keywords(schema) & REFUSED
    item = schema["properties"]["tasks"]["items"]
    assert list(item["properties"]) == [*PROPOSED_KEYS, "why"]
    # Optional keys of the plan model are nullable; required ones are not.
    props = item["properties"]
    assert props["id"]["type"] == "string" and props["prompt"]["type"] == "string"
    for key in ("paths", "depends_on", "stage", "verify"):
        assert {"type": "null"} in props[key]["anyOf"], key
    stage = next(alt for alt in props["stage"]["anyOf"] if "enum" in alt)
    assert stage["enum"] == list(STAGES)
    assert "lowercase letters" in props["id"]["description"]  # the id rule, as words
    json.dumps(schema)  # plain JSON


def test_strict_schema_inlines_refs_and_closes_nested_objects():
    schema = {
        "$defs": {"Inner": {"type": "object", "title": "Inner",
                            "properties": {"a": {"type": "integer", "default": 1}}}},
        "type": "object",
        "properties": {"inner": {"$ref": "#/$defs/Inner"}, "name": {"type": "string"}},
        "required": ["name"],
    }
    assert strict_schema(schema) == {
        "type": "object",
        "properties": {
            "inner": {"anyOf": [{"type": "object", "properties": {
                "a": {"anyOf": [{"type": "integer"}, {"type": "null"}]}},
                "required": ["a"], "additionalProperties": False}, {"type": "null"}]},
            "name": {"type": "string"},
        },
        "required": ["inner", "name"],
        "additionalProperties": False,
    }


def test_the_prompt_states_goal_decision_tree_and_on_a_reask_the_problems():
    first = planner_prompt("Add an orders API")
    assert "GOAL:\nAdd an orders API\n" in first
    assert DECISION_TREE in first
    assert "previous answer" not in first
    again = planner_prompt(
        "Add an orders API",
        [Problem("answer 1: tasks[a].depends_on", "dependency cycle: a -> b -> a")],
        '{"tasks": []}',
    )
    assert "- answer 1: tasks[a].depends_on: dependency cycle: a -> b -> a" in again
    assert again.rstrip().endswith('{"tasks": []}')


def test_reading_an_answer_drops_nulls_and_keeps_the_reasons():
    text = json.dumps({"tasks": [
        {"id": "a", "prompt": "do a", "paths": ["a.py"], "depends_on": [], "stage": None,
         "verify": None, "why": "only a.py"},
        {"id": "b", "prompt": "do b", "paths": None, "depends_on": ["a"], "stage": "tests",
         "verify": "pytest", "why": " needs a "},
    ]})
    answer = read_answer(text)
    assert answer.problems == []
    assert answer.tasks == [
        {"id": "a", "prompt": "do a", "paths": ["a.py"]},
        {"id": "b", "prompt": "do b", "depends_on": ["a"], "stage": "tests", "verify": "pytest"},
    ]
    assert answer.reasons == {"a": "only a.py", "b": "needs a"}
    assert read_answer("not json").problems[0].message.startswith("not JSON")
    assert read_answer("").problems == [Problem("answer", "the planner gave no answer")]
    assert read_answer("[]").problems == [Problem("answer", "expected an object with a list "
                                                            "'tasks'")]
