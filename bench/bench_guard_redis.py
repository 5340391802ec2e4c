"""What one guarded lookup asks of Redis, command by command (issue 12), without HTTP.

Runs the shipped policy's ``Guard.decide`` and then ``Guard.learn`` (as the proxy does: the
outcome after the answer) at concurrency 32 against a private redis-server, for lookups of
``--employees`` employees (4,000, as bench/perf.py) on random numbers (``--found`` of them
customers), and prints per lookup: store
round trips (decision and learning apart), script calls, Redis commands by name (``INFO
commandstats``: the commands scripts run included) and redis-server CPU. The HTTP bench
(``bench/perf.py``) measures the same end to end; this one shows where the commands go.

Rounds alternate between the store as it runs (batches asked for in one turn of the event loop
share a round trip) and each batch sent alone, and the best round of each is printed with the
ratio. Run from the repository root:
``python -m bench.bench_guard_redis [--lookups 8000] [--employees 4000] [--found 0.9]
[--rounds 3]``.

Each round starts on an emptied Redis, so with 4,000 employees most of an employee's windows
are new when a lookup reaches them (about three lookups each a round), which Redis handles with
fewer commands than a window that exists; ``--employees 200`` (about fifty each) is closer to a
store chain's steady state, where a clerk's windows already hold the day.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections import Counter
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench.bench_audit_cost import shipped_open_all_day
from lookup_proxy.clock import SystemClock
from lookup_proxy.employee import Employee
from lookup_proxy.guard.decision import Lookup
from lookup_proxy.guard.engine import Guard
from lookup_proxy.guard.redis_store import RedisStore

CONCURRENCY = 32
PHASE: ContextVar[str] = ContextVar("phase", default="other")


class CountingStore:
    """The Redis store, counting the batches each phase asks for and the round trips sent
    (batches asked for in one turn of the event loop share one: RedisStore.execute)."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.batches = 0
        self.phases: Counter[str] = Counter()
        self.trips = 0
        send = store._execute_now

        async def counted(ops: Any) -> Any:
            self.trips += 1
            return await send(ops)

        store._execute_now = counted  # type: ignore[method-assign]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def execute(self, ops: Any) -> Any:
        self.batches += 1
        self.phases[PHASE.get()] += 1
        return await self.store.execute(ops)


async def commandstats(client: Redis) -> tuple[Counter[str], Counter[str]]:
    """Calls and microseconds per command name so far."""
    stats = await client.info("commandstats")
    calls = Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})
    usec = Counter({name.removeprefix("cmdstat_"): int(v["usec"]) for name, v in stats.items()})
    return calls, usec


