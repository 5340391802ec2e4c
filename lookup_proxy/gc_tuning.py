"""Garbage collection for a serving proxy: no full collections of start-up objects, fewer
collections of the young, and every pause measured.

A running proxy holds a few hundred thousand long-lived objects (the policy, compiled plans,
routes, the modules) that never become garbage, yet a full collection walks all of them: under
load that was a 50–67 ms stall about once a second, the whole p99 (issue 12). ``gc.freeze()``
after start-up moves them to a permanent generation no collection visits; a higher first
threshold lets short-lived request objects die by reference counting before a young collection
would walk them. Neither hides garbage: reference cycles are still found, only less often.

Only ``lookup-proxy serve`` calls :func:`tune_for_serving`: it changes process-wide settings,
which tests and tools that embed the proxy should not inherit.
"""

from __future__ import annotations

import gc
import time
from typing import Final

from prometheus_client import Histogram

THRESHOLDS: Final = (50_000, 20, 100)
"""Allocations before a young collection (default 700), and young/middle collections before
the next older one (defaults 10, 10). Measured with bench/perf.py (README "Garbage
collection"): the defaults gave six 60-70 ms full collections in a 15 s round; these, a few
young ones of about 10 ms and none older in the round. (7,000, 20, 100) traded them for
40-65 ms middle collections."""


class PauseTimer:
    """Times every collection (``gc.callbacks``) into a histogram by generation."""

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self._started = 0.0
        self._children = [histogram.labels(generation=str(g)) for g in range(3)]

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._children[info["generation"]].observe(time.perf_counter() - self._started)


def tune_for_serving(pauses: Histogram) -> PauseTimer:
    """Freeze what start-up made, raise the thresholds, and time every pause from now on."""
    gc.collect()  # what start-up left as garbage goes now, not frozen forever
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    timer = PauseTimer(pauses)
    gc.callbacks.append(timer)
    return timer
