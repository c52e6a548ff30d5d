"""The metering proxy over real sockets: the scripted model server as its upstream."""

from __future__ import annotations

import gzip
import logging
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from agentfleet.metering import Ledger, MeteringProxy, SseUsageScanner, TokenUsage
from agentfleet.metering.proxy import retry_after_seconds
from agentfleet.testing import Rule, Script, ScriptedModelServer

KEY = "sk-metering-test-secret-4f1c"
BODY_MARK = "prompt-body-marker-7d2e"
PER_REQUEST = {"input_tokens": 1000, "cached_input_tokens": 250, "output_tokens": 100,
               "reasoning_tokens": 30}


def body(prompt: str, thread: str = "thread-1") -> dict:
    """A Codex-like Responses request (the prompt as the last user message)."""
    return {
        "model": "gpt-5.5", "stream": True, "prompt_cache_key": thread,
        "input": [{"type": "message", "role": "user",
                   "content": [{"type": "input_text", "text": prompt}]}],
    }


def steps(n: int) -> list[dict]:
    return [{"steps": [{"do": "exec", "cmd": f"echo {i}"}]} for i in range(n)]


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


@pytest.fixture
def upstream() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer(Script(rules=[])) as server:
        yield server


@pytest.fixture
def proxy() -> Iterator[MeteringProxy]:
    with MeteringProxy(Ledger()) as p:
        yield p


def use(server: ScriptedModelServer, *rules: dict) -> None:
    server.set_script(Script(rules=[Rule.model_validate(r) for r in rules]))


def post(client: httpx.Client, base_url: str, prompt: str, thread: str = "thread-1"
         ) -> httpx.Response:
    return client.post(f"{base_url}/responses", json=body(prompt, thread),
                       headers={"authorization": f"Bearer {KEY}"})


# Ids and timestamps the scripted server makes fresh for every response.
_FRESH = re.compile(rb'\b(resp|msg|fc|call|ctc|rs|req)_[0-9a-f]{32}\b|"created_at":\d+')


def normalized(raw: bytes) -> bytes:
    return _FRESH.sub(b"<fresh>", raw)


