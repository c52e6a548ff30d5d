"""Stopping agents: one ``RunControl`` per sprint run, one ``AttemptControl`` per attempt.

A run's attempts poll their own ``cancel`` event (set by stopping the attempt or the
whole run) and track the processes they start in their own ``ProcessSet``. Nothing
is process-wide: two runs in one Python process (a worker running two flow runs,
``best-of-n`` inside ``sprint``) never stop each other's agents, and one attempt can
be stopped without its siblings (early stop, budgets).
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field

from agentfleet.guardrails import RunGuards
from agentfleet.metering.sprint import HandedRoute, SprintMeter
from agentfleet.process import ProcessSet, all_at_once
from agentfleet.start_ahead import StartAhead

# The reason an attempt is stopped when a sibling of best-of-N already won.
EARLY_STOP = "early stop"


@dataclass
class AttemptControl:
    """One attempt's stop switch and the processes it started."""

    name: str
    cancel: threading.Event = field(default_factory=threading.Event)
    processes: ProcessSet = field(default_factory=ProcessSet)
    reason: str | None = None  # why it was stopped, e.g. "early stop"

    @property
    def stopped(self) -> bool:
        """Whether the attempt was told to stop."""
        return self.cancel.is_set()

    def stop(
        self, reason: str = "interrupted", grace_s: float | None = None, *, wait: bool = True
    ) -> int:
        """Stop the attempt now: its waits wake, its processes get SIGTERM then SIGKILL.

        ``wait=False`` returns at once (the processes are stopped in a thread); returns
        how many processes were live.
        """
        if self.reason is None:
            self.reason = reason
        self.cancel.set()
        if wait:
            return self.processes.stop(grace_s)
        live = len(self.processes.live())
        threading.Thread(target=self.processes.stop, args=(grace_s,), daemon=True).start()
        return live


class RunControl:
    """Every attempt of one run, so the run (or one attempt) can be stopped."""

    def __init__(self, name: str = "run") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._attempts: dict[str, AttemptControl] = {}
        self.cancel = threading.Event()  # the whole run was stopped
        # The run's agent and check slots (agentfleet.guardrails.RunGuards); None: no limits.
        self.guards: RunGuards | None = None
        # The run's metering proxy (agentfleet.metering.sprint.SprintMeter), or on a pool's
        # worker the route the sprint's proxy handed its attempt; None: unmetered.
        self.meter: SprintMeter | HandedRoute | None = None
        # Places for Codex agents started ahead of their slot (start_ahead.py); None: none.
        self.ahead: StartAhead | None = None

    def attempt(self, name: str) -> AttemptControl:
        """The control of attempt ``name`` (``<task>#<k>``), made on first use.

        An attempt that starts after the run was stopped starts stopped.
        """
        with self._lock:
            control = self._attempts.get(name)
            if control is None:
                control = self._attempts[name] = AttemptControl(name)
            if self.cancel.is_set():
                control.cancel.set()
            return control

    def stop_attempt(
        self, name: str, reason: str, grace_s: float | None = None, *, wait: bool = True
    ) -> int:
        """Stop one attempt (and only it); returns how many processes were stopped."""
        return self.attempt(name).stop(reason, grace_s, wait=wait)

    def stop(self, grace_s: float | None = None) -> int:
        """Stop every attempt of this run; returns how many processes were stopped."""
        self.cancel.set()
        with self._lock:
            controls = list(self._attempts.values())
        for c in controls:  # every wait wakes at once; then the groups go, in parallel
            c.reason = c.reason or "interrupted"
            c.cancel.set()
        return sum(all_at_once([functools.partial(c.processes.stop, grace_s) for c in controls]))