async def cpu(client: Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def measure(
    port: int,
    lookups: int,
    found_share: float,
    coalesce: bool,
    seed: int,
    people: int = 4000,
    reason: str = "BILLING_INQUIRY",
) -> dict[str, Any]:
    """One round on an emptied Redis: per-lookup figures, with or without coalescing."""
    policy = shipped_open_all_day()
    store = RedisStore.from_url(
        f"redis://127.0.0.1:{port}/0", cluster=False, timeout=policy.store.timeout
    )
    counting = CountingStore(store)
    if not coalesce:  # every batch its own round trip, as before batches shared them
        counting.store = AloneStore(store)  # type: ignore[assignment]
    guard = Guard(policy, counting, SystemClock())  # type: ignore[arg-type]
    client = Redis(port=port)
    await client.flushall()
    employees = [
        Employee(f"E{n:04d}", f"S{n % 40:03d}", f"R{n % 6}", frozenset({"clerk"}))
        for n in range(people)
    ]
    rng = random.Random(seed)

    async def worker(k: int, count: int) -> None:
        for i in range(count):
            employee = employees[rng.randrange(len(employees))]
            lookup = Lookup(f"r{k}-{i}", employee, reason, f"010{rng.randrange(10**8):08d}")
            PHASE.set("decide")
            decision = await guard.decide(lookup)
            if decision.allowed:
                PHASE.set("learn")
                await guard.learn(lookup, rng.random() < found_share)

    await asyncio.gather(*(worker(k, 100) for k in range(CONCURRENCY)))  # warm-up
    counting.phases.clear()
    (commands, spent), used = await commandstats(client), await cpu(client)
    calls, trips = counting.batches, counting.trips
    started, process = time.perf_counter(), time.process_time()
    share = lookups // CONCURRENCY
    await asyncio.gather(*(worker(1000 + k, share) for k in range(CONCURRENCY)))
    elapsed, proxy_cpu = time.perf_counter() - started, time.process_time() - process
    done = share * CONCURRENCY
    after, after_usec = await commandstats(client)
    delta, usec = after - commands, after_usec - spent
    delta -= Counter({"info": delta["info"], "flushall": delta["flushall"]})
    figures = {
        "rate": done / elapsed,
        "proxy_us": proxy_cpu / done * 1e6,
        "batches": (counting.batches - calls) / done,
        "decide": counting.phases["decide"] / done,
        "learn": counting.phases["learn"] / done,
        "trips": (counting.trips - trips) / done if coalesce else (counting.batches - calls) / done,
        "commands": sum(delta.values()) / done,
        "redis_us": (await cpu(client) - used) / done * 1e6,
        "by_command": {name: (n / done, usec[name] / done) for name, n in delta.items()},
    }
    await client.aclose()
    await store.close()
    return figures


class AloneStore:
    """The Redis store sending each batch as its own round trip (the baseline)."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.numbers_key = store.numbers_key

    async def execute(self, ops: Any) -> Any:
        return await self.store._execute_now(ops)


async def run(
    port: int, lookups: int, found_share: float, rounds: int, people: int, reason: str
) -> None:
    results: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for round_ in range(rounds):
        for coalesce in (False, True):
            results[coalesce].append(
                await measure(port, lookups, found_share, coalesce, round_, people, reason)
            )
    print(
        f"{lookups} lookups a round of {people} employees, {rounds} rounds interleaved, "
        f"concurrency {CONCURRENCY}, reason {reason}"
    )
    print(
        "| batches | lookups/s | proxy CPU/lookup | batches/lookup (decide, learn) "
        "| round trips/lookup | commands/lookup | redis-server CPU/lookup |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    best: dict[bool, dict[str, Any]] = {}
    for coalesce, rows in results.items():
        row = best[coalesce] = max(rows, key=lambda r: r["rate"])
        name = "a loop turn's together" if coalesce else "each alone"
        print(
            f"| {name} | {row['rate']:,.0f} | {row['proxy_us']:,.0f} µs | {row['batches']:.2f} "
            f"({row['decide']:.2f}, {row['learn']:.2f}) | {row['trips']:.2f} "
            f"| {row['commands']:.1f} | {row['redis_us']:,.0f} µs |"
        )
    ratio = best[True]["rate"] / best[False]["rate"]
    cpu_ratio = best[True]["proxy_us"] / best[False]["proxy_us"]
    print(f"together / alone: {ratio:.2f}x lookups/s, {cpu_ratio:.2f}x proxy CPU per lookup")
    print("commands per lookup (a loop turn's together): calls, µs of Redis time (evalsha: the")
    print("whole script, the commands it runs included)")
    by_command = best[True]["by_command"]
    for name, (calls_of, spent) in sorted(by_command.items(), key=lambda kv: -kv[1][0]):
        print(f"  {name:<18} {calls_of:6.2f} {spent:6.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lookups", type=int, default=8000)
    parser.add_argument("--employees", type=int, default=4000)
    parser.add_argument("--found", type=float, default=0.9)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--reason",
        default="BILLING_INQUIRY",
        help="every lookup's reason (NEW_SUBSCRIPTION: the walk-in reason of the shipped "
        "unexplained-misses rules)",
    )
    args = parser.parse_args()
    from tests.servers import start_redis

    with tempfile.TemporaryDirectory() as work:
        server = start_redis(Path(work))
        try:
            asyncio.run(
                run(server.port, args.lookups, args.found, args.rounds, args.employees, args.reason)
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
