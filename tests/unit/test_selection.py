"""Best-of-N's choice: criteria in order, ties carried on, the sentence, the table."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agentfleet.codex.outcome import AttemptOutcome, Ending, Usage
from agentfleet.results import AttemptResult, CheckResult, CommitPatch
from agentfleet.selection import (
    Candidate,
    Criterion,
    ScoreError,
    Step,
    apply_score,
    candidates_markdown,
    candidates_table,
    choose,
    count_diff,
    diff_size,
    fingerprint,
    normalise_diff,
    parse_numstat,
    parse_score,
    votes,
)


def _diff(*lines: str) -> str:
    # Context lines of blank source lines are a single space: spelled out, so no
    # editor trims them.
    return "\n".join(lines) + "\n"


# The same change (``return x`` -> ``return x + 1``) three ways, as git prints it.
DIFF = _diff(
    "diff --git a/app/search.py b/app/search.py",
    "index 3f43873..07219c0 100644",
    "--- a/app/search.py",
    "+++ b/app/search.py",
    "@@ -3,7 +3,7 @@ def f(x):",
    "     b = 2",
    "     c = 3",
    "     d = 4",
    "-    return x",
    "+    return x + 1",
    " ",
    " ",
    " def g():",
)
# Other spacing, a blank line more, another blob id, another hunk position.
DIFF_RESPACED = _diff(
    "diff --git a/app/search.py b/app/search.py",
    "index 3f43873..43ae966 100644",
    "--- a/app/search.py",
    "+++ b/app/search.py",
    "@@ -14,7 +14,8 @@ class Search:",
    "     b = 2",
    "     c = 3",
    "     d = 4",
    "-    return x",
    "+    return  x+1",
    "+",
    " ",
    " ",
    " def g():",
)
DIFF_OTHER = DIFF.replace("+    return x + 1", "+    return x - 1")


def cand(k: int, *, passed: bool = True, reason: str = "", added: int = 1, removed: int = 1,
         tokens: int = 1000, score: float | None = None, diff: str | None = None) -> Candidate:
    """A candidate; without ``diff`` each has its own fingerprint (no agreement)."""
    return Candidate(
        k=k,
        branch=f"agentfleet-attempts/s/search/{k}",
        passed=passed,
        reason=reason,
        added=added,
        removed=removed,
        usage=Usage(input_tokens=tokens - 100, output_tokens=100),
        score=score,
        fingerprint=fingerprint(diff) if diff is not None else f"own-{k}",
        verify_exit_status=0 if passed else 1,
    )


# -- one criterion at a time ------------------------------------------------------------


def test_only_one_passes() -> None:
    s = choose([
        cand(1, passed=False, reason="verify exited 1"),
        cand(2),
        cand(3, passed=False, reason="changed files outside paths: README.md"),
    ])
    assert s.winner_k == 2
    assert s.criterion is Criterion.PASSES
    assert s.sentence == "k=2 won: the only candidate that passed"
    assert s.reasons == {1: "verify exited 1", 3: "changed files outside paths: README.md"}


@pytest.mark.parametrize(
    ("goal", "winner", "sentence"),
    [
        ("min", 2, "k=2 won on score: 2.0 < 5.0"),
        ("max", 1, "k=1 won on score: 5.0 > 2.0"),
    ],
)
def test_score_decides_by_goal(goal: str, winner: int, sentence: str) -> None:
    # k=1 is better on every later criterion: score comes first.
    s = choose([cand(1, score=5.0, tokens=10), cand(2, score=2.0, added=50)], goal)  # type: ignore[arg-type]
    assert s.winner_k == winner
    assert s.criterion is Criterion.SCORE
    assert s.sentence == sentence


def test_no_score_skips_to_votes() -> None:
    s = choose([cand(1, diff=DIFF_OTHER), cand(2, diff=DIFF), cand(3, diff=DIFF_RESPACED)])
    assert s.criterion is Criterion.VOTES
    assert s.winner_k == 2
    assert s.sentence == "k=2 won on votes: 2 > 1, then between k=2 and k=3 on lower k"


def test_consensus_decides_between_three_where_two_agree() -> None:
    # k=1 is smaller and cheaper, but k=2 and k=3 made the same change (up to
    # whitespace, blob ids and hunk positions) and vote for one another.
    candidates = [
        cand(1, diff=DIFF_OTHER, added=1, tokens=10),
        cand(2, diff=DIFF, added=5),
        cand(3, diff=DIFF_RESPACED, added=2),
    ]
    assert votes(candidates) == {1: 1, 2: 2, 3: 2}
    s = choose(candidates)
    assert s.criterion is Criterion.VOTES
    # Between the two that agree, the next criterion (the smaller diff) picks.
    assert s.winner_k == 3
    assert s.sentence == (
        "k=3 won on votes: 2 > 1, then between k=2 and k=3 on smaller diff: 3 < 6 lines"
    )
    assert s.steps == [
        Step(criterion=Criterion.VOTES, among=[1, 2, 3], leaders=[2, 3], best=2, next_best=1),
        Step(criterion=Criterion.DIFF_SIZE, among=[2, 3], leaders=[3], best=3, next_best=6),
    ]


def test_smaller_diff_decides() -> None:
    s = choose([cand(1, added=10, removed=4), cand(2, added=3, removed=1, tokens=9000)])
    assert s.winner_k == 2
    assert s.criterion is Criterion.DIFF_SIZE
    assert s.sentence == "k=2 won on smaller diff: 4 < 14 lines"


def test_fewer_tokens_decide() -> None:
    s = choose([cand(1, tokens=3400), cand(2, tokens=1200), cand(3, tokens=2000)])
    assert s.winner_k == 2
    assert s.criterion is Criterion.TOKENS
    assert s.sentence == "k=2 won on fewer tokens: 1,200 < 2,000"


def test_lower_k_decides_when_all_else_is_equal() -> None:
    s = choose([cand(3), cand(1), cand(2)])
    assert s.winner_k == 1
    assert s.criterion is Criterion.K
    assert s.sentence == "k=1 won on lower k (all else equal)"
    assert s.steps == [
        Step(criterion=Criterion.K, among=[1, 2, 3], leaders=[1], best=1, next_best=2)
    ]


def test_all_fail() -> None:
    s = choose([
        cand(1, passed=False, reason="verify exited 1\nFAILED tests/test_search.py::test_q"),
        cand(2, passed=False, reason="agent failed: 429 Too Many Requests"),
    ])
    assert s.winner is None and s.criterion is None
    assert s.reasons == {1: "verify exited 1", 2: "agent failed: 429 Too Many Requests"}
    assert s.sentence == (
        "no candidate passed (k=1: verify exited 1; k=2: agent failed: 429 Too Many Requests)"
    )
    assert all(row["winner"] == "" for row in candidates_table(s))


def test_no_candidates() -> None:
    assert choose([]).sentence == "no candidates"


# -- ties carried on --------------------------------------------------------------------


def test_ties_carry_to_the_next_criterion_among_the_tied_only() -> None:
    # k=1 and k=2 tie on the best score; k=3 has the fewest tokens but is out after
    # score, so tokens decide between k=1 and k=2 only.
    candidates = [
        cand(1, score=2.0, tokens=5000),
        cand(2, score=2.0, tokens=4000),
        cand(3, score=3.0, tokens=100),
    ]
    s = choose(candidates)
    assert s.winner_k == 2
    assert s.criterion is Criterion.SCORE
    assert [(t.criterion, t.leaders) for t in s.steps] == [
        (Criterion.SCORE, [1, 2]), (Criterion.TOKENS, [2])
    ]
    assert s.sentence == (
        "k=2 won on score: 2.0 < 3.0, then between k=1 and k=2 on fewer tokens: 4,000 < 5,000"
    )


def test_ties_across_several_criteria_end_at_lower_k() -> None:
    # k=3 loses on score yet still votes: its diff agrees with k=2's and k=4's, and
    # it passed, so that change was made three times.
    candidates = [
        cand(4, score=1.0, diff=DIFF),
        cand(2, score=1.0, diff=DIFF_RESPACED),
        cand(1, score=1.0, diff=DIFF_OTHER),
        cand(3, score=9.0, diff=DIFF),
    ]
    s = choose(candidates)
    assert s.winner_k == 2
    assert s.criterion is Criterion.SCORE
    assert s.sentence == (
        "k=2 won on score: 1.0 < 9.0, then among k=1, k=2 and k=4 on votes: 3 > 1, "
        "then between k=2 and k=4 on lower k"
    )


def test_failed_candidates_neither_get_nor_cast_votes() -> None:
    candidates = [cand(1, diff=DIFF, passed=False, reason="verify exited 1"),
                  cand(2, diff=DIFF_RESPACED), cand(3, diff=DIFF_OTHER, tokens=10)]
    assert votes(candidates) == {1: 0, 2: 1, 3: 1}
    assert votes(iter(candidates)) == {1: 0, 2: 1, 3: 1}
    assert choose(candidates).winner_k == 3


def test_duplicate_k_and_bad_goal_are_refused() -> None:
    with pytest.raises(ValueError, match="share k"):
        choose([cand(1), cand(1)])
    with pytest.raises(ValueError, match="score_goal"):
        choose([cand(1)], "best")  # type: ignore[arg-type]


# -- score ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "value"),
    [("12.5\n", 12.5), ("warming up\nran 3 times\n\n  -3e2  \n\n", -300.0), ("7", 7.0)],
)
def test_parse_score_reads_the_last_non_empty_line(output: str, value: float) -> None:
    assert parse_score(output) == value


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("1.5\nnot a number\n", "score's last non-empty line must be a number, got 'not a number'"),
        ("12 ms", "must be a number, got '12 ms'"),
        ("nan", "must be a number, got 'nan'"),
        ("   \n\n", "score printed nothing; its last non-empty line must be a number"),
        ("9" * 400, "not a finite number"),
    ],
)
def test_parse_score_says_what_is_wrong(output: str, message: str) -> None:
    with pytest.raises(ScoreError, match=message):
        parse_score(output)


def test_bad_score_output_fails_that_candidate_with_a_readable_reason() -> None:
    good = apply_score(cand(1, tokens=9000), "query: 41 ms\n41.0\n")
    bad = apply_score(cand(2), "query plan\nnot a number\n")
    assert good.passed and good.score == 41.0
    assert not bad.passed and bad.score is None
    assert bad.reason == "score's last non-empty line must be a number, got 'not a number'"
    assert bad.score_error == bad.reason
    s = choose([good, bad])
    assert s.winner_k == 1
    assert s.sentence == "k=1 won: the only candidate that passed"
    assert s.reasons == {2: bad.reason}


def test_score_on_a_failed_candidate_keeps_its_own_reason() -> None:
    failed = cand(1, passed=False, reason="verify exited 2")
    assert apply_score(failed, "oops").reason == "verify exited 2"
    assert apply_score(failed, "3").score == 3.0


# -- diffs ------------------------------------------------------------------------------


def test_whitespace_index_and_hunk_headers_do_not_count() -> None:
    assert normalise_diff(DIFF) == normalise_diff(DIFF_RESPACED)
    assert fingerprint(DIFF) == fingerprint(DIFF_RESPACED)
    assert fingerprint(DIFF) != fingerprint(DIFF_OTHER)
    assert normalise_diff(DIFF) == (
        "diff --git a/app/search.py b/app/search.py\n@@\n-returnx\n+returnx+1\n"
    )


def test_a_change_cut_into_other_hunks_still_agrees() -> None:
    # One change in one hunk; the same change where a nearby re-indentation made
    # git draw a wider hunk starting elsewhere.
    narrow = (
        "diff --git a/q.py b/q.py\n--- a/q.py\n+++ b/q.py\n"
        "@@ -10,3 +10,3 @@\n a\n-b\n+B\n c\n"
    )
    wide = (
        "diff --git a/q.py b/q.py\n--- a/q.py\n+++ b/q.py\n"
        "@@ -8,5 +8,5 @@ def h():\n-  z\n+    z\n a\n-b\n+B\n c\n\\ No newline at end of file\n"
    )
    assert fingerprint(narrow) == fingerprint(wide)


def test_whitespace_only_file_and_file_order_do_not_count() -> None:
    other_file = (
        "diff --git a/z.py b/z.py\nindex 1..2 100644\n--- a/z.py\n+++ b/z.py\n"
        "@@ -1,2 +1,2 @@\n-x=1\n+x = 1\n y\n"
    )
    new_file = (
        "diff --git a/a.py b/a.py\nnew file mode 100644\nindex 0000000..e69de29\n"
        "--- /dev/null\n+++ b/a.py\n@@ -0,0 +1 @@\n+print(1)\n"
    )
    assert fingerprint(DIFF + other_file) == fingerprint(DIFF)
    assert fingerprint(new_file + DIFF) == fingerprint(DIFF + new_file)
    assert "new file mode 100644" in normalise_diff(new_file)


def test_a_removed_sql_comment_is_not_a_file_header() -> None:
    # "--- x" inside a hunk is a removed line "-- x": hunk bodies are read by count.
    diff = (
        "--- a/q.sql\t2026-01-01 00:00:00\n+++ b/q.sql\t2026-01-02 00:00:00\n"
        "@@ -1,2 +1,1 @@\n--- slow\n SELECT 1;\n"
    )
    assert count_diff(diff).model_dump() == {"added": 0, "removed": 1, "files": ["q.sql"]}
    assert normalise_diff(diff) == "--- a/q.sql +++ b/q.sql\n@@\n---slow\n"


def test_a_form_feed_in_a_source_line_does_not_split_it() -> None:
    diff = _diff("diff --git a/c.c b/c.c", "--- a/c.c", "+++ b/c.c",
                 "@@ -1,2 +1,2 @@", "-int a;\f/* page */", "+int b;\f/* page */", " x")
    assert count_diff(diff).model_dump() == {"added": 1, "removed": 1, "files": ["c.c"]}


def test_count_diff_counts_hunk_lines() -> None:
    size = count_diff(DIFF_RESPACED)
    assert (size.added, size.removed, size.lines, size.files) == (2, 1, 3, ["app/search.py"])


def test_diff_size_from_numstat() -> None:
    rows = parse_numstat("3\t1\tapp/search.py\n-\t-\tassets/logo.png\n10\t0\ttests/t.py\n")
    assert rows == [(3, 1, "app/search.py"), (None, None, "assets/logo.png"),
                    (10, 0, "tests/t.py")]
    size = diff_size(rows)
    assert (size.added, size.removed, size.lines) == (13, 1, 14)
    assert size.files == ["app/search.py", "assets/logo.png", "tests/t.py"]
    with pytest.raises(ValueError, match="not a numstat line"):
        parse_numstat("three\t1\tx\n")


SOURCE = "def f(x):\n    a = 1\n    b = 2\n    return x\n\n\ndef g():\n    return 2\n"


def test_real_git_diffs_agree_up_to_whitespace(
    make_repo: Callable[..., Path], git: Callable[..., str]
) -> None:
    # Three attempts as git sees them: k=2 made k=1's change with other spacing, a
    # re-indented line and an extra blank line (so a wider hunk); k=3 another change.
    repo = make_repo(files={"app/m.py": SOURCE, "logo.bin": "\x00\x01"})
    edits = {
        1: SOURCE.replace("return x\n", "return x + 1\n"),
        2: SOURCE.replace("    a = 1", "  a = 1").replace("return x\n", "return x+1\n\n"),
        3: SOURCE.replace("return x\n", "return x - 1\n"),
    }
    diffs: dict[int, str] = {}
    for k, text in edits.items():
        (repo / "app/m.py").write_text(text)
        diffs[k] = git(repo, "diff", "--binary")
        size = diff_size(parse_numstat(git(repo, "diff", "--numstat")))
        assert count_diff(diffs[k]).model_dump() == size.model_dump()
        git(repo, "checkout", "-q", "--", ".")
    assert fingerprint(diffs[1]) == fingerprint(diffs[2]) != fingerprint(diffs[3])
    assert count_diff(diffs[2]).lines > count_diff(diffs[1]).lines

    # A binary file's change is part of what is compared, but counts no lines.
    (repo / "logo.bin").write_bytes(b"\x00\x02")
    binary = git(repo, "diff", "--binary")
    assert "GIT binary patch" in binary
    assert fingerprint(binary) != fingerprint("")
    assert diff_size(parse_numstat(git(repo, "diff", "--numstat"))).lines == 0


# -- candidates from attempts -------------------------------------------------------------


def test_candidate_from_attempt() -> None:
    result = AttemptResult(
        task_id="search", attempt=2, branch="agentfleet-attempts/s/search/2",
        start_sha="a" * 40, head_sha="b" * 40, succeeded=False,
        reason="verify exited 1\nlong pytest output",
        outcome=AttemptOutcome(ending=Ending.COMPLETED, final_message="Done.",
                               usage=Usage(input_tokens=900, cached_input_tokens=300,
                                           output_tokens=100, reasoning_output_tokens=40)),
        verify=CheckResult(command="pytest", passed=False, exit_status=1, output_tail="1 failed"),
        files=["app/search.py"], duration_s=12.5,
        patch=CommitPatch.of(DIFF_RESPACED.encode(), "search"),
    )
    c = Candidate.from_attempt(result)
    assert (c.k, c.passed, c.reason, c.added, c.removed) == (2, False, "verify exited 1", 2, 1)
    assert c.fingerprint == fingerprint(DIFF)
    assert c.tokens == 1000 and c.usage.cached_input_tokens == 300
    assert (c.verify_exit_status, c.verify_output_tail, c.final_message) == (1, "1 failed",
                                                                             "Done.")
    assert Candidate.from_attempt(result, numstat="7\t2\tapp/search.py\n").diff_size == 9
    # The report's JSON carries the figures read off the candidate, and reads back.
    dumped = c.model_dump(mode="json")
    assert (dumped["outcome"], dumped["diff_size"], dumped["tokens"]) == ("failed", 3, 1000)
    assert Candidate.model_validate(dumped) == c


# -- what a person sees -----------------------------------------------------------------


def test_table_rows_mark_the_winner_and_carry_each_criterion() -> None:
    s = choose([cand(1, score=5.0), cand(2, score=2.0),
                cand(3, passed=False, reason="score's last non-empty line must be a number")])
    rows = candidates_table(s)
    assert [r["k"] for r in rows] == [1, 2, 3]
    assert [r["winner"] for r in rows] == ["", "yes", ""]
    assert list(rows[0])[:7] == ["k", "winner", "outcome", "score", "votes", "diff size",
                                 "tokens"]
    assert rows[1] | {} == {
        "k": 2, "winner": "yes", "outcome": "passed", "score": 2.0, "votes": 1,
        "diff size": 2, "tokens": 1000, "reason": "", "files": 0, "added": 1, "removed": 1,
        "verify exit": 0, "duration": "0.0s", "branch": "agentfleet-attempts/s/search/2",
    }
    assert (rows[2]["outcome"], rows[2]["score"], rows[2]["votes"]) == ("failed", "-", 0)

    md = candidates_markdown(s)
    assert md.splitlines()[0] == "**k=2 won on score: 2.0 < 5.0**"
    assert "| 2 | yes | passed | 2.0 | 1 | 2 | 1,000 |  |" in md
    assert md.count("\n| ") == 4  # header and three rows
