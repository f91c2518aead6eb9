"""Parsing what a person types for a report: times (``7d``, ``2025-01-31``, ...) and ``--by``.

Relative times count back from now: ``90s``, ``30m``, ``24h``, ``7d``, ``2w``; ``now``. Absolute
times are ISO 8601 dates or date-times (UTC when no offset is given) or unix seconds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

DIMENSIONS = ("model", "route", "tenant", "tag", "batch", "day", "cache")
"""The columns a report can be grouped by."""

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


_EARLIEST = datetime(1, 1, 1, tzinfo=UTC).timestamp()
_LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


def parse_when(text: str, now: float) -> float:
    """A unix time from a relative duration (``7d`` = 7 days before now), ISO text or seconds.

    Raises `ValueError` with a message meant for the person who typed it, also for a time that
    is no date (``nan``, ``inf``, ``1e20``, ``99999999999d``): the stores and `iso` need one.
    """
    when = _parse_when(text, now)
    if not _EARLIEST <= when <= _LATEST:  # NaN is not in range either
        raise ValueError(f"{text!r} is out of range: a time must fall in the years 1 to 9999")
    return when


def _parse_when(text: str, now: float) -> float:
    value = text.strip()
    if value.lower() == "now":
        return now
    match = _RELATIVE.match(value.lower())
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use a duration before now (90s, 30m, 24h, 7d, 2w), "
            "'now', an ISO date or date-time (UTC unless an offset is given), or unix seconds"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def parse_by(values: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"model,route"`` (or repeated values) to a checked tuple, in the order given."""
    if values is None:
        return ()
    items = [values] if isinstance(values, str) else list(values)
    by: list[str] = []
    for item in items:
        for name in item.split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name not in DIMENSIONS:
                raise ValueError(f"cannot group by {name!r}: choose from {', '.join(DIMENSIONS)}")
            if name not in by:
                by.append(name)
    if "batch" in by and "tag" in by:
        raise ValueError("group by batch or by tag, not both: a batch line's batch is its tag")
    return tuple(by)


def iso(unix_time: float) -> str:
    """A unix time as ISO 8601 in UTC, to the second."""
    return datetime.fromtimestamp(unix_time, UTC).isoformat(timespec="seconds")
