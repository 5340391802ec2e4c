"""The clock is injected so the live proxy, the replay tool and the tests share every line of
policy code: live lookups read wall time, replay reads each event's timestamp, tests step time."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Seconds since the epoch, as a float."""

    def now(self) -> float: ...


class SystemClock:
    """Wall-clock time; every instance sharing one Redis must agree, so this is not monotonic."""

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that only moves when told to: replay sets it per event, tests advance it."""

    def __init__(self, start: float = 1_790_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def set(self, when: float) -> None:
        self._now = when

    def advance(self, seconds: float) -> None:
        self._now += seconds
