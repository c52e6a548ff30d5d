"""An HTTP server on a thread of its own that stops at once, open streams and all.

The metering proxy and the scripted model serve many Codex processes over keep-alive
connections, with SSE streams that last as long as a model's answer. ``stop`` cannot
wait for a handler reading a keep-alive connection or held in a long answer: it closes
the listener, shuts every open connection down (its handler then sees the client gone)
and joins the threads for ``STOP_JOIN_S`` at most. Standard library only.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

STOP_JOIN_S = 2.0  # how long ``stop`` waits for the serving threads, all together
POLL_S = 0.05  # how often the listener looks for ``stop``

_Server = TypeVar("_Server", bound="BackgroundServer")


class ClientGone(Exception):
    """The client closed its connection, or the server is stopping (``stop`` broke it)."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # Many Codex processes may connect at once; the default backlog of 5 refuses some.
    request_queue_size = 128

    def __init__(self, owner: BackgroundServer, address: tuple[str, int],
                 handler: type[TrackedHandler]) -> None:
        self.owner = owner
        super().__init__(address, handler)


class TrackedHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive, each connection known to its server until it closes."""

    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY on every accepted connection, as a real API's edge has it: the SSE
    # chunks are small separate writes, and with Nagle on a client stalls ~40 ms on a
    # delayed ACK per response, which spoils every latency measurement (make bench).
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the owner keeps its own record; request lines (queries too) stay off stderr


class BackgroundServer:
    """Serves ``handler`` on ``host:port`` (0: any free port) from a background thread."""

    def __init__(self, handler: type[TrackedHandler], host: str, port: int, name: str) -> None:
        self._handler = handler
        self._host = host
        self._port = port
        self._name = name  # "the scripted model server": in thread names and errors
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._stopping = threading.Event()  # set by ``stop``: long waits in handlers end
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self: _Server) -> _Server:
        """Bind and serve in a background thread; returns self."""
        if self._httpd is not None:
            raise RuntimeError(f"{self._name} is already started")
        self._stopping.clear()
        self._httpd = _HTTPServer(self, (self._host, self._port), self._handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": POLL_S},
            name=f"{self._name.removeprefix('the ').replace(' ', '-')}:{self.port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, break open connections, and wait (boundedly) for handlers to end."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            open_connections = dict(self._connections)
        for conn in open_connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)  # unblocks handlers waiting on keep-alive reads
            except OSError:
                pass
        deadline = time.monotonic() + STOP_JOIN_S
        for thread in [self._thread, *open_connections.values()]:
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self: _Server) -> _Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (the one asked for before start)."""
        return self._httpd.server_address[1] if self._httpd else self._port

    @property
    def started(self) -> bool:
        """Whether it serves now."""
        return self._httpd is not None

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections[conn] = threading.current_thread()
            else:
                self._connections.pop(conn, None)
