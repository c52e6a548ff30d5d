"""The real Codex CLI 0.169 against the scripted model server.

Each case runs ``codex exec --json`` in a real temp git repository (conftest's
``repo``/``make_repo``; the happy path in a linked worktree), asserts what Codex
did on disk and what the server saw, and keeps Codex's JSONL in
``tests/fixtures/codex_streams/<case>.jsonl`` for parser tests. A missing
fixture is written; ``CODEX_STREAMS_RECORD=1`` rewrites them all.

Measured on this machine (Codex 0.169.0), default retries unless noted:
happy path ~1 s; eight processes at once ~2.5 s; 429 + retry-after: 1 ~1.4 s
(one "Reconnecting... 1/5"); 429 without it ~0.4 s, no retry; 401 ~0.7 s with
stream_max_retries=1 (~7 s and 6 requests with the default 5); 500 with
request_max_retries=1 and stream_max_retries=1: 4 requests in ~1.2 s (30
requests over ~26 s with the defaults); cut with stream_max_retries=1 ~0.6 s;
context window ~0.4 s; silent with stream_idle_timeout_ms=1000 ~1.4 s a try.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentfleet.testing import Rule, Script, ScriptedModelServer
from tests.support.login_shell import login_shell

pytestmark = pytest.mark.codex

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CODEX = PROJECT_ROOT / "node_modules" / ".bin" / "codex"
STREAMS = PROJECT_ROOT / "tests" / "fixtures" / "codex_streams"
CODEX_TIMEOUT_S = 30

if not CODEX.exists():
    pytest.skip(f"the pinned Codex CLI is not installed at {CODEX}", allow_module_level=True)

PATCH = (
    "*** Begin Patch\n"
    "*** Add File: greet.py\n"
    "+def greet(name):\n"
    "+    return f'hello {name}'\n"
    "*** End Patch\n"
)
ONE_MESSAGE = [{"steps": [{"do": "message", "text": "All good."}]}]


@dataclass
class CodexRun:
    """One finished ``codex exec --json`` process."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def of_type(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]

    def items(self, item_type: str) -> list[dict]:
        return [e["item"] for e in self.of_type("item.completed")
                if e["item"]["type"] == item_type]


@pytest.fixture
def server():
    with ScriptedModelServer(Script(rules=[])) as server:
        yield server


