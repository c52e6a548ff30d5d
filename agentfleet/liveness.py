"""Whether a worker's attempt run is alive, from the heartbeat it writes, as seen here.

A worker killed mid-attempt (the machine gone, ``kill -9``) reports nothing: its flow
run stays Running for ever. So the ``attempt`` flow beats (a counter in a label of its
flow run, every few seconds) and the sprint watches: a run that is Pending or Running
and whose beat has not changed for ``stale_s`` (``start_s`` before its first beat, while
the worker starts its process) is taken for crashed. Only the sprint's own clock is
used, so the machines' clocks need not agree. Pure: the caller passes the time.
"""

from __future__ import annotations

from dataclasses import dataclass

HEARTBEAT_LABEL = "agentfleet.heartbeat"
HEARTBEAT_S = 2.0  # how often the attempt flow beats
ALIVE_STATES = ("PENDING", "RUNNING")  # a Scheduled run waits for a free worker: not judged


@dataclass
class Liveness:
    """Watches one flow run's state and beat; ``dead`` says when it stopped beating."""

    stale_s: float
    start_s: float
    _seen: tuple[str | None, str | None] | None = None
    _since: float = 0.0

    def dead(self, now: float, state: str | None, beat: str | None) -> bool:
        """Whether the run, seen at ``now`` in ``state`` with ``beat``, is taken for dead."""
        if (state, beat) != self._seen:
            self._seen, self._since = (state, beat), now
            return False
        if state not in ALIVE_STATES:
            return False
        limit = self.stale_s if beat is not None else self.start_s
        return now - self._since > limit

    def silence(self, now: float) -> float:
        """How long nothing has changed, in seconds."""
        return now - self._since
