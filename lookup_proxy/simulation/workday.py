"""When in a day lookups happen: shifts, breaks, and the pace of a person at a keyboard.

Honest clerks and simulated attackers share these helpers, so an attack is placed inside the
same working hours, and typed at the same human speed, as the honest work it hides in.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from lookup_proxy.simulation.roster import Employee

HOUR: Final = 3600
LAST_SECOND: Final = 24 * HOUR - 1

# Shift templates as (start, end, starts_a_shift) in seconds of the day; a segment that does not
# start a shift follows a lunch break. Split shifts are two real shifts in one day.
SHIFTS: Final[dict[str, tuple[tuple[int, int, bool], ...]]] = {
    "open": ((10 * HOUR, 13 * HOUR, True), (14 * HOUR, 19 * HOUR, False)),
    "mid": ((11 * HOUR, 14 * HOUR, True), (15 * HOUR, 20 * HOUR, False)),
    "close": ((12 * HOUR, 16 * HOUR, True), (17 * HOUR, 21 * HOUR, False)),
    "split": ((10 * HOUR, 14 * HOUR, True), (16 * HOUR, 20 * HOUR, True)),
}

Segment = tuple[int, int, bool]
# (second of day, number as typed, reason, reference, found, employee, threat or "")
Event = tuple[int, str, str, str, bool, "Employee", str]


def day_segments(employee: Employee, rng: random.Random) -> list[Segment]:
    """Turn the employee's shift template into today's working periods, with human jitter."""
    template = SHIFTS[employee.shift]
    lunch_shift = rng.randint(-1800, 1800)
    segments: list[Segment] = []
    for index, (start, end, fresh) in enumerate(template):
        start += rng.randint(-600, 600) if fresh else lunch_shift
        before_break = index + 1 < len(template) and not template[index + 1][2]
        end += lunch_shift if before_break else rng.randint(-600, 600)
        segments.append((start, end, fresh))
    return segments


def time_in(segments: Sequence[Segment], rng: random.Random, margin: int = 0) -> int:
    """Pick a moment inside working hours, weighting segments by length."""
    weights = [max(1, end - start - margin) for start, end, _ in segments]
    start, end, _ = rng.choices(segments, weights=weights)[0]
    return rng.randint(start, max(start, end - margin))


def session(start: int, count: int, rng: random.Random, gap: tuple[int, int]) -> Iterator[int]:
    """Space lookups the way a person at a keyboard can: seconds apart, never instant."""
    t = start
    for _ in range(count):
        yield min(t, LAST_SECOND)
        t += rng.randint(*gap)


def split_count(total: int, parts: int, rng: random.Random) -> list[int]:
    """Divide a day's quota among sessions unevenly, as attention comes and goes."""
    if parts <= 1 or total <= parts:
        return [total]
    cuts = sorted(rng.sample(range(1, total), parts - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]
