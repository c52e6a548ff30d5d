"""Path patterns of the files a task may change, and whether two can meet.

Patterns are gitignore-style and relative to the repository root:

- a pattern with no ``/`` other than a trailing one matches at any depth
  (``*.py`` matches ``a/b/c.py``); any other ``/`` anchors it at the root;
- a trailing ``/`` means a directory and everything under it, as does a
  trailing ``/**``;
- ``*``, ``?`` and ``[...]`` never cross ``/``; a whole ``**`` segment crosses
  any number of folders;
- unlike gitignore, a pattern without a trailing ``/`` names files, not the
  contents of a folder of that name. Otherwise ``alpha.txt`` and ``beta.txt``
  could both match ``alpha.txt/beta.txt`` and no two tasks would ever run in
  parallel; a pattern naming a folder of the repository is refused when the
  plan is checked, so the mistake costs no tokens.

``matches`` and ``may_overlap`` share one compiled form, so they always agree.
``may_overlap`` decides from
the two patterns alone whether any file path can match both: each pattern is
compiled to a sequence of segment tokens (a glob for one segment, or ``**`` for
any number of segments), and the two sequences are intersected by a product
construction; a pair of globs is intersected the same way one character at a
time, with character classes as interval sets. The answer is exact for the
syntax we accept, and leans to "they overlap" wherever it is unsure.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass
from functools import cache, lru_cache

__all__ = [
    "matches",
    "validate_pattern",
    "may_overlap",
    "overlap_witness",
    "first_overlap",
    "overlapping_pairs",
]

# ---------------------------------------------------------------- validation

_DRIVE_RE = re.compile(r"^[A-Za-z]:[\\/]")
# Characters a backslash may escape; anything else is most likely a Windows separator.
_ESCAPABLE = set("*?[]\\!# -^")


@lru_cache(maxsize=65536)
def validate_pattern(p: str) -> str | None:
    """Why ``p`` is not an acceptable path pattern, in words a user can act on, or None."""
    if not isinstance(p, str) or not p.strip():
        return "empty path pattern"
    if p != p.strip():
        return f"path pattern {p!r} has leading or trailing spaces"
    if p.startswith("/") or _DRIVE_RE.match(p) or p.startswith("\\\\"):
        return (
            f"path pattern '{p}' is absolute: write it relative to the repository root "
            "(e.g. src/**)"
        )
    if p.startswith("!"):
        return f"path pattern '{p}' is negated; negation is not supported: list what may change"
    if p.startswith("#"):
        return f"path pattern '{p}' starts with '#' (a comment in gitignore); write \\# for a '#'"
    body = p[:-1] if p.endswith("/") else p
    segments = body.split("/")
    if any(seg == ".." for seg in segments):
        return f"path pattern '{p}' leaves the repository ('..'): patterns stay inside it"
    if any(seg == "." for seg in segments):
        return f"path pattern '{p}' has a '.' segment: write the path from the repository root"
    if any(seg == "" for seg in segments):
        return f"path pattern '{p}' has an empty segment ('//')"
    for seg in segments:
        if seg == "**":
            continue
        try:
            _parse_glob(seg)
        except ValueError as exc:
            return f"path pattern '{p}': {exc}"
    return None


# ---------------------------------------------------------------- matching


def matches(pattern: str, path: str) -> bool:
    """Whether the repository-relative file ``path`` matches ``pattern``."""
    path = path.replace("\\", "/") if "\\" in path and "/" not in path else path
    while path.startswith("./"):
        path = path[2:]
    return _tokens_match(_compile(pattern), tuple(path.split("/")))


def _glob_match(glob: Glob, text: str) -> bool:
    """Whether one segment's glob matches ``text`` (no '/' in it)."""
    states = {0}
    for ch in text:
        code = ord(ch)
        nxt: set[int] = set()
        for i in _closure(glob, states):
            if i < len(glob):
                item = glob[i]
                if isinstance(item, str):  # _STAR
                    nxt.add(i)
                elif any(lo <= code <= hi for lo, hi in item):
                    nxt.add(i + 1)
        states = nxt
        if not states:
            return False
    return len(glob) in _closure(glob, states)


def _closure(glob: Glob, states: set[int]) -> set[int]:
    out = set(states)
    for i in sorted(states):
        while i < len(glob) and glob[i] == _STAR:
            i += 1
            out.add(i)
    return out


