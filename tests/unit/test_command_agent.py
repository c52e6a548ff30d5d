"""The `command` agent: any shell command as an agent, in a real git worktree."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from agentfleet.agent_config import AgentConfig
from agentfleet.agents import AgentRequest, run_agent
from agentfleet.codex.cli import (
    _PLATFORMS,
    codex_argv,
    find_codex,
    isolation_overrides,
    native_launch,
    toml_value,
)
from agentfleet.codex.events import OutputLine
from agentfleet.codex.outcome import Ending
from agentfleet.errors import AgentError, AgentNotFound
from tests.support.waiting import alive, cmdline, processes_under

PROJECT_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(60)


def _request(worktree: Path, run: str, **kw: object) -> AgentRequest:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(worktree.parent),
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    return AgentRequest(
        worktree=worktree, prompt=kw.pop("prompt", "add a greeting"),  # type: ignore[arg-type]
        agent=AgentConfig(kind="command", run=run, env=kw.pop("agent_env", {})),  # type: ignore[arg-type]
        timeout_s=kw.pop("timeout_s", 20), env=env, **kw,  # type: ignore[arg-type]
    )


def test_completed_with_final_message_and_changed_file(repo: Path) -> None:
    events: list[object] = []
    outcome = run_agent(
        _request(repo, "echo working; echo 'print(1)' > hello.py; echo hi >> README.md; "
                       "echo note >&2; echo 'Added hello.py.'; echo"),
        on_event=events.append,
    )
    assert outcome.ending is Ending.COMPLETED and outcome.ok
    assert outcome.final_message == "Added hello.py."
    assert sorted(outcome.files_changed) == ["README.md", "hello.py"]
    assert outcome.usage.total == 0 and outcome.exit_status == 0 and outcome.error is None
    assert OutputLine(stream="stdout", text="working") in events
    assert OutputLine(stream="stderr", text="note") in events


def test_failing_command_is_fatal_saying_its_exit_status(repo: Path) -> None:
    outcome = run_agent(_request(repo, "echo trying; echo 'no idea how' >&2; exit 7"))
    assert outcome.ending is Ending.FAILED_FATAL and not outcome.retryable
    assert outcome.exit_status == 7
    # The reason is one line; the output stays in the tail (log, artifact).
    assert outcome.error == "command exited 7"
    assert "no idea how" in outcome.stderr_tail and "trying" in outcome.stderr_tail
    assert outcome.files_changed == []
    killed = run_agent(_request(repo, "kill -TERM $$"))
    assert killed.error == "command killed by SIGTERM"


def test_prompt_arrives_on_stdin_and_in_env(repo: Path) -> None:
    prompt = "Line one with 'quotes' and $dollars\nline two ünïcode"
    outcome = run_agent(_request(
        repo, 'cat > from_stdin.txt; printf "%s" "$AGENTFLEET_PROMPT" > from_env.txt; '
              'echo "$EXTRA"', prompt=prompt, agent_env={"EXTRA": "from agent.env"}))
    assert outcome.ok
    assert (repo / "from_stdin.txt").read_text() == prompt
    assert (repo / "from_env.txt").read_text() == prompt
    assert outcome.final_message == "from agent.env"


def test_a_long_prompt_reaches_stdin_and_the_prompt_file_but_not_the_environment(
    repo: Path,
) -> None:
    # Over 128 KiB in one environment string, exec fails ("Argument list too long").
    prompt = "".join(f"line {i}: do the thing carefully\n" for i in range(5000))
    assert len(prompt.encode()) > 128 * 1024
    request = _request(
        repo,
        'cat > from_stdin.txt; cp "$AGENTFLEET_PROMPT_FILE" from_file.txt; '
        'echo "${AGENTFLEET_PROMPT-unset}" > from_env.txt; echo "$AGENTFLEET_PROMPT_FILE"',
        prompt=prompt,
    )
    # An inherited value must not pose as this prompt.
    request = replace(request, env={**request.env, "AGENTFLEET_PROMPT": "stale"})
    outcome = run_agent(request)
    assert outcome.ok, outcome.error
    assert (repo / "from_stdin.txt").read_text() == prompt
    assert (repo / "from_file.txt").read_text() == prompt
    assert (repo / "from_env.txt").read_text() == "unset\n"
    # The file lies outside the worktree and is gone once the agent ended.
    prompt_file = Path(outcome.final_message or "")
    assert prompt_file.is_absolute() and repo not in prompt_file.parents
    assert not prompt_file.exists()

    same = 'test "$(cat "$AGENTFLEET_PROMPT_FILE")" = "$AGENTFLEET_PROMPT"'
    small = run_agent(_request(repo, same, prompt="short"))
    assert small.ok


def test_timeout_and_cancel_leave_nothing(repo: Path) -> None:
    seen: list[object] = []
    outcome = run_agent(_request(repo, "setsid sleep 1000 & echo started; sleep 1000",
                                 timeout_s=0.5, grace_s=1), on_event=seen.append)
    assert outcome.ending is Ending.TIMED_OUT and not outcome.retryable
    assert OutputLine(stream="stdout", text="started") in seen
    assert not _sleepers(repo)

    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    outcome = run_agent(_request(repo, "sleep 1000", grace_s=1), cancel=cancel)
    assert outcome.ending is Ending.KILLED
    assert not _sleepers(repo)


def test_idle_timeout_marks_it_stuck(repo: Path) -> None:
    outcome = run_agent(_request(repo, "echo start; sleep 1000", idle_timeout_s=0.5, grace_s=1))
    assert outcome.ending is Ending.STUCK


def test_command_agent_without_run_is_an_error(repo: Path) -> None:
    with pytest.raises(AgentError):
        run_agent(_request(repo, "  "))


def _sleepers(worktree: Path) -> list[int]:
    """Live ``sleep 1000`` processes a command agent started in ``worktree`` (they carry
    its prompt var); other tests' agents, running beside this one under xdist, are not."""
    out = []
    for pid in processes_under(worktree):
        if not alive(pid) or cmdline(pid) != "sleep 1000 ":
            continue
        try:
            if b"AGENTFLEET_PROMPT=" in Path(f"/proc/{pid}/environ").read_bytes():
                out.append(pid)
        except OSError:
            pass
    return out


