"""One verified TLS context per CA file for all of a process's Prefect API clients.

Prefect 3.9 builds a new ``ssl.SSLContext`` for every API client it makes (and for its
server-version check), reading the whole CA bundle each time: about 29 ms of CPU, even
for an ``http://`` API that never uses it. A flow run makes nine (the engine's, its
events and log workers', ...): a quarter of a second of CPU as each attempt starts,
while other attempts start beside it on the same cores. (PrefectHQ/prefect#19106 would
let callers share one.) ``share()`` gives Prefect's client modules an ``ssl`` whose
``create_default_context(cafile=...)`` hands out one context per CA file (its path,
size and mtime: a bundle replaced on disk is read again). Prefect configures such a
context once and never changes it afterwards, so clients may share it, as the connections
of one client already do. Calls without a CA file (Prefect then turns verification
off on what it gets) still get a context of their own.
"""

from __future__ import annotations

import importlib
import os
import ssl
import threading
import types
from typing import Any

# Prefect's modules that build a verified context per client.
PREFECT_MODULES = ("prefect.client.orchestration", "prefect._internal.version_checking",
                   "prefect._internal.websockets")


class SharedContexts:
    """``ssl`` as Prefect's modules use it, with one context per CA file."""

    def __init__(self) -> None:
        self._made: dict[tuple[Any, ...], ssl.SSLContext] = {}
        self._lock = threading.Lock()
        self.built = 0  # contexts actually made (read by the tests)

    def __getattr__(self, name: str) -> Any:
        return getattr(ssl, name)

    def create_default_context(self, purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH, *,
                               cafile: str | None = None, capath: str | None = None,
                               cadata: Any = None) -> ssl.SSLContext:
        if cafile is None or capath is not None or cadata is not None:
            return ssl.create_default_context(purpose, cafile=cafile, capath=capath,
                                              cadata=cadata)
        try:
            found = os.stat(cafile)
        except OSError:  # let ssl say what is wrong with it
            return ssl.create_default_context(purpose, cafile=cafile)
        key = (purpose, os.path.realpath(cafile), found.st_size, found.st_mtime_ns)
        with self._lock:
            if key not in self._made:
                self._made[key] = ssl.create_default_context(purpose, cafile=cafile)
                self.built += 1
            return self._made[key]


_shared = SharedContexts()


def share() -> SharedContexts:
    """Have Prefect's clients in this process share their verified TLS contexts (once is
    enough; a Prefect whose modules differ is left as it is)."""
    for name in PREFECT_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if isinstance(getattr(module, "ssl", None), types.ModuleType) and module.ssl is ssl:
            module.ssl = _shared  # type: ignore[attr-defined]
    return _shared


def warm_up() -> None:
    """``share()``, and make the context Prefect's clients will ask for now (a warm
    engine's preload: the runs it forks make none of their own)."""
    import certifi
    from prefect.settings import PREFECT_API_SSL_CERT_FILE

    share().create_default_context(cafile=PREFECT_API_SSL_CERT_FILE.value() or certifi.where())
