"""The scripted Responses-API server, over real HTTP on 127.0.0.1 (no Codex)."""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from agentfleet.testing import (
    ExecStep,
    Fault,
    MessageStep,
    Response,
    Rule,
    Script,
    ScriptedModelServer,
    Usage,
    prompt_of,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PATCH = "*** Begin Patch\n*** Add File: hello.py\n+print('hello')\n*** End Patch\n"


def codex_like_body(prompt: str, thread: str | None = "thread-1") -> dict:
    """A request body shaped like Codex 0.169's (context messages around the prompt)."""
    body: dict = {
        "model": "gpt-5.5",
        "stream": True,
        "input": [
            {"type": "message", "role": "developer",
             "content": [{"type": "input_text", "text": "You are Codex."}]},
            {"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": "# AGENTS.md instructions for /r\n..."}]},
            {"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": "<environment_context>\n  <cwd>/r</cwd>"}]},
            {"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": prompt}]},
        ],
        "tools": [],
    }
    if thread is not None:
        body["prompt_cache_key"] = thread
    return body


@dataclass
class Reply:
    """What a client saw: status, headers, raw bytes, parsed SSE frames or JSON."""

    status: int
    headers: httpx.Headers
    raw: bytes
    frames: list[tuple[str, dict]] = field(default_factory=list)

    @property
    def events(self) -> list[dict]:
        return [data for _, data in self.frames]

    @property
    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def json(self) -> dict:
        return json.loads(self.raw)

    def items(self) -> list[dict]:
        return [e["item"] for e in self.events if e["type"] == "response.output_item.done"]


def parse_sse(raw: bytes) -> list[tuple[str, dict]]:
    """Split an SSE body into (event name, data) frames, checking the framing."""
    frames = []
    text = raw.decode()
    assert text.endswith("\n\n") or not text, "an SSE body ends with a blank line"
    for block in filter(None, text.split("\n\n")):
        lines = block.split("\n")
        assert len(lines) == 2, f"one event line and one data line per frame: {block!r}"
        assert lines[0].startswith("event: ") and lines[1].startswith("data: ")
        frames.append((lines[0][len("event: "):], json.loads(lines[1][len("data: "):])))
    return frames


@functools.cache
def http() -> httpx.Client:
    """One pooled client for the module (thread-safe; building one per call is slow)."""
    return httpx.Client(timeout=10)


def post(server: ScriptedModelServer, prompt: str, thread: str | None = "thread-1") -> Reply:
    """POST a Codex-like request and read the whole answer."""
    headers = {"authorization": f"Bearer {server.api_key}"}
    r = http().post(f"{server.base_url}/responses", json=codex_like_body(prompt, thread),
                    headers=headers)
    reply = Reply(r.status_code, r.headers, r.content)
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        reply.frames = parse_sse(r.content)
    return reply


def rule(name: str = "r", match: str = "go", **kwargs: object) -> Rule:
    return Rule.model_validate({"name": name, "match": match, **kwargs})


def message(text: str, **kwargs: object) -> Response:
    return Response(steps=[MessageStep(text=text)], **kwargs)


