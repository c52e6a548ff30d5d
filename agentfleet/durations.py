"""Durations as people write them in a plan: ``90s``, ``20m``, ``1h30m``, ``45``."""

from __future__ import annotations

import math
import re

_DURATION_RE = re.compile(
    r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?$"
)
_NUMBER_RE = re.compile(r"^\d+(?:\.\d+)?$")
HINT = "use 90s, 20m, 1h"


def parse_duration(text: str | int | float) -> float:
    """Seconds in a duration like ``90s``, ``20m``, ``1h``, ``1h30m`` or ``45`` (bare = seconds)."""
    if isinstance(text, bool):
        raise ValueError(f"bad duration {text!r} ({HINT})")
    if isinstance(text, int | float):
        if not math.isfinite(text) or text < 0:
            raise ValueError(f"bad duration {text!r} ({HINT})")
        return float(text)
    value = str(text).strip().lower().replace(" ", "")
    if _NUMBER_RE.match(value):
        return float(value)
    match = _DURATION_RE.match(value)
    # The regex also matches "" (every part optional), which is not a duration.
    if not value or not match:
        raise ValueError(f"bad duration {str(text)!r} ({HINT})")
    hours, minutes, seconds = (float(match.group(k) or 0) for k in ("h", "m", "s"))
    return hours * 3600 + minutes * 60 + seconds


def format_duration(seconds: float) -> str:
    """A short human form of a number of seconds: ``1h30m``, ``2m5s``, ``0.5s``."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds < 60 and seconds != int(seconds):
        return f"{seconds:.3g}s"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs else "",
    ]
    return "".join(parts) or "0s"
