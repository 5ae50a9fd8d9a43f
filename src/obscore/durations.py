"""Durations written like ``5m`` or ``7d``, as integer milliseconds."""

from __future__ import annotations

import re

from obscore.errors import ConfigError

_UNITS_MS = {
    "ms": 1,
    "s": 1_000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
    "y": 31_536_000_000,
}
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")

#: The longest duration taken: 1000 years, far past any retention or silence
#: and far inside int64 milliseconds and the dates Python can print.
MAX_MS = 1000 * _UNITS_MS["y"]


def parse_duration(text: str | int) -> int:
    """Return a duration in milliseconds.

    Parameters
    ----------
    text : str or int
        A duration such as ``"5m"``, ``"1h30m"``, ``"250ms"``; an int is taken
        as milliseconds already.

    Returns
    -------
    int
        Milliseconds, non-negative.

    Raises
    ------
    ConfigError
        When the text is not a duration, or one longer than 1000 years
        (:data:`MAX_MS`).

    Examples
    --------
    >>> parse_duration("5m")
    300000
    >>> parse_duration("1h30m")
    5400000
    """
    if isinstance(text, bool):
        raise ConfigError(f"{text!r} is not a duration; use e.g. '5m' or '300s'")
    if isinstance(text, int):
        if text < 0:
            raise ConfigError(f"duration must be non-negative, got {text!r}")
        return _at_most_max(text, text)
    s = str(text).strip()
    pos, total = 0, 0
    for match in _PART.finditer(s):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _UNITS_MS[match.group(2)]
        pos = match.end()
    if pos != len(s) or not s:
        raise ConfigError(f"{text!r} is not a duration; use e.g. '5m' or '300s'")
    return _at_most_max(total, text)


def _at_most_max(ms: int, text: str | int) -> int:
    if ms > MAX_MS:
        raise ConfigError(f"duration {text!r} is longer than 1000 years")
    return ms


def format_duration(ms: int) -> str:
    """Write milliseconds in the largest whole units, e.g. ``300000 -> '5m'``.

    >>> format_duration(5_400_000)
    '1h30m'
    """
    if ms == 0:
        return "0s"
    parts = []
    for unit in ("d", "h", "m", "s", "ms"):
        size = _UNITS_MS[unit]
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(parts)
