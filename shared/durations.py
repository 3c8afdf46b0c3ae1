"""Go duration strings (``300ms``, ``1h30m``, ``168h``), as Distribution's config uses."""

from __future__ import annotations

import datetime
import re

_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_NANOSECONDS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def parse_duration(text: str) -> datetime.timedelta:
    """Parse a Go duration string (``300ms``, ``-1.5h``, ``2h45m``, ``0``)."""
    sign, body = (-1 if text[:1] == "-" else 1), text[1:] if text[:1] in "+-" else text
    if body == "0":
        return datetime.timedelta(0)
    nanoseconds, pos = 0.0, 0
    while body and pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None or match.group(1) in ("", "."):
            break
        nanoseconds += float(match.group(1)) * _NANOSECONDS[match.group(2)]
        pos = match.end()
    if not body or pos != len(body):
        raise ValueError("expected a duration such as 10s, 1h30m or 168h")
    return datetime.timedelta(microseconds=sign * nanoseconds / 1000)
