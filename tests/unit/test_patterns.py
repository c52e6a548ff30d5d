from __future__ import annotations

import itertools

import pytest

from agentfleet.patterns import (
    first_overlap,
    matches,
    may_overlap,
    overlap_witness,
    validate_pattern,
)

OVERLAP = [
    ("src/**", "src/api/x.py"),
    ("*.py", "docs/**"),
    ("src/*/models.py", "src/api/*"),
    ("**/test_*.py", "src/**"),
    ("tests/", "tests/unit/test_x.py"),
    ("src/db/**", "src/**/*.py"),
    ("[abc].py", "[!a].py"),
    ("?.py", "a.py"),
    ("src/?", "src/[xy]"),
    ("src/[a-c]*.py", "src/b*"),
    ("src/**/x", "src/a/b/c/x"),
    ("**", "anything/at/all"),
    ("*", "a/b"),
    ("a/**/b", "a/b"),
    ("a/**/b/**", "a/x/y/b/z"),
    ("docs/", "docs/**"),
    ("src/api.py", "src/api.py"),
    ("src/*.py", "src/"),
    ("lib/*.js", "**/[l]ib/*"),
    ("a*b", "ab"),
    ("a\\*", "a*"),
    ("x[!-]y", "xay"),
    # A pattern without an inner '/' matches at any depth.
    ("*.md", "docs/**"),
    ("test_*.py/", "src/test_a.py/x.py"),
]

DISJOINT = [
    ("src/api/**", "src/db/**"),
    ("docs/*.md", "docs/api/*.md"),
    ("src/*.py", "src/*.js"),
    ("src/[abc].py", "src/[def].py"),
    ("src/?.py", "src/ab.py"),
    ("a/b/", "a/c/"),
    ("src/api/", "src/db/x.py"),
    ("src/[!a]*", "src/a*"),
    ("a/**/b", "c/**/b"),
    ("src/*/x.py", "src/a/b/x.py"),
    ("src/a\\*", "src/ab"),
    ("web/**", "src/web/a.py"),
    ("x/*.py", "x/*.md"),
    ("src/*.py", "src/a/b.py"),
    # Unlike gitignore, a pattern without a trailing '/' names files, not a folder's
    # contents: otherwise 'a.md/b.py' would match both of these and nothing would
    # ever run in parallel.
    ("a/b", "a/b/"),
    ("*.md", "*.py"),
    ("build", "build/out/x.o"),
    ("[abc].py", "[def].py"),
    ("a\\*", "ab"),
    ("test_*.py/", "src/api.py"),
    ("x/*.py", "x/*/*.py"),
]


@pytest.mark.parametrize(("a", "b"), OVERLAP)
def test_overlap_with_a_real_witness(a: str, b: str) -> None:
    assert may_overlap(a, b)
    assert may_overlap(b, a)
    witness = overlap_witness(a, b)
    assert witness is not None
    assert matches(a, witness), witness
    assert matches(b, witness), witness


@pytest.mark.parametrize(("a", "b"), DISJOINT)
def test_disjoint(a: str, b: str) -> None:
    assert not may_overlap(a, b)
    assert not may_overlap(b, a)
    assert overlap_witness(a, b) is None


def test_readable_witnesses() -> None:
    assert overlap_witness("src/db/**", "src/**/*.py") == "src/db/a.py"
    assert overlap_witness("*.py", "docs/**") == "docs/a.py"
    assert overlap_witness("**/test_*.py", "src/**") == "src/test_a.py"


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("*.py", "a.py", True),
        ("*.py", "src/deep/a.py", True),
        ("src/*.py", "src/a.py", True),
        ("src/*.py", "src/x/a.py", False),
        ("src/**", "src/x/a.py", True),
        ("src/**", "src", False),
        ("tests/", "tests/unit/x.py", True),
        ("tests/", "tests", False),
        ("tests/", "a/tests/x.py", True),
        ("a/b", "a/b/c", False),  # a folder needs a/b/ or a/b/**
        ("a/b/", "a/b/c", True),
        ("a/b", "x/a/b", False),
        ("?.py", "ab.py", False),
        ("[a-c].py", "b.py", True),
        ("[!a-c].py", "b.py", False),
        ("docs/**/*.md", "docs/a.md", True),
        ("docs/**/*.md", "docs/x/y/a.md", True),
    ],
)
def test_matches(pattern: str, path: str, expected: bool) -> None:
    assert matches(pattern, path) is expected


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        ("", "empty"),
        ("   ", "empty"),
        (" a", "spaces"),
        ("../x", "leaves the repository"),
        ("src/../../x", "leaves the repository"),
        ("/etc/passwd", "absolute"),
        ("C:\\x", "absolute"),
        ("!src/**", "negat"),
        ("#x", "comment"),
        ("a//b", "empty segment"),
        ("./src", "'.' segment"),
        ("src/[ab", "not closed"),
        ("[[:alpha:]]", "[:alpha:]"),
        ("[z-a]", "bad range"),
        ("src\\api", "use '/'"),
        ("a\\", "lone"),
    ],
)
def test_invalid_patterns(pattern: str, words: str) -> None:
    problem = validate_pattern(pattern)
    assert problem is not None and words in problem, problem
    assert may_overlap(pattern, "x")  # unreadable patterns are assumed to overlap
    with pytest.raises(ValueError):
        matches(pattern, "x")


@pytest.mark.parametrize("pattern", ["src/**", "*.py", "a/b/", "x\\*y", "[]a]", "**/t_?.py"])
def test_valid_patterns(pattern: str) -> None:
    assert validate_pattern(pattern) is None


def test_first_overlap() -> None:
    assert first_overlap(["src/api/**"], ["src/db/**", "docs/**"]) is None
    found = first_overlap(["src/api/**"], ["docs/**", "src/**/*.py"])
    assert found is not None and found.b == "src/**/*.py"
    assert found.witness is not None and matches(found.a, found.witness)
    assert first_overlap(None, ["x"]) is not None
    assert first_overlap(["x"], None) is not None


# ---- the decision is exact: brute force over every short path built from the patterns' words

PATTERNS = [
    "src/**", "src/api/**", "src/*.py", "*.py", "*.md", "docs/", "docs/*.md", "**/test_*.py",
    "tests/**", "src/?/x", "src/[ab]/*", "src/[!a]/x", "a*b", "**/b/*", "x/**/y", "b",
    "src/a/", "[st]*/a",
]
SEGMENTS = ["src", "api", "a", "b", "x", "y", "docs", "tests", "s", "a.py", "b.md", "test_a.py",
            "ab", "axb"]
PATHS = ["/".join(p) for n in range(1, 4) for p in itertools.product(SEGMENTS, repeat=n)]


@pytest.mark.parametrize(("a", "b"), list(itertools.combinations(PATTERNS, 2)))
def test_decision_agrees_with_brute_force(a: str, b: str) -> None:
    witness = overlap_witness(a, b)
    if witness is not None:
        assert matches(a, witness) and matches(b, witness), witness
    else:
        common = [p for p in PATHS if matches(a, p) and matches(b, p)]
        assert not common, f"{a} and {b} both match {common[:3]}"