def run_codex(server: ScriptedModelServer, cwd: Path, home: Path, prompt: str,
              case: str | None = None) -> CodexRun:
    """Run codex exec on ``prompt`` (stdin) in its own session; record the stream as ``case``."""
    env = {"PATH": os.environ["PATH"], "HOME": str(home.parent), **server.agent_env(home)}
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(CODEX), "exec", "--json", "-s", "workspace-write", "-"],
        cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(prompt, timeout=CODEX_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        raise
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    run = CodexRun(proc.returncode, stdout, stderr, time.monotonic() - started)
    if case is not None:
        record_stream(case, run)
    return run


def record_stream(case: str, run: CodexRun) -> None:
    """Keep a real stream for parser tests (only when missing, unless asked to rewrite)."""
    target = STREAMS / f"{case}.jsonl"
    if target.exists() and os.environ.get("CODEX_STREAMS_RECORD") != "1":
        return
    STREAMS.mkdir(parents=True, exist_ok=True)
    target.write_text(run.stdout)


def use(server: ScriptedModelServer, **rule: object) -> Rule:
    parsed = Rule.model_validate(rule)
    server.set_script(Script(rules=[parsed]))
    return parsed


def failure(run: CodexRun) -> str:
    (failed,) = run.of_type("turn.failed")
    return failed["error"]["message"]


# -- the happy path ------------------------------------------------------------------------


def test_exec_patch_and_message_land_on_disk_with_exact_usage(server, repo, git, tmp_path):
    # A linked worktree, as agentfleet runs agents: no --skip-git-repo-check needed.
    worktree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "agent/greet", str(worktree))
    use(server, name="greet", match="greeting helper", usage={
        "input_tokens": 1000, "cached_input_tokens": 400, "output_tokens": 50,
        "reasoning_tokens": 8},
        responses=[
            {"steps": [{"do": "reasoning", "text": "Look first."},
                       {"do": "exec", "cmd": "git status --short && echo checked"}]},
            {"steps": [{"do": "patch", "patch": PATCH}],
             "usage": {"input_tokens": 2000, "cached_input_tokens": 1500, "output_tokens": 90}},
            # One call per response: calls of one response run in parallel, in any order.
            {"steps": [{"do": "exec", "cmd": "python3 -c 'import greet; print(greet.greet(1))'"}]},
            {"steps": [{"do": "exec", "cmd": "exit 3"}]},
            {"steps": [{"do": "message", "text": "Added greet.py."}]},
        ])
    home = server.write_codex_home(tmp_path / "home", request_max_retries=0,
                                   stream_max_retries=0)

    run = run_codex(server, worktree, home, "Add a greeting helper.", case="happy_path")

    assert run.returncode == 0, run.stderr
    assert (worktree / "greet.py").read_text() == (
        "def greet(name):\n    return f'hello {name}'\n")
    assert not (repo / "greet.py").exists()
    commands = run.items("command_execution")
    assert [(c["exit_code"], c["status"]) for c in commands] == [
        (0, "completed"), (0, "completed"), (3, "failed")]
    assert commands[0]["command"] == (
        f"{login_shell()} -lc 'git status --short && echo checked'")
    assert commands[0]["aggregated_output"].endswith("checked\n")
    assert commands[1]["aggregated_output"] == "hello 1\n"
    (change,) = run.items("file_change")
    assert change["changes"] == [{"path": str(worktree / "greet.py"), "kind": "add"}]
    assert change["status"] == "completed"
    assert [m["text"] for m in run.items("agent_message")] == ["Added greet.py."]
    assert [r["text"] for r in run.items("reasoning")] == ["Look first."]
    (completed,) = run.of_type("turn.completed")
    # The sum over the five model requests: the patch response's own usage plus four of the
    # rule's (input 2000 + 4 * 1000, cached 1500 + 4 * 400, ...).
    assert completed["usage"] == {
        "input_tokens": 6000, "cached_input_tokens": 3100, "cache_write_input_tokens": 0,
        "output_tokens": 290, "reasoning_output_tokens": 32,
    }
    records = server.requests_for("greet")
    assert [r.position for r in records] == [0, 1, 2, 3, 4]
    assert all(r.completed and r.prompt == "Add a greeting helper." for r in records)
    (thread,) = run.of_type("thread.started")
    assert {r.thread_id for r in records} == {thread["thread_id"]}
    assert records[0].authorization == "Bearer scripted-not-a-real-key"
    tools = {t.get("name") for t in records[0].body["tools"]}
    assert {"exec_command", "apply_patch"} <= tools
    # The command outputs went back to the model in the next request.
    outputs = [i for i in records[1].body["input"] if i.get("type") == "function_call_output"]
    assert outputs and "checked" in json.dumps(outputs)


def test_eight_codex_processes_share_one_server(server, make_repo, tmp_path):
    use(server, name="parallel", match="task", responses=[
        {"steps": [{"do": "exec", "cmd": "echo working"}], "delay_s": 0.3},
        {"steps": [{"do": "patch", "patch": PATCH}]},
        {"steps": [{"do": "message", "text": "finished"}]},
    ])
    home = server.write_codex_home(tmp_path / "home", request_max_retries=0,
                                   stream_max_retries=0)
    dirs = [make_repo(f"agent{i}") for i in range(8)]
    runs: dict[int, CodexRun] = {}

    def agent(i: int) -> None:
        runs[i] = run_codex(server, dirs[i], home, f"task number {i}")

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(8)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(CODEX_TIMEOUT_S + 5)
    elapsed = time.monotonic() - started

    assert sorted(runs) == list(range(8))
    assert all(r.returncode == 0 for r in runs.values()), [r.stderr for r in runs.values()]
    assert all((d / "greet.py").exists() for d in dirs)
    records = server.requests_for("parallel")
    assert len(records) == 24 and all(r.completed for r in records)
    assert len({r.thread_id for r in records}) == 8
    assert sorted({r.prompt for r in records}) == [f"task number {i}" for i in range(8)]
    assert elapsed < 15


