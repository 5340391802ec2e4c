"""Durations as security staff write them in the policy ("90s", "1h", "7d").

A bare number is refused on purpose: "60" could mean seconds or minutes, and a lockout that
is sixty times too short is a silent hole.
"""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> float:
    """Seconds in ``text`` such as ``90s``, ``1h30m``, ``250ms`` or ``7d``."""
    cleaned = text.strip().replace(" ", "")
    if not cleaned:
        raise ValueError("a duration such as '90s', '15m', '1h' or '7d', not an empty string")
    position = 0
    total = 0.0
    for match in _PART.finditer(cleaned):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(cleaned):
        raise ValueError(
            f"a duration such as '90s', '15m', '1h' or '7d' (units ms, s, m, h, d, w), not {text!r}"
        )
    return total


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of ``seconds`` for messages and metric help texts."""
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    return f"{seconds:g}s"
