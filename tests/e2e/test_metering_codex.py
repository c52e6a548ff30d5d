"""The real Codex CLI 0.169 through the metering proxy, the scripted model server upstream.

Each run is pointed at the proxy with per-run ``-c`` overrides only (``codex_route``):
the ``CODEX_HOME`` config names the scripted server, the flag sends this one run
through ``http://127.0.0.1:P/a/<attempt>/v1``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from agentfleet.metering import (
    Ledger,
    MeteringProxy,
    TokenUsage,
    codex_args,
    provider_route,
    route_overrides,
)
from agentfleet.testing import Rule, Script, ScriptedModelServer
from agentfleet.testing import server as scripted_server

pytestmark = pytest.mark.codex

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CODEX = PROJECT_ROOT / "node_modules" / ".bin" / "codex"
CODEX_TIMEOUT_S = 30

if not CODEX.exists():
    pytest.skip(f"the pinned Codex CLI is not installed at {CODEX}", allow_module_level=True)


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


@pytest.fixture
def server() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer(Script(rules=[])) as server:
        yield server


@pytest.fixture
def proxy() -> Iterator[MeteringProxy]:
    with MeteringProxy(Ledger()) as proxy:
        yield proxy


def use(server: ScriptedModelServer, **rule: object) -> None:
    server.set_script(Script(rules=[Rule.model_validate(rule)]))


def run_codex(cwd: Path, env: dict[str, str], args: list[str], prompt: str) -> CodexRun:
    """``codex exec --json`` with extra ``args``, in its own session, prompt on stdin."""
    full_env = {"PATH": os.environ["PATH"], "HOME": str(cwd.parent), **env}
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(CODEX), "exec", "--json", "-s", "workspace-write", *args, "-"],
        cwd=cwd, env=full_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(prompt, timeout=CODEX_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.communicate()
    return CodexRun(proc.returncode, stdout, stderr, time.monotonic() - started)


def codex_usage(run: CodexRun) -> TokenUsage:
    (completed,) = run.of_type("turn.completed")
    usage = completed["usage"]
    return TokenUsage(usage["input_tokens"], usage["cached_input_tokens"],
                      usage["output_tokens"], usage["reasoning_output_tokens"])


FOUR_RESPONSES = [
    {"steps": [{"do": "reasoning", "text": "Look."}, {"do": "exec", "cmd": "echo one"}]},
    {"steps": [{"do": "exec", "cmd": "echo two"}],
     "usage": {"input_tokens": 2100, "cached_input_tokens": 1800, "output_tokens": 75,
               "reasoning_tokens": 12}},
    {"steps": [{"do": "exec", "cmd": "echo three"}]},
    {"steps": [{"do": "message", "text": "Done."}]},
]
RULE_USAGE = {"input_tokens": 1200, "cached_input_tokens": 300, "output_tokens": 40,
              "reasoning_tokens": 9}


def test_a_custom_provider_run_is_metered_exactly_as_codex_counts(server, proxy, repo,
                                                                  tmp_path):
    use(server, name="work", match="meter me", usage=RULE_USAGE, responses=FOUR_RESPONSES)
    home = server.write_codex_home(tmp_path / "home", request_max_retries=0,
                                   stream_max_retries=0)
    route = provider_route(tomllib.loads((home / "config.toml").read_text()))
    assert (route.provider_id, route.upstream) == ("scripted", server.base_url)
    url = proxy.register("api-1", "api", route.upstream)
    args = codex_args(route_overrides(route, url))
    assert args == ["-c", f'model_providers.scripted.base_url="{url}"']

    run = run_codex(repo, server.agent_env(home), args, "Please meter me.")

    assert run.returncode == 0, run.stderr
    snap = proxy.snapshot()
    assert snap.attempts["api-1"].usage == codex_usage(run)
    assert codex_usage(run) == TokenUsage(3 * 1200 + 2100, 3 * 300 + 1800, 3 * 40 + 75,
                                          3 * 9 + 12)
    assert snap.attempts["api-1"].responses == 4
    assert snap.tasks["api"] == snap.sprint == codex_usage(run)
    records = server.requests_for("work")
    assert len(records) == 4 and all(r.completed for r in records)
    # The rest of the user's provider table still applies: its env_key's value arrived.
    assert {r.authorization for r in records} == {f"Bearer {server.api_key}"}


def test_the_builtin_openai_provider_is_routed_with_openai_base_url(server, proxy, repo,
                                                                   tmp_path):
    use(server, name="work", match="meter me", usage=RULE_USAGE, responses=FOUR_RESPONSES)
    home = tmp_path / "builtin-home"
    home.mkdir()
    # The user's configuration names the built-in provider at the scripted server's URL.
    route = provider_route({"openai_base_url": server.base_url})
    assert route.builtin and route.upstream == server.base_url
    url = proxy.register("api-1", "api", route.upstream)
    args = codex_args(route_overrides(route, url))
    assert args == ["-c", f'openai_base_url="{url}"']

    run = run_codex(repo, {"CODEX_HOME": str(home), "CODEX_API_KEY": "sk-builtin-test"}, args,
                    "Please meter me.")

    assert run.returncode == 0, run.stderr
    assert proxy.snapshot().attempts["api-1"].usage == codex_usage(run)
    records = server.requests
    # The WebSocket try was answered 426 by the proxy: nothing but the four POSTs upstream.
    assert [(r.method, r.status) for r in records] == [("POST", 200)] * 4
    assert {r.authorization for r in records} == {"Bearer sk-builtin-test"}
    assert run.seconds < 8  # no six WebSocket retries


def test_a_budget_stops_the_codex_run_with_a_readable_message(server, proxy, repo, tmp_path):
    use(server, name="work", match="spend", usage={"input_tokens": 1000, "output_tokens": 100},
        responses=[{"steps": [{"do": "exec", "cmd": f"echo {i}"}]} for i in range(5)])
    # Default retry settings: the refusal must not be retried by Codex anyway.
    home = server.write_codex_home(tmp_path / "home")
    route = provider_route(tomllib.loads((home / "config.toml").read_text()))
    url = proxy.register("api-1", "api", route.upstream, max_tokens=2500)

    run = run_codex(repo, server.agent_env(home), codex_args(route_overrides(route, url)),
                    "Please spend tokens.")

    assert run.returncode == 1
    (failed,) = run.of_type("turn.failed")
    assert failed["error"]["message"] == "over budget: 3,300 of 2,500 tokens"
    assert len(server.requests_for("work")) == 3  # the fourth was refused, not retried
    attempt = proxy.snapshot().attempts["api-1"]
    assert attempt.usage.total == 3300 and attempt.refused == 1
    assert proxy.ledger.over_budget("api-1") == "over budget: 3,300 of 2,500 tokens"
    assert run.seconds < 8


def test_a_429_on_one_agent_holds_the_other_agent_too(server, proxy, make_repo, tmp_path):
    server.set_script(Script(rules=[
        Rule.model_validate({"name": "limited", "match": "alpha", "responses": [
            {"steps": [{"do": "message", "text": "alpha done"}]}],
            "faults": [{"kind": "http", "status": 429, "retry_after": 2}]}),
        Rule.model_validate({"name": "busy", "match": "beta", "responses": [
            {"steps": [{"do": "exec", "cmd": f"echo {i}"}], "delay_s": 0.2}
            for i in range(6)]}),
    ]))
    backoffs = []
    proxy.on_backoff = backoffs.append
    home = server.write_codex_home(tmp_path / "home")
    route = provider_route(tomllib.loads((home / "config.toml").read_text()))
    runs: dict[str, CodexRun] = {}

    def agent(name: str, prompt: str) -> None:
        url = proxy.register(name, name, route.upstream)
        runs[name] = run_codex(make_repo(name), server.agent_env(home),
                               codex_args(route_overrides(route, url)), prompt)

    beta = threading.Thread(target=agent, args=("beta", "Task beta."))
    beta.start()
    deadline = time.monotonic() + 10
    while not server.requests_for("busy"):  # beta is at work before alpha meets the limit
        assert time.monotonic() < deadline
        time.sleep(0.01)
    agent("alpha", "Task alpha.")
    beta.join(CODEX_TIMEOUT_S + 5)

    assert runs["alpha"].returncode == 0 and runs["beta"].returncode == 0
    limited = server.requests_for("limited")[0]
    assert limited.status == 429
    start, end = limited.finished_at, limited.finished_at + 2.0
    later = [r for r in server.requests if r.started_at > start]
    seen = [(r.rule, round(r.started_at - start, 2)) for r in later]
    # The hold starts when the 429 reaches the proxy, a moment after the server logged it:
    # a request of beta's past the proxy's gate by then was under way already (60 ms after
    # it on a loaded machine). One at most: its next ones were held.
    under_way = [r for r in later if r.started_at < start + 0.5]
    assert len(under_way) <= 1 and all(r.rule == "busy" for r in under_way), seen
    held = [r for r in later if r not in under_way]
    assert held and all(r.started_at >= end - 0.05 for r in held), seen
    assert any(r.rule == "busy" for r in held)  # beta was held, not merely finished
    assert len(backoffs) == 1 and backoffs[0].attempt_id == "alpha"


@pytest.mark.parametrize("nagle", ["upstream-nodelay", "upstream-as-is"])
def test_added_latency_of_the_proxy_is_measured(server, proxy, monkeypatch, nagle):
    """Median time of a whole streamed response, direct and through the proxy (printed).

    The scripted server writes each SSE chunk separately with Nagle on: a direct client
    then waits out a delayed ACK (~40 ms) per response, which the proxy, reading
    eagerly, happens to hide. ``upstream-nodelay`` turns Nagle off on the server's side
    (as a real API's edge does) to show what the proxy itself adds.
    """
    if nagle == "upstream-nodelay":
        monkeypatch.setattr(scripted_server._Handler, "disable_nagle_algorithm", True)
    use(server, name="ping", match="ping",
        responses=[{"steps": [{"do": "message", "text": "pong"}]}] * 120)
    url = proxy.register("bench", "bench", server.base_url)
    body = {"model": "gpt-5.5", "stream": True, "prompt_cache_key": "t", "input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "ping"}]}]}

    def timed(client: httpx.Client, base: str) -> float:
        started = time.perf_counter()
        reply = client.post(f"{base}/responses", json=body)
        assert reply.status_code == 200 and b"response.completed" in reply.content
        return time.perf_counter() - started

    with httpx.Client(timeout=10) as client:
        timed(client, server.base_url), timed(client, url)  # warm both connections
        direct, proxied = [], []
        for _ in range(50):  # interleaved, so a busy moment hits both alike
            direct.append(timed(client, server.base_url))
            proxied.append(timed(client, url))
    added_ms = (statistics.median(proxied) - statistics.median(direct)) * 1000
    print(f"\nmetering proxy ({nagle}): median of 50 streamed responses: direct "
          f"{statistics.median(direct) * 1000:.2f} ms, through the proxy "
          f"{statistics.median(proxied) * 1000:.2f} ms, added {added_ms:.2f} ms")
    assert proxy.snapshot().attempts["bench"].responses == 51