# -- faults --------------------------------------------------------------------------------


def test_429_with_retry_after_is_retried_and_completes(server, repo, tmp_path):
    use(server, name="rl", match="go", responses=ONE_MESSAGE,
        faults=[{"kind": "http", "status": 429, "retry_after": 1}])
    home = server.write_codex_home(tmp_path / "home")

    run = run_codex(server, repo, home, "go", case="rate_limited_retry_after")

    assert run.returncode == 0, run.stderr
    (reconnect,) = run.of_type("error")
    assert reconnect["message"].startswith(
        "Reconnecting... 1/5 (exceeded retry limit, last status: 429 Too Many Requests")
    assert run.items("agent_message")[0]["text"] == "All good."
    first, retry = server.requests_for("rl")
    assert (first.status, first.fault, retry.status, retry.completed) == (429, "http", 200, True)
    assert 1.0 <= retry.started_at - first.finished_at < 2.5  # retry-after honoured
    assert run.seconds < 8


def test_429_without_retry_after_fails_at_once(server, repo, tmp_path):
    use(server, name="rl", match="go", responses=ONE_MESSAGE,
        faults=[{"kind": "http", "status": 429, "times": 10}])
    home = server.write_codex_home(tmp_path / "home")

    run = run_codex(server, repo, home, "go", case="rate_limited_no_retry_after")

    assert run.returncode == 1
    assert failure(run).startswith("exceeded retry limit, last status: 429 Too Many Requests")
    assert len(server.requests_for("rl")) == 1  # not retried, whatever the retry settings
    assert run.seconds < 8


def test_401_fails_after_the_stream_retries(server, repo, tmp_path):
    use(server, name="auth", match="go", responses=ONE_MESSAGE,
        faults=[{"kind": "http", "status": 401, "times": 10}])
    # 401 is retried by the stream loop (5 by default, ~7 s), not the request loop.
    home = server.write_codex_home(tmp_path / "home", request_max_retries=3,
                                   stream_max_retries=1)

    run = run_codex(server, repo, home, "go", case="unauthorized")

    assert run.returncode == 1
    assert failure(run).startswith("unexpected status 401 Unauthorized: Incorrect API key")
    assert [e["message"][:24] for e in run.of_type("error")] == [
        "Reconnecting... 1/1 (une", "unexpected status 401 Un"]
    assert [r.status for r in server.requests_for("auth")] == [401, 401]


@pytest.mark.parametrize(("failures", "outcome"), [(3, "recovered"), (4, "exhausted")])
def test_500s_fail_the_turn_only_past_both_retry_budgets(server, repo, tmp_path, failures,
                                                         outcome):
    use(server, name="flaky", match="go", responses=ONE_MESSAGE,
        faults=[{"kind": "http", "status": 500, "times": failures}])
    # Tries = (stream_max_retries + 1) * (request_max_retries + 1) = 4.
    home = server.write_codex_home(tmp_path / "home", request_max_retries=1,
                                   stream_max_retries=1)

    run = run_codex(server, repo, home, "go", case=f"server_error_{outcome}")

    statuses = [r.status for r in server.requests_for("flaky")]
    high_demand = "We’re currently experiencing high demand, which may cause temporary errors."
    if outcome == "recovered":
        assert run.returncode == 0 and statuses == [500, 500, 500, 200]
        assert run.items("agent_message")[0]["text"] == "All good."
    else:
        assert run.returncode == 1 and statuses == [500, 500, 500, 500]
        assert failure(run) == high_demand
    assert run.of_type("error")[0]["message"] == f"Reconnecting... 1/1 ({high_demand})"
    assert run.seconds < 8


def test_a_cut_stream_is_reported_as_disconnected(server, repo, tmp_path):
    use(server, name="cut", match="go", responses=ONE_MESSAGE,
        faults=[{"kind": "cut", "times": 10}])
    home = server.write_codex_home(tmp_path / "home", stream_max_retries=1)

    run = run_codex(server, repo, home, "go", case="stream_cut")

    assert run.returncode == 1
    message = "stream disconnected before completion: Transport error: network error: " \
              "error decoding response body"
    assert failure(run) == message
    assert [e["message"] for e in run.of_type("error")] == [
        f"Reconnecting... 1/1 ({message})", message]
    assert [r.fault for r in server.requests_for("cut")] == ["cut", "cut"]


