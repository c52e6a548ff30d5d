"""Plans of thousands of tasks: checked in seconds, no recursion limit, every problem listed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agentfleet.cli import load_and_check, main
from agentfleet.patterns import may_overlap, overlapping_pairs
from agentfleet.schedule import Scheduler


def write(folder: Path, tasks: list[dict[str, object]]) -> Path:
    path = folder / "plan.yaml"
    plan = {"name": "big", "repo": "repo", "agent": {"kind": "command", "run": "true"},
            "tasks": tasks}
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


@pytest.mark.timeout(60)  # today's algorithm needs minutes; the fix about a second
def test_a_thousand_independent_tasks_with_globs_check(tmp_path, repo, capsys, snapshot):
    (repo / "docs").mkdir()
    (repo / "docs" / "index.md").write_text("docs\n")
    tasks = [
        {"id": f"t{i}", "prompt": f"do {i}",
         "paths": [f"src/mod{i}/**", f"tests/test_mod{i}_*.py", f"docs/m{i}.md",
                   f"cfg/**/*_{i}.cfg"]}
        for i in range(1000)
    ]
    # Two that do meet, so the check still finds what overlaps among the thousand.
    tasks.append({"id": "shared-a", "prompt": "a", "paths": ["src/mod7/x.py"]})
    tasks.append({"id": "shared-b", "prompt": "b", "paths": ["cfg/a/*7.cfg"]})
    plan = write(tmp_path, tasks)
    before = snapshot(repo)

    assert main(["plan", str(plan)]) == 0
    out = capsys.readouterr().out
    assert "1002 tasks" in out
    assert "t7 -> shared-a: paths overlap (src/mod7/** and src/mod7/x.py" in out
    assert "t7 -> shared-b: paths overlap (cfg/**/*_7.cfg and cfg/a/*7.cfg" in out
    assert "t17 -> shared-b" in out and "t8 -> shared-b" not in out
    checked = load_and_check(plan)
    assert len(checked.decomposition.waves) == 2
    assert len(checked.decomposition.serializations) == 101  # shared-a; t7, t17, ..., t997
    assert snapshot(repo) == before


@pytest.mark.timeout(60)
def test_a_thousand_patterns_without_a_literal_start_check(tmp_path, repo, capsys):
    # '*_1.cfg' matches at any depth: only the literal ends tell these apart.
    tasks = [{"id": f"t{i}", "prompt": "p", "paths": [f"*_{i}.cfg", f"x{i}-*.md"]}
             for i in range(1000)]
    assert main(["plan", str(write(tmp_path, tasks))]) == 0
    out = capsys.readouterr().out
    assert "serialized: nothing; every task may run in parallel" in out


@pytest.mark.timeout(60)
def test_a_chain_of_three_thousand_dependent_tasks_checks_and_schedules(tmp_path, repo):
    # Each task depends on the next one in the file: the deepest walk a plan can ask for.
    n = 3000
    tasks = [
        {"id": f"t{i}", "prompt": f"do {i}", "paths": [f"src/m{i}/**"],
         **({"depends_on": [f"t{i + 1}"]} if i < n - 1 else {})}
        for i in range(n)
    ]
    checked = load_and_check(write(tmp_path, tasks))
    dec = checked.decomposition
    assert dec.order[0] == f"t{n - 1}" and dec.order[-1] == "t0"
    assert len(dec.waves) == n

    sched = Scheduler(dec.order, dec.waits_on, dec.depends_on, concurrency=4)
    (first,) = sched.take_ready()
    blocked = sched.finish(first, succeeded=False)
    assert len(blocked) == n - 1 and blocked[0] == f"t{n - 2}"
    assert sched.done


def test_a_cycle_in_a_long_chain_is_still_found(tmp_path, repo, capsys):
    n = 2000
    tasks = [{"id": f"t{i}", "prompt": "p", "depends_on": [f"t{(i + 1) % n}"]} for i in range(n)]
    assert main(["plan", str(write(tmp_path, tasks))]) == 2
    err = capsys.readouterr().err
    assert "dependency cycle: t0 -> t1 -> t2" in err and "Traceback" not in err


def test_overlapping_pairs_agrees_with_may_overlap_on_every_pair():
    from tests.unit.test_patterns import DISJOINT, OVERLAP

    patterns = list(dict.fromkeys(p for pair in OVERLAP + DISJOINT for p in pair))
    patterns += ["mod1/**", "mod10/**", "a*1.py", "*1.py", "x1-*.md", "x10-*.md", "src/mod1"]
    want = {
        (i, j)
        for i in range(len(patterns))
        for j in range(i + 1, len(patterns))
        if may_overlap(patterns[i], patterns[j])
    }
    assert overlapping_pairs(patterns) == want
    assert (patterns.index("mod1/**"), patterns.index("mod10/**")) not in want
