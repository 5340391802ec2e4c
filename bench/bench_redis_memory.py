"""What a chain's guard state costs Redis in memory: a week of lookups replayed into a real Redis.

Sizing a deployment needs the guard's footprint, not only its commands: every window is a key
that lives as long as its rule's window (a week for ``block-scan``, the group block rules and
the weekly misses rules; four weeks for the monthly ones). This replays the first ``--days`` of
an EVENTS.csv (``bench/simulate.py``; by default it simulates a 300-employee month, seed 22)
through the guard on the Redis store of a private redis-server, with each event's time as the
clock (decide, then learn the outcome), and prints ``used_memory``, the number of keys, and the
keys and bytes (``MEMORY USAGE``) by kind, with a line scaled to ``--scale-to`` clerks.

Keys are created with TTLs of real time, so nothing expires during the replay: after a week,
the keys of rules with a week's window or less are what a running chain holds at any moment
(an upper bound: the first day's day-long keys would be gone), and a monthly rule's keys are a
quarter of theirs. Audit records are left out (the stream is trimmed by
``audit.stream_retention`` and sized by it). Run from the repository root:
``python -m bench.bench_redis_memory [--events EVENTS.csv] [--days 7] [--scale-to 3000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from lookup_proxy.clock import ManualClock
from lookup_proxy.employee import Employee
from lookup_proxy.errors import Refusal
from lookup_proxy.guard.decision import Lookup
from lookup_proxy.guard.engine import Guard
from lookup_proxy.guard.redis_store import RedisStore
from lookup_proxy.numbers import normalise_number
from lookup_proxy.policy import load_policy
from lookup_proxy.replay import parse_timestamp

ROOT = Path(__file__).resolve().parent.parent


def kind_of(key: str) -> str:
    """A key's kind for the table: its scope and rule, without employee, block or bucket."""
    scope = re.match(r"^[^:]+:\{(\w)", key)
    rest = re.sub(r"^[^:]+:\{[^}]*\}:", "", key)
    parts = rest.split(":")
    name = parts[0]
    tail = parts[-1] if len(parts) > 1 and not parts[-1].isdigit() and name != "peers" else ""
    return f"{scope.group(1) if scope else '?'}:{name}" + (f":{tail}" if tail else "")


async def replay(events: Path, days: float, policy_path: Path, url: str) -> int:
    policy = load_policy(str(policy_path))
    store = RedisStore.from_url(url, cluster=False, timeout=5.0)
    clock = ManualClock(0.0)
    guard = Guard(policy, store, clock)
    people: dict[str, Employee] = {}
    done = 0
    start: float | None = None
    with events.open(encoding="utf-8", newline="") as source:
        for row in csv.DictReader(source):
            now = parse_timestamp(row["timestamp"])
            start = now if start is None else start
            if now - start > days * 86_400:
                break
            try:
                number = normalise_number(row["number"], policy.numbers)
            except Refusal:
                continue
            employee = people.get(row["employee"])
            if employee is None:
                employee = people[row["employee"]] = Employee(
                    row["employee"], row["store"], row["region"] or None, frozenset({"clerk"})
                )
            clock.set(now)
            lookup = Lookup(f"r{done}", employee, row["reason"], number)
            if (await guard.decide(lookup)).allowed:
                await guard.learn(lookup, row["found"] == "true")
            done += 1
    await store.close()
    return done


async def measure(url: str) -> tuple[int, dict[str, tuple[int, int]]]:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    used = int((await client.info("memory"))["used_memory"])
    by_kind: Counter[str] = Counter()
    size: Counter[str] = Counter()
    async for raw in client.scan_iter(count=1000):
        key = raw.decode()
        kind = kind_of(key)
        by_kind[kind] += 1
        size[kind] += int(await client.memory_usage(key) or 0)
    await client.aclose()
    return used, {k: (by_kind[k], size[k]) for k in by_kind}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=Path, help="EVENTS.csv (default: simulate a month)")
    parser.add_argument("--policy", type=Path, default=ROOT / "config" / "policy.toml")
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--scale-to", type=int, default=3000, help="clerks to scale to")
    args = parser.parse_args()
    from tests.servers import start_redis

    with tempfile.TemporaryDirectory() as work:
        events = args.events
        if events is None:
            events = Path(work) / "events.csv"
            subprocess.run(
                [sys.executable, str(ROOT / "bench" / "simulate.py"), "--seed", "22",
                 "--employees", "300", "--days", "30", "--out", str(events),
                 "--truth", str(Path(work) / "truth.csv")],
                check=True, cwd=ROOT, capture_output=True,
            )  # fmt: skip
        server = start_redis(Path(work) / "redis")
        try:
            from redis import Redis

            with Redis.from_url(server.url) as client:
                empty = int(client.info("memory")["used_memory"])
            lookups = asyncio.run(replay(events, args.days, args.policy, server.url))
            used, kinds = asyncio.run(measure(server.url))
        finally:
            server.stop()
    employees = _employees_of(kinds)
    keys = sum(count for count, _ in kinds.values())
    print(
        f"{lookups:,} lookups over {args.days:g} days ({employees} employees with keys): "
        f"{keys:,} keys, used_memory {(used - empty) / 2**20:.1f} MiB above an empty server"
    )
    print("| key kind | keys | keys per employee | MEMORY USAGE, MiB |")
    print("|---|---:|---:|---:|")
    for kind, (count, size) in sorted(kinds.items(), key=lambda item: -item[1][1]):
        print(f"| `{kind}` | {count:,} | {count / max(1, employees):.1f} | {size / 2**20:.1f} |")
    factor = args.scale_to / max(1, employees)
    print(
        f"Scaled to {args.scale_to:,} clerks (x{factor:.1f}, linear): about "
        f"{keys * factor / 1e6:.2f} M keys and {(used - empty) * factor / 2**20:,.0f} MiB"
    )


def _employees_of(kinds: dict[str, tuple[int, int]]) -> int:
    """Employees with state: the count of a kind every employee who looked up anything has."""
    for kind in ("e:burst:ticks", "e:hourly:ticks"):
        if kind in kinds:
            return kinds[kind][0]
    return 0


if __name__ == "__main__":
    main()
