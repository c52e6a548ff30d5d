"""Task run log lines: named after their task run, and no bare "NoneType: None" under them."""

from __future__ import annotations

import logging

from tasks.observe import _TaskRunNamePrefix


def _formatted(record: logging.LogRecord) -> str:
    _TaskRunNamePrefix().filter(record)
    return logging.Formatter("%(message)s").format(record)


def test_a_failed_state_line_is_prefixed_and_carries_no_empty_traceback() -> None:
    record = logging.LogRecord(
        "prefect.task_runs", logging.ERROR, __file__, 1,
        "Task run failed with state: %r", ("Failed('verify failed')",), (None, None, None),
    )
    record.task_run_name = "api#2"
    text = _formatted(record)
    assert text == "api#2: Task run failed with state: \"Failed('verify failed')\""
    assert "NoneType" not in text


def test_a_real_exception_keeps_its_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1,
                                   "crashed", (), sys.exc_info())
    record.task_run_name = "api#1"
    text = _formatted(record)
    assert text.startswith("api#1: crashed") and "ValueError: boom" in text
