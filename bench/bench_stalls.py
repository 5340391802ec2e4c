"""The longest pauses a serving proxy's event loop takes besides garbage collection (issue 12).

A pause stops every lookup in flight, so it is the tail's worst enemy at any rate. Four were
found on 2026-12-07 and are measured here:

- **The memory store's sweep of expired keys.** It visited every key at once, once four times as
  many operations as keys had run: on a store the size of a simulated month's (200,000-odd
  keys) 15 ms when nothing had expired and over 100 ms when tens of thousands had. Now it visits
  ``_SWEEP_SLICE`` keys per batch. This part runs the shipped policy's guard (decide, then learn,
  as the proxy does) over a memory store on an event-time clock, ``--employees`` clerks looking
  up random numbers (one in ten a miss), the clock moving ``--step`` seconds a lookup (5 s: 17
  days for 300,000 lookups, so that windows of every length fill and expire), with ``serve``'s
  collector settings (``gc_tuning``), and times every lookup's guard work. It prints
  the longest, the 99.99th percentile and how many took over 5 ms, with the time one sweep of
  every key at once (``MemoryStore._sweep``, still what the ``max_keys`` budget does) takes on
  the store as it ends: what a sweep cost one lookup before.
- **A peer group's first judgement of a day** read the tally's whole longest window and added
  up every peer rule's window from it: 20-33 ms for the bench's chain of 2,000 clerks, once a
  day of event time (17,280 lookups at ``--step 5``). Now each window's sums move on by the
  bucket that has just closed (``guard/peers.py``, ``PeerTally.closed``); the guard part above
  shows it, as the lookups over 5 ms and the 99.99th percentile.
- **The memory store's dicts growing.** The windows' four store-wide dicts grew together,
  each copying every entry at once: 10-42 ms at 90,000-250,000 keys. The windows are spread
  over shards now (``guard/memory.py``); the guard part shows it as its longest lookup.
- **The audit file's fsync.** ``fsync_interval`` (1 s) made one ``fsync(2)`` a second on the
  event loop's thread, whatever the disk took; now it runs on a thread of its own. This part
  times ``fsync(2)`` of a second's worth of records (500 lookups' two records) on the disk
  holding ``--directory``: what the loop waited each second.

``--store redis`` runs the guard part on a private redis-server instead (``tests/servers.py``):
every lookup's round trips are then in its time, and what Redis answers for a whole peer tally
is parsed by the client.

Run from the repository root: ``python -m bench.bench_stalls [--lookups 300000]
[--employees 2000] [--step 5] [--store memory|redis] [--directory DIR]`` (default: a temporary
directory in the current one, on the disk the archive would use rather than a ``/tmp`` that may
be memory). Compiled or
not, as the package is built. Pauses left (2026-12-07): the peer rules' group statistics once
a minute, and young collections (README "Performance").
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from bench.bench_audit_cost import shipped_open_all_day
from lookup_proxy.clock import ManualClock
from lookup_proxy.employee import Employee
from lookup_proxy.gc_tuning import THRESHOLDS
from lookup_proxy.guard.decision import Lookup
from lookup_proxy.guard.engine import Guard
from lookup_proxy.guard.memory import MemoryStore
from lookup_proxy.guard.redis_store import RedisStore

RECORD = b"x" * 520 + b"\n"
"""About an audit record's size (bench/bench_audit_cost.py)."""