def _tokens_match(tokens: tuple[Token, ...], segments: tuple[str, ...]) -> bool:
    @cache
    def match(i: int, j: int) -> bool:
        if i == len(tokens):
            return j == len(segments)
        token = tokens[i]
        if isinstance(token, str):  # _STAR2
            return match(i + 1, j) or (j < len(segments) and match(i, j + 1))
        return j < len(segments) and _glob_match(token, segments[j]) and match(i + 1, j + 1)

    return match(0, 0)


# ---------------------------------------------------------------- character sets
# A set of characters is a tuple of disjoint, sorted, inclusive code-point
# intervals. The alphabet of a path segment is every character but NUL and '/'.

Intervals = tuple[tuple[int, int], ...]
_MAX = 0x10FFFF
ANY: Intervals = ((1, 0x2E), (0x30, _MAX))


def _normalize(intervals: list[tuple[int, int]]) -> Intervals:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return _intersect(tuple(out), ANY) if out else ()


def _intersect(a: Intervals, b: Intervals) -> Intervals:
    out = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def _complement(a: Intervals) -> Intervals:
    out = []
    start = 0
    for lo, hi in a:
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    if start <= _MAX:
        out.append((start, _MAX))
    return _intersect(tuple(out), ANY)


_PREFERRED = "a" + "bcdefghijklmnopqrstuvwxyz0123456789_ABCDEFGHIJKLMNOPQRSTUVWXYZ.-"


def _pick(cs: Intervals) -> str:
    """A readable member of a non-empty set, for example paths."""
    for ch in _PREFERRED:
        if any(lo <= ord(ch) <= hi for lo, hi in cs):
            return ch
    for lo, hi in cs:  # prefer something printable
        if hi >= 0x21:
            return chr(max(lo, 0x21))
    return chr(cs[0][0])


# ---------------------------------------------------------------- globs
# A glob is a tuple of items: _STAR (any run of characters) or an Intervals
# (exactly one character from the set).

_STAR = "*"
_STAR2 = "**"  # a whole segment: any number of segments
Item = str | Intervals
Glob = tuple[Item, ...]


def _parse_class(seg: str, i: int) -> tuple[Intervals, int]:
    """Parse the class starting at seg[i] == '['; returns its set and the index after ']'."""
    j = i + 1
    negate = j < len(seg) and seg[j] in "!^"
    if negate:
        j += 1
    members: list[tuple[int, int]] = []
    first = True
    while True:
        if j >= len(seg):
            raise ValueError("'[' is not closed (write \\[ for a literal bracket)")
        ch = seg[j]
        if ch == "]" and not first:
            j += 1
            break
        first = False
        if ch == "[" and seg.startswith("[:", j):
            raise ValueError(
                "character classes like [:alpha:] are not supported; list the characters, "
                "e.g. [a-zA-Z]"
            )
        if ch == "\\":
            j += 1
            if j >= len(seg):
                raise ValueError("'[' is not closed (write \\[ for a literal bracket)")
            ch = seg[j]
        lo = ord(ch)
        j += 1
        if j + 1 < len(seg) and seg[j] == "-" and seg[j + 1] != "]":
            hi_ch = seg[j + 1]
            j += 2
            if hi_ch == "\\":
                if j >= len(seg):
                    raise ValueError("'[' is not closed (write \\[ for a literal bracket)")
                hi_ch = seg[j]
                j += 1
            if ord(hi_ch) < lo:
                raise ValueError(f"bad range '{ch}-{hi_ch}' in [...] (the end is before the start)")
            members.append((lo, ord(hi_ch)))
        else:
            members.append((lo, lo))
    cs = _normalize(members)
    return (_complement(cs) if negate else cs), j


@lru_cache(maxsize=4096)
def _char(code: int) -> Intervals:
    """The set of one literal character (thousands of patterns share their letters)."""
    return _normalize([(code, code)])


@lru_cache(maxsize=65536)
def _parse_glob(seg: str) -> Glob:
    """Compile one path segment's glob (never '**' alone) into items."""
    items: list[Item] = []
    i = 0
    while i < len(seg):
        ch = seg[i]
        if ch == "*":
            if not items or items[-1] != _STAR:  # '**' inside a segment is just '*'
                items.append(_STAR)
            i += 1
        elif ch == "?":
            items.append(ANY)
            i += 1
        elif ch == "[":
            cs, i = _parse_class(seg, i)
            items.append(cs)
        elif ch == "\\":
            if i + 1 >= len(seg):
                raise ValueError("ends with a lone '\\' (write \\\\ for a backslash)")
            nxt = seg[i + 1]
            if nxt not in _ESCAPABLE:
                raise ValueError(
                    f"has '\\{nxt}': use '/' between folders (a backslash escapes the next "
                    "character)"
                )
            items.append(_char(ord(nxt)))
            i += 2
        else:
            items.append(_char(ord(ch)))
            i += 1
    return tuple(items)