# -- finding and calling codex (pure) ----------------------------------------------------


def test_find_codex(tmp_path: Path) -> None:
    exe = tmp_path / "bin" / "codex"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    local = tmp_path / "proj" / "node_modules" / ".bin" / "codex"
    local.parent.mkdir(parents=True)
    local.write_text("#!/bin/sh\n")
    local.chmod(0o755)
    assert find_codex(exe, tmp_path / "proj", None) == exe
    assert find_codex(None, tmp_path / "proj", str(exe.parent)) == local
    assert find_codex(None, tmp_path / "elsewhere", f"/nonexistent:{exe.parent}") == exe
    with pytest.raises(AgentNotFound, match="npm ci.*AGENTFLEET_CODEX_PATH") as info:
        find_codex(None, tmp_path / "elsewhere", "/nonexistent")
    assert info.value.exit_code == 2
    with pytest.raises(AgentNotFound, match="no executable"):
        find_codex(tmp_path / "missing", tmp_path / "proj", str(exe.parent))


def _npm_install(root: Path, *, pnpm: bool = False) -> tuple[Path, Path | None]:
    """An npm layout of @openai/codex under ``root``: (its .bin/codex, the platform binary)."""
    modules = root / "node_modules"
    package = modules / "@openai" / "codex"
    (package / "bin").mkdir(parents=True)
    (package / "package.json").write_text('{"name": "@openai/codex", "version": "0.169.0"}')
    (package / "bin" / "codex.js").write_text("#!/usr/bin/env node\n")
    (package / "bin" / "codex.js").chmod(0o755)
    (modules / ".bin").mkdir()
    (modules / ".bin" / "codex").symlink_to("../@openai/codex/bin/codex.js")
    if pnpm:
        (modules / ".modules.yaml").write_text("layoutVersion: 5\n")
    names = _PLATFORMS.get((sys.platform, platform.machine()))
    if names is None:
        return modules / ".bin" / "codex", None
    binary = modules / "@openai" / names[0] / "vendor" / names[1] / "bin" / "codex"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    return modules / ".bin" / "codex", binary


