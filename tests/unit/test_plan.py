from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from agentfleet.agent_config import AgentConfig, AgentOverride, merge
from agentfleet.errors import PlanError
from agentfleet.plan import load_plan, plan_json_schema, read_plan
from agentfleet.reference import END, START, plan_reference_markdown, update_readme

README = Path(__file__).resolve().parents[2] / "README.md"


def write(tmp_path: Path, text: str, name: str = "plan.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(PlanError) as info:
        load_plan(write(tmp_path, text))
    lines = [str(p) for p in info.value.problems]
    prefix = str(tmp_path / "plan.yaml")
    return [line.replace(prefix, "plan.yaml") for line in lines]


def test_minimal_plan_and_defaults(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, "name: s1\ntasks:\n  - {id: a, prompt: do it}\n"))
    assert plan.target_branch == "agentfleet/s1"
    assert plan.repo_path == tmp_path.resolve()
    assert plan.timeout == "30m" and plan.timeout_seconds == 1800.0
    assert plan.retries == 2 and plan.limits.concurrency == 4
    task = plan.task("a")
    assert task.stage == "feature" and task.paths is None and task.depends_on == []
    assert plan.task_timeout(task) == 1800.0
    assert plan.task_retries("a") == 2
    assert plan.task_setup("a") is None and plan.task_verify("a") is None
    assert plan.task_agent("a") == AgentConfig()
    with pytest.raises(KeyError):
        plan.task("nope")


def test_task_overrides(tmp_path: Path) -> None:
    plan = load_plan(
        write(
            tmp_path,
            """
            name: s1
            repo: sub
            base: dev
            target: feature/s1
            setup: make setup
            verify: make test
            final_verify: make all
            timeout: 20m
            retries: 1
            limits: {concurrency: 2}
            agent: {model: m1, env: {A: "1"}, config: {x: 1, y: true}}
            tasks:
              - id: a
                prompt: do it
                paths: [src/**]
                timeout: 90
                retries: 0
                setup: true-setup
                verify: pytest -q
                agent: {model: m2, env: {B: "2"}, config: {x: 2}}
              - id: b
                prompt: other
                depends_on: [a]
                stage: docs
            """,
        )
    )
    assert plan.repo_path == (tmp_path / "sub").resolve()
    assert plan.target_branch == "feature/s1"
    assert plan.task_timeout("a") == 90.0 and plan.task("a").timeout == "90"
    assert plan.task_timeout("b") == 1200.0
    assert plan.task_retries("a") == 0 and plan.task_retries("b") == 1
    assert plan.task_setup("a") == "true-setup" and plan.task_setup("b") == "make setup"
    assert plan.task_verify("a") == "pytest -q" and plan.task_verify("b") == "make test"
    agent = plan.task_agent("a")
    assert agent.model == "m2"
    assert agent.env == {"A": "1", "B": "2"}
    assert agent.config == {"x": 2, "y": True}
    assert plan.task_agent("b").model == "m1"


