"""A scripted OpenAI Responses-API server on 127.0.0.1 for the real Codex CLI.

``POST /v1/responses`` (``stream: true``) is answered from a ``Script``: the
user's prompt picks a rule, the thread's position in the conversation picks the
response, and the rule's faults fail its first requests. Anything else is a 404.

One thread per connection (``agentfleet.serving``); every wait is cut short
by ``stop()``, which also breaks open connections, so it never hangs.
"""

from __future__ import annotations

import gzip
import json
import select
import socket
import threading
import time
from pathlib import Path
from typing import Any, ClassVar, cast

from pydantic import BaseModel, Field

from agentfleet.serving import POLL_S, BackgroundServer, ClientGone, TrackedHandler
from agentfleet.testing import sse
from agentfleet.testing.script import Fault, Rule, Script

# User messages Codex adds around the prompt; they are context, not the prompt.
_CONTEXT_PREFIXES = (
    "<environment_context>",
    "# AGENTS.md instructions",
    "<user_instructions>",
    "<user_shell_command>",
    "<turn_aborted>",
    "<skill>",
)


class RecordedRequest(BaseModel):
    """One request the server answered, as tests inspect it."""

    index: int = Field(description="Arrival order, from 0.")
    method: str = "POST"
    path: str = "/v1/responses"
    rule: str | None = Field(default=None, description="The rule that answered, if any.")
    thread_id: str | None = Field(default=None, description="Codex's thread id (prompt_cache_key).")
    prompt: str = Field(default="", description="The user's prompt text (last user message).")
    started_at: float
    finished_at: float | None = None
    status: int = 0
    fault: str | None = Field(default=None, description="The fault kind that answered, if any.")
    position: int | None = Field(
        default=None, description="The response index served in the thread's conversation."
    )
    completed: bool = Field(
        default=False, description="The whole response (response.completed) was sent."
    )
    authorization: str | None = None
    body: dict[str, Any] = Field(default_factory=dict)


def prompt_of(body: dict[str, Any]) -> str:
    """The user's prompt: the text of the last user message that is not injected context."""
    items = body.get("input")
    if isinstance(items, str):
        return items
    for item in reversed(items if isinstance(items, list) else []):
        if not isinstance(item, dict) or item.get("role") != "user":
            continue
        if item.get("type", "message") != "message":
            continue
        content = item.get("content")
        if isinstance(content, str):
            text = content
        else:
            text = "".join(
                part.get("text", "")
                for part in content or []
                if isinstance(part, dict) and part.get("type") in ("input_text", "text")
            )
        if text.lstrip().startswith(_CONTEXT_PREFIXES):
            continue
        return text
    return ""


