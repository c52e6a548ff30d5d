from __future__ import annotations

from typing import Any

import pytest

from agentfleet.decompose import apply_order, decompose
from agentfleet.plan import Plan


def plan(*tasks: dict[str, Any]) -> Plan:
    return Plan.model_validate({"name": "s", "tasks": [{"prompt": "do it", **t} for t in tasks]})


def test_disjoint_tasks_run_together() -> None:
    d = decompose(
        plan(
            {"id": "api", "paths": ["src/api/**"]},
            {"id": "db", "paths": ["src/db/**"]},
            {"id": "docs", "paths": ["docs/*.md"]},
        )
    )
    assert d.waves == [["api", "db", "docs"]]
    assert d.order == ["api", "db", "docs"]
    assert d.serializations == [] and d.warnings == []
    assert d.waits_on == {"api": [], "db": [], "docs": []}
    assert d.can_run_together("api", "db")
    assert d.serialization_lines() == []


def test_overlapping_paths_serialize_in_apply_order() -> None:
    d = decompose(
        plan(
            {"id": "api", "paths": ["src/**/*.py"]},
            {"id": "db", "paths": ["src/db/**"], "stage": "foundation"},
        )
    )
    assert d.order == ["db", "api"]  # foundation first
    assert d.waits_on == {"db": [], "api": ["db"]}
    assert d.waves == [["db"], ["api"]]
    (s,) = d.serializations
    assert (s.first, s.second, s.reason_kind) == ("db", "api", "paths_overlap")
    assert s.reason == "db -> api: paths overlap (src/db/** and src/**/*.py both match src/db/a.py)"
    assert not d.can_run_together("api", "db")


def test_chain() -> None:
    d = decompose(
        plan(
            {"id": "c", "paths": ["c/**"], "depends_on": ["b"]},
            {"id": "b", "paths": ["b/**"], "depends_on": ["a"]},
            {"id": "a", "paths": ["a/**"]},
        )
    )
    assert d.order == ["a", "b", "c"]
    assert d.waves == [["a"], ["b"], ["c"]]
    assert d.waits_on["c"] == ["b"]  # a is implied through b
    assert [s.reason_kind for s in d.serializations] == ["depends_on", "depends_on"]
    assert d.serializations[0].reason == "a -> b: b depends on a"
    assert not d.can_run_together("a", "c")  # transitively
    assert d.blocked_by({"a"}) == {"b": "a", "c": "a"}
    assert d.blocked_by({"b"}) == {"c": "b"}
    assert d.blocked_by(set()) == {}


def test_diamond() -> None:
    d = decompose(
        plan(
            {"id": "top", "paths": ["lib/**"], "stage": "foundation"},
            {"id": "left", "paths": ["left/**"], "depends_on": ["top"]},
            {"id": "right", "paths": ["right/**"], "depends_on": ["top"]},
            {"id": "bottom", "paths": ["app/**"], "depends_on": ["left", "right"]},
        )
    )
    assert d.waves == [["top"], ["left", "right"], ["bottom"]]
    assert d.can_run_together("left", "right")
    assert d.blocked_by({"left"}) == {"bottom": "left"}
    assert d.blocked_by({"left", "right"}) == {"bottom": "left"}
    assert d.blocked_by({"top"}) == {"left": "top", "right": "top", "bottom": "top"}


def test_indirect_dependency_with_overlap() -> None:
    d = decompose(
        plan(
            {"id": "a", "paths": ["src/**"]},
            {"id": "b", "paths": ["docs/**"], "depends_on": ["a"]},
            {"id": "c", "paths": ["src/c.py"], "depends_on": ["b"]},
        )
    )
    assert d.waits_on["c"] == ["a", "b"]
    kinds = {(s.first, s.second): s.reason_kind for s in d.serializations}
    assert kinds[("a", "c")] == "indirect_dependency"
    reason = next(s.reason for s in d.serializations if s.reason_kind == "indirect_dependency")
    assert reason == "a -> c: c depends on a indirectly (c -> b -> a)"


