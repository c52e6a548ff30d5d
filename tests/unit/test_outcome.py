"""Classifying how a Codex run ended, from recorded streams and Codex's own messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentfleet.codex.events import Transcript, parse_event
from agentfleet.codex.outcome import AttemptOutcome, Ending, Usage, classify, classify_message

STREAMS = Path(__file__).parents[1] / "fixtures" / "codex_streams"


def _transcript(*lines: str) -> Transcript:
    t = Transcript()
    for line in lines:
        t.add(parse_event(line))
    return t


def _failed(message: str) -> Transcript:
    return _transcript(
        json.dumps({"type": "error", "message": message}),
        json.dumps({"type": "turn.failed", "error": {"message": message}}),
    )


COMPLETED = json.dumps({"type": "turn.completed", "usage": {"input_tokens": 1}})


@pytest.mark.parametrize(
    ("name", "exit_status", "ending"),
    [
        ("happy_path.jsonl", 0, Ending.COMPLETED),
        ("rate_limited_retry_after.jsonl", 0, Ending.COMPLETED),
        ("server_error_recovered.jsonl", 0, Ending.COMPLETED),
        ("stream_cut_recovered.jsonl", 0, Ending.COMPLETED),
        ("rate_limited_no_retry_after.jsonl", 1, Ending.FAILED_TRANSIENT),
        ("server_error_exhausted.jsonl", 1, Ending.FAILED_TRANSIENT),
        ("stream_cut.jsonl", 1, Ending.FAILED_TRANSIENT),
        ("stream_idle_timeout.jsonl", 1, Ending.FAILED_TRANSIENT),
        ("unauthorized.jsonl", 1, Ending.FAILED_FATAL),
        ("unscripted_prompt_400.jsonl", 1, Ending.FAILED_FATAL),
        ("context_window.jsonl", 1, Ending.CONTEXT_WINDOW),
    ],
)
def test_recorded_streams(name: str, exit_status: int, ending: Ending) -> None:
    path = STREAMS / name
    if not path.exists():
        pytest.skip(f"{name} is not recorded yet")
    transcript = _transcript(*path.read_text(encoding="utf-8").splitlines())
    got, error = classify(exit_status, transcript)
    assert got is ending
    if ending is Ending.COMPLETED:
        assert error is None
    else:
        assert error == transcript.turn_failed


@pytest.mark.parametrize(
    ("message", "ending"),
    [
        ("exceeded retry limit, last status: 429 Too Many Requests, request id: r",
         Ending.FAILED_TRANSIENT),
        ("We’re currently experiencing high demand, which may cause temporary errors.",
         Ending.FAILED_TRANSIENT),
        ("unexpected status 502 Bad Gateway: Bad gateway., url: http://x/v1/responses",
         Ending.FAILED_TRANSIENT),
        ("unexpected status 503 Service Unavailable: The engine is currently overloaded",
         Ending.FAILED_TRANSIENT),
        ("unexpected status 500 Internal Server Error: oops", Ending.FAILED_TRANSIENT),
        ("stream disconnected before completion: Transport error: network error: error "
         "decoding response body", Ending.FAILED_TRANSIENT),
        ("stream disconnected before completion: idle timeout waiting for SSE",
         Ending.FAILED_TRANSIENT),
        ("Connection failed: error sending request for url (http://127.0.0.1:9/v1/responses)",
         Ending.FAILED_TRANSIENT),
        ("unexpected status 401 Unauthorized: Incorrect API key provided: x",
         Ending.FAILED_FATAL),
        ("unexpected status 403 Forbidden: You are not allowed to sample from this model.",
         Ending.FAILED_FATAL),
        ("The model does not exist or you do not have access to it.", Ending.FAILED_FATAL),
        ("The requested model 'nosuch' does not exist.", Ending.FAILED_FATAL),
        ("unexpected status 400 Bad Request: model not supported", Ending.FAILED_FATAL),
        ("Quota exceeded. Check your plan and billing details.", Ending.FAILED_FATAL),
        ("You've hit your usage limit. Try again later.", Ending.FAILED_FATAL),
        ("Missing environment variable: `SCRIPTED_KEY`.", Ending.FAILED_FATAL),
        ("Codex ran out of room in the model's context window. Start a new thread or clear "
         "earlier history before retrying.", Ending.CONTEXT_WINDOW),
        ("Your input exceeds the context window of this model.", Ending.CONTEXT_WINDOW),
        ("something nobody has seen before", Ending.FAILED_FATAL),
    ],
)
def test_messages(message: str, ending: Ending) -> None:
    assert classify_message(message) is ending
    assert classify(1, _failed(message)) == (ending, message)


def test_a_failed_command_inside_a_completed_turn_is_completed() -> None:
    t = _transcript(
        json.dumps({"type": "item.completed", "item": {
            "id": "c", "type": "command_execution", "command": "pytest",
            "aggregated_output": "", "exit_code": 1, "status": "failed"}}),
        json.dumps({"type": "item.completed", "item": {
            "id": "e", "type": "error", "message": "Model metadata for `m` not found."}}),
        COMPLETED,
    )
    assert classify(0, t) == (Ending.COMPLETED, None)


def test_bad_config_on_stderr_only() -> None:
    stderr = (
        "WARNING: proceeding, even though we could not create PATH aliases\n"
        "Error loading config.toml:\n/h/config.toml:1:19: unclosed array, expected `]`\n"
        "  |\n1 | model_provider = [\n  |                   ^\n"
    )
    ending, error = classify(1, Transcript(), stderr_tail=stderr)
    assert ending is Ending.FAILED_FATAL
    assert error is not None and error.startswith("Error loading config.toml:")
    assert "unclosed array" in error and "WARNING" not in error


def test_unrecognised_nonzero_exit_is_fatal_with_the_stderr_tail() -> None:
    ending, error = classify(101, Transcript(), stderr_tail="thread 'main' panicked at x\n")
    assert ending is Ending.FAILED_FATAL and error == "thread 'main' panicked at x"
    assert classify(1, Transcript()) == (Ending.FAILED_FATAL, "codex exited with status 1")
    assert classify(0, Transcript())[0] is Ending.FAILED_FATAL  # exit 0 but no turn
    assert classify(-9, Transcript())[1] == "codex was killed by signal 9"


def test_stopped_runs_win_over_everything() -> None:
    waiting = _transcript(json.dumps({
        "type": "error",
        "message": "Reconnecting... waiting for network (Connection failed: error sending request)",
    }))
    assert classify(-15, waiting, timed_out=True) == (Ending.TIMED_OUT, waiting.last_warning)
    assert classify(-15, waiting, stuck=True)[0] is Ending.STUCK
    assert classify(-15, waiting, killed=True, timed_out=True)[0] is Ending.KILLED
    assert classify(0, _transcript(COMPLETED), killed=True)[0] is Ending.KILLED


def test_outcome_properties() -> None:
    ok = AttemptOutcome(ending=Ending.COMPLETED)
    assert ok.ok and not ok.retryable
    transient = AttemptOutcome(ending=Ending.FAILED_TRANSIENT, error="429")
    assert transient.retryable and not transient.ok
    for ending in (Ending.FAILED_FATAL, Ending.CONTEXT_WINDOW, Ending.TIMED_OUT, Ending.STUCK,
                   Ending.KILLED):
        assert not AttemptOutcome(ending=ending).retryable
    assert Usage(input_tokens=10, output_tokens=5, cached_input_tokens=4).total == 15
    restored = AttemptOutcome.model_validate_json(transient.model_dump_json())
    assert restored == transient
