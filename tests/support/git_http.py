"""A real git smart-HTTP server for tests: ``git http-backend`` behind a tiny WSGI server.

Serves the bare repositories under a folder at ``http://127.0.0.1:<port>/<name>``,
asking for HTTP Basic auth with one token (401 without it), and records every
request's path and Authorization header, so that tests can see what git sent.
"""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - wsgiref's name
        pass


@dataclass
class GitHttpServer:
    """What the server saw; ``url(name)`` is a repository's URL."""

    root: Path
    port: int = 0
    seen: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Authorization)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


def _app(server: GitHttpServer, username: str, token: str) -> Any:
    expected = "Basic " + base64.b64encode(f"{username}:{token}".encode()).decode()

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        auth = environ.get("HTTP_AUTHORIZATION")
        server.seen.append((environ.get("PATH_INFO", ""), auth))
        if auth != expected:
            start_response("401 Unauthorized",
                           [("WWW-Authenticate", 'Basic realm="git"'),
                            ("Content-Type", "text/plain")])
            return [b"authentication required\n"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        cgi_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REMOTE_USER": username,  # receive-pack (push) needs an authenticated user
            "REQUEST_METHOD": environ["REQUEST_METHOD"],
            "PATH_INFO": environ.get("PATH_INFO", ""),
            "QUERY_STRING": environ.get("QUERY_STRING", ""),
            "CONTENT_TYPE": environ.get("CONTENT_TYPE", ""),
            "CONTENT_LENGTH": str(len(body)),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
        }
        if environ.get("HTTP_CONTENT_ENCODING"):
            cgi_env["HTTP_CONTENT_ENCODING"] = environ["HTTP_CONTENT_ENCODING"]
        if environ.get("HTTP_GIT_PROTOCOL"):
            cgi_env["GIT_PROTOCOL"] = environ["HTTP_GIT_PROTOCOL"]
        out = subprocess.run(["git", "http-backend"], input=body, env=cgi_env,
                             capture_output=True, check=False).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status = "200 OK"
        headers = []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = value.strip()
            elif name:
                headers.append((name, value.strip()))
        start_response(status, headers)
        return [payload]

    return app


@contextmanager
def git_http_server(root: Path, token: str, username: str = "x-access-token"
                    ) -> Iterator[GitHttpServer]:
    """Serve the bare repositories in ``root`` on 127.0.0.1, behind ``token``."""
    server = GitHttpServer(root=Path(root))
    httpd: WSGIServer = make_server("127.0.0.1", 0, _app(server, username, token),
                                    handler_class=_QuietHandler)
    server.port = httpd.server_port
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
