"""Handing git a repository token without writing it into a URL, a file or a command line.

A token in ``https://user:TOKEN@host/repo.git`` ends up in ``.git/config``, in remote
listings, in logs and in error messages. Instead git gets it through its environment:
``GIT_CONFIG_COUNT`` / ``GIT_CONFIG_KEY_<n>`` / ``GIT_CONFIG_VALUE_<n>`` (git >= 2.31)
set ``http.<origin>/.extraHeader`` to an ``Authorization`` header, for the URL's own
scheme, host and port only, so that no other host (a submodule elsewhere, a redirect)
ever receives it. Nothing is stored; the header lives as long as the environment.

This environment is for git's own fetch, clone and push: never an agent's. Its value
is not caught by the masker's name rules (``GIT_CONFIG_VALUE_0`` does not look secret),
so whoever builds it masks ``credential_secrets`` explicitly. Pure: nothing here reads
``os.environ``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from urllib.parse import urlsplit

DEFAULT_TOKEN_USER = "x-access-token"
TOKEN_SCHEMES = ("https", "http")


def is_url(location: str) -> bool:
    """Whether ``location`` names a remote repository rather than a local folder.

    ``scheme://...`` (https, http, ssh, git, file) or scp-like ``user@host:path``.
    """
    if "://" in location:
        return True
    head, sep, _ = location.partition(":")
    return bool(sep) and "@" in head and "/" not in head


def url_problem(url: str, *, with_token: bool) -> str | None:
    """Why ``url`` cannot be a repository block's URL, or None."""
    if not url.strip() or url != url.strip():
        return "must be a URL without surrounding spaces"
    if not is_url(url):
        return "must be a git URL (https://host/org/repo.git, ssh://..., git@host:org/repo.git)"
    if "://" in url:
        parts = urlsplit(url)
        if not parts.hostname and parts.scheme != "file":
            return "has no host"
        if parts.password is not None:
            return "holds a password or token: put the token in the block's `token` instead"
        if with_token and parts.scheme not in TOKEN_SCHEMES:
            return f"a token works only with {' or '.join(TOKEN_SCHEMES)} URLs (ssh uses keys)"
    elif with_token:
        return "a token works only with https URLs (scp-like git@host:path uses ssh keys)"
    return None


def origin(url: str) -> str:
    """``scheme://host[:port]/`` of an http(s) URL: what the token is scoped to."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}/"


def redact_url(url: str) -> str:
    """``url`` without its user-info part (``https://user:x@host`` -> ``https://host``)."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _basic(token: str, username: str) -> str:
    return base64.b64encode(f"{username}:{token}".encode()).decode("ascii")


def authorization_header(token: str, username: str = DEFAULT_TOKEN_USER) -> str:
    """The HTTP header git sends: Basic auth of ``username:token``.

    GitHub, GitLab, Gitea and Bitbucket all accept a token as the password of Basic
    auth (GitHub's convention for the user name is ``x-access-token``).
    """
    return f"Authorization: Basic {_basic(token, username)}"


def credential_env(
    url: str,
    token: str,
    *,
    username: str = DEFAULT_TOKEN_USER,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Variables to lay over ``base`` so that git authenticates to ``url``'s origin with ``token``.

    Appends one ``GIT_CONFIG_*`` entry after any ``base`` already has, and turns off
    git's terminal prompt (a wrong token fails instead of waiting for a password).
    """
    problem = url_problem(url, with_token=True)
    if problem:
        raise ValueError(f"repository URL {redact_url(url)!r}: {problem}")
    if not token:
        raise ValueError("empty token")
    base = base or {}
    raw_count = base.get("GIT_CONFIG_COUNT", "0") or "0"
    try:
        count = int(raw_count)
    except ValueError as exc:
        raise ValueError(f"GIT_CONFIG_COUNT is not a number: {raw_count!r}") from exc
    return {
        "GIT_CONFIG_COUNT": str(count + 1),
        f"GIT_CONFIG_KEY_{count}": f"http.{origin(url)}.extraHeader",
        f"GIT_CONFIG_VALUE_{count}": authorization_header(token, username),
        "GIT_TERMINAL_PROMPT": "0",
    }


def credential_secrets(token: str, username: str = DEFAULT_TOKEN_USER) -> list[str]:
    """What to mask in git's output when ``credential_env`` is in use: the token and its header."""
    return [token, _basic(token, username)]