@lru_cache(maxsize=16384)
def _glob_witness_exact(a: Glob, b: Glob) -> str | None:
    """The shortest non-empty string both globs match, or None (product construction)."""
    start = (0, 0, False)
    parent: dict[tuple[int, int, bool], tuple[tuple[int, int, bool], str] | None] = {start: None}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        i, j, nonempty = state
        if i == len(a) and j == len(b) and nonempty:
            chars = []
            while parent[state] is not None:
                state, ch = parent[state]  # type: ignore[misc]
                chars.append(ch)
            return "".join(reversed(chars))
        moves: list[tuple[tuple[int, int, bool], str]] = []
        if i < len(a) and a[i] == _STAR:
            moves.append(((i + 1, j, nonempty), ""))
        if j < len(b) and b[j] == _STAR:
            moves.append(((i, j + 1, nonempty), ""))
        if i < len(a) and j < len(b):
            ca = ANY if a[i] == _STAR else a[i]
            cb = ANY if b[j] == _STAR else b[j]
            both = _intersect(ca, cb)  # type: ignore[arg-type]
            if both:
                ni = i if a[i] == _STAR else i + 1
                nj = j if b[j] == _STAR else j + 1
                moves.append(((ni, nj, True), _pick(both)))
        for nxt, ch in moves:
            if nxt not in parent:
                parent[nxt] = (state, ch)
                # Epsilon moves go first so a shortest witness stays shortest.
                if ch:
                    queue.append(nxt)
                else:
                    queue.appendleft(nxt)
    return None


def _starred(g: Glob) -> Glob:
    return tuple(x for item in g for x in ((ANY, _STAR) if item == _STAR else (item,)))


def _glob_witness(a: Glob, b: Glob) -> str | None:
    """A non-empty string both globs match, preferring one where every '*' matches something."""
    # 'a.py' reads better than '.py' as an example for '*.py' and '*'.
    return _glob_witness_exact(_starred(a), _starred(b)) or _glob_witness_exact(a, b)


# ---------------------------------------------------------------- patterns

Token = str | Glob  # _STAR2 or one segment's glob
_ANY_SEGMENT: Glob = (_STAR,)


@dataclass(frozen=True)
class _Compiled:
    tokens: tuple[Token, ...]


@lru_cache(maxsize=65536)
def _compile(pattern: str) -> tuple[Token, ...]:
    """The pattern as segment tokens matching exactly the file paths it matches."""
    problem = validate_pattern(pattern)
    if problem:
        raise ValueError(problem)
    dir_only = pattern.endswith("/")
    segments = (pattern[:-1] if dir_only else pattern).split("/")
    if len(segments) == 1:  # no inner '/': matches at any depth
        segments = ["**", *segments]
    tokens: list[Token] = [_STAR2 if s == "**" else _parse_glob(s) for s in segments]
    if tokens[-1] == _STAR2:  # a trailing '/**' is everything inside: one or more segments
        tokens[-1:] = [_ANY_SEGMENT, _STAR2]
    if dir_only:  # a directory: some file under it
        tokens += [_ANY_SEGMENT, _STAR2]
    return tuple(tokens)


def _segment_witness(a: Token, b: Token) -> str | None:
    ga = _ANY_SEGMENT if a == _STAR2 else a
    gb = _ANY_SEGMENT if b == _STAR2 else b
    return _glob_witness(ga, gb)  # type: ignore[arg-type]