def test_merge() -> None:
    base = AgentConfig(kind="command", run="echo", env={"A": "1"})
    assert merge(base, None) is base
    merged = merge(base, AgentOverride(run="echo 2", env={"A": "x", "B": "y"}))
    assert merged.run == "echo 2" and merged.kind == "command"
    assert merged.env == {"A": "x", "B": "y"}
    assert base.env == {"A": "1"}  # the plan's agent is not changed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "name: s\ntasks:\n  - id: a\n    prompt: x\n  bad: [\n",
            "plan.yaml:5: YAML does not parse",
        ),
        ("- a\n- b\n", "plan.yaml: the plan must be a mapping of keys"),
        ("", "plan.yaml: the plan file is empty"),
        (
            "name: s\ntaks: []\ntasks: [{id: a, prompt: x}]\n",
            "plan.yaml: unknown key 'taks'; did you mean 'tasks'?",
        ),
        (
            "name: s\ntasks: [{id: a, promt: x}]\n",
            "plan.yaml: tasks[a]: unknown key 'promt'; did you mean 'prompt'?",
        ),
        (
            "name: s\ntasks: [{id: a, promt: x}]\n",
            "plan.yaml: tasks[a].prompt: required key is missing",
        ),
        ("tasks: [{id: a, prompt: x}]\n", "plan.yaml: name: required key is missing"),
        ("name: s\n", "plan.yaml: tasks: required key is missing"),
        ("name: s\ntasks: []\n", "plan.yaml: tasks: the plan has no tasks"),
        (
            "name: s\nretries: many\ntasks: [{id: a, prompt: x}]\n",
            "plan.yaml: retries: expected a whole number, got the text 'many'",
        ),
        (
            "name: s\nlimits: {concurrency: 0}\ntasks: [{id: a, prompt: x}]\n",
            "plan.yaml: limits.concurrency: must be at least 1, got 0",
        ),
        (
            "name: s\ntasks: [{id: a, prompt: x, retries: -1}]\n",
            "plan.yaml: tasks[a].retries: must be at least 0, got -1",
        ),
        (
            "name: s\ntasks: [{id: a, prompt: x, depends_on: b}]\n",
            "plan.yaml: tasks[a].depends_on: expected a list, got the text 'b'",
        ),
        (
            "name: s\ntasks: [{id: a, prompt: [x]}]\n",
            "plan.yaml: tasks[a].prompt: expected text, got a list",
        ),
        (
            "name: s\nagent: {env: {A: 1}}\ntasks: [{id: a, prompt: x}]\n",
            "plan.yaml: agent.env.A: expected text, got the number 1 (put it in quotes",
        ),
        (
            "name: s\nagent: {sandbox: none}\ntasks: [{id: a, prompt: x}]\n",
            "plan.yaml: agent.sandbox: the text 'none' is not one of 'read-only', "
            "'workspace-write'",
        ),
        (
            "name: s\ntasks: [{id: a, prompt: x, stage: later}]\n",
            "plan.yaml: tasks[a].stage: the text 'later' is not one of 'foundation'",
        ),
        (
            "name: Sprint\ntasks: [{id: a, prompt: x}]\n",
            "plan.yaml: name: 'Sprint' is not a valid name: use lowercase letters, digits and '-'",
        ),
        (
            "name: s\ntasks: [{id: API, prompt: x}]\n",
            "plan.yaml: tasks[API].id: 'API' is not a valid id: use lowercase letters",
        ),
        (
            "name: s\ntasks: [{id: a, prompt: '  '}]\n",
            "plan.yaml: tasks[a].prompt: empty prompt: say what the agent should do",
        ),
        (
            "name: s\ntasks: [{id: a, prompt: x, timeout: soon}]\n",
            "plan.yaml: tasks[a].timeout: bad duration 'soon' (use 90s, 20m, 1h)",
        ),
        (
            "name: s\ntimeout: 0s\ntasks: [{id: a, prompt: x}]\n",
            "plan.yaml: timeout: bad duration '0s'",
        ),
        (
            "name: s\ntasks: [{id: a, prompt: x}, {id: a, prompt: y}]\n",
            "plan.yaml: tasks[1].id: duplicate id 'a' (tasks[0] has it too)",
        ),
        (
            "name: s\ntasks: [{id: a, prompt: x, depends_on: [bb]}, {id: b, prompt: y}]\n",
            "plan.yaml: tasks[a].depends_on: unknown task 'bb'; did you mean 'b'?",
        ),
        (
            "name: s\ntasks: [{id: a, prompt: x, depends_on: [a]}]\n",
            "plan.yaml: tasks[a].depends_on: task 'a' depends on itself",
        ),
        (
            "name: s\ntasks:\n - {id: a, prompt: x, depends_on: [b]}\n"
            " - {id: b, prompt: x, depends_on: [c]}\n"
            " - {id: c, prompt: x, depends_on: [a]}\n",
            "plan.yaml: tasks[a].depends_on: dependency cycle: a -> b -> c -> a",
        ),
        (
            "name: s\ntasks: [{id: a, prompt: x, paths: ['../x']}]\n",
            "plan.yaml: tasks[a].paths[0]: path pattern '../x' leaves the repository",
        ),
        (
            "name: s\ntasks: [{id: a, prompt: x, paths: [src/**, /etc/x]}]\n",
            "plan.yaml: tasks[a].paths[1]: path pattern '/etc/x' is absolute",
        ),
        (
            "name: s\ntasks: [{id: a, prompt: x, paths: []}]\n",
            "plan.yaml: tasks[a].paths: empty list",
        ),
        (
            "name: s\ntarget: agentfleet-attempts/x\ntasks: [{id: a, prompt: x}]\n",
            "plan.yaml: target: 'agentfleet-attempts/x' is inside agentfleet-attempts/",
        ),
        (
            "name: s\ntarget: 'bad..name'\ntasks: [{id: a, prompt: x}]\n",
            "plan.yaml: target: 'bad..name' is not a valid branch name: it cannot contain '..'",
        ),
        (
            "name: s\ntarget: 'a b'\ntasks: [{id: a, prompt: x}]\n",
            "plan.yaml: target: 'a b' is not a valid branch name",
        ),
        (
            "name: s\nbase: 'x:y'\ntasks: [{id: a, prompt: x}]\n",
            "plan.yaml: base: 'x:y' is not a valid",
        ),
        ("name: s\nname: t\ntasks: [{id: a, prompt: x}]\n", "plan.yaml:2: duplicate key 'name'"),
        (
            "name: s\nagent: {kind: command}\ntasks: [{id: a, prompt: x}]\n",
            "plan.yaml: agent.run: required when the agent kind is 'command'",
        ),
        (
            "name: s\ntasks: [{id: a, prompt: x, agent: {kind: command}}]\n",
            "plan.yaml: tasks[a].agent.run: required when the agent kind is 'command'",
        ),
        (
            "name: s\ntasks: [{id: a, prompt: x, agent: {modle: m}}]\n",
            "plan.yaml: tasks[a].agent: unknown key 'modle'; did you mean 'model'?",
        ),
        ("name: s\ntasks: [{prompt: x}]\n", "plan.yaml: tasks[0].id: required key is missing"),
    ],
)
def test_each_problem(tmp_path: Path, text: str, expected: str) -> None:
    lines = problems(tmp_path, text)
    assert any(line.startswith(expected) for line in lines), lines


