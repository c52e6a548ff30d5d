"""Starting an attempt's Codex agent before it holds an agent slot, its model requests held.

Between one agent's end and the next agent's first model request the seed's shell loop
pays, in every slot, Codex's own start-up (about 1 to 2 s on a loaded 2-core machine).
An attempt whose worktree and ``setup`` are ready, and that waits for its slot among
the next ``places`` in line (the sprint's slots are handed out first come, first
served), starts its Codex agent then, and the sprint's metering proxy holds its requests
(``metering/start_gate.py``) until the slot is granted; then they go through. The
next agent asks the model as soon as the slot is free: the start-up overlaps the
running agents instead of following them.

What stays true:

- the model never sees more sessions than slots: nothing of a held agent reaches it
  (the proxy sends no byte upstream before the grant);
- the attempt's timeout, and its idle timeout, count from the grant;
- at most ``places`` agents are held while they wait for one of the sprint's slots
  (``limits.start_ahead``, default one per slot), plus those that have one and wait
  for the shared pool; a held Codex 0.169 takes about 185 MB and no CPU;
- an attempt that gets its slot without waiting starts its agent as usual;
- a held agent still waiting after ``max_hold_s`` is stopped, and its attempt starts
  its agent normally once its slot comes (a long wait gains nothing from a head start);
- a held agent whose attempt is cancelled (or early-stopped) before its grant is
  stopped with everything it started; no try is counted, no token spent;
- an agent that exited while held (e.g. a bad config) is dropped at the grant and the
  agent starts normally, which shows the same error if it is the agent's own.

Prefect-free: the gate's calls and the places come from ``tasks/attempt.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from agentfleet.agents import CodexRun

# Codex 0.169 waited 700 s for a held request without complaint (metering/start_gate.py).
# Holding costs memory, not CPU: long enough for agents of many minutes to hand their slot
# to a held one, short of tying the memory up for hours behind a busy shared pool.
MAX_HOLD_S = 600.0


class StartAhead:
    """One sprint run's rule for agents started ahead of their slot, and its counts."""

    def __init__(self, places: int, max_hold_s: float = MAX_HOLD_S) -> None:
        self.places = places  # how far back in line for a slot an agent starts ahead
        self.max_hold_s = max_hold_s
        self.lock = threading.Lock()
        self.started = 0  # agents started ahead (for logs and tests)
        self.dropped = 0  # of those, stopped before their grant or found ended at it
        self.ready = 0  # of those, granted with their first model request already waiting


@dataclass(frozen=True)
class Gate:
    """The attempt's route on the metering proxy (``StartGates``, bound to its name)."""

    hold: Callable[[], None]
    open: Callable[[], None]
    shut: Callable[[], None]
    arrived: Callable[[], float | None]  # when its first held request arrived


class _State(Enum):
    WAITING = "waiting"
    GRANTED = "granted"
    DROPPED = "dropped"


class HeldAgent:
    """One attempt's agent, started ahead while it waits for its slot, then handed over
    or stopped.

    ``start()`` makes the run (the gate is held before it starts), once; ``grant()``
    hands it over with its clock restarted, or None when it never started or was
    dropped; ``drop()`` stops it.
    """

    def __init__(self, ahead: StartAhead, gate: Gate, log: Callable[[str], None]) -> None:
        self.ahead = ahead
        self.gate = gate
        self.log = log
        self.run: CodexRun | None = None
        self._state = _State.WAITING
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._dropped = threading.Event()  # a drop has stopped the agent

    def start(self, make: Callable[[], CodexRun]) -> bool:
        """Hold the gate, start the agent (``make``), arm the ``max_hold_s`` timer; once.
        Whether it started now."""
        with self._lock:
            if self._state is not _State.WAITING or self.run is not None or self._timer:
                return False
            self._timer = threading.Timer(self.ahead.max_hold_s, self.drop,
                                          args=(f"still no agent slot after "
                                                f"{self.ahead.max_hold_s:g}s",))
        self.gate.hold()
        try:
            run = make()
        except BaseException:
            self._finish(_State.DROPPED)
            self._dropped.set()
            self.gate.open()
            raise
        with self._lock:
            self.run = run
            dropped = self._state is _State.DROPPED
        if dropped:  # a drop came while it started and found no run to stop: stopped here
            self.gate.shut()
            try:
                run.stop()
            finally:
                self._dropped.set()
            return False
        with self.ahead.lock:
            self.ahead.started += 1
        self._timer.daemon = True
        self._timer.start()
        return True

    def _finish(self, state: _State) -> bool:
        """Leave WAITING for ``state``; False if something else did first."""
        with self._lock:
            if self._state is not _State.WAITING:
                return False
            self._state = state
        if self._timer is not None:
            self._timer.cancel()
        return True

    def grant(self) -> CodexRun | None:
        """The slot is granted: the agent's requests go through, its clock starts now.
        None (the gate opened all the same) when it was dropped or has ended meanwhile."""
        if not self._finish(_State.GRANTED):
            # Dropped (by the timer): its requests stay shut until it is gone.
            self._dropped.wait()
            self.gate.open()
            return None
        run = self.run
        if run is None:  # never started: its slot came without a wait
            return None
        if run.ended():
            self._count_drop()
            run.stop()
            self.log("the agent started ahead ended before its slot came; starting it again")
            self.gate.open()
            return None
        run.restart_clock()
        arrived = self.gate.arrived()
        self.gate.open()
        if arrived is not None:
            with self.ahead.lock:
                self.ahead.ready += 1
            self.log(f"agent slot granted: the agent's first model request, held "
                     f"{time.monotonic() - arrived:.1f}s, goes through")
        return run

    def drop(self, why: str = "stopped") -> None:
        """Stop the held agent (cancelled, or waiting too long); its attempt starts its
        agent normally if its slot still comes."""
        with self._lock:  # one look at all three: a start under way stops its run itself
            finished = self._state is _State.WAITING
            if finished:
                self._state = _State.DROPPED
            run = self.run
            starting = finished and run is None and self._timer is not None
        if finished and self._timer is not None:
            self._timer.cancel()
        if not finished or run is None:
            if not starting:  # else the start sets it once it stopped its run
                self._dropped.set()
            return
        self._count_drop()
        # Shut first: what it sends until it is gone (a retry of the dropped request) is
        # dropped too, never forwarded.
        self.gate.shut()
        try:
            run.stop()
        finally:
            self._dropped.set()
        if why != "stopped":
            self.log(f"agent started ahead stopped: {why}")

    def _count_drop(self) -> None:
        with self.ahead.lock:
            self.ahead.dropped += 1
