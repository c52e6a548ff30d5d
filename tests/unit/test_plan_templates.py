"""Plans with ``foreach`` templates and with ``goal``, loaded and checked on real repositories."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agentfleet.cli import load_and_check, main, render_plan
from agentfleet.errors import PlanError

MODULES = [f"src/{pkg}/mod_{i:02d}.py" for pkg in ("billing", "orders", "users")
           for i in range(10)]


@pytest.fixture
def thirty(make_repo) -> Path:
    """A repository with 30 modules under src/ and a few other files."""
    files = {path: f"def f{n}(x):\n    return x\n" for n, path in enumerate(MODULES)}
    files.update({"README.md": "# app\n", "setup.py": "", "src/orders/README.md": "orders\n"})
    return make_repo("app", files=files)


def write(path: Path, plan: dict) -> Path:
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def test_a_foreach_over_30_files_is_30_parallel_tasks_each_on_its_own_file(thirty, tmp_path):
    plan = write(tmp_path / "plan.yaml", {
        "name": "types", "repo": "app",
        "tasks": [{"id": "types-{dir}-{stem}", "prompt": "Add type hints to {path}.",
                   "verify": "python3 -m py_compile {path}",
                   "foreach": {"files": "src/**/*.py"}}],
    })

    checked = load_and_check(plan)

    assert len(checked.plan.tasks) == 30
    assert checked.decomposition.waves == [checked.decomposition.order]  # one wave of 30
    assert checked.decomposition.serializations == []
    first = checked.plan.tasks[0]
    assert (first.id, first.paths, first.verify) == (
        "types-src-billing-mod-00", ["src/billing/mod_00.py"],
        "python3 -m py_compile src/billing/mod_00.py")
    assert sorted(t.paths[0] for t in checked.plan.tasks) == sorted(MODULES)
    text = render_plan(checked)
    assert ("templates (foreach):\n  types-{dir}-{stem}: foreach files 'src/**/*.py' -> 30 "
            "tasks: types-src-billing-mod-00, types-src-billing-mod-01, "
            "types-src-billing-mod-02, ... (+27 more)\n") in text
    assert "wave 1 (may run together):" in text and "wave 2" not in text


def test_a_task_after_a_template_waits_for_all_of_it(thirty, tmp_path):
    plan = write(tmp_path / "plan.yaml", {
        "name": "types", "repo": "app",
        "tasks": [
            {"id": "t-{stem}", "prompt": "p {path}", "foreach": {"files": "src/orders/*.py"}},
            {"id": "docs", "prompt": "doc it", "paths": ["docs/"], "depends_on": ["t-{stem}"]},
        ],
    })
    checked = load_and_check(plan)
    assert checked.decomposition.depends_on["docs"] == [f"t-mod-{i:02d}" for i in range(10)]
    assert [len(w) for w in checked.decomposition.waves] == [10, 1]


def test_a_colliding_template_id_and_max_items_are_plan_problems(thirty, tmp_path):
    plan = write(tmp_path / "plan.yaml", {
        "name": "types", "repo": "app",
        "tasks": [
            {"id": "t-{stem}", "prompt": "p {path}", "foreach": {"files": "src/**/mod_01.py"}},
            {"id": "u-{path}", "prompt": "p", "foreach": {"files": "src/", "max_items": 20}},
            {"id": "after", "prompt": "p", "paths": ["x/"], "depends_on": ["t-{stem}"]},
        ],
    })
    with pytest.raises(PlanError) as caught:
        load_and_check(plan)
    assert [str(p) for p in caught.value.problems] == [
        f"{plan}: tasks[t-{{stem}}].id: 't-{{stem}}' gives 't-mod-01' for more than one item "
        "(files src/billing/mod_01.py, src/orders/mod_01.py, src/users/mod_01.py); use {path} "
        "or {dir} in the id to tell them apart",
        f"{plan}: tasks[u-{{path}}].foreach: files 'src/' matches 31 items, more than max_items "
        "(20): narrow it, or raise foreach.max_items if you mean it",
    ]


def test_a_problem_of_every_expansion_is_said_once_at_the_template(thirty, tmp_path):
    plan = write(tmp_path / "plan.yaml", {
        "name": "types", "repo": "app",
        "tasks": [{"id": "t-{stem}", "prompt": "p {path}", "stage": "later",
                   "foreach": {"files": "src/users/*.py"}}],
    })
    with pytest.raises(PlanError) as caught:
        load_and_check(plan)
    assert [str(p) for p in caught.value.problems] == [
        f"{plan}: tasks[t-{{stem}}].stage: the text 'later' is not one of 'foundation', "
        "'feature', 'tests' or 'docs'"]


def test_agentfleet_plan_prints_the_template(thirty, tmp_path, capsys):
    plan = write(tmp_path / "plan.yaml", {
        "name": "docs", "repo": "app",
        "tasks": [{"id": "doc-{value}", "prompt": "Document {value}.",
                   "paths": ["docs/{value}.md"], "foreach": {"values": ["a", "b"]}}],
    })
    assert main(["plan", str(plan)]) == 0
    assert "doc-{value}: foreach values [a, b] -> 2 tasks: doc-a, doc-b" in capsys.readouterr().out


def test_goal_instead_of_tasks(thirty, tmp_path, capsys):
    plan = write(tmp_path / "plan.yaml", {"name": "g", "repo": "app", "goal": "Type it all.",
                                          "review_plan": True})
    checked = load_and_check(plan)
    assert checked.plan.tasks == [] and checked.plan.goal == "Type it all."
    assert checked.plan.planner_agent.sandbox == "read-only"
    assert checked.plan.planner_agent.kind == "codex"
    assert main(["plan", str(plan)]) == 0
    out = capsys.readouterr().out
    assert "goal (the planner proposes" in out and "  Type it all." in out
    assert "planner: codex, sandbox read-only; the proposed plan waits for review" in out


@pytest.mark.parametrize(("extra", "message"), [
    ({"goal": "g", "tasks": [{"id": "a", "prompt": "p"}]},
     "goal: give either goal: (the planner proposes the tasks) or tasks:, not both"),
    ({}, "tasks: required key is missing (or give a goal: for the planner to propose the "
         "tasks)"),
    ({"goal": "  "}, "goal: empty goal: say what the sprint should achieve"),
    ({"goal": "g", "agent": {"kind": "command", "run": "true"}},
     "planner: the planner is a Codex agent: set planner: {kind: codex} (the tasks may still "
     "use command agents)"),
])
def test_goal_problems(thirty, tmp_path, extra, message):
    plan = write(tmp_path / "plan.yaml", {"name": "g", "repo": "app", **extra})
    with pytest.raises(PlanError) as caught:
        load_and_check(plan)
    assert [str(p) for p in caught.value.problems] == [f"{plan}: {message}"]


def test_a_planner_mapping_changes_the_plans_agent(thirty, tmp_path):
    plan = write(tmp_path / "plan.yaml", {
        "name": "g", "repo": "app", "goal": "g",
        "agent": {"kind": "command", "run": "true", "model": "m1"},
        "planner": {"kind": "codex", "model": "m2"},
    })
    agent = load_and_check(plan).plan.planner_agent
    assert (agent.kind, agent.model, agent.sandbox) == ("codex", "m2", "read-only")
