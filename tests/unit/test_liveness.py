"""Telling a dead worker's attempt run from a slow one, by its heartbeat."""

from __future__ import annotations

from agentfleet.liveness import Liveness


def test_a_run_that_keeps_beating_is_alive_and_one_that_stops_is_dead() -> None:
    alive = Liveness(stale_s=10, start_s=60)
    assert not alive.dead(0, "RUNNING", "1")
    assert not alive.dead(8, "RUNNING", "4")  # a new beat: the clock starts again
    assert not alive.dead(17, "RUNNING", "4")
    assert alive.dead(19, "RUNNING", "4")
    assert alive.silence(19) == 11


def test_before_its_first_beat_a_run_gets_the_start_up_time() -> None:
    alive = Liveness(stale_s=10, start_s=60)
    assert not alive.dead(0, "PENDING", None)
    assert not alive.dead(50, "PENDING", None)
    assert not alive.dead(55, "RUNNING", None)  # a change of state counts as a sign of life
    assert not alive.dead(110, "RUNNING", None)
    assert alive.dead(116, "RUNNING", None)


def test_a_run_waiting_for_a_free_worker_is_never_judged() -> None:
    alive = Liveness(stale_s=10, start_s=60)
    assert not alive.dead(0, "SCHEDULED", None)
    assert not alive.dead(3600, "SCHEDULED", None)
