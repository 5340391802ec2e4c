"""Garbage collection tuned for serving (lookup_proxy/gc_tuning.py): start-up objects frozen,
thresholds raised, every pause timed. Run in a fresh interpreter: the settings are global."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.harness import ROOT

PROBE = """
import gc, json
from prometheus_client import CollectorRegistry, Histogram
from lookup_proxy.gc_tuning import THRESHOLDS, tune_for_serving

long_lived = [[i] for i in range(50_000)]   # start-up state (lists: always GC-tracked)
pauses = Histogram("p", "p", ["generation"], registry=CollectorRegistry())
tune_for_serving(pauses)
frozen = gc.get_freeze_count()
for _ in range(20):                               # a request's cycles, made after start-up
    a = {}; b = {"a": a}; a["b"] = b
gc.collect(0); gc.collect(2)
counts = {
    s.labels["generation"]: s.value
    for m in pauses.collect() for s in m.samples if s.name.endswith("_count")
}
print(json.dumps({"frozen": frozen, "thresholds": list(gc.get_threshold()),
                  "expected": list(THRESHOLDS), "counts": counts}))
"""


def test_serving_freezes_start_up_raises_thresholds_and_times_each_pause() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["frozen"] >= 50_000  # the long-lived objects left the collected generations
    assert found["thresholds"] == found["expected"]
    assert found["counts"]["0"] >= 1 and found["counts"]["2"] >= 1  # both pauses were timed
