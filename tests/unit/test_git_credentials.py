"""A repository token reaches git as a header through its environment, for its host only."""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agentfleet.git_credentials import (
    credential_env,
    credential_secrets,
    is_url,
    origin,
    redact_url,
    url_problem,
)
from agentfleet.masking import Masker
from tests.conftest import GIT_ENV

TOKEN = "ghp_unit0test0token0value"


def git_env(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **GIT_ENV, **extra}


def urlmatch(url: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["git", "config", "--get-urlmatch", "http.extraHeader", url],
        capture_output=True, text=True, env=git_env(env), check=False,
    )  # fmt: skip
    return done.stdout.strip()


def test_git_sees_the_header_for_the_urls_origin_only() -> None:
    env = credential_env("https://github.com/org/repo.git", TOKEN)
    header = urlmatch("https://github.com/org/repo.git", env)
    assert header.startswith("Authorization: Basic ")
    user, _, token = base64.b64decode(header.split()[-1]).decode().partition(":")
    assert (user, token) == ("x-access-token", TOKEN)
    assert urlmatch("https://github.com/other/repo.git", env) == header  # same host
    assert urlmatch("https://evil.example/org/repo.git", env) == ""
    assert urlmatch("http://github.com/org/repo.git", env) == ""  # not over plain http
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert all(TOKEN not in value for value in env.values())  # only base64 in a header


def test_it_appends_to_git_config_entries_already_in_the_environment() -> None:
    base = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "user.name", "GIT_CONFIG_VALUE_0": "x"}
    env = credential_env("https://gitlab.com/g/r.git", TOKEN, username="oauth2", base=base)
    assert env["GIT_CONFIG_COUNT"] == "2" and "GIT_CONFIG_KEY_1" in env
    assert urlmatch("https://gitlab.com/g/r.git", {**base, **env})


def test_no_token_for_urls_it_cannot_protect() -> None:
    with pytest.raises(ValueError, match="works only with https"):
        credential_env("git@github.com:o/r.git", TOKEN)
    with pytest.raises(ValueError, match="password or token"):
        credential_env(f"https://u:{TOKEN}@github.com/o/r.git", "t")
    with pytest.raises(ValueError, match="empty token"):
        credential_env("https://github.com/o/r.git", "")


def test_url_helpers() -> None:
    assert is_url("git@github.com:o/r.git") and is_url("file:///srv/r.git")
    assert not is_url("/srv/repo") and not is_url("C:/x") and not is_url("relative/dir")
    assert origin("https://git.example:8443/a/b.git") == "https://git.example:8443/"
    assert redact_url("https://u:secret@host/r.git") == "https://host/r.git"
    assert redact_url("git@github.com:o/r.git") == "git@github.com:o/r.git"
    assert url_problem("https://github.com/o/r.git", with_token=True) is None


def test_the_masker_hides_the_token_and_its_header() -> None:
    env = credential_env("https://github.com/o/r.git", TOKEN)
    masker = Masker(credential_secrets(TOKEN))
    line = f"fatal: {env['GIT_CONFIG_VALUE_0']} for {TOKEN}"
    assert TOKEN not in masker(line) and env["GIT_CONFIG_VALUE_0"].split()[-1] not in masker(line)


@pytest.fixture
def recording_server() -> Iterator[tuple[str, list[str | None]]]:
    """A real HTTP server that records the Authorization header of every request."""
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.headers.get("Authorization"))
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_git_sends_the_header_to_a_real_server_and_stores_nothing(
    recording_server: tuple[str, list[str | None]], tmp_path: Path
) -> None:
    base_url, seen = recording_server
    url = f"{base_url}/org/repo.git"
    # Plain http only because the test server has no certificate; the block allows https.
    env = credential_env(url.replace("http://", "https://"), TOKEN)
    env = {k: v.replace("http.https://", "http.http://") for k, v in env.items()}
    done = subprocess.run(
        ["git", "clone", "-q", url, str(tmp_path / "clone")],
        capture_output=True, text=True, env=git_env(env), timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0  # the server has no repository; what it heard is the point
    assert seen and seen[0] == env["GIT_CONFIG_VALUE_0"].removeprefix("Authorization: ")
    assert TOKEN not in done.stderr and seen[0].split()[-1] not in done.stderr
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(TOKEN not in p.read_text(errors="replace") for p in leftovers)
