"""Held starts: the proxy keeps an attempt's model requests until its agent slot is granted.

An attempt may start its Codex agent before it holds an agent slot (``agentfleet/
start_ahead.py``): the agent's start-up then overlaps the running agents instead of
following them. Its route is ``hold``-ed first; the proxy keeps each of its requests
before sending anything upstream (no response header goes back), ``open`` lets them
through, ``shut`` drops them (the held agent is being stopped: its connection closes
without an answer, and so does any retry it makes before it dies).

Codex 0.169 waited 700 s for the response headers of a held request (20, 75, 200 and
700 s tried) without a retry or an error, then completed its turn: it sets no timeout
before the headers. If a later version does and gives up, its process ends while held,
and the attempt starts its agent again at its grant.
"""

from __future__ import annotations

import threading
import time
from enum import Enum

_WAIT_SLICE_S = 0.25


class _State(Enum):
    HELD = "held"
    SHUT = "shut"


class StartGates:
    """Per attempt: requests held, or dropped; an attempt without a gate passes."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._gates: dict[str, _State] = {}
        self._arrived: dict[str, float] = {}  # monotonic time of the first held request

    def hold(self, attempt_id: str) -> None:
        """Hold the attempt's requests from now until ``open`` (or ``shut``)."""
        with self._cond:
            self._gates[attempt_id] = _State.HELD
            self._arrived.pop(attempt_id, None)

    def open(self, attempt_id: str) -> None:
        """Let the attempt's held and future requests through."""
        with self._cond:
            self._gates.pop(attempt_id, None)
            self._arrived.pop(attempt_id, None)
            self._cond.notify_all()

    def shut(self, attempt_id: str) -> None:
        """Drop the attempt's held and future requests (until ``open`` or ``hold``)."""
        with self._cond:
            self._gates[attempt_id] = _State.SHUT
            self._cond.notify_all()

    def arrived(self, attempt_id: str) -> float | None:
        """When (``time.monotonic()``) the attempt's first held request arrived, if one did."""
        with self._cond:
            return self._arrived.get(attempt_id)

    def wait(self, attempt_id: str, stopping: threading.Event) -> bool:
        """Called by the proxy before forwarding: True to forward, False to drop the request
        (its gate was shut, or the proxy stops)."""
        with self._cond:
            if attempt_id not in self._gates:
                return True
            self._arrived.setdefault(attempt_id, time.monotonic())
            while True:
                state = self._gates.get(attempt_id)
                if state is None:
                    return True
                if state is _State.SHUT or stopping.is_set():
                    return False
                self._cond.wait(_WAIT_SLICE_S)
