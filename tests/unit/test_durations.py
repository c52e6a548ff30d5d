from __future__ import annotations

import pytest

from agentfleet.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90), ("20m", 1200), ("1h", 3600), ("1h30m", 5400), ("45", 45), ("1h2m3s", 3723),
        ("0.5s", 0.5), ("1.5h", 5400), (" 2m ", 120), ("2M", 120), (30, 30), (2.5, 2.5),
        ("1h 30m", 5400),
    ],
)
def test_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "", "h", "1d", "1m1h", "-5", "1x", "m5", "1.2.3s"])
def test_bad(text: str) -> None:
    with pytest.raises(ValueError, match=r"bad duration .* \(use 90s, 20m, 1h\)"):
        parse_duration(text)


def test_bad_types() -> None:
    for value in (True, -1, float("nan")):
        with pytest.raises(ValueError):
            parse_duration(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.5, "0.5s"), (59, "59s"), (90, "1m30s"), (3600, "1h"), (5400, "1h30m"),
     (3723, "1h2m3s"), (1800, "30m")],
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_round_trip() -> None:
    for seconds in (1, 59, 60, 61, 3599, 3600, 7322, 86400):
        assert parse_duration(format_duration(seconds)) == seconds
