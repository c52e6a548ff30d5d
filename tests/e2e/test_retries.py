"""Retried only when a retry can help: the real Codex CLI against faults of the scripted model.

The layers: Codex retries inside one run (``request_max_retries``, ``stream_max_retries``);
agentfleet retries whole runs of transient failures (``retries``, backoff from
``AGENTFLEET_RETRY_BACKOFF_S``); a full context window gets a fresh session instead.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from agentfleet.agent_config import AgentConfig
from agentfleet.attempt import AttemptSpec, run_attempt
from agentfleet.codex.outcome import Ending
from agentfleet.testing import Fault, Rule, Script, ScriptedModelServer
from agentfleet.testing.script import Response
from tests.conftest import run_git
from tests.e2e.conftest import ROOT, run_agentfleet

pytestmark = pytest.mark.codex

CODEX = ROOT / "node_modules" / ".bin" / "codex"


def exec_(cmd: str) -> dict:
    return {"do": "exec", "cmd": cmd}


def say(text: str) -> dict:
    return {"do": "message", "text": text}


def threads(model: ScriptedModelServer, rule: str) -> list[str]:
    """The Codex threads (one per Codex run) that asked a rule, in order."""
    out: list[str] = []
    for r in model.requests_for(rule):
        if r.thread_id not in out:
            out.append(r.thread_id)
    return out


def test_transient_failures_are_retried_and_a_full_context_window_continues(
    sample, sprint_env, model: ScriptedModelServer, tmp_path: Path
) -> None:
    # Codex's own layer kept small: no request retries, one stream retry.
    model.write_codex_home(Path(sprint_env["CODEX_HOME"]), request_max_retries=0,
                           stream_max_retries=1)
    model.set_script(Script(rules=[
        # A 429 without retry-after: Codex does not retry it at all; agentfleet does.
        Rule(name="storm", match="[storm]", faults=[Fault(kind="http", status=429, times=3)],
             responses=[Response(steps=[exec_("mkdir -p storm && echo ok > storm/done.txt")]),
                        Response(steps=[say("Storm weathered.")])]),
        # Two cut streams: Codex's stream retry takes the second, agentfleet the run.
        Rule(name="cut", match="[cut]", faults=[Fault(kind="cut", times=2)],
             responses=[Response(steps=[exec_("mkdir -p cut && echo ok > cut/done.txt")]),
                        Response(steps=[say("Cut handled.")])]),
        # The continuation (its prompt names the full context window) comes first.
        Rule(name="window-2", match="ran out of room",
             responses=[Response(steps=[exec_("echo two > window/two.txt")]),
                        Response(steps=[say("Finished window.")])]),
        Rule(name="window", match="[window]", responses=[
            Response(steps=[exec_("mkdir -p window && echo one > window/one.txt")]),
            Response(steps=[say("Wrote window/one.txt; two.txt next."), exec_("ls window")]),
            Response(fault=Fault(kind="context_window")),
        ]),
    ]))
    tasks = [
        {"id": name, "prompt": f"[{name}] Do the {name} ticket.", "paths": [f"{name}/**"]}
        for name in ("storm", "cut", "window")
    ]
    repo, plan = sample(name="retry-layers", tasks=tasks, retries=3)
    report_file = tmp_path / "report.json"
    env = {**sprint_env, "AGENTFLEET_RETRY_BACKOFF_S": "0.2"}

    started = time.monotonic()
    run = run_agentfleet("run", str(plan), "--report", str(report_file), env=env)
    took = time.monotonic() - started

    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    target = "agentfleet/retry-layers"
    show = lambda path: run_git(repo, "show", f"{target}:{path}")  # noqa: E731
    assert show("storm/done.txt") == "ok\n" and show("cut/done.txt") == "ok\n"

    # 429 storm: three Codex runs with one request each, then a fourth that completes.
    storm = model.requests_for("storm")
    assert [r.status for r in storm] == [429, 429, 429, 200, 200]
    assert len(threads(model, "storm")) == 4
    for k in (1, 2, 3):
        assert f"retry {k}/3 in " in out
    assert "429 Too Many Requests" in out

    # Cut stream: (stream_max_retries + 1) = 2 requests in the first Codex run, then a new run.
    cut = model.requests_for("cut")
    assert [r.fault for r in cut] == ["cut", "cut", None, None]
    first, second = threads(model, "cut")
    assert {r.thread_id for r in cut[:2]} == {first} and cut[2].thread_id == second
    assert "stream disconnected before completion" in out

    # Context window: a fresh session, told what the first did; both sessions' work landed.
    assert [r.fault for r in model.requests_for("window")] == [None, None, "context_window"]
    (continued, *_) = model.requests_for("window-2")
    assert continued.thread_id not in threads(model, "window")
    assert "mkdir -p window && echo one > window/one.txt" in continued.prompt
    assert "-> 0" in continued.prompt
    assert "window/one.txt" in continued.prompt.split("Files changed:")[1]
    assert "Last message: Wrote window/one.txt; two.txt next." in continued.prompt
    assert "# The task\n\n[window] Do the window ticket." in continued.prompt
    assert "context window exhausted in session 1; continuing in a fresh session" in out
    assert show("window/one.txt") == "one\n" and show("window/two.txt") == "two\n"
    assert run_git(repo, "rev-list", "--count", f"main..{target}").strip() == "3"

    # Tokens of every try: the failed session's (from Codex's session file) count too.
    report = {t["task"]: t for t in json.loads(report_file.read_text())["tasks"]}
    per_response = 120  # the scripted default usage: 100 in, 20 out
    assert report["window"]["tokens"] == 4 * per_response
    assert report["storm"]["tokens"] == 2 * per_response
    assert took < 60


@pytest.fixture
def codex_env(model: ScriptedModelServer, tmp_path: Path) -> dict[str, str]:
    home = model.write_codex_home(tmp_path / "codex-home", request_max_retries=0,
                                  stream_max_retries=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTFLEET_")}
    return {**env, **model.agent_env(home)}


def test_a_401_fails_at_once_with_codexs_message_and_is_not_retried(
    make_repo, model: ScriptedModelServer, codex_env: dict[str, str], tmp_path: Path
) -> None:
    model.set_script(Script(rules=[
        Rule(name="denied", match="[denied]", faults=[Fault(kind="http", status=401, times=99)]),
    ]))
    repo = make_repo()
    spec = AttemptSpec(
        sprint="s", task_id="denied", attempt=1, branch="agentfleet-attempts/s/denied/1",
        repo=repo, worktree_root=tmp_path / "work",
        start_sha=run_git(repo, "rev-parse", "HEAD").strip(),
        prompt="[denied] Try.", paths=None, agent=AgentConfig(), timeout_s=60, retries=3,
        codex_path=CODEX, backoff_initial_s=0.1,
    )
    log: list[str] = []

    result = run_attempt(spec, env=codex_env, log=log.append)

    assert not result.succeeded and result.outcome is not None
    assert result.outcome.ending is Ending.FAILED_FATAL
    assert "401 Unauthorized" in result.reason  # Codex's own words
    assert result.tries == 1 and not any("retry" in line for line in log)
    # One Codex run; inside it only Codex's stream loop retried: stream_max_retries + 1.
    assert len(model.requests_for("denied")) == 2
    assert len(threads(model, "denied")) == 1


def test_whole_attempts_have_one_retry_layer_not_prefects_too() -> None:
    from tasks.attempt import attempt

    assert attempt.retries == 0
