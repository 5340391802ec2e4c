"""The event-loop lag probe (lookup_proxy/loop_lag.py): a pause of the loop shows as the
lateness of the probe's next run, and a stopped probe records nothing more."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Histogram

from lookup_proxy.loop_lag import LagProbe


def _late(registry: CollectorRegistry, beyond: str) -> float:
    """Samples later than ``beyond`` seconds (a bucket bound)."""
    every = registry.get_sample_value("lag_bucket", {"le": "+Inf"}) or 0.0
    within = registry.get_sample_value("lag_bucket", {"le": beyond}) or 0.0
    return every - within


async def test_a_pause_of_the_loop_is_the_probe_s_lateness() -> None:
    """The loop blocked for 0.3 s while a run of the probe was due within 0.02 s: that run
    comes at least 0.28 s late, and is recorded so."""
    registry = CollectorRegistry()
    histogram = Histogram("lag", "lag", buckets=(0.01, 0.1, 1.0), registry=registry)
    probe = LagProbe(histogram, interval=0.02)
    probe.start(asyncio.get_running_loop())
    await asyncio.sleep(0.1)
    assert (registry.get_sample_value("lag_count") or 0) >= 1  # it runs on its own
    late_before = _late(registry, "0.1")
    time.sleep(0.3)  # noqa: ASYNC251 -- the point: a pause of the whole loop, as a blocking call makes
    await asyncio.sleep(0.05)
    probe.stop()
    assert _late(registry, "0.1") >= late_before + 1


async def test_a_stopped_probe_records_nothing_more() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("lag", "lag", registry=registry)
    probe = LagProbe(histogram, interval=0.01)
    probe.start(asyncio.get_running_loop())
    await asyncio.sleep(0.05)
    probe.stop()
    count = registry.get_sample_value("lag_count")
    await asyncio.sleep(0.05)
    assert registry.get_sample_value("lag_count") == count
