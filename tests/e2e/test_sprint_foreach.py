"""A ``foreach`` template fanned out over 30 files: one `command` agent per file, 4 at a time."""

from __future__ import annotations

import json

import yaml

from tests.conftest import run_git
from tests.e2e.conftest import run_agentfleet

MODULES = [f"src/{pkg}/mod_{i:02d}.py" for pkg in ("billing", "orders", "users")
           for i in range(10)]
# The agent edits the file named on its prompt's first line and notes when it ran
# (in a file outside the repository).
AGENT = (
    'f=$(printf "%s\\n" "$AGENTFLEET_PROMPT" | sed -n "1s/^Add a type note to //p"); '
    'echo "start $(date +%s.%N)" >> "$SPANS"; '
    'sleep 0.3; printf "# typed\\n" >> "$f"; echo "end $(date +%s.%N)" >> "$SPANS"; '
    'echo "noted $f"'
)


def most_at_once(lines: list[str]) -> int:
    events = sorted((float(t), 1 if kind == "start" else -1)
                    for kind, t in (line.split() for line in lines))
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def test_a_30_file_foreach_lands_one_commit_per_file_at_concurrency_4(
    make_repo, sprint_env, tmp_path
):
    files = {path: f"def f{n}(x):\n    return x\n" for n, path in enumerate(MODULES)}
    repo = make_repo("app", files={**files, "README.md": "# app\n"})
    spans = tmp_path / "spans.log"
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({
        "name": "typed",
        "repo": "app",
        "agent": {"kind": "command", "run": AGENT, "env": {"SPANS": str(spans)}},
        "limits": {"concurrency": 4},
        "tasks": [{"id": "type-{dir}-{stem}", "prompt": "Add a type note to {path}",
                   "verify": "grep -q '# typed' {path}", "foreach": {"files": "src/**/*.py"}}],
    }, sort_keys=False))
    report = tmp_path / "report.json"

    shown = run_agentfleet("plan", str(plan), env=sprint_env)
    assert shown.returncode == 0, shown.stderr
    assert "type-{dir}-{stem}: foreach files 'src/**/*.py' -> 30 tasks" in shown.stdout

    run = run_agentfleet("run", str(plan), "--report", str(report), env=sprint_env, timeout=600)

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    tasks = json.loads(report.read_text())["tasks"]
    assert len(tasks) == 30 and {t["outcome"] for t in tasks} == {"applied"}
    commits = run_git(repo, "rev-list", "main..agentfleet/typed").split()
    assert len(commits) == 30
    touched = []
    for sha in commits:
        changed = run_git(repo, "diff-tree", "--no-commit-id", "--name-only", "-r", sha).split()
        assert len(changed) == 1, (sha, changed)  # each commit touches only its file
        touched += changed
    assert sorted(touched) == sorted(MODULES)
    for path in MODULES:
        assert run_git(repo, "show", f"agentfleet/typed:{path}").endswith("# typed\n")
    peak = most_at_once(spans.read_text().splitlines())
    assert 2 <= peak <= 4, peak