def test_native_launch_skips_the_npm_launcher(tmp_path: Path) -> None:
    launcher, binary = _npm_install(tmp_path / "npm")
    env = {"PATH": "/usr/bin", "CODEX_MANAGED_BY_BUN": "1"}
    program, launched = native_launch(launcher, env)
    if binary is None:  # a platform @openai/codex ships no binary for: the launcher says so
        assert (program, launched) == (launcher, env)
        return
    assert program == binary
    # The environment the launcher gives the binary (its package root resolved).
    assert launched == {"PATH": "/usr/bin", "CODEX_MANAGED_BY_NPM": "1",
                        "CODEX_MANAGED_PACKAGE_ROOT": str(
                            (tmp_path / "npm/node_modules/@openai/codex").resolve())}
    assert env == {"PATH": "/usr/bin", "CODEX_MANAGED_BY_BUN": "1"}  # not changed
    # Not npm's launcher, or not npm's layout: started as it is.
    pnpm, _ = _npm_install(tmp_path / "pnpm", pnpm=True)
    bun, _ = _npm_install(tmp_path / ".bun" / "install" / "global")
    own = tmp_path / "bin" / "codex"
    own.parent.mkdir()
    own.write_text("#!/bin/sh\n")
    for program in (pnpm, bun, own, binary):
        assert native_launch(program, env) == (program, env)


def test_native_launch_of_the_pinned_codex() -> None:
    """The project's own install: the launcher gives way to the same Codex."""
    launcher = PROJECT_ROOT / "node_modules" / ".bin" / "codex"
    program, env = native_launch(launcher, {"PATH": os.environ["PATH"]})
    assert program != launcher and program.name == "codex"
    assert env["CODEX_MANAGED_BY_NPM"] == "1"

    def version(argv0: Path) -> str:
        return subprocess.run([str(argv0), "--version"], capture_output=True, text=True,
                              env=env, timeout=60, check=True).stdout

    assert version(program) == version(launcher) == "codex-cli 0.169.0\n"


def test_codex_argv() -> None:
    codex = Path("/x/codex")
    # workspace-write: /tmp and $TMPDIR closed (isolation_overrides), unless TMPDIR is private.
    assert codex_argv(codex, AgentConfig()) == [
        "/x/codex", "exec", "--json", "-s", "workspace-write",
        "-c", "sandbox_workspace_write.exclude_slash_tmp=true",
        "-c", "sandbox_workspace_write.exclude_tmpdir_env_var=true", "-",
    ]
    assert codex_argv(codex, AgentConfig(), private_tmp=True) == [
        "/x/codex", "exec", "--json", "-s", "workspace-write",
        "-c", "sandbox_workspace_write.exclude_slash_tmp=true", "-",
    ]
    agent = AgentConfig(
        model="gpt-5.5", sandbox="read-only", profile="fast",
        config={"model_reasoning_effort": "high", "n": 3, "f": 0.5, "b": True,
                "q": 'say "hi"'},
    )
    assert codex_argv(codex, agent, ["--output-schema", "s.json"]) == [
        "/x/codex", "exec", "--json", "-s", "read-only", "-m", "gpt-5.5", "-p", "fast",
        "-c", 'model_reasoning_effort="high"', "-c", "n=3", "-c", "f=0.5", "-c", "b=true",
        "-c", 'q="say \\"hi\\""', "--output-schema", "s.json", "-",
    ]
    assert toml_value(False) == "false" and toml_value(float("inf")) == "inf"


def test_isolation_leaves_keys_the_plan_sets_and_other_sandboxes_alone() -> None:
    own = AgentConfig(config={"sandbox_workspace_write.exclude_slash_tmp": False})
    assert isolation_overrides(own, private_tmp=False) == {
        "sandbox_workspace_write.exclude_tmpdir_env_var": True
    }
    assert "exclude_slash_tmp=false" in " ".join(codex_argv(Path("codex"), own))
    for agent in (AgentConfig(sandbox="read-only"), AgentConfig(sandbox="danger-full-access"),
                  AgentConfig(kind="command", run="true")):
        assert isolation_overrides(agent, private_tmp=False) == {}


def test_a_failed_command_s_output_is_in_its_artifact_not_its_reason(repo: Path) -> None:
    from agentfleet.artifacts import attempt_markdown
    from agentfleet.results import AttemptResult

    outcome = run_agent(_request(repo, "echo 'Traceback: it broke' >&2; exit 3"))
    result = AttemptResult(task_id="t", attempt=1, branch="b", start_sha="a" * 40,
                           succeeded=False, reason=f"agent failed_fatal: {outcome.error}",
                           outcome=outcome)
    md = attempt_markdown(result, sprint="s")
    assert "## Error\n\n```text\ncommand exited 3\n```" in md
    assert "## Output (last lines)\n\n```text\nTraceback: it broke\n```" in md