def wait_until(predicate, timeout: float = 5.0) -> None:
    """Poll observable state until it holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


# -- passing through -----------------------------------------------------------------------


def test_a_streamed_response_passes_through_unchanged(upstream, proxy, client):
    use(upstream, {"name": "r", "match": "go", "usage": PER_REQUEST, "responses": [
        {"steps": [{"do": "reasoning", "text": "think"}, {"do": "message", "text": "héllo ✓"}]}]})
    base = proxy.register("a1", "t1", upstream.base_url)

    direct = post(client, upstream.base_url, "go", thread="direct")
    proxied = post(client, base, "go", thread="proxied")

    assert proxied.status_code == direct.status_code == 200
    assert normalized(proxied.content) == normalized(direct.content)
    assert proxied.content.count(b"event: response.completed\n") == 1
    assert proxied.headers["content-type"] == direct.headers["content-type"]
    assert proxied.headers["x-request-id"].startswith("req_")
    # What reached the upstream: the same body, the same key.
    first, second = upstream.requests
    assert second.body == {**first.body, "prompt_cache_key": "proxied"}
    assert second.authorization == f"Bearer {KEY}"
    assert second.path == "/v1/responses"


def test_usage_per_attempt_equals_what_the_server_reported(upstream, proxy, client):
    use(upstream, {"name": "r", "match": "go", "usage": PER_REQUEST, "responses": [
        *steps(2), {"steps": [{"do": "message", "text": "done"}],
                    "usage": {"input_tokens": 7, "output_tokens": 3}}]})
    seen = []
    proxy.on_usage = seen.append
    a1 = proxy.register("a1", "api", upstream.base_url)
    a2 = proxy.register("a2", "api", upstream.base_url)
    for _ in range(3):
        assert post(client, a1, "go", thread="t-a1").status_code == 200
    assert post(client, a2, "go", thread="t-a2").status_code == 200

    per_request = TokenUsage(1000, 250, 100, 30)
    snap = proxy.snapshot()  # counted before the bytes went on; listeners hear just after
    wait_until(lambda: len(seen) == 4)
    assert snap.attempts["a1"].usage == per_request + per_request + TokenUsage(7, 0, 3, 0)
    assert snap.attempts["a1"].responses == 3
    assert snap.attempts["a2"].usage == per_request
    assert snap.tasks["api"] == snap.sprint == snap.attempts["a1"].usage + per_request
    assert [e.usage for e in seen] == [per_request, per_request, TokenUsage(7, 0, 3, 0),
                                       per_request]
    assert seen[-1].sprint == snap.sprint


def test_an_attempt_over_its_budget_is_refused_with_a_non_retryable_error(upstream, proxy,
                                                                          client):
    use(upstream, {"name": "r", "match": "go", "responses": steps(5),
                   "usage": {"input_tokens": 1000, "output_tokens": 100}})
    refused = []
    proxy.on_refusal = lambda attempt, refusal: refused.append((attempt, refusal.message))
    base = proxy.register("a1", "api", upstream.base_url, max_tokens=2500)

    replies = [post(client, base, "go") for _ in range(5)]

    assert [r.status_code for r in replies] == [200, 200, 200, 400, 400]
    assert replies[3].json() == {"error": {
        "message": "over budget: 3,300 of 2,500 tokens", "type": "invalid_request_error",
        "param": None, "code": "invalid_prompt"}}
    assert len(upstream.requests) == 3  # the fourth never left the proxy
    assert proxy.ledger.over_budget("a1") == "over budget: 3,300 of 2,500 tokens"
    assert proxy.snapshot().attempts["a1"].refused == 2
    assert refused == [("a1", "over budget: 3,300 of 2,500 tokens")] * 2


def test_a_spent_sprint_budget_refuses_every_attempt(upstream, client):
    use(upstream, {"name": "r", "match": "go", "responses": steps(5),
                   "usage": {"input_tokens": 1000, "output_tokens": 100}})
    with MeteringProxy(Ledger(sprint_tokens=2000)) as proxy:
        a1 = proxy.register("a1", "api", upstream.base_url)
        b1 = proxy.register("b1", "docs", upstream.base_url, max_tokens=50_000)
        assert post(client, a1, "go", "t1").status_code == 200
        assert post(client, b1, "go", "t2").status_code == 200
        assert proxy.snapshot().sprint_over_budget
        for base in (a1, b1):
            reply = post(client, base, "go", "t3")
            assert reply.status_code == 400
            assert reply.json()["error"]["message"] == "sprint over budget: 2,200 of 2,000 tokens"
    assert len(upstream.requests) == 2


def test_a_429_with_retry_after_holds_every_attempt(upstream, proxy, client):
    use(upstream,
        {"name": "limited", "match": "first", "responses": steps(3),
         "faults": [{"kind": "http", "status": 429, "retry_after": 2}]},
        {"name": "other", "match": "second", "responses": steps(3)})
    backoffs = []
    proxy.on_backoff = backoffs.append
    a1 = proxy.register("a1", "api", upstream.base_url)
    b1 = proxy.register("b1", "docs", upstream.base_url)

    limited = post(client, a1, "first", "t-a1")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
    replies: dict[str, int] = {}

    def agent(name: str, base: str, prompt: str, thread: str) -> None:
        with httpx.Client(timeout=10) as own:
            replies[name] = post(own, base, prompt, thread).status_code

    agents = [threading.Thread(target=agent, args=args) for args in [
        ("b1", b1, "second", "t-b1"), ("a1", a1, "first", "t-a1"),
        ("b1-again", b1, "second", "t-b1-2")]]
    for t in agents:
        t.start()
    for t in agents:
        t.join(10)

    assert replies == {"b1": 200, "a1": 200, "b1-again": 200}
    first, *rest = upstream.requests
    assert first.status == 429 and len(rest) == 3
    assert min(r.started_at for r in rest) >= first.finished_at + 2.0
    assert len(backoffs) == 1
    assert backoffs[0].attempt_id == "a1" and backoffs[0].seconds == 2
    assert "holding every agent's requests" in backoffs[0].message
    assert proxy.snapshot().rate_limits[upstream.base_url]["retry-after"] == "2"


def test_bodies_and_credentials_never_reach_the_log(upstream, proxy, client, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    use(upstream,
        {"name": "r", "match": BODY_MARK, "responses": steps(1)},
        {"name": "limited", "match": "limited", "responses": steps(1),
         "faults": [{"kind": "http", "status": 429, "retry_after": 1}]})
    base = proxy.register("a1", "api", upstream.base_url, max_tokens=100)
    assert client.post(f"{base}/responses?api-key={KEY}", json=body(BODY_MARK),
                       headers={"authorization": f"Bearer {KEY}"}).status_code == 200
    assert post(client, base, BODY_MARK).status_code == 400  # refused: logged
    assert post(client, proxy.register("b1", "x", upstream.base_url), "limited"
                ).status_code == 429

    out, err = capfd.readouterr()
    # The proxy's own records (the test's HTTP client logs its URLs, query included).
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("agentfleet"))
    logged = ours + out + err
    assert "a1 POST /a/a1/v1/responses -> 200" in ours
    assert "over budget" in ours and "answered 429" in ours
    assert KEY not in logged and BODY_MARK not in logged


# -- routing and protocol edges -------------------------------------------------------------


def test_an_unknown_attempt_gets_a_non_retryable_error(upstream, proxy, client):
    reply = client.post(f"{proxy.url}/a/nobody/v1/responses", json=body("go"))
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "invalid_prompt"
    assert "unknown attempt 'nobody'" in reply.json()["error"]["message"]
    assert client.post(f"{proxy.url}/v1/responses", json=body("go")).status_code == 400
    assert upstream.requests == []


def test_a_route_of_one_run_elsewhere_is_refused_once_closed(upstream, client):
    use(upstream, {"name": "r", "match": "go", "usage": PER_REQUEST, "responses": steps(3)})
    # Bound on every interface; workers reach it under the name they know it by.
    with MeteringProxy(Ledger(), host="0.0.0.0", public_url="http://localhost/") as proxy:
        assert proxy.url == f"http://127.0.0.1:{proxy.port}"
        assert proxy.public_url == f"http://localhost:{proxy.port}"
        first = proxy.register("a#1", "a", upstream.base_url, 2500, route="a#1~run1")
        assert first == f"http://localhost:{proxy.port}/a/a%231~run1/v1"
        assert post(client, first, "go").status_code == 200
        proxy.close("a#1~run1")
        # An agent its killed worker left behind: refused (not retried by Codex).
        reply = post(client, first, "go")
        assert reply.status_code == 400 and reply.json()["error"]["code"] == "invalid_prompt"
        assert "closed (its run ended)" in reply.json()["error"]["message"]
        # Nor may anyone reach the attempt by its bare id.
        assert post(client, proxy.base_url_for("a#1", upstream.base_url), "go"
                    ).status_code == 400
        # The next run: its own route, the same attempt, its spending so far still counted.
        second = proxy.register("a#1", "a", upstream.base_url, 2500, route="a#1~run2")
        assert post(client, second, "go").status_code == 200
        with pytest.raises(ValueError, match="taken"):
            proxy.register("a#1", "a", upstream.base_url, route="a#1~run1")
        assert proxy.snapshot().attempts["a#1"].usage.total == 2 * 1100
    assert len(upstream.requests) == 2


def test_a_websocket_upgrade_is_declined_so_codex_uses_https(upstream, proxy, client):
    base = proxy.register("a1", "api", upstream.base_url)
    reply = client.get(f"{base}/responses", headers={
        "upgrade": "websocket", "connection": "Upgrade", "sec-websocket-version": "13",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert reply.status_code == 426
    assert upstream.requests == []


def test_attempt_ids_are_quoted_in_the_url(upstream, proxy, client):
    use(upstream, {"name": "r", "match": "go", "responses": steps(1)})
    base = proxy.register("task a/1#2", "task a", upstream.base_url)
    assert base == f"{proxy.url}/a/task%20a%2F1%232/v1"
    assert post(client, base, "go").status_code == 200
    assert proxy.snapshot().attempts["task a/1#2"].responses == 1


def test_a_cut_upstream_stream_is_cut_for_the_agent_too(upstream, proxy, client):
    use(upstream, {"name": "r", "match": "go", "responses": steps(1),
                   "faults": [{"kind": "cut", "events_before_cut": 2}]})
    base = proxy.register("a1", "api", upstream.base_url)
    with pytest.raises(httpx.RemoteProtocolError):
        post(client, base, "go")
    assert post(client, base, "go").status_code == 200  # and the next request works
    assert proxy.snapshot().attempts["a1"].responses == 1


def test_an_unreachable_upstream_is_a_502(proxy, client):
    base = proxy.register("a1", "api", "http://127.0.0.1:9/v1")
    reply = post(client, base, "go")
    assert reply.status_code == 502 and reply.json()["error"]["type"] == "server_error"


# -- a hand-made upstream: exact bytes, chunk boundaries, compression, timing ---------------


COMPLETED = (b'event: response.completed\ndata: {"type":"response.completed","response":'
             b'{"id":"resp_1","usage":{"input_tokens":40,"input_tokens_details":'
             b'{"cached_tokens":8},"output_tokens":2,"output_tokens_details":'
             b'{"reasoning_tokens":1},"total_tokens":42}}}\n\n')
STREAM = (b'event: response.created\ndata: {"type":"response.created"}\n\n'
          b': a comment line\n\n' + COMPLETED)


class CannedUpstream:
    """Serves one canned SSE body in given pieces; ``gate`` holds back all but the first."""

    def __init__(self, pieces: list[bytes], headers: dict[str, str] | None = None) -> None:
        self.pieces = pieces
        self.headers = headers or {}
        self.gate = threading.Event()
        self.connections = 0  # TCP connections accepted
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                owner.connections += 1

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                for name, value in owner.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                for i, piece in enumerate(owner.pieces):
                    if i == 1:
                        owner.gate.wait(5)
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def raw_body(client: httpx.Client, url: str) -> tuple[httpx.Response, bytes]:
    with client.stream("POST", url, json={"stream": True}) as reply:
        return reply, b"".join(reply.iter_raw())


def test_bytes_pass_exactly_even_split_inside_the_usage_line(proxy, client):
    cut = STREAM.index(b"input_tokens")  # the usage event arrives in two pieces
    canned = CannedUpstream([STREAM[:cut], STREAM[cut:cut + 5], STREAM[cut + 5:]],
                            {"x-ratelimit-remaining-tokens": "9000", "x-request-id": "req_x"})
    canned.gate.set()
    try:
        base = proxy.register("a1", "api", canned.base_url)
        reply, raw = raw_body(client, f"{base}/responses")
        assert raw == STREAM
        assert reply.headers["x-request-id"] == "req_x"
        assert proxy.snapshot().attempts["a1"].usage == TokenUsage(40, 8, 2, 1)
        assert proxy.snapshot().rate_limits[canned.base_url] == {
            "x-ratelimit-remaining-tokens": "9000"}
    finally:
        canned.close()


def test_a_gzip_stream_passes_compressed_and_is_still_metered(proxy, client):
    packed = gzip.compress(STREAM)
    canned = CannedUpstream([packed[:30], packed[30:]], {"content-encoding": "gzip"})
    canned.gate.set()
    try:
        base = proxy.register("a1", "api", canned.base_url)
        reply, raw = raw_body(client, f"{base}/responses")
        assert raw == packed and reply.headers["content-encoding"] == "gzip"
        assert proxy.snapshot().attempts["a1"].usage.total == 42
    finally:
        canned.close()


def test_chunks_are_forwarded_as_they_arrive(proxy, client):
    first = b'event: response.created\ndata: {"type":"response.created"}\n\n'
    canned = CannedUpstream([first, COMPLETED])
    try:
        base = proxy.register("a1", "api", canned.base_url)
        with client.stream("POST", f"{base}/responses", json={"stream": True}) as reply:
            chunks = reply.iter_raw()
            # The upstream holds the rest back until we have the first event.
            assert next(chunks) == first
            assert proxy.snapshot().attempts["a1"].responses == 0
            canned.gate.set()
            assert b"".join(chunks) == COMPLETED
        assert proxy.snapshot().attempts["a1"].responses == 1
    finally:
        canned.close()


# -- pure pieces ---------------------------------------------------------------------------


def test_the_scanner_finds_usage_however_the_stream_is_split():
    for size in (1, 7, 64, len(STREAM)):
        scanner = SseUsageScanner()
        found = []
        for i in range(0, len(STREAM), size):
            found += scanner.feed(STREAM[i:i + size])
        assert found == [TokenUsage(40, 8, 2, 1)], size
    crlf = SseUsageScanner().feed(STREAM.replace(b"\n", b"\r\n"))
    assert crlf == [TokenUsage(40, 8, 2, 1)]
    assert SseUsageScanner("br").feed(STREAM) == []  # unreadable: passed on, not metered


def test_retry_after_forms():
    assert retry_after_seconds({"retry-after": "2"}) == 2
    assert retry_after_seconds({"retry-after": "1.5"}) == 1.5
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"},
                               now=1445412480.0) == 10
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_keep_alive_connections_to_the_upstream_are_reused(proxy, client):
    canned = CannedUpstream([STREAM])
    canned.gate.set()
    try:
        base = proxy.register("a1", "api", canned.base_url)
        for _ in range(5):
            assert raw_body(client, f"{base}/responses")[1] == STREAM
        assert canned.connections == 1  # one upstream connection served all five
        assert proxy.snapshot().attempts["a1"].responses == 5
    finally:
        canned.close()
