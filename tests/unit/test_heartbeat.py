"""``flows.heartbeat.beaten_here``: Prefect's heartbeat off for the call it wraps, nothing else."""

from __future__ import annotations

from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    get_current_settings,
    temporary_settings,
)

from flows import heartbeat


def test_beaten_here_turns_prefects_heartbeat_off_and_keeps_every_other_setting() -> None:
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 45,
                                     PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        before = get_current_settings()
        with heartbeat.beaten_here():
            inside = get_current_settings()
            assert inside.flows.heartbeat_frequency is None
            assert heartbeat._INTERVAL.get() == 45  # the flow body beats at Prefect's interval
            assert inside.model_dump(exclude={"flows"}) == before.model_dump(exclude={"flows"})
            assert inside.flows.model_dump(exclude={"heartbeat_frequency"}) == \
                before.flows.model_dump(exclude={"heartbeat_frequency"})
        assert get_current_settings().flows.heartbeat_frequency == 45
        assert heartbeat._INTERVAL.get() is None


def test_beaten_here_changes_nothing_when_heartbeats_are_off() -> None:
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        with heartbeat.beaten_here():
            assert get_current_settings().flows.heartbeat_frequency is None
            assert heartbeat._INTERVAL.get() is None