def test_stage_order_among_free_tasks() -> None:
    d = decompose(
        plan(
            {"id": "docs", "paths": ["docs/**"], "stage": "docs"},
            {"id": "tests", "paths": ["tests/**"], "stage": "tests"},
            {"id": "feat", "paths": ["src/**"]},
            {"id": "base", "paths": ["lib/**"], "stage": "foundation"},
            {"id": "feat2", "paths": ["app/**"]},
        )
    )
    assert d.order == ["base", "feat", "feat2", "tests", "docs"]
    assert d.waves == [["base", "feat", "feat2", "tests", "docs"]]
    assert apply_order(plan({"id": "x"}, {"id": "y", "stage": "foundation"})) == ["y", "x"]


def test_dependencies_beat_stage() -> None:
    d = decompose(
        plan(
            {"id": "schema", "paths": ["db/**"], "stage": "docs"},
            {"id": "core", "paths": ["core/**"], "stage": "foundation", "depends_on": ["schema"]},
        )
    )
    assert d.order == ["schema", "core"]


def test_task_without_paths_serializes_with_everything() -> None:
    d = decompose(
        plan(
            {"id": "api", "paths": ["src/api/**"]},
            {"id": "docs"},
            {"id": "db", "paths": ["src/db/**"]},
        )
    )
    assert d.waits_on == {"api": [], "docs": ["api"], "db": ["docs"]}
    assert d.waves == [["api"], ["docs"], ["db"]]
    assert {s.reason_kind for s in d.serializations} == {"no_paths"}
    assert d.no_paths == ["docs"]
    assert d.warnings == [
        "task 'docs' has no paths: it serializes with every other task; declare paths to "
        "run it in parallel"
    ]
    assert d.serialization_lines() == [
        "docs serializes with every task: it declares no paths (declare paths: to let it run "
        "in parallel)"
    ]
    # api and db share no file, yet db waits for docs which waits for api.
    assert not d.can_run_together("api", "db")


def test_single_task_without_paths_has_no_warning() -> None:
    d = decompose(plan({"id": "only"}))
    assert d.waves == [["only"]] and d.warnings == []


def test_overlap_failure_does_not_block() -> None:
    d = decompose(
        plan(
            {"id": "a", "paths": ["src/**"]},
            {"id": "b", "paths": ["src/x.py"]},
            {"id": "c", "paths": ["other/**"], "depends_on": ["a"]},
        )
    )
    assert d.waits_on["b"] == ["a"]
    assert d.blocked_by({"a"}) == {"c": "a"}


def test_waves_never_wait_inside() -> None:
    d = decompose(
        plan(
            {"id": "a", "paths": ["x/**"]},
            {"id": "b", "paths": ["y/**"]},
            {"id": "c", "paths": ["x/1", "z/**"]},
            {"id": "d", "paths": ["y/2"], "depends_on": ["a"]},
            {"id": "e", "paths": ["z/9"]},
        )
    )
    for wave in d.waves:
        for t in wave:
            assert not set(d.waits_on[t]) & set(wave)
    assert d.waves == [["a", "b"], ["c", "d"], ["e"]]
    assert d.wave_of("e") == 2


def test_bare_folder_pattern_gets_a_hint() -> None:
    d = decompose(plan({"id": "a", "paths": ["src/**"]}, {"id": "b", "paths": ["web/"]}))
    (s,) = d.serializations
    assert "web/ matches a folder 'web' at any depth, web/** only the top one" in s.reason


def test_cycle_is_refused() -> None:
    with pytest.raises(ValueError, match="cycle"):
        apply_order(plan({"id": "a", "depends_on": ["b"]}, {"id": "b", "depends_on": ["a"]}))


def test_overlap_merge_runs_overlapping_tasks_together_but_keeps_dependencies() -> None:
    tasks = (
        {"id": "api", "paths": ["src/**/*.py"]},
        {"id": "db", "paths": ["src/db/**"]},
        {"id": "any"},
        {"id": "after", "paths": ["src/db/x.py"], "depends_on": ["db"]},
    )
    merged = Plan.model_validate(
        {"name": "s", "overlap": "merge", "tasks": [{"prompt": "do it", **t} for t in tasks]}
    )
    d = decompose(merged)
    assert d.waves == [["api", "db", "any"], ["after"]]
    assert [(s.first, s.second, s.reason_kind) for s in d.serializations] == [
        ("db", "after", "depends_on")
    ]
    assert d.warnings == []
    assert decompose(plan(*tasks)).waves != d.waves  # serialize (the default) waits