def test_a_cut_stream_then_success_completes(server, repo, tmp_path):
    use(server, name="cut", match="go", responses=ONE_MESSAGE, faults=[{"kind": "cut"}])
    home = server.write_codex_home(tmp_path / "home", stream_max_retries=1)

    run = run_codex(server, repo, home, "go", case="stream_cut_recovered")

    assert run.returncode == 0
    assert run.items("agent_message")[0]["text"] == "All good."
    assert [r.completed for r in server.requests_for("cut")] == [False, True]


def test_a_silent_stream_times_out_on_the_idle_timeout(server, repo, tmp_path):
    use(server, name="silent", match="go", responses=ONE_MESSAGE,
        faults=[{"kind": "silent", "times": 10}])
    home = server.write_codex_home(tmp_path / "home", stream_max_retries=0,
                                   stream_idle_timeout_ms=1000)

    run = run_codex(server, repo, home, "go", case="stream_idle_timeout")

    assert run.returncode == 1
    assert failure(run) == "stream disconnected before completion: idle timeout waiting for SSE"
    # The server lets go once codex closes the connection (it polls for that every 50 ms).
    deadline = time.monotonic() + 2
    while server.requests_for("silent")[0].finished_at is None:
        assert time.monotonic() < deadline, "the silent stream was never released"
        time.sleep(0.01)
    (record,) = server.requests_for("silent")
    assert 0.9 < record.finished_at - record.started_at < 3


@pytest.mark.parametrize(("how", "fault"), [
    ("stream", {"kind": "context_window"}),
    # The same message when the API refuses the request itself with that code.
    ("http_400", {"kind": "http", "status": 400, "body": {"error": {
        "message": "Your input exceeds the context window of this model.",
        "type": "invalid_request_error", "param": "input", "code": "context_length_exceeded"}}}),
])
def test_context_window_exhaustion_gets_codex_own_message(server, repo, tmp_path, how, fault):
    use(server, name="ctx", match="go", responses=ONE_MESSAGE, faults=[fault])
    home = server.write_codex_home(tmp_path / "home")

    case = "context_window" if how == "stream" else f"context_window_{how}"
    run = run_codex(server, repo, home, "go", case=case)

    assert run.returncode == 1
    assert failure(run) == (
        "Codex ran out of room in the model's context window. Start a new thread or clear "
        "earlier history before retrying.")
    assert len(server.requests_for("ctx")) == 1  # not retried
    assert run.seconds < 8


def test_insufficient_quota_is_not_retried(server, repo, tmp_path):
    use(server, name="quota", match="go", responses=ONE_MESSAGE,
        faults=[{"kind": "failed", "code": "insufficient_quota", "message": "No credit."}])
    home = server.write_codex_home(tmp_path / "home")

    run = run_codex(server, repo, home, "go", case="insufficient_quota")

    assert run.returncode == 1
    assert failure(run) == "Quota exceeded. Check your plan and billing details."
    assert len(server.requests_for("quota")) == 1


def test_an_unmatched_prompt_fails_with_the_servers_400(server, repo, tmp_path):
    use(server, name="other", match="something else")
    home = server.write_codex_home(tmp_path / "home")

    run = run_codex(server, repo, home, "an unscripted prompt", case="unscripted_prompt_400")

    assert run.returncode == 1
    assert "no rule matches the prompt 'an unscripted prompt" in failure(run)
    assert [r.status for r in server.requests] == [400]


def test_a_plain_directory_needs_skip_git_repo_check(server, tmp_path):
    use(server, name="m", match="go", responses=ONE_MESSAGE)
    home = server.write_codex_home(tmp_path / "home")
    plain = tmp_path / "plain"
    plain.mkdir()
    run = run_codex(server, plain, home, "go")
    assert run.returncode == 1 and run.stdout == ""
    assert "--skip-git-repo-check" in run.stderr
    assert server.requests == []
