"""The metering proxy: between a sprint's Codex agents and their model provider.

One ``MeteringProxy`` runs on ``127.0.0.1:0`` in background threads for the length
of a sprint. Each attempt is registered with its upstream (the provider's base URL)
and gets its own URL prefix, ``http://127.0.0.1:P/a/<attempt-id>`` followed by the
upstream's path (``…/a/api-1/v1`` for ``https://api.openai.com/v1``): the prefix
says whose request it is, the rest of the path goes upstream as it came.

An attempt on another machine (a ``placement: pool`` worker) gets a route of its own
for each run, ``/a/<attempt-id>~<token>`` under the address the workers reach
(``public_url``), closed when that run ends: an agent its killed worker left behind
is refused from then on, while what it spent stays counted for the attempt.

Requests and responses pass unchanged: every header but the hop-by-hop ones (so
``Authorization`` goes through; ``Host`` names the upstream), the request body as
read, the response body chunk by chunk as it arrives (a streamed response is never
held back; re-framed in HTTP/1.1 chunks when the upstream chunked it). Nothing of a
request body or a credential is stored or logged: the log says attempt, method,
path without its query, status. On the way through the proxy reads:

- ``response.completed`` SSE events (only ``data:`` lines that mention it are
  parsed as JSON) for their ``usage``, counted in the ``Ledger`` per attempt, task
  and sprint before the chunk is passed on, so the next request already sees it;
- ``retry-after`` and rate-limit headers, kept as the latest seen per upstream.

And it acts:

- an attempt whose tokens reached its ``max_tokens``, or any attempt once the
  sprint's ``limits.tokens`` is spent, gets ``400`` with error code
  ``invalid_prompt`` and the message ``over budget: 3,300 of 2,500 tokens``.
  Codex 0.169 does not retry that and fails the turn with exactly that message,
  exit 1 (a plain 400 shows its raw JSON; ``insufficient_quota`` shows Codex's own
  "Quota exceeded" text; a 403 is retried five times; tried against the binary);
- a ``429`` carrying ``retry-after`` (or ``retry-after-ms``) holds every request to
  that upstream, from any attempt, until it runs out; ``on_backoff`` hears of
  each new hold once. The 429 itself reaches the agent unchanged;
- a WebSocket upgrade (Codex's built-in ``openai`` provider tries
  ``GET …/responses`` as a WebSocket first) gets ``426 Upgrade Required``: Codex
  then falls back to HTTPS at once. Any other error status makes it retry the
  WebSocket six times, about 6 s per run; passing WebSocket frames through would
  hide the usage from the meter.

Why the standard library (``ThreadingHTTPServer`` and ``http.client``): the proxy
is a background thread inside a Prefect flow run, so a blocking server needs no
event loop of its own (uvicorn would want one, and its shutdown from another
thread is awkward); a thread per agent connection is plenty for tens of agents;
``http.client`` hands over the raw body (``read1``) as it arrives, with no decoding
or re-chunking in between, which is what byte-identical streaming needs. Upstream
connections are kept alive in a small pool per upstream, Nagle is off on both
sides, and per chunk the only extra work is finding line ends, so a request
through the proxy costs a loopback hop and little else: measured at a median of
about 1 to 3 ms per streamed response on a loaded two-core machine, against a
Nagle-free upstream (``tests/e2e/test_metering_codex.py`` prints it). An upstream
that writes small chunks with Nagle on (the scripted server does) stalls ~40 ms on
a delayed ACK on whichever connection reads it, direct or through the proxy.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import socket
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote, unquote, urlsplit

from agentfleet.metering.ledger import Ledger, LedgerSnapshot, Refusal, TokenUsage, UsageEvent
from agentfleet.metering.start_gate import StartGates
from agentfleet.serving import BackgroundServer, ClientGone, TrackedHandler

log = logging.getLogger("agentfleet.metering")

ROUTE_PREFIX = "/a/"
# Hop-by-hop headers (RFC 9110 7.6.1) are the proxy's own business on each side.
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate",
    "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade",
})
_READ_SIZE = 64 * 1024
_MAX_LINE = 64 * 1024 * 1024  # an SSE line longer than this is not metered, only passed on
_POOL_SIZE = 32
_WAIT_SLICE_S = 0.25
_COMPLETED = b"response.completed"


@dataclass(frozen=True)
class BackoffEvent:
    """A 429 with ``retry-after`` started holding every request to ``upstream``."""

    upstream: str
    seconds: float
    attempt_id: str  # whose request got the 429

    @property
    def message(self) -> str:
        """One log line for the whole hold."""
        return (f"{self.upstream} answered 429 to attempt {self.attempt_id}: holding every "
                f"agent's requests to it for {self.seconds:g}s")


OnUsage = Callable[[UsageEvent], None]
OnBackoff = Callable[[BackoffEvent], None]
OnRefusal = Callable[[str, Refusal], None]


# -- pure helpers --------------------------------------------------------------------------


def retry_after_seconds(headers: Any, now: float | None = None) -> float | None:
    """Seconds a ``retry-after-ms`` / ``retry-after`` header asks to wait; None if absent."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def normalize_upstream(upstream: str) -> str:
    """``https://API.openai.com/v1/`` -> ``https://api.openai.com/v1``; checks the scheme."""
    parts = urlsplit(upstream.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"an upstream is an http(s) base URL, not {upstream!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"an upstream base URL has no query or fragment: {upstream!r}")
    netloc = parts.hostname.lower() + (f":{parts.port}" if parts.port else "")
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"


class SseUsageScanner:
    """Finds ``response.completed`` usage in an SSE byte stream fed in arbitrary pieces.

    Only the line in progress is kept; a line is parsed as JSON only when it is a
    ``data:`` line mentioning ``response.completed``.
    """

    def __init__(self, content_encoding: str | None = None) -> None:
        encoding = (content_encoding or "identity").strip().lower()
        # gzip or zlib-wrapped deflate: decoded for reading only; the bytes pass as they came.
        self._inflate = zlib.decompressobj(47) if encoding in ("gzip", "deflate") else None
        self.readable = encoding in ("identity", "", "gzip", "deflate")
        self._pieces: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> list[TokenUsage]:
        """The usage of every ``response.completed`` event that ends in ``data``."""
        if not self.readable or not data:
            return []
        if self._inflate is not None:
            try:
                data = self._inflate.decompress(data)
            except zlib.error:
                self.readable = False
                return []
        found: list[TokenUsage] = []
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                if start < len(data) and self._size <= _MAX_LINE:
                    self._pieces.append(data[start:])
                    self._size += len(data) - start
                return found
            if self._pieces:
                self._pieces.append(data[start:end])
                line = b"".join(self._pieces) if self._size <= _MAX_LINE else b""
                self._pieces, self._size = [], 0
            else:
                line = data[start:end]
            start = end + 1
            if line.startswith(b"data:") and _COMPLETED in line:
                usage = _completed_usage(line[5:])
                if usage is not None:
                    found.append(usage)


def _completed_usage(payload: bytes) -> TokenUsage | None:
    try:
        event = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("type") != "response.completed":
        return None
    response = event.get("response")
    usage = response.get("usage") if isinstance(response, dict) else None
    return TokenUsage.from_api(usage) if isinstance(usage, dict) else None


def error_body(message: str, code: str, kind: str = "invalid_request_error") -> bytes:
    """An OpenAI-style ``{"error": ...}`` body."""
    return json.dumps(
        {"error": {"message": message, "type": kind, "param": None, "code": code}}
    ).encode()


# -- upstream connections ------------------------------------------------------------------


class _Pool:
    """Idle keep-alive connections per upstream origin."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}

    def get(self, origin: tuple[str, str, int]) -> tuple[http.client.HTTPConnection, bool]:
        """A connection to ``origin`` and whether it was reused from the pool."""
        with self._lock:
            idle = self._idle.get(origin)
            if idle:
                return idle.pop(), True
        scheme, host, port = origin
        cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        return cls(host, port, timeout=self._timeout_s), False

    def put(self, origin: tuple[str, str, int], conn: http.client.HTTPConnection) -> None:
        """Keep a connection whose response was read to the end."""
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < _POOL_SIZE:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


def _origin(upstream: str) -> tuple[str, str, int]:
    parts = urlsplit(upstream)
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname or "", parts.port or default


# -- the server ----------------------------------------------------------------------------


class _Handler(TrackedHandler):
    @property
    def owner(self) -> MeteringProxy:
        return cast(MeteringProxy, self.server.owner)

    def do_POST(self) -> None:
        self.owner._handle(self)

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_POST

    def read_body(self) -> bytes:
        """The request body, sized by content-length or chunked (de-chunked)."""
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        """A complete response made by the proxy itself."""
        self.send_response_only(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            self.close_connection = True

    def write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
        except OSError as exc:
            raise ClientGone() from exc


class MeteringProxy(BackgroundServer):
    """Forward and meter the model requests of a sprint's agents; see the module docstring.

    ``register`` an attempt, point its Codex run at the URL it returns (``codex_route``),
    read ``snapshot()`` or listen with ``on_usage``; ``stop()`` at the end of the sprint.
    The listeners (``on_usage``, ``on_backoff``, ``on_refusal``; settable attributes) run
    on the proxy's threads, after the bytes they describe went on (a refusal: before);
    an exception in one is logged and ignored.
    """

    def __init__(
        self,
        ledger: Ledger | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        on_usage: OnUsage | None = None,
        on_backoff: OnBackoff | None = None,
        on_refusal: OnRefusal | None = None,
        upstream_timeout_s: float = 600.0,
        public_url: str | None = None,
    ) -> None:
        super().__init__(_Handler, host, port, "the metering proxy")
        self.ledger = ledger if ledger is not None else Ledger()
        # Where other machines reach it (``http://sprint-host``: the bound port is added).
        self._public_url = public_url.rstrip("/") if public_url else None
        self._routes: dict[str, str] = {}  # route -> attempt id (runs elsewhere)
        self._closed: set[str] = set()
        self._remote: set[str] = set()  # attempts reached by their routes only
        self.on_usage = on_usage
        self.on_backoff = on_backoff
        self.on_refusal = on_refusal
        # Longer than Codex's own stream idle timeout (300 s): Codex gives up first.
        self._pool = _Pool(upstream_timeout_s)
        # Attempts started ahead of their agent slot: their requests wait here (start_gate.py).
        self.start_gates = StartGates()

    def stop(self) -> None:
        """Stop serving, break open connections, then close the upstream connections."""
        super().stop()
        self._pool.close()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (a wildcard bind is reached on loopback from here)."""
        if not self.started:
            raise RuntimeError("start the metering proxy first")
        host = "127.0.0.1" if self._host in ("", "0.0.0.0") else self._host
        host = "[::1]" if host == "::" else f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def public_url(self) -> str:
        """Where agents on other machines reach it: ``public_url`` (with the bound port
        when it names none), else ``url``."""
        if self._public_url is None:
            return self.url
        if urlsplit(self._public_url).port is not None:
            return self._public_url
        parts = urlsplit(self._public_url)
        return f"{parts.scheme}://{parts.netloc}:{self.port}{parts.path}"

    # -- attempts ----------------------------------------------------------------------

    def register(self, attempt_id: str, task_id: str, upstream: str,
                 max_tokens: int | None = None, *, route: str | None = None) -> str:
        """Make an attempt known; returns the base URL its Codex run must use.

        ``route``: a route of its own for one run elsewhere (under ``public_url``), until
        ``close(route)``; without it the attempt's id is its route, under ``url``.
        """
        if not attempt_id:
            raise ValueError("an attempt id is not empty")
        upstream = normalize_upstream(upstream)
        self.ledger.register(attempt_id, task_id, upstream, max_tokens)
        if route is None:
            return self.base_url_for(attempt_id, upstream)
        with self._lock:
            if route in self._closed or self._routes.get(route, attempt_id) != attempt_id:
                raise ValueError(f"route {route!r} is taken")
            self._routes[route] = attempt_id
            self._remote.add(attempt_id)
        path = urlsplit(upstream).path
        return f"{self.public_url}{ROUTE_PREFIX}{quote(route, safe='')}{path}"

    def close(self, route: str) -> None:
        """End a route made by ``register(route=...)``: its requests are refused from now
        on (not retried by Codex); what its attempt spent stays counted."""
        with self._lock:
            if self._routes.pop(route, None) is not None:
                self._closed.add(route)

    def base_url_for(self, attempt_id: str, upstream: str) -> str:
        """``http://127.0.0.1:P/a/<attempt-id>`` plus the upstream's path."""
        path = urlsplit(normalize_upstream(upstream)).path
        return f"{self.url}{ROUTE_PREFIX}{quote(attempt_id, safe='')}{path}"

    def _attempt_of(self, route: str) -> tuple[str | None, str | None]:
        """The attempt a route serves, or why it serves none."""
        with self._lock:
            if route in self._routes:
                return self._routes[route], None
            if route in self._closed:
                return None, f"attempt route {route!r} is closed (its run ended)"
            remote = route in self._remote
        if remote or self.ledger.upstream_of(route) is None:
            return None, f"unknown attempt {route!r}"
        return route, None

    def snapshot(self) -> LedgerSnapshot:
        """Tokens per attempt, task and sprint, budgets, rate-limit headers, holds."""
        return self.ledger.snapshot()

    # -- bookkeeping -------------------------------------------------------------------

    def _notify(self, callback: Callable[..., None] | None, *args: object) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:  # a listener's bug must not break an agent's stream
            log.exception("metering proxy: a %s callback failed",
                          getattr(callback, "__name__", "listener"))

    # -- one request ---------------------------------------------------------------------

    def _handle(self, h: _Handler) -> None:
        route, rest = _split_route(h.path)
        try:
            body = h.read_body()
        except (OSError, ValueError):
            h.close_connection = True
            return
        attempt_id, why = self._attempt_of(route) if route else (None, "no /a/<attempt> route")
        upstream = self.ledger.upstream_of(attempt_id) if attempt_id is not None else None
        if attempt_id is None or upstream is None:
            # Not retried by Codex: a mistake in routing must not loop.
            self._finish_log(route, h, 400)
            h.answer(400, error_body(f"metering proxy: {why}", "invalid_prompt"))
            return
        if "websocket" in (h.headers.get("upgrade") or "").lower():
            self._finish_log(attempt_id, h, 426)
            h.answer(426, error_body("metering proxy: WebSocket is not supported, use HTTPS",
                                     "upgrade_required"), {"upgrade": "HTTP/1.1"})
            return
        if not self.start_gates.wait(attempt_id, self._stopping):
            h.close_connection = True
            return
        if self._refused(h, attempt_id):
            return
        if self.ledger.wait_time(upstream) > 0:
            if not self._wait_for_hold(upstream):
                h.close_connection = True
                return
            # Others spent while this one waited: the sprint's budget may be gone now.
            if self._refused(h, attempt_id):
                return
        self._forward(h, attempt_id, upstream, rest, body)

    def _refused(self, h: _Handler, attempt_id: str) -> bool:
        """Answer with the budget error if the attempt may not spend more; True if so."""
        refusal = self.ledger.refusal(attempt_id)
        if refusal is None:
            return False
        log.info("metering proxy: attempt %s refused: %s", attempt_id, refusal.message)
        self._finish_log(attempt_id, h, 400)
        # Heard before the agent sees it: its attempt is over once the answer lands.
        self._notify(self.on_refusal, attempt_id, refusal)
        h.answer(400, error_body(refusal.message, "invalid_prompt"))
        return True

    def _wait_for_hold(self, upstream: str) -> bool:
        """Wait while the upstream is held; False when the proxy stops meanwhile."""
        while True:
            wait = self.ledger.wait_time(upstream)
            if wait <= 0:
                return True
            if self._stopping.wait(min(wait, _WAIT_SLICE_S)):
                return False

    def _send_upstream(
        self, h: _Handler, upstream: str, rest: str, body: bytes
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        parts = urlsplit(upstream)
        origin = _origin(upstream)
        headers = [(k, v) for k, v in h.headers.items()
                   if k.lower() not in _HOP_BY_HOP and k.lower() not in ("host", "content-length")]
        for _ in range(2):
            conn, reused = self._pool.get(origin)
            try:
                conn.putrequest(h.command, rest, skip_host=True, skip_accept_encoding=True)
                conn.putheader("Host", parts.netloc)
                for name, value in headers:
                    conn.putheader(name, value)
                if body or h.command in ("POST", "PUT", "PATCH"):
                    conn.putheader("Content-Length", str(len(body)))
                # Headers and body in one send (http.client joins them; it sets TCP_NODELAY).
                conn.endheaders(body or None)
                return conn, conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                if not reused:
                    raise
                # A pooled connection the upstream had closed while idle: once more, fresh.
            except BaseException:
                conn.close()
                raise
        raise http.client.RemoteDisconnected("upstream closed the connection")

    def _forward(self, h: _Handler, attempt_id: str, upstream: str, rest: str,
                 body: bytes) -> None:
        try:
            conn, resp = self._send_upstream(h, upstream, rest, body)
        except (OSError, http.client.HTTPException) as exc:
            log.warning("metering proxy: %s unreachable for attempt %s: %s",
                        upstream, attempt_id, type(exc).__name__)
            self._finish_log(attempt_id, h, 502)
            h.answer(502, error_body(f"metering proxy: upstream {upstream} unreachable: "
                                     f"{type(exc).__name__}", "bad_gateway", "server_error"))
            return
        self.ledger.note_headers(upstream, resp.headers)
        backoff = None
        if resp.status == 429:
            seconds = retry_after_seconds(resp.headers)
            if seconds is not None and seconds > 0 and self.ledger.hold(upstream, seconds):
                backoff = BackoffEvent(upstream, seconds, attempt_id)
                log.warning("metering proxy: %s", backoff.message)
        events: list[UsageEvent] = []
        complete = False
        try:
            complete = self._relay(h, resp, attempt_id, events)
        finally:
            if complete and not resp.will_close:
                self._pool.put(_origin(upstream), conn)
            else:
                conn.close()
            self._finish_log(attempt_id, h, resp.status)
            # Listeners hear of it after the bytes went on: they never slow a stream down.
            if backoff is not None:
                self._notify(self.on_backoff, backoff)
            for event in events:
                self._notify(self.on_usage, event)

    def _relay(self, h: _Handler, resp: http.client.HTTPResponse, attempt_id: str,
               events: list[UsageEvent]) -> bool:
        """Pass status, headers and body on; True when the upstream body was read whole."""
        no_body = h.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
        chunked = not no_body and resp.getheader("content-length") is None
        scanner = SseUsageScanner(resp.getheader("content-encoding"))
        try:
            h.send_response_only(resp.status, resp.reason)
            for name, value in resp.getheaders():
                if name.lower() not in _HOP_BY_HOP:
                    h.send_header(name, value)
            if chunked:
                h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()  # one write: status line and headers
            while not no_body:
                # An upstream that cuts its stream raises IncompleteRead: we cut ours too.
                data = resp.read1(_READ_SIZE)
                if not data:
                    break
                for usage in scanner.feed(data):
                    # Counted before the chunk goes on: the agent's next request sees it.
                    event = self.ledger.record_usage(attempt_id, usage)
                    if event is not None:
                        events.append(event)
                h.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            if chunked:
                h.write(b"0\r\n\r\n")
            # A sized body read to its end is not closed by read1(): close it, or the
            # connection is not reusable (ResponseNotReady on its next request).
            resp.close()
            return True
        except (ClientGone, OSError, http.client.HTTPException):
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return False

    def _finish_log(self, attempt_id: str | None, h: _Handler, status: int) -> None:
        path = h.path.split("?", 1)[0]  # a query may carry a key; never logged
        log.debug("metering proxy: attempt %s %s %s -> %d", attempt_id, h.command, path, status)


def _split_route(path: str) -> tuple[str | None, str]:
    """``/a/<quoted id>/v1/responses?x`` -> (id, ``/v1/responses?x``)."""
    if not path.startswith(ROUTE_PREFIX):
        return None, path
    quoted, slash, rest = path[len(ROUTE_PREFIX):].partition("/")
    attempt_id = unquote(quoted.split("?", 1)[0])
    return (attempt_id or None), (slash + rest if slash else "/")
