"""From attempts to the result that stands for a task: scores read, reasons kept."""

from __future__ import annotations

from agentfleet.best_of_n import candidates_of, chosen, select, stopped_result
from agentfleet.results import AttemptResult, CheckResult


def result(k: int, passed: bool, *, score: str | None = None, reason: str = "") -> AttemptResult:
    return AttemptResult(
        task_id="t", attempt=k, branch=f"agentfleet-attempts/s/t/{k}", start_sha="a" * 40,
        head_sha=("b" * 39 + str(k)) if passed else None, succeeded=passed, reason=reason,
        score=CheckResult(command="score", passed=True, exit_status=0, output_tail=score)
        if score is not None else None,
    )


def test_a_score_ranks_and_a_bad_score_fails_its_candidate() -> None:
    results = [result(1, True, score="5\n"), result(2, True, score="x: 2\n2.0"),
               result(3, True, score="fast")]
    cands = candidates_of(results, scored=True)
    assert [c.score for c in cands] == [5.0, 2.0, None]
    assert not cands[2].passed and "must be a number" in cands[2].reason
    selection = select(results, scored=True, goal="min")
    assert selection.winner_k == 2 and selection.sentence.startswith("k=2 won on score")
    assert chosen(selection, results, sprint="s", task_id="t").attempt == 2


def test_no_winner_fails_the_task_with_every_reason() -> None:
    results = [result(1, False, reason="verify failed (exit 1)"),
               stopped_result("t", 2, "agentfleet-attempts/s/t/2", "a" * 40, started=False)]
    selection = select(results, scored=False, goal="min")
    stands = chosen(selection, results, sprint="s", task_id="t")
    assert not stands.succeeded and stands.attempt == 1
    assert "k=1: verify failed (exit 1)" in stands.reason
    assert "k=2: stopped: early stop (not started)" in stands.reason