@lru_cache(maxsize=16384)
def overlap_witness(a: str, b: str) -> str | None:
    """An example file path matching both patterns, or None when no path can match both."""
    ta, tb = _compile(a), _compile(b)
    start = (0, 0, False)
    parent: dict[tuple[int, int, bool], tuple[tuple[int, int, bool], str] | None] = {start: None}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        i, j, nonempty = state
        if i == len(ta) and j == len(tb) and nonempty:
            segments = []
            while parent[state] is not None:
                state, seg = parent[state]  # type: ignore[misc]
                if seg:
                    segments.append(seg)
            return "/".join(reversed(segments))
        moves: list[tuple[tuple[int, int, bool], str]] = []
        if i < len(ta) and ta[i] == _STAR2:
            moves.append(((i + 1, j, nonempty), ""))
        if j < len(tb) and tb[j] == _STAR2:
            moves.append(((i, j + 1, nonempty), ""))
        if i < len(ta) and j < len(tb):
            seg = _segment_witness(ta[i], tb[j])
            if seg is not None:
                ni = i if ta[i] == _STAR2 else i + 1
                nj = j if tb[j] == _STAR2 else j + 1
                moves.append(((ni, nj, True), seg))
        for nxt, seg in moves:
            if nxt not in parent:
                parent[nxt] = (state, seg)
                if seg:
                    queue.append(nxt)
                else:
                    queue.appendleft(nxt)
    return None


def may_overlap(a: str, b: str) -> bool:
    """Whether some file path could match both patterns (True when unsure, never False wrongly).

    The same product construction as ``overlap_witness``, deciding only yes or no: no
    example is built, so a plan's thousands of pairs stay cheap.
    """
    try:
        return _tokens_meet(_compile(a), _compile(b))
    except ValueError:
        return True  # a pattern we cannot read may match anything


def _sets_meet(a: Intervals, b: Intervals) -> bool:
    i = j = 0
    while i < len(a) and j < len(b):
        if max(a[i][0], b[j][0]) <= min(a[i][1], b[j][1]):
            return True
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return False


@lru_cache(maxsize=65536)
def _globs_meet(a: Glob, b: Glob) -> bool:
    """Whether some non-empty segment matches both globs (``_glob_witness_exact`` is not None)."""
    seen = {(0, 0, False)}
    stack = [(0, 0, False)]
    while stack:
        i, j, nonempty = stack.pop()
        if i == len(a) and j == len(b) and nonempty:
            return True
        moves = []
        if i < len(a) and a[i] == _STAR:
            moves.append((i + 1, j, nonempty))
        if j < len(b) and b[j] == _STAR:
            moves.append((i, j + 1, nonempty))
        if i < len(a) and j < len(b):
            ca = ANY if a[i] == _STAR else a[i]
            cb = ANY if b[j] == _STAR else b[j]
            if _sets_meet(ca, cb):  # type: ignore[arg-type]
                moves.append((i if a[i] == _STAR else i + 1, j if b[j] == _STAR else j + 1, True))
        for nxt in moves:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return False


def _tokens_meet(ta: tuple[Token, ...], tb: tuple[Token, ...]) -> bool:
    """Whether some file path matches both token sequences (``overlap_witness`` is not None)."""
    seen = {(0, 0, False)}
    stack = [(0, 0, False)]
    while stack:
        i, j, nonempty = stack.pop()
        if i == len(ta) and j == len(tb) and nonempty:
            return True
        moves = []
        if i < len(ta) and ta[i] == _STAR2:
            moves.append((i + 1, j, nonempty))
        if j < len(tb) and tb[j] == _STAR2:
            moves.append((i, j + 1, nonempty))
        if i < len(ta) and j < len(tb):
            ga = _ANY_SEGMENT if ta[i] == _STAR2 else ta[i]
            gb = _ANY_SEGMENT if tb[j] == _STAR2 else tb[j]
            if _globs_meet(ga, gb):  # type: ignore[arg-type]
                ni = i if ta[i] == _STAR2 else i + 1
                nj = j if tb[j] == _STAR2 else j + 1
                moves.append((ni, nj, True))
        for nxt in moves:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return False


# ---------------------------------------------------------------- many patterns at once
# A plan of a thousand tasks has half a million pairs; most share no literal prefix
# ('src/mod1/' and 'src/mod2/') or no literal end ('*_1.py' and '*_2.py') and can be
# ruled out without the product construction.


def _literal_run(glob: Glob, reverse: bool = False) -> tuple[str, bool]:
    """The literal characters a glob starts (or ends) with, and whether that is all of it."""
    out: list[str] = []
    for item in reversed(glob) if reverse else glob:
        if isinstance(item, str) or len(item) != 1 or item[0][0] != item[0][1]:  # _STAR
            return "".join(reversed(out) if reverse else out), False
        out.append(chr(item[0][0]))
    return "".join(reversed(out) if reverse else out), True