def test_every_problem_at_once(tmp_path: Path) -> None:
    lines = problems(
        tmp_path,
        """
        name: Bad Name
        timeout: soon
        retries: -1
        tasks:
          - id: api
            prompt: ""
            paths: ["../x"]
            timeout: later
            depends_on: [ghost]
          - id: api
            prompt: again
          - id: web
            prompt: y
            depends_on: [web]
        """,
    )
    assert len(lines) >= 8, lines
    joined = "\n".join(lines)
    for needle in [
        "name:",
        "timeout: bad duration 'soon'",
        "retries:",
        "tasks[0].prompt",
        "paths[0]",
        "tasks[0].timeout",
        "unknown task 'ghost'",
        "duplicate id 'api'",
        "depends on itself",
    ]:
        assert needle in joined, (needle, lines)


def test_command_agent_run_given_per_task(tmp_path: Path) -> None:
    plan = load_plan(
        write(
            tmp_path,
            """
            name: s
            agent: {kind: command}
            tasks:
              - {id: a, prompt: x, agent: {run: "echo a"}}
              - {id: b, prompt: x, agent: {run: "echo b"}}
            """,
        )
    )
    assert plan.task_agent("b").run == "echo b"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="no such plan file"):
        load_plan(tmp_path / "nope.yaml")


def test_read_plan_knows_the_repo_even_when_invalid(tmp_path: Path) -> None:
    reading = read_plan(write(tmp_path, "name: s\nrepo: r\nbase: dev\ntasks: []\n"))
    assert reading.problems and reading.plan is None
    assert reading.repo_path == (tmp_path / "r").resolve()
    assert reading.base == "dev" and reading.target == "agentfleet/s"


def test_json_schema() -> None:
    schema = plan_json_schema()
    json.dumps(schema)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert set(schema["required"]) == {"name"}
    assert schema["oneOf"] == [{"required": ["tasks"]}, {"required": ["goal"]}]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["timeout"]["default"] == "30m"
    task = schema["$defs"]["Task"]["properties"]
    assert "description" in task["paths"] and "depends_on" in task


def test_reference_lists_every_key() -> None:
    text = plan_reference_markdown()
    for key in [
        "name",
        "repo",
        "base",
        "target",
        "agent",
        "setup",
        "verify",
        "final_verify",
        "timeout",
        "retries",
        "limits",
        "tasks",
        "concurrency",
        "kind",
        "model",
        "sandbox",
        "profile",
        "run",
        "env",
        "config",
        "id",
        "prompt",
        "paths",
        "depends_on",
        "stage",
    ]:
        assert f"| `{key}` |" in text, key
    assert "| `timeout` | duration | `30m` |" in text


def test_update_readme() -> None:
    text = f"# x\n\n{START}\nold\n{END}\nrest\n"
    new = update_readme(text)
    assert new.startswith(f"# x\n\n{START}\n#### Plan keys") and new.endswith(f"{END}\nrest\n")
    assert update_readme(new) == new
    with pytest.raises(ValueError):
        update_readme("no markers")


def test_readme_reference_is_current() -> None:
    if not README.exists() or START not in README.read_text():
        pytest.skip("README.md has no plan-reference block yet")
    text = README.read_text()
    assert update_readme(text) == text, "README's plan reference is stale: regenerate it"


def test_allow_external_symlinks_is_a_plan_switch_off_by_default(tmp_path: Path) -> None:
    tasks = "tasks:\n  - {id: a, prompt: do it}\n"
    assert load_plan(write(tmp_path, "name: s1\n" + tasks)).allow_external_symlinks is False
    plan = load_plan(write(tmp_path, "name: s1\nallow_external_symlinks: true\n" + tasks))
    assert plan.allow_external_symlinks is True
    assert problems(tmp_path, "name: s1\nallow_external_symlinks: maybe\n" + tasks) == [
        "plan.yaml: allow_external_symlinks: expected true or false, got the text 'maybe'"
    ]
