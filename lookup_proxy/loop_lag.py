"""Event-loop lag: how long a lookup arriving now would wait for the event loop to be free.

One event loop serves every lookup of a process, so any pause of it (a garbage collection, a
sweep of the memory store, a peer group's statistics, a blocking call that slipped in) delays
every lookup in flight by its length. The collector's pauses are timed where they happen
(``gc_tuning.py``); the others have no hook. So a probe asks the loop to run it every
``interval`` and records how late it ran: a sample, at regular times, of what an arriving request
waits before the loop turns to it, whatever the cause. Pauses of that kind were found only by
a benchmark (bench/bench_stalls.py, 2026-12-07: a sweep of every key at once, 118 ms); with the
probe they show in production (``lookup_proxy_event_loop_lag_seconds``) before the p99 does.
Ten samples a second cost nothing measurable, and a sample of ten a second sees a pause of
50 ms about every other time it happens.
"""

from __future__ import annotations

import asyncio
from typing import Final

from prometheus_client import Histogram

INTERVAL: Final = 0.1
"""Seconds between the probe's runs."""


class LagProbe:
    """Records how late the loop runs a callback due every ``interval`` (see the module
    docstring)."""

    def __init__(self, histogram: Histogram, interval: float = INTERVAL) -> None:
        self.histogram = histogram
        self.interval = interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._next(loop.time())

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _next(self, now: float) -> None:
        assert self._loop is not None
        self._due = now + self.interval
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self.histogram.observe(max(0.0, now - self._due))
        self._next(now)