class _Handler(TrackedHandler):
    """Keep-alive and chunked SSE, like the real API."""

    @property
    def owner(self) -> ScriptedModelServer:
        return cast(ScriptedModelServer, self.server.owner)

    def do_POST(self) -> None:
        self.owner._serve(self)

    def do_GET(self) -> None:
        self.owner._not_found(self)

    do_PUT = do_DELETE = do_PATCH = do_GET

    # -- wire helpers -------------------------------------------------------

    def read_body(self) -> bytes:
        """The request body, whether sized by content-length or chunked."""
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            data = b"".join(parts)
        else:
            data = self.rfile.read(int(self.headers.get("content-length") or 0))
        if (self.headers.get("content-encoding") or "").lower() == "gzip":
            data = gzip.decompress(data)
        return data

    def send_json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
                  ) -> None:
        """A complete JSON response."""
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.send_header("x-request-id", sse.new_id("req"))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def start_sse(self) -> None:
        """Headers of a 200 event stream with chunked body."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("x-request-id", sse.new_id("req"))
        self.end_headers()
        self.wfile.flush()

    def send_chunk(self, data: bytes) -> None:
        """One chunk of the body; a broken pipe means the client went away."""
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        except OSError as exc:
            raise ClientGone() from exc

    def end_chunks(self, last: bytes = b"") -> None:
        """The final data (if any) and the terminating chunk in one write."""
        tail = (b"%x\r\n%s\r\n" % (len(last), last) if last else b"") + b"0\r\n\r\n"
        try:
            self.wfile.write(tail)
            self.wfile.flush()
        except OSError as exc:
            raise ClientGone() from exc

    def break_connection(self) -> None:
        """Close without finishing the body: the client sees a broken stream."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def client_gone(self) -> bool:
        """Whether the peer has closed its end (readable with nothing to read)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True


class ScriptedModelServer(BackgroundServer):
    """The scripted Responses-API server; start it, point Codex at it, read ``requests``."""

    env_key: ClassVar[str] = "AGENTFLEET_SCRIPTED_KEY"
    api_key: ClassVar[str] = "scripted-not-a-real-key"

    def __init__(
        self,
        script: Script,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_path: Path | None = None,
        log_bodies: bool = False,
    ) -> None:
        super().__init__(_Handler, host, port, "the scripted model server")
        self._script = script
        self._log_path = log_path
        self._log_bodies = log_bodies
        self._records: list[RecordedRequest] = []
        self._since = 0  # the first record under the script in force
        self._attempts: dict[str, int] = {}  # rule name -> requests so far (for faults)
        self._positions: dict[tuple[str | None, str], int] = {}  # (thread, rule) -> served
        self._latches: dict[str, threading.Event] = {}  # Response.after

    # -- public state -----------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The provider ``base_url`` Codex needs, ending in ``/v1``."""
        if not self.started:
            raise RuntimeError("start the scripted model server first")
        return f"http://{self._host}:{self.port}/v1"

    @property
    def script(self) -> Script:
        """The script in force."""
        return self._script

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request so far, in arrival order (in-flight ones included)."""
        with self._lock:
            return [r.model_copy() for r in self._records]

    def requests_for(self, rule_name: str) -> list[RecordedRequest]:
        """The requests answered by one rule."""
        return [r for r in self.requests if r.rule == rule_name]

    def unserved(self) -> list[str]:
        """What the script in force holds that no request has had yet: each rule's faults,
        and each of its responses (sent whole; a response that is a fault, reached)."""
        with self._lock:
            script, records = self._script, self._records[self._since:]
        missing: list[str] = []
        for rule in script.rules:
            mine = [r for r in records if r.rule == rule.name]
            faults = sum(1 for r in mine if r.fault is not None and r.position is None)
            if faults < rule.fault_count:
                missing.append(f"rule '{rule.name}': {rule.fault_count - faults} of its "
                               f"{rule.fault_count} faults answered no request")
            reached = {r.position for r in mine if r.completed or r.fault is not None}
            missing.extend(
                f"rule '{rule.name}': response {i + 1} of {len(rule.responses)} never sent"
                for i in range(len(rule.responses)) if i not in reached
            )
        return missing

    def assert_complete(self) -> None:
        """Fail (AssertionError) when a step of the script in force was never requested: a
        test whose agent stopped short would otherwise pass on what it did not do."""
        missing = self.unserved()
        if missing:  # raised, not asserted: python -O must not turn the check off
            raise AssertionError("the scripted model was not asked for: " + "; ".join(missing))

    def set_script(self, script: Script) -> None:
        """Replace the script; fault counts and conversation positions start again."""
        with self._lock:
            self._script = script
            self._attempts.clear()
            self._positions.clear()
            self._since = len(self._records)

    def add_rule(self, rule: Rule) -> None:
        """Append a rule to the script in force (counts are kept)."""
        with self._lock:
            # Built anew so the script's checks (unique names) run before it is in force.
            self._script = Script(rules=[*self._script.rules, rule], default=self._script.default)

    def open_latch(self, name: str) -> None:
        """Let go the responses held ``after`` this latch, and those that reach it later."""
        self._latch(name).set()

    def _latch(self, name: str) -> threading.Event:
        with self._lock:
            return self._latches.setdefault(name, threading.Event())

    def write_codex_home(
        self,
        path: Path,
        *,
        model: str = "gpt-5.5",
        request_max_retries: int | None = None,
        stream_max_retries: int | None = None,
        stream_idle_timeout_ms: int | None = None,
    ) -> Path:
        """Write ``path/config.toml`` pointing Codex at this server; returns ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        lines = [
            f"model = {json.dumps(model)}",
            'model_provider = "scripted"',
            "",
            "[model_providers.scripted]",
            'name = "scripted"',
            f"base_url = {json.dumps(self.base_url)}",
            'wire_api = "responses"',
            f"env_key = {json.dumps(self.env_key)}",
        ]
        for key, value in (
            ("request_max_retries", request_max_retries),
            ("stream_max_retries", stream_max_retries),
            ("stream_idle_timeout_ms", stream_idle_timeout_ms),
        ):
            if value is not None:
                lines.append(f"{key} = {int(value)}")
        (path / "config.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def agent_env(self, codex_home: Path) -> dict[str, str]:
        """The environment variables a Codex process needs to use this server."""
        return {"CODEX_HOME": str(codex_home), self.env_key: self.api_key}

    def _wait(self, seconds: float) -> None:
        """Sleep, but leave at once when the server stops."""
        if self._stopping.wait(seconds):
            raise ClientGone()

    # -- request handling -----------------------------------------------------------

    def _record(self, handler: _Handler, **fields: Any) -> RecordedRequest:
        with self._lock:
            record = RecordedRequest(
                index=len(self._records),
                method=handler.command,
                path=handler.path,
                started_at=time.time(),
                authorization=handler.headers.get("authorization"),
                **fields,
            )
            self._records.append(record)
            return record

    def _update(self, record: RecordedRequest, **fields: Any) -> None:
        # Under the lock, so a `requests` snapshot never sees a half-updated record.
        with self._lock:
            for name, value in fields.items():
                setattr(record, name, value)

    def _finish(self, record: RecordedRequest, status: int, **fields: Any) -> None:
        # Called before the last bytes go out: a client (or a test reading `requests` as soon
        # as Codex exits) must never see an answered request still unfinished in the record.
        self._update(record, status=status, finished_at=time.time(), **fields)

    def _log(self, record: RecordedRequest) -> None:
        if self._log_path is None:
            return
        with self._lock:
            line = record.model_dump_json(exclude=None if self._log_bodies else {"body"})
            with self._log_path.open("a", encoding="utf-8") as log:
                log.write(line + "\n")

    def _not_found(self, handler: _Handler) -> None:
        if handler.command == "POST":
            try:
                handler.read_body()  # keep the connection usable
            except (OSError, ValueError):
                handler.close_connection = True
        record = self._record(handler)
        body = sse.error_body(404, f"scripted model: no route {handler.command} {handler.path}")
        body["error"]["code"] = "not_found"  # type: ignore[index]
        self._finish(record, 404)
        try:
            handler.send_json(404, body)
        finally:
            self._log(record)

    def _serve(self, handler: _Handler) -> None:
        if handler.path.split("?")[0].rstrip("/") != "/v1/responses":
            self._not_found(handler)
            return
        try:
            body = json.loads(handler.read_body() or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the request body is not a JSON object")
        except (ValueError, OSError) as exc:
            record = self._record(handler)
            self._finish(record, 400)
            message = f"scripted model: bad request body: {exc}"
            try:
                handler.send_json(400, sse.error_body(400, message))
            finally:
                self._log(record)
            return
        prompt = prompt_of(body)
        thread_id = body.get("prompt_cache_key")
        with self._lock:
            rule = self._script.rule_for(prompt)
        record = self._record(handler, rule=rule.name if rule else None, thread_id=thread_id,
                              prompt=prompt, body=body)
        try:
            if rule is None:
                message = f"scripted model: no rule matches the prompt {prompt[:80]!r}"
                self._finish(record, 400)
                handler.send_json(400, sse.error_body(400, message))
                return
            with self._lock:
                attempt = self._attempts.get(rule.name, 0)
                self._attempts[rule.name] = attempt + 1
            fault = rule.fault_for(attempt)
            model = str(body.get("model") or "scripted")
            if fault is not None:
                self._answer_fault(handler, record, fault, model)
            else:
                self._answer(handler, record, rule, model)
        except ClientGone:
            handler.close_connection = True
            if record.finished_at is None:
                self._finish(record, record.status or 200)
        except OSError:
            # The client vanished while we wrote an error body: nothing left to tell it.
            handler.close_connection = True
            if record.finished_at is None:
                self._finish(record, record.status or 0)
        except Exception:
            # A bug here must still leave a finished record; socketserver prints the trace.
            handler.close_connection = True
            if record.finished_at is None:
                self._finish(record, 500)
            raise
        finally:
            self._log(record)

    def _answer_fault(self, handler: _Handler, record: RecordedRequest, fault: Fault, model: str
                      ) -> None:
        self._update(record, fault=fault.kind)
        if fault.kind == "http":
            headers = {}
            if fault.retry_after is not None:
                headers["retry-after"] = str(fault.retry_after)
            self._finish(record, fault.status)
            handler.send_json(fault.status, fault.body or sse.error_body(fault.status), headers)
            return
        stream = sse.EventStream(model)
        self._update(record, status=200)
        handler.start_sse()
        if fault.kind == "cut":
            events = [*stream.created(), stream.event(
                "response.output_item.added", output_index=0,
                item={"type": "message", "id": sse.new_id("msg"), "role": "assistant",
                      "status": "in_progress", "content": []})]
            for event in events[: fault.events_before_cut]:
                handler.send_chunk(sse.frame(event))
            self._finish(record, 200)
            handler.break_connection()
        elif fault.kind == "silent":
            deadline = None if fault.hold_s is None else time.monotonic() + fault.hold_s
            try:
                while not handler.client_gone():
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                    self._wait(POLL_S)
            finally:
                self._finish(record, 200)
                handler.break_connection()
        else:  # context_window / failed: a 200 stream whose response fails
            if fault.kind == "context_window":
                code, message = "context_length_exceeded", sse.CONTEXT_WINDOW_MESSAGE
            else:
                code = fault.code or "server_error"
                message = fault.message or "The model failed to produce a response."
            for event in stream.created():
                handler.send_chunk(sse.frame(event))
            self._finish(record, 200)
            handler.end_chunks(sse.frame(stream.failed(code, message)))

    def _answer(self, handler: _Handler, record: RecordedRequest, rule: Rule, model: str) -> None:
        key = (record.thread_id, rule.name)
        with self._lock:
            position = self._positions.get(key, 0)
        response = rule.response_for(position)
        if response.fault is not None:
            # Mid-conversation: the thread stays at this position, like a failed request.
            self._update(record, position=position)
            self._answer_fault(handler, record, response.fault, model)
            return
        self._update(record, position=position, status=200)
        stream = sse.EventStream(model)
        handler.start_sse()
        for event in stream.created():
            handler.send_chunk(sse.frame(event))
        if response.delay_s:
            self._wait(response.delay_s)
        if response.after is not None:
            latch = self._latch(response.after)
            while not latch.wait(POLL_S):
                self._wait(0)  # ClientGone once the server stops
        output = []
        for item, events in stream.items(response):
            output.append(item)
            handler.send_chunk(b"".join(sse.frame(e) for e in events))
        final = sse.frame(stream.completed(output, rule.usage_for(response)))
        # Count the response as served before the client can see it complete: Codex may
        # send the thread's next request the moment the stream ends. Undone if it fails.
        with self._lock:
            self._positions[key] = position + 1
        self._finish(record, 200, completed=True)
        try:
            handler.end_chunks(final)
        except ClientGone:
            with self._lock:
                if self._positions.get(key) == position + 1:
                    self._positions[key] = position
            self._update(record, completed=False, finished_at=time.time())
            raise

