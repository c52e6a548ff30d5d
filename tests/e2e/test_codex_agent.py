"""``run_agent`` with the real Codex CLI 0.169 against the scripted model server.

Each case runs in a real git repository (the happy path in a linked worktree, as
agentfleet runs agents) with its own CODEX_HOME and retries turned down, so a
failure ends in about a second.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from agentfleet.agent_config import AgentConfig
from agentfleet.agents import AgentRequest, run_agent
from agentfleet.codex.cli import native_launch
from agentfleet.codex.events import (
    CommandExecutionItem,
    ItemCompleted,
    ItemStarted,
    OutputLine,
    ThreadStarted,
    TurnCompleted,
)
from agentfleet.codex.outcome import Ending, Usage
from agentfleet.codex.sandbox import no_change_reason
from agentfleet.errors import AgentNotFound
from agentfleet.process import live_processes
from agentfleet.testing import Fault, Response, Rule, Script, ScriptedModelServer
from agentfleet.testing import Usage as ScriptedUsage
from tests.support.login_shell import login_shell

pytestmark = [pytest.mark.codex, pytest.mark.timeout(60)]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CODEX = PROJECT_ROOT / "node_modules" / ".bin" / "codex"

if not CODEX.exists():
    pytest.skip(f"the pinned Codex CLI is not installed at {CODEX}", allow_module_level=True)

PATCH = (
    "*** Begin Patch\n"
    "*** Add File: greet.py\n"
    "+def greet(name):\n"
    "+    return f'hello {name}'\n"
    "*** End Patch\n"
)
U = ScriptedUsage
USAGES = [
    U(input_tokens=1000, cached_input_tokens=400, output_tokens=50, reasoning_tokens=8),
    U(input_tokens=1500, cached_input_tokens=900, output_tokens=70),
    U(input_tokens=2000, cached_input_tokens=1200, output_tokens=30, reasoning_tokens=4),
    U(input_tokens=2100, cached_input_tokens=2000, output_tokens=12),
]
SCRIPT = Script(rules=[
    Rule(name="happy", match="add a greeting", responses=[
        Response(steps=[{"do": "reasoning", "text": "Look first."},
                        {"do": "exec", "cmd": "git status --short && echo checked"}],
                 usage=USAGES[0]),
        Response(steps=[{"do": "patch", "patch": PATCH}], usage=USAGES[1]),
        Response(steps=[{"do": "exec", "cmd": "exit 3"}], usage=USAGES[2]),
        Response(steps=[{"do": "message", "text": "Added greet.py."}], usage=USAGES[3]),
    ]),
    Rule(name="r429", match="case-429", faults=[Fault(kind="http", status=429, times=50)]),
    Rule(name="r401", match="case-401", faults=[Fault(kind="http", status=401, times=50)]),
    Rule(name="r500", match="case-500", faults=[Fault(kind="http", status=500, times=50)]),
    Rule(name="r404", match="case-404", faults=[Fault(kind="http", status=404, times=50)]),
    Rule(name="cut", match="case-cut", faults=[Fault(kind="cut", times=50)]),
    Rule(name="ctx", match="case-context", faults=[Fault(kind="context_window", times=50)]),
    Rule(name="sleep", match="case-sleep", responses=[
        Response(steps=[{"do": "exec", "cmd": "sleep 1000", "yield_time_ms": 600_000}]),
    ]),
    Rule(name="busy", match="case-busy", responses=[
        Response(steps=[{"do": "exec", "cmd": "sleep 8; echo slept", "yield_time_ms": 600_000}]),
        Response(steps=[{"do": "message", "text": "Waited."}]),
    ]),
    Rule(name="escape", match="case-escape", responses=[
        Response(steps=[{"do": "exec", "cmd": "setsid sleep 1000 > /dev/null 2>&1 < /dev/null &"}]),
        Response(steps=[{"do": "message", "text": "Left a daemon."}]),
    ]),
    Rule(name="plain", match="case-plain", responses=[
        Response(steps=[{"do": "message", "text": "Nothing to do."}]),
    ]),
])


@pytest.fixture(scope="module")
def server():
    with ScriptedModelServer(SCRIPT) as server:
        yield server


@pytest.fixture
def codex_home(server: ScriptedModelServer, tmp_path: Path) -> Path:
    return server.write_codex_home(tmp_path / "codex-home", request_max_retries=0,
                                   stream_max_retries=0)


@pytest.fixture
def env(server: ScriptedModelServer, codex_home: Path, tmp_path: Path) -> dict[str, str]:
    # The complete environment of the agent, as the caller builds it.
    return {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8",
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
            **server.agent_env(codex_home)}


def _request(worktree: Path, prompt: str, env: dict[str, str], **kw: object) -> AgentRequest:
    agent = kw.pop("agent", AgentConfig())
    return AgentRequest(worktree=worktree, prompt=prompt, agent=agent,  # type: ignore[arg-type]
                        timeout_s=kw.pop("timeout_s", 30), env=env,  # type: ignore[arg-type]
                        codex_path=CODEX, grace_s=kw.pop("grace_s", 2), **kw)  # type: ignore[arg-type]


def _worktree(repo: Path) -> Path:
    tree = repo.parent / "wt-happy"
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "-q", "-b", "attempt", str(tree)],
                   check=True, capture_output=True)
    return tree


def _tagged_processes(tag: str, cmdline: bytes | None = None) -> list[int]:
    """Live processes whose environment carries ``E2E_TAG=tag`` (and with that command line)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(entry, "stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                continue
            if f"E2E_TAG={tag}".encode() not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if cmdline is None or (entry / "cmdline").read_bytes() == cmdline:
                out.append(int(entry.name))
        except (OSError, IndexError):
            pass
    return out


def test_completed_with_commands_a_patch_and_usage(repo: Path, env: dict[str, str]) -> None:
    tree = _worktree(repo)  # a linked worktree: no --skip-git-repo-check needed
    events: list[object] = []
    outcome = run_agent(_request(tree, "Please add a greeting module.", env),
                        on_event=events.append)

    assert outcome.ending is Ending.COMPLETED, outcome
    assert outcome.ok and outcome.exit_status == 0 and outcome.error is None
    assert (tree / "greet.py").read_text() == "def greet(name):\n    return f'hello {name}'\n"
    assert outcome.files_changed == ["greet.py"]
    assert [(c.exit_code, c.status) for c in outcome.commands] == [(0, "completed"),
                                                                    (3, "failed")]
    assert "git status --short" in outcome.commands[0].command
    assert outcome.final_message == "Added greet.py."
    assert outcome.usage == Usage(
        input_tokens=sum(u.input_tokens for u in USAGES),
        cached_input_tokens=sum(u.cached_input_tokens for u in USAGES),
        output_tokens=sum(u.output_tokens for u in USAGES),
        reasoning_output_tokens=sum(u.reasoning_tokens for u in USAGES),
    )
    codex_events = [e for e in events if not isinstance(e, OutputLine)]
    assert isinstance(codex_events[0], ThreadStarted)
    assert codex_events[0].thread_id == outcome.thread_id
    assert any(isinstance(e, TurnCompleted) for e in events)
    assert any(isinstance(e, ItemCompleted) and isinstance(e.item, CommandExecutionItem)
               for e in events)
    # Codex's stderr reaches on_event as OutputLine, never parsed as events.
    assert all(e.stream == "stderr" for e in events if isinstance(e, OutputLine))
    assert live_processes() == []


def test_a_sandbox_that_cannot_start_is_named_when_the_agents_patch_fails(
    repo: Path, env: dict[str, str], tmp_path: Path
) -> None:
    # Codex in a user namespace that may make no namespace of its own: its bubblewrap cannot
    # start, as in a Docker container under the default seccomp profile.
    # (A user other than root stays itself in it, without the namespace's capabilities, as
    # tests.support.walls does.)
    native = shlex.quote(str(native_launch(CODEX, env)[0]))
    namespace, codex = "--map-root-user", '"$0" "$@"'
    if os.geteuid() != 0:
        namespace = "--map-current-user --keep-caps"
        codex = f'setpriv --inh-caps=-all --ambient-caps=-all -- {codex}'
    jailed = tmp_path / "codex-without-namespaces"
    jailed.write_text(
        f"#!/bin/sh\nexec unshare --user {namespace} sh -c "
        f"'echo 0 > /proc/sys/user/max_user_namespaces && exec {codex}' {native} \"$@\"\n")
    jailed.chmod(0o755)
    tree = _worktree(repo)
    request = _request(tree, "Please add a greeting module.", env)
    outcome = run_agent(dataclasses.replace(request, codex_path=jailed))

    assert outcome.ending is Ending.COMPLETED, outcome  # the turn ends as if all went well
    assert not (tree / "greet.py").exists() and outcome.files_changed == []
    assert outcome.sandbox_refused is not None
    assert "bwrap: Creating new namespace failed" in outcome.sandbox_refused
    assert no_change_reason(outcome.sandbox_refused).startswith(
        "the agent changed no file: Codex's sandbox cannot start here (bwrap: ")
    # Where the sandbox starts, nothing is asked of it and nothing said.
    assert run_agent(_request(tree, "Please add a greeting module.", env)).sandbox_refused \
        is None
    assert live_processes() == []


@pytest.mark.parametrize(
    ("prompt", "ending", "words"),
    [
        ("case-429", Ending.FAILED_TRANSIENT, "exceeded retry limit, last status: 429"),
        ("case-500", Ending.FAILED_TRANSIENT, "experiencing high demand"),
        ("case-cut", Ending.FAILED_TRANSIENT, "stream disconnected before completion"),
        ("case-401", Ending.FAILED_FATAL, "unexpected status 401 Unauthorized"),
        ("case-404", Ending.FAILED_FATAL, "The model does not exist"),
        ("case-context", Ending.CONTEXT_WINDOW, "context window"),
    ],
)
def test_model_server_failures(repo: Path, env: dict[str, str], prompt: str, ending: Ending,
                               words: str) -> None:
    started = time.monotonic()
    outcome = run_agent(_request(repo, prompt, env))
    assert outcome.ending is ending, outcome
    assert outcome.error is not None and words in outcome.error
    assert outcome.exit_status == 1
    assert outcome.retryable is (ending is Ending.FAILED_TRANSIENT)
    assert time.monotonic() - started < 15


def test_timeout_kills_codex_and_its_command(repo: Path, env: dict[str, str]) -> None:
    tag = uuid.uuid4().hex
    seen_sleep = threading.Event()

    def on_event(event: object) -> None:
        if isinstance(event, ItemStarted) and isinstance(event.item, CommandExecutionItem):
            seen_sleep.set()

    outcome_box: list = []
    runner = threading.Thread(target=lambda: outcome_box.append(run_agent(
        _request(repo, "case-sleep", {**env, "E2E_TAG": tag}, timeout_s=4, grace_s=2),
        on_event=on_event)))
    runner.start()
    assert seen_sleep.wait(15)
    deadline = time.monotonic() + 5
    while not _tagged_processes(tag, b"sleep\x001000\x00") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _tagged_processes(tag, b"sleep\x001000\x00"), "the scripted sleep never ran"
    runner.join(20)
    outcome = outcome_box[0]
    assert outcome.ending is Ending.TIMED_OUT and not outcome.retryable
    assert [c.command for c in outcome.commands if c.status == "in_progress"] == [
        f"{login_shell()} -lc 'sleep 1000'"
    ]
    assert outcome.duration_s < 4 + 2 + 2
    assert _tagged_processes(tag) == []  # codex, its node wrapper, bash, sleep: all gone
    assert live_processes() == []


def test_a_process_that_left_the_group_is_killed_after_a_normal_end(
    repo: Path, env: dict[str, str]
) -> None:
    # Without a sandbox a command's `setsid` escapes codex's process group.
    tag = uuid.uuid4().hex
    agent = AgentConfig(sandbox="danger-full-access")
    outcome = run_agent(_request(repo, "case-escape", {**env, "E2E_TAG": tag}, agent=agent))
    assert outcome.ok, outcome
    assert outcome.final_message == "Left a daemon."
    assert _tagged_processes(tag) == []


def test_cancel_stops_codex(repo: Path, env: dict[str, str]) -> None:
    tag = uuid.uuid4().hex
    cancel = threading.Event()

    def on_event(event: object) -> None:
        if isinstance(event, ItemStarted):
            cancel.set()

    outcome = run_agent(_request(repo, "case-sleep", {**env, "E2E_TAG": tag}),
                        on_event=on_event, cancel=cancel)
    assert outcome.ending is Ending.KILLED
    assert outcome.duration_s < 10
    assert _tagged_processes(tag) == []


def test_a_long_command_is_not_idleness(repo: Path, env: dict[str, str]) -> None:
    # The command's 8 s of silence would be idleness well past 3 s; Codex's own gaps between
    # events (its start, the model's answer after the command, its exit) stay under it on
    # a loaded machine, where a 1 s idle time once ran out after the final message. Its
    # start is only quick with its 290 MB binary in the page cache, which this machine
    # reclaims from files left unread a while (a first start took 6.8 s): one run first.
    assert run_agent(_request(repo, "case-plain", env)).ending is Ending.COMPLETED
    outcome = run_agent(_request(repo, "case-busy", env, idle_timeout_s=3))
    assert outcome.ending is Ending.COMPLETED, outcome
    assert outcome.final_message == "Waited."
    assert outcome.commands[0].exit_code == 0


def test_an_idle_codex_is_stuck(repo: Path, env: dict[str, str], server: ScriptedModelServer,
                                tmp_path: Path) -> None:
    # A silent stream: Codex waits for the model and prints nothing; no command is open.
    server.add_rule(Rule(name="silent", match="case-silent",
                         faults=[Fault(kind="silent", times=50)]))
    outcome = run_agent(_request(repo, "case-silent", env, idle_timeout_s=1.5, timeout_s=20))
    assert outcome.ending is Ending.STUCK
    assert outcome.duration_s < 10


def test_missing_codex_binary(repo: Path, env: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(AgentNotFound, match="Codex CLI not found"):
        run_agent(AgentRequest(worktree=repo, prompt="case-plain", agent=AgentConfig(),
                               timeout_s=10, env=env, codex_path=tmp_path / "no" / "codex"))
    with pytest.raises(AgentNotFound, match="npm ci"):
        run_agent(AgentRequest(worktree=repo, prompt="case-plain", agent=AgentConfig(),
                               timeout_s=10, env={**env, "PATH": str(tmp_path)}))


def test_bad_config_override_is_fatal_with_codexs_message(repo: Path,
                                                          env: dict[str, str]) -> None:
    agent = AgentConfig(config={"sandbox_mode": "bogus"})
    outcome = run_agent(_request(repo, "case-plain", env, agent=agent))
    assert outcome.ending is Ending.FAILED_FATAL
    assert outcome.error is not None and outcome.error.startswith("Error loading config.toml")
    assert "unknown variant `bogus`" in outcome.error


def test_broken_profile_is_fatal(repo: Path, env: dict[str, str], codex_home: Path) -> None:
    # 0.169's -p layers $CODEX_HOME/<name>.config.toml; a missing one is silently ignored.
    (codex_home / "broken.config.toml").write_text("model = [\n")
    outcome = run_agent(_request(repo, "case-plain", env, agent=AgentConfig(profile="broken")))
    assert outcome.ending is Ending.FAILED_FATAL
    assert outcome.error is not None and "Error loading config.toml" in outcome.error
    assert "broken.config.toml" in outcome.error


def test_missing_key_variable_is_fatal(repo: Path, env: dict[str, str]) -> None:
    env = {k: v for k, v in env.items() if k != ScriptedModelServer.env_key}
    outcome = run_agent(_request(repo, "case-plain", env))
    assert outcome.ending is Ending.FAILED_FATAL
    assert outcome.error == f"Missing environment variable: `{ScriptedModelServer.env_key}`."


def test_profile_model_and_overrides_reach_codex(repo: Path, env: dict[str, str],
                                                 server: ScriptedModelServer,
                                                 codex_home: Path) -> None:
    (codex_home / "fast.config.toml").write_text('model_reasoning_effort = "low"\n')
    agent = AgentConfig(model="gpt-5.5", profile="fast",
                        config={"model_reasoning_summary": "concise"})
    before = len(server.requests)
    outcome = run_agent(_request(repo, "case-plain", env, agent=agent))
    assert outcome.ok, outcome
    assert outcome.final_message == "Nothing to do."
    body = server.requests[before].body
    assert body["model"] == "gpt-5.5"
    assert body["reasoning"]["effort"] == "low"