async def guard_pauses(
    lookups: int, employees: int, step: float, seed: int, redis_port: int | None = None
) -> None:
    rng = random.Random(seed)
    clock = ManualClock()
    store: MemoryStore | RedisStore
    if redis_port is None:
        store = MemoryStore()
    else:
        store = RedisStore.from_url(f"redis://127.0.0.1:{redis_port}/0", cluster=False, timeout=5.0)
    guard = Guard(shipped_open_all_day(), store, clock)
    staff = [
        Employee(f"E{n:05d}", f"S{n // 8:04d}", f"R{n % 12:02d}", frozenset({"clerk"}))
        for n in range(employees)
    ]
    reasons = ("BILLING_INQUIRY", "PLAN_CHANGE", "DEVICE_SUPPORT", "CONTRACT_RENEWAL")
    took: list[float] = []
    most_keys = 0
    collections: list[float] = []

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(time.perf_counter())
        else:
            collections[-1] = time.perf_counter() - collections[-1]

    gc.freeze()  # as `lookup-proxy serve` starts (lookup_proxy/gc_tuning.py)
    gc.set_threshold(*THRESHOLDS)
    gc.callbacks.append(timed)
    for n in range(lookups):
        clock.advance(step)
        employee = staff[rng.randrange(employees)]
        number = f"010{rng.randrange(10**8):08d}"
        lookup = Lookup(f"r{n}", employee, rng.choice(reasons), number)
        started = time.perf_counter()
        decision = await guard.decide(lookup)
        if decision.allowed:
            await guard.learn(lookup, rng.random() < 0.9)
        took.append(time.perf_counter() - started)
        if n % 1000 == 0 and isinstance(store, MemoryStore):
            most_keys = max(most_keys, store.size())
    gc.callbacks.remove(timed)
    took.sort()
    slow = sum(1 for t in took if t > 0.005)
    kept = f"up to {most_keys:,} keys held" if isinstance(store, MemoryStore) else "on Redis"
    print(
        f"guard on a {store.kind} store: {lookups:,} lookups of {employees:,} clerks over "
        f"{lookups * step / 3600:.1f} h of event time, {kept}"
    )
    print(
        f"  a lookup's guard work: median {1e6 * statistics.median(took):.0f} µs, "
        f"99.99th percentile {1e3 * took[int(0.9999 * len(took))]:.2f} ms, "
        f"longest {1e3 * took[-1]:.2f} ms, {slow} over 5 ms"
    )
    print(
        f"  garbage collections meanwhile (serve's thresholds, {THRESHOLDS}): "
        f"{len(collections)}, longest {1e3 * max(collections, default=0.0):.1f} ms"
    )
    if not isinstance(store, MemoryStore):
        await store.close()
        return
    held = store.size()
    started = time.perf_counter()
    store._sweep()
    whole = time.perf_counter() - started
    print(
        f"  one sweep of every key at once on the final store ({held:,} keys, "
        f"{held - store.size():,} expired): {1e3 * whole:.1f} ms"
    )


def fsync_pauses(directory: Path, rounds: int) -> None:
    path = directory / "bench-stalls.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    took: list[float] = []
    try:
        for _ in range(rounds):
            os.write(fd, RECORD * 1000)
            started = time.perf_counter()
            os.fsync(fd)
            took.append(time.perf_counter() - started)
            time.sleep(0.05)
    finally:
        os.close(fd)
        path.unlink()
    took.sort()
    print(
        f"fsync(2) of 1,000 records ({len(RECORD) * 1000:,} bytes) on {directory}: median "
        f"{1e3 * statistics.median(took):.2f} ms, longest {1e3 * took[-1]:.2f} ms "
        f"({rounds} rounds): the loop's wait each fsync_interval before, none now"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lookups", type=int, default=300_000)
    parser.add_argument("--employees", type=int, default=2_000)
    parser.add_argument("--step", type=float, default=5.0, help="event-time seconds a lookup")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--fsyncs", type=int, default=40)
    parser.add_argument("--directory", type=Path, default=None)
    parser.add_argument(
        "--store",
        choices=("memory", "redis"),
        default="memory",
        help="redis: a private redis-server (every lookup's round trips are in its time)",
    )
    args = parser.parse_args()
    if args.store == "redis":
        from tests.servers import start_redis

        with tempfile.TemporaryDirectory() as work:
            server = start_redis(Path(work))
            try:
                asyncio.run(
                    guard_pauses(args.lookups, args.employees, args.step, args.seed, server.port)
                )
            finally:
                server.stop()
    else:
        asyncio.run(guard_pauses(args.lookups, args.employees, args.step, args.seed))
    if args.directory is not None:
        fsync_pauses(args.directory, args.fsyncs)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-stalls-", dir=Path.cwd()) as name:
            fsync_pauses(Path(name), args.fsyncs)


if __name__ == "__main__":
    main()