@pytest.fixture
def serve() -> Iterator:
    """Start servers for a test and always stop them."""
    servers: list[ScriptedModelServer] = []

    def start(*rules: Rule, default: Rule | None = None) -> ScriptedModelServer:
        server = ScriptedModelServer(Script(rules=list(rules), default=default)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def wait_until(predicate, timeout: float = 5.0) -> None:
    """Poll observable state until it holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


# -- the happy path ------------------------------------------------------------------------


def test_a_response_streams_the_lifecycle_events_in_order(serve):
    server = serve(rule(responses=[{"steps": [
        {"do": "reasoning", "text": "thinking"},
        {"do": "exec", "cmd": "pytest -q", "workdir": "sub"},
        {"do": "patch", "patch": PATCH},
        {"do": "message", "text": "All done."},
    ]}]))
    reply = post(server, "go")

    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert reply.headers["transfer-encoding"] == "chunked"
    assert [name for name, _ in reply.frames] == reply.types  # event line names the data type
    expected = ["response.created", "response.in_progress"]
    expected += ["response.output_item.added", "response.output_item.done"] * 3
    expected += ["response.output_item.added", "response.output_text.delta",
                 "response.output_text.done", "response.output_item.done", "response.completed"]
    assert reply.types == expected
    assert [e["sequence_number"] for e in reply.events] == list(range(len(expected)))
    ids = {e["response"]["id"] for e in reply.events if "response" in e}
    assert len(ids) == 1 and ids.pop().startswith("resp_")
    completed = reply.events[-1]["response"]
    assert completed["status"] == "completed"
    assert completed["output"] == reply.items()


def test_steps_become_the_items_codex_executes(serve):
    server = serve(rule(responses=[{"steps": [
        {"do": "reasoning", "text": "thinking"},
        {"do": "exec", "cmd": "pytest -q", "workdir": "sub"},
        {"do": "exec", "cmd": "ls"},
        {"do": "patch", "patch": PATCH},
        {"do": "message", "text": "All done."},
    ]}]))
    reasoning, exec1, exec2, patch, msg = post(server, "go").items()

    assert reasoning["type"] == "reasoning"
    assert reasoning["summary"] == [{"type": "summary_text", "text": "thinking"}]
    assert exec1["type"] == "function_call" and exec1["name"] == "exec_command"
    assert json.loads(exec1["arguments"]) == {"cmd": "pytest -q", "workdir": "sub"}
    assert json.loads(exec2["arguments"]) == {"cmd": "ls"}
    assert exec1["call_id"] != exec2["call_id"]
    assert patch["type"] == "custom_tool_call" and patch["name"] == "apply_patch"
    assert patch["input"] == PATCH and patch["call_id"].startswith("call_")
    assert msg["type"] == "message" and msg["role"] == "assistant"
    assert msg["content"] == [{"type": "output_text", "text": "All done.", "annotations": []}]
    assert msg["phase"] == "final_answer"


def test_an_item_is_announced_empty_then_finished_with_the_same_id(serve):
    server = serve(rule(responses=[{"steps": [{"do": "exec", "cmd": "ls"}]}]))
    events = post(server, "go").events
    added, done = events[2]["item"], events[3]["item"]
    assert added["id"] == done["id"] and added["call_id"] == done["call_id"]
    assert added["status"] == "in_progress" and added["arguments"] == ""
    assert done["status"] == "completed"


def test_usage_comes_from_the_response_else_the_rule_else_the_defaults(serve):
    server = serve(
        rule("priced", "priced", usage={"input_tokens": 1000, "cached_input_tokens": 400,
                                        "output_tokens": 50, "reasoning_tokens": 7},
             responses=[message("a"), message("b", usage=Usage(input_tokens=5, output_tokens=1))]),
        rule("plain", "plain", responses=[message("c")]),
    )
    usages = [post(server, "priced").events[-1]["response"]["usage"],
              post(server, "priced").events[-1]["response"]["usage"],
              post(server, "plain").events[-1]["response"]["usage"]]
    assert usages == [
        {"input_tokens": 1000, "input_tokens_details": {"cached_tokens": 400},
         "output_tokens": 50, "output_tokens_details": {"reasoning_tokens": 7},
         "total_tokens": 1050},
        {"input_tokens": 5, "input_tokens_details": {"cached_tokens": 0},
         "output_tokens": 1, "output_tokens_details": {"reasoning_tokens": 0},
         "total_tokens": 6},
        {"input_tokens": 100, "input_tokens_details": {"cached_tokens": 0},
         "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 0},
         "total_tokens": 120},
    ]


# -- conversations, rules, the request log --------------------------------------------------


def test_each_thread_walks_its_own_responses_then_gets_done(serve):
    server = serve(rule(responses=[message("first"), message("second")]))

    def text(thread: str) -> str:
        return post(server, "go", thread=thread).items()[-1]["content"][0]["text"]

    assert [text("a"), text("a"), text("b"), text("a"), text("b")] == [
        "first", "second", "first", "done", "second"]
    assert [r.position for r in server.requests] == [0, 1, 0, 2, 1]


def test_the_first_matching_rule_answers_else_the_default(serve):
    server = serve(
        rule("tests", "write tests", responses=[message("tests")]),
        rule("any-write", "write", responses=[message("write")]),
        default=rule("fallback", "", responses=[message("fallback")]),
    )
    assert post(server, "please write tests now").items()[0]["content"][0]["text"] == "tests"
    assert post(server, "write docs").items()[0]["content"][0]["text"] == "write"
    assert post(server, "refactor").items()[0]["content"][0]["text"] == "fallback"
    assert [r.rule for r in server.requests] == ["tests", "any-write", "fallback"]
    assert [r.prompt for r in server.requests_for("tests")] == ["please write tests now"]


def test_a_prompt_no_rule_matches_is_a_400_naming_it(serve):
    server = serve(rule(match="nothing like it"))
    prompt = "Implement the parser. " * 10
    reply = post(server, prompt)
    assert reply.status == 400
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert repr(prompt[:80]) in error["message"]
    assert prompt[:81] not in error["message"]
    assert server.requests[0].rule is None and server.requests[0].status == 400


def test_requests_are_recorded_with_prompt_thread_auth_and_body(serve):
    server = serve(rule(responses=[message("ok")]))
    before = time.time()
    post(server, "go build it", thread="t-42")
    (record,) = server.requests
    assert record.index == 0 and record.rule == "r" and record.thread_id == "t-42"
    assert record.prompt == "go build it"  # AGENTS.md and environment_context skipped
    assert record.authorization == "Bearer scripted-not-a-real-key"
    assert record.body["model"] == "gpt-5.5" and record.body["stream"] is True
    assert record.status == 200 and record.completed and record.fault is None
    assert before <= record.started_at <= record.finished_at <= time.time()


def test_prompt_of_takes_the_last_real_user_message():
    body = codex_like_body("first prompt")
    body["input"] += [
        {"type": "function_call_output", "call_id": "c", "output": "x"},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "hi"}]},
    ]
    assert prompt_of(body) == "first prompt"
    assert prompt_of({"input": "plain string"}) == "plain string"
    assert prompt_of({}) == ""


def test_other_paths_get_a_404_json(serve):
    server = serve(rule())
    with httpx.Client(timeout=5) as client:
        get = client.get(f"{server.base_url}/models")
        post_other = client.post(f"{server.base_url}/chat/completions", json={})
    assert get.status_code == post_other.status_code == 404
    assert get.json()["error"]["code"] == "not_found"
    assert "/v1/chat/completions" in post_other.json()["error"]["message"]


def test_set_script_starts_counts_again_and_add_rule_extends(serve):
    server = serve(rule(responses=[message("one")], faults=[{"kind": "http", "status": 500}]))
    assert post(server, "go").status == 500
    assert post(server, "go").items()[0]["content"][0]["text"] == "one"
    server.set_script(Script(rules=[rule(responses=[message("fresh")],
                                         faults=[{"kind": "http", "status": 502}])]))
    assert post(server, "go").status == 502
    assert post(server, "go").items()[0]["content"][0]["text"] == "fresh"
    server.add_rule(rule("extra", "other", responses=[message("extra")]))
    assert post(server, "other").items()[0]["content"][0]["text"] == "extra"
    with pytest.raises(ValidationError):
        server.add_rule(rule("extra", "again"))
    assert [r.name for r in server.script.rules] == ["r", "extra"]


# -- faults --------------------------------------------------------------------------------


def test_faults_answer_the_first_requests_in_order_then_responses_resume(serve):
    server = serve(rule(
        responses=[message("first"), message("second")],
        faults=[{"kind": "http", "status": 500, "times": 2}, {"kind": "http", "status": 503}],
    ))
    statuses = [post(server, "go", thread="a").status for _ in range(4)]
    assert statuses == [500, 500, 503, 200]
    # The retry after the faults gets the conversation's first response, not a later one.
    assert [r.position for r in server.requests] == [None, None, None, 0]
    assert [r.fault for r in server.requests] == ["http", "http", "http", None]
    # Faults count per rule across threads: a new thread is not faulted again.
    assert post(server, "go", thread="b").status == 200


def test_http_fault_bodies_are_realistic_per_status(serve):
    server = serve(rule(faults=[{"kind": "http", "status": s} for s in (401, 429, 500, 503)]
                        + [{"kind": "http", "status": 400, "body": {"error": {"code": "x"}}}]))
    bodies = [post(server, "go").json()["error"] for _ in range(5)]
    assert bodies[0]["code"] == "invalid_api_key" and "API key" in bodies[0]["message"]
    assert bodies[1]["code"] == "rate_limit_exceeded"
    assert bodies[2]["type"] == "server_error" and bodies[2]["code"] is None
    # not server_is_overloaded: that code would make codex report a different error
    assert bodies[3]["type"] == "server_error" and bodies[3]["code"] is None
    assert bodies[4] == {"code": "x"}


def test_429_sends_retry_after_only_when_scripted(serve):
    server = serve(rule(faults=[{"kind": "http", "status": 429, "retry_after": 2},
                                {"kind": "http", "status": 429}]))
    with_header, without = post(server, "go"), post(server, "go")
    assert with_header.status == without.status == 429
    assert with_header.headers["retry-after"] == "2"
    assert "retry-after" not in without.headers


def test_retry_after_must_be_whole_seconds():
    with pytest.raises(ValidationError):
        Fault(kind="http", status=429, retry_after=0.5)


def test_a_cut_stream_breaks_mid_response_and_is_not_counted(serve):
    server = serve(rule(responses=[message("whole")],
                        faults=[{"kind": "cut", "events_before_cut": 2}]))
    with httpx.Client(timeout=5) as client:
        with client.stream("POST", f"{server.base_url}/responses",
                           json=codex_like_body("go")) as r:
            assert r.status_code == 200
            received = b""
            with pytest.raises(httpx.RemoteProtocolError):
                for chunk in r.iter_raw():
                    received += chunk
    assert [name for name, _ in parse_sse(received)] == ["response.created",
                                                         "response.in_progress"]
    wait_until(lambda: server.requests[0].finished_at is not None)
    assert server.requests[0].fault == "cut" and not server.requests[0].completed
    # The retry gets the response the cut one would have been.
    assert post(server, "go").items()[0]["content"][0]["text"] == "whole"


def test_context_window_fault_is_a_failed_response_with_its_code(serve):
    server = serve(rule(faults=[{"kind": "context_window"}]))
    reply = post(server, "go")
    assert reply.status == 200
    assert reply.types == ["response.created", "response.in_progress", "response.failed"]
    failed = reply.events[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "context_length_exceeded"


def test_failed_fault_carries_the_scripted_code(serve):
    server = serve(rule(faults=[{"kind": "failed", "code": "insufficient_quota",
                                 "message": "You exceeded your quota."}]))
    error = post(server, "go").events[-1]["response"]["error"]
    assert (error["code"], error["message"]) == ("insufficient_quota", "You exceeded your quota.")


def open_stream(server: ScriptedModelServer, prompt: str = "go") -> socket.socket:
    """Send a request on a raw socket and return it once the response headers arrived."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    payload = json.dumps(codex_like_body(prompt)).encode()
    sock.sendall(b"POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 b"content-length: %d\r\n\r\n%s" % (len(payload), payload))
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 200")
    return sock


def read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_stop_returns_promptly_with_a_silent_stream_open(serve):
    server = serve(rule(faults=[{"kind": "silent", "times": 3}]))
    socks = [open_stream(server) for _ in range(3)]
    wait_until(lambda: len(server.requests) == 3)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 1.0
    for sock in socks:
        assert read_to_eof(sock) == b""  # released: closed, nothing was ever streamed
        sock.close()
    assert all(r.fault == "silent" and r.finished_at for r in server.requests)


def test_a_silent_stream_ends_when_its_client_leaves_or_after_hold_s(serve):
    server = serve(rule(faults=[{"kind": "silent"}, {"kind": "silent", "hold_s": 0.2}]))
    sock = open_stream(server)
    wait_until(lambda: len(server.requests) == 1)
    sock.close()
    wait_until(lambda: server.requests[0].finished_at is not None)
    held = open_stream(server)
    started = time.monotonic()
    assert read_to_eof(held) == b""
    assert 0.15 < time.monotonic() - started < 2
    held.close()


def stop_cuts_short(server: ScriptedModelServer, sock: socket.socket) -> None:
    """Stop the server with ``sock``'s response in flight: at once, the response unfinished."""
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 1.0
    assert b"response.completed" not in read_to_eof(sock)
    sock.close()


def test_stop_interrupts_a_delayed_response(serve):
    server = serve(rule(responses=[message("late", delay_s=30)]))
    sock = open_stream(server)
    wait_until(lambda: len(server.requests) == 1)
    stop_cuts_short(server, sock)


def test_a_delay_holds_the_items_after_response_created(serve):
    server = serve(rule(responses=[message("slow", delay_s=0.3)]))
    started = time.monotonic()
    reply = post(server, "go")
    assert time.monotonic() - started >= 0.3
    assert reply.types[-1] == "response.completed"


def test_a_response_after_a_latch_waits_for_it_and_a_stop_ends_the_wait(serve):
    server = serve(rule(match="held", responses=[message("now", after="go-on")]),
                   rule(name="late", match="late", responses=[message("x", after="never")]))
    replies: list[Reply] = []
    held = threading.Thread(target=lambda: replies.append(post(server, "held")))
    held.start()
    wait_until(lambda: len(server.requests) == 1)
    time.sleep(0.2)
    assert not replies and server.requests[0].finished_at is None
    server.open_latch("go-on")
    held.join(5)
    assert replies[0].items()[0]["content"][0]["text"] == "now"
    assert post(server, "held", thread="t2").types[-1] == "response.completed"  # stays open

    sock = open_stream(server, "late")
    wait_until(lambda: len(server.requests) == 3)
    stop_cuts_short(server, sock)


def test_a_client_leaving_mid_response_does_not_advance_the_conversation(serve):
    server = serve(rule(responses=[message("first", delay_s=0.3), message("second")]))
    sock = open_stream(server)
    sock.close()  # gone before the delayed items are written
    wait_until(lambda: server.requests[0].finished_at is not None)
    assert not server.requests[0].completed
    assert post(server, "go").items()[0]["content"][0]["text"] == "first"


def test_many_concurrent_clients_are_all_answered(serve):
    server = serve(rule(responses=[message("hi", delay_s=0.5), message("again")]))
    replies: dict[str, list[Reply]] = {}

    def converse(thread: str) -> None:
        replies[thread] = [post(server, "go", thread=thread) for _ in range(2)]

    workers = [threading.Thread(target=converse, args=(f"t{i}",)) for i in range(16)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(20)
    texts = {t: [r.items()[0]["content"][0]["text"] for r in rs] for t, rs in replies.items()}
    assert texts == {f"t{i}": ["hi", "again"] for i in range(16)}
    assert len(server.requests) == 32
    # The slow first responses were served side by side (a thread per connection), not in turn.
    slow = [r for r in server.requests if r.position == 0]
    most_at_once = max(sum(o.started_at <= r.started_at < o.finished_at for o in slow)
                       for r in slow)
    assert most_at_once >= 8


def test_stop_is_idempotent_and_the_context_manager_stops(serve):
    with ScriptedModelServer(Script(rules=[rule(responses=[message("x")])])) as server:
        port = server.port
        assert post(server, "go").status == 200
    server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"http://127.0.0.1:{port}/v1/responses", json={}, timeout=2)


# -- Codex configuration -------------------------------------------------------------------


def test_write_codex_home_points_codex_at_the_server(serve, tmp_path):
    server = serve(rule())
    home = server.write_codex_home(tmp_path / "home", request_max_retries=1,
                                   stream_idle_timeout_ms=2000)
    config = tomllib.loads((home / "config.toml").read_text())
    assert config == {
        "model": "gpt-5.5",
        "model_provider": "scripted",
        "model_providers": {"scripted": {
            "name": "scripted", "base_url": server.base_url, "wire_api": "responses",
            "env_key": "AGENTFLEET_SCRIPTED_KEY", "request_max_retries": 1,
            "stream_idle_timeout_ms": 2000,
        }},
    }
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    assert server.agent_env(home) == {"CODEX_HOME": str(home),
                                      "AGENTFLEET_SCRIPTED_KEY": "scripted-not-a-real-key"}


# -- the script format ---------------------------------------------------------------------


def test_a_script_loads_from_yaml_and_json(tmp_path):
    yaml_file = tmp_path / "s.yaml"
    yaml_file.write_text(
        "rules:\n"
        "  - name: fix\n"
        "    match: fix the bug\n"
        "    faults: [{kind: http, status: 429, retry_after: 1}]\n"
        "    responses:\n"
        "      - steps: [{do: exec, cmd: pytest -q}]\n"
        "      - steps:\n"
        "          - do: patch\n"
        "            patch: |\n"
        "              *** Begin Patch\n"
        "              *** Add File: a.py\n"
        "              +x = 1\n"
        "              *** End Patch\n"
        "      - steps: [{do: message, text: Fixed.}]\n"
    )
    script = Script.from_file(yaml_file)
    (fix,) = script.rules
    assert isinstance(fix.responses[0].steps[0], ExecStep)
    assert fix.responses[1].steps[0].patch.endswith("*** End Patch\n")
    assert fix.faults == [Fault(kind="http", status=429, retry_after=1)]
    json_file = tmp_path / "s.json"
    json_file.write_text(script.model_dump_json())
    assert Script.from_file(json_file) == script


@pytest.mark.parametrize("bad", [
    {"rules": [{"name": "a", "match": "x", "responses": [{"steps": [{"do": "dance"}]}]}]},
    {"rules": [{"name": "a", "match": "x", "responses": [{"steps": []}]}]},
    {"rules": [{"name": "a", "match": "x"}, {"name": "a", "match": "y"}]},
    {"rules": [{"name": "a", "match": "x", "faults": [{"kind": "http", "times": 0}]}]},
    {"rules": [{"name": "a", "match": "x", "surprise": 1}]},
])
def test_a_bad_script_is_refused(bad):
    with pytest.raises(ValidationError):
        Script.model_validate(bad)


# -- the standalone command ----------------------------------------------------------------


def test_the_module_runs_standalone_logs_jsonl_and_stops_on_sigterm(tmp_path):
    script = tmp_path / "s.yaml"
    script.write_text("rules: [{name: hello, match: hi, responses: [{steps: [{do: message, "
                      "text: hello}]}]}]\n")
    log = tmp_path / "requests.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentfleet.testing", "--script", str(script),
         "--codex-home", str(tmp_path / "home"), "--log", str(log),
         "--request-max-retries", "0"],
        stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(PROJECT_ROOT)},
    )
    try:
        base_url = proc.stdout.readline().strip()
        env = dict(proc.stdout.readline().strip().split("=", 1) for _ in range(2))
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        assert env == {"CODEX_HOME": str(tmp_path / "home"),
                       "AGENTFLEET_SCRIPTED_KEY": "scripted-not-a-real-key"}
        config = tomllib.loads((tmp_path / "home" / "config.toml").read_text())
        assert config["model_providers"]["scripted"]["request_max_retries"] == 0
        r = httpx.post(f"{base_url}/responses", json=codex_like_body("hi there"), timeout=5)
        assert "response.completed" in r.text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
    finally:
        proc.kill()
        proc.wait()
    (line,) = log.read_text().splitlines()
    record = json.loads(line)
    assert record["rule"] == "hello" and record["prompt"] == "hi there"
    assert record["completed"] is True and "body" not in record


# -- what the script held that nobody asked for ----------------------------------------------


def test_assert_complete_names_each_fault_and_response_no_request_had(serve):
    server = serve(
        rule("a", "go-a", responses=[message("one"), message("two")],
             faults=[{"kind": "http", "status": 500}]),
        rule("b", "go-b", responses=[message("only")]),
    )
    assert post(server, "go-a").status == 500  # the fault
    assert post(server, "go-a").status == 200  # response 1
    with pytest.raises(AssertionError) as missing:
        server.assert_complete()
    assert "rule 'a': response 2 of 2 never sent" in str(missing.value)
    assert "rule 'b': response 1 of 1 never sent" in str(missing.value)
    assert "fault" not in str(missing.value)

    post(server, "go-a")
    post(server, "go-b", thread="thread-2")
    server.assert_complete()

    # A new script starts the count again.
    server.set_script(Script(rules=[rule("c", "go-c", faults=[{"kind": "http", "status": 503}])]))
    assert server.unserved() == ["rule 'c': 1 of its 1 faults answered no request"]