def _prefix_key(tokens: tuple[Token, ...]) -> str:
    """A string every matching path (plus a NUL) starts with: two patterns can meet only
    when one's key starts with the other's."""
    out: list[str] = []
    for token in tokens:
        if token == _STAR2:
            return "".join(out)
        text, whole = _literal_run(token)  # type: ignore[arg-type]
        out.append(text)
        if not whole:
            return "".join(out)
        out.append("/")
    out[-1] = "\0"  # a whole literal path: nothing may follow it
    return "".join(out)


def _suffix_key(tokens: tuple[Token, ...]) -> str:
    """The literal end of the last segment, reversed: every matching path ends with it."""
    return _literal_run(tokens[-1], reverse=True)[0][::-1]  # type: ignore[arg-type]


def _related(
    keys: list[str], key: str, positions: dict[str, list[int]], *, with_empty: bool
) -> list[int]:
    """Indexes of the sorted ``keys`` that start with ``key`` or that ``key`` starts with
    (the empty key only ``with_empty``)."""
    found = []
    i = bisect_left(keys, key)
    while i < len(keys) and keys[i].startswith(key):
        found.append(i)
        i += 1
    for n in range(0 if with_empty else 1, len(key)):
        found += positions.get(key[:n], [])
    return found


def overlapping_pairs(patterns: list[str]) -> set[tuple[int, int]]:
    """Every pair ``(i, j)``, ``i < j``, of ``patterns`` that may match a common file.

    Exactly ``may_overlap`` on each pair, without trying each pair: candidates come from
    sorted literal prefixes (and, for patterns with none, literal ends).
    """
    compiled: list[tuple[Token, ...] | None] = []
    for p in patterns:
        try:
            compiled.append(_compile(p))
        except ValueError:
            compiled.append(None)  # unreadable: may meet anything
    prefix = ["" if t is None else _prefix_key(t) for t in compiled]
    suffix = ["" if t is None else _suffix_key(t) for t in compiled]
    # The last segment's literal start: 'x1-*.md' and 'x2-*.md' share their end only.
    last = ["" if t is None else _literal_run(t[-1])[0] for t in compiled]  # type: ignore[arg-type]
    by_prefix = sorted(range(len(patterns)), key=prefix.__getitem__)
    prefix_keys = [prefix[i] for i in by_prefix]
    prefix_at: dict[str, list[int]] = {}
    for n, k in enumerate(prefix_keys):
        prefix_at.setdefault(k, []).append(n)
    by_suffix = sorted(range(len(patterns)), key=suffix.__getitem__)
    suffix_keys = [suffix[i] for i in by_suffix]
    suffix_at: dict[str, list[int]] = {}
    for n, k in enumerate(suffix_keys):
        suffix_at.setdefault(k, []).append(n)

    pairs: set[tuple[int, int]] = set()
    for i in range(len(patterns)):
        if prefix[i]:
            # Patterns without a literal start find this one from their side, below.
            found = _related(prefix_keys, prefix[i], prefix_at, with_empty=False)
            candidates = [by_prefix[n] for n in found]
        else:  # no literal start: every pattern whose literal end is compatible
            found = _related(suffix_keys, suffix[i], suffix_at, with_empty=True)
            candidates = [by_suffix[n] for n in found]
        for j in candidates:
            if j == i:
                continue
            pair = (i, j) if i < j else (j, i)
            if pair in pairs:
                continue
            s, t = suffix[i], suffix[j]  # reversed: "starts with" is "ends with"
            if not (s.startswith(t) or t.startswith(s)):
                continue
            s, t = last[i], last[j]
            if not (s.startswith(t) or t.startswith(s)):
                continue
            a, b = compiled[i], compiled[j]
            if a is None or b is None or _tokens_meet(a, b):
                pairs.add(pair)
    return pairs


@dataclass(frozen=True)
class Overlap:
    """Two patterns that may match a common file, with an example when one is known."""

    a: str
    b: str
    witness: str | None


def first_overlap(a: list[str] | None, b: list[str] | None) -> Overlap | None:
    """The first pair of patterns from two lists that may overlap (None = all files), or None."""
    if a is None or b is None:
        return Overlap("**" if a is None else a[0], "**" if b is None else b[0], None)
    for pa in a:
        for pb in b:
            if may_overlap(pa, pb):
                try:
                    witness = overlap_witness(pa, pb)
                except ValueError:
                    witness = None
                return Overlap(pa, pb, witness)
    return None
