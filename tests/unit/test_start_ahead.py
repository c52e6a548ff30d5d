"""A held agent's hand-over and drop, without Codex: the race of a drop with a start."""

from __future__ import annotations

import subprocess
import threading

from agentfleet.start_ahead import Gate, HeldAgent, StartAhead


class SleepRun:
    """A started process standing in for a held agent's run: ``stop`` kills it."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(["sleep", "60"])

    def ended(self) -> bool:
        return self.proc.poll() is not None

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def gate(calls: list[str]) -> Gate:
    return Gate(hold=lambda: calls.append("hold"), open=lambda: calls.append("open"),
                shut=lambda: calls.append("shut"), arrived=lambda: None)


def test_a_drop_while_the_agent_starts_stops_it_once_started() -> None:
    calls: list[str] = []
    ahead = StartAhead(places=1)
    held = HeldAgent(ahead, gate(calls), lambda _: None)
    starting, go = threading.Event(), threading.Event()
    runs: list[SleepRun] = []

    def make() -> SleepRun:
        starting.set()
        go.wait(10)
        runs.append(SleepRun())
        return runs[-1]

    started: list[bool] = []
    starter = threading.Thread(target=lambda: started.append(held.start(make)))  # type: ignore[arg-type]
    starter.start()
    assert starting.wait(10)
    held.drop()  # cancelled while Codex starts: nothing to stop yet
    go.set()
    starter.join(10)
    assert started == [False] and runs[0].ended()  # stopped as soon as it had started
    assert calls == ["hold", "shut"] and ahead.started == 0
    assert held.grant() is None and calls[-1] == "open"  # its slot: a normal start


def test_a_drop_after_the_start_stops_the_run_and_a_grant_after_it_starts_afresh() -> None:
    calls: list[str] = []
    ahead = StartAhead(places=1)
    held = HeldAgent(ahead, gate(calls), lambda _: None)
    run = SleepRun()
    assert held.start(lambda: run)  # type: ignore[arg-type, return-value]
    held.drop()
    assert run.ended() and ahead.started == 1 and ahead.dropped == 1
    assert held.grant() is None and calls == ["hold", "shut", "open"]
