"""What the audit record costs a guarded lookup with the Redis store (issue 11: "the audit
primitive must not add a round trip; measure what it costs").

Runs the shipped policy's ``Guard.decide`` at concurrency 32 against a private redis-server, in
interleaved rounds with and without the lookup's audit record in the decision's batch (a record
made by ``AuditTrail.lookup``, as the proxy makes it), and prints per decision: proxy CPU,
store round trips, Redis commands and redis-server CPU (``INFO``), and the ratios.

Run from the repository root: ``python -m bench.bench_audit_cost [--decisions 8000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from lookup_proxy.audit.chain import Signer
from lookup_proxy.audit.pseudonym import Pseudonymiser
from lookup_proxy.audit.trail import AuditTrail, stream_key
from lookup_proxy.clock import SystemClock
from lookup_proxy.employee import Employee
from lookup_proxy.guard.decision import Lookup
from lookup_proxy.guard.engine import Guard
from lookup_proxy.guard.redis_store import RedisStore
from lookup_proxy.metrics import AuditMetrics, GuardMetrics
from lookup_proxy.policy import Policy, parse_policy, policy_hash

CONCURRENCY = 32
ROUNDS = 3


def shipped_open_all_day() -> Policy:
    """The shipped policy open around the clock: the bench measures allowed lookups."""
    text = Path("config/policy.toml").read_text(encoding="utf-8")
    opening = 'open = "09:30"\nclose = "21:30"'
    assert opening in text, "the shipped [hours] changed; update this bench"
    return parse_policy(text.replace(opening, 'open = "00:00"\nclose = "24:00"'), "policy.toml")


async def redis_counters(client: Redis) -> tuple[float, int]:
    """(redis-server CPU seconds, commands processed) so far."""
    cpu = await client.info("cpu")
    stats = await client.info("stats")
    return (
        float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
        int(stats["total_commands_processed"]),
    )


async def measure(
    guard: Guard, trail: AuditTrail | None, client: Redis, decisions: int, offset: int
) -> dict[str, float]:
    employees = [
        Employee(f"E{n:04d}", f"S{n % 40:03d}", f"R{n % 6}", frozenset({"clerk"}))
        for n in range(4000)
    ]
    rng = random.Random(offset)
    share = decisions // CONCURRENCY

    async def worker(k: int) -> None:
        for i in range(share):
            employee = employees[rng.randrange(len(employees))]
            number = f"010{rng.randrange(10**8):08d}"
            request_id = f"r{offset}-{k}-{i}"
            record = None
            if trail is not None:
                fields: dict[str, Any] = {
                    "request_id": request_id,
                    "employee": employee.id,
                    "store": employee.store,
                    "region": employee.region,
                    "client": "10.1.2.3",
                    "route": "GET /customers/{number}",
                    "reason": "BILLING_INQUIRY",
                    "reference": None,
                }
                record = trail.lookup(fields, number).decode()
            await guard.decide(Lookup(request_id, employee, "BILLING_INQUIRY", number, record))

    registry = guard.metrics
    assert registry is not None
    server_cpu, commands = await redis_counters(client)
    trips = _trips(guard)
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(CONCURRENCY)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    server_cpu2, commands2 = await redis_counters(client)
    done = share * CONCURRENCY
    return {
        "cpu_us": cpu / done * 1e6,
        "rate": done / wall,
        "trips": (_trips(guard) - trips) / done,
        "commands": (commands2 - commands - 2) / done,  # less the two INFO calls
        "server_us": (server_cpu2 - server_cpu) / done * 1e6,
    }


def _trips(guard: Guard) -> float:
    metrics = guard.metrics
    assert metrics is not None
    total = 0.0
    for family in metrics.store_latency.collect():
        for sample in family.samples:
            if sample.name.endswith("_count"):
                total += sample.value
    return total


async def run(url: str, decisions: int) -> None:
    policy = shipped_open_all_day()
    store = RedisStore.from_url(url, cluster=False, timeout=1.0)
    client = Redis.from_url(url)
    clock = SystemClock()
    guard = Guard(policy, store, clock, GuardMetrics(CollectorRegistry()))
    trail = AuditTrail(
        policy.audit,
        directory=Path(tempfile.mkdtemp()),
        signer=Signer.generate(),
        pseudonyms=Pseudonymiser([("k1", b"k" * 48)]),
        clock=clock,
        policy_hash=policy_hash(policy),
        metrics=AuditMetrics(CollectorRegistry()),
        store=store,
    )
    results: dict[str, list[dict[str, float]]] = {"without": [], "with": []}
    await measure(guard, None, client, CONCURRENCY * 20, 0)  # warm up: script, connections
    for round_ in range(ROUNDS):
        for name in ("without", "with"):
            with_audit = name == "with"
            guard.audit_log = stream_key("lp") if with_audit else None
            guard.audit_keep = policy.audit.stream_retention
            results[name].append(
                await measure(guard, trail if with_audit else None, client, decisions, round_)
            )
            await client.flushall()
    print(
        f"{decisions} decisions per round, {ROUNDS} rounds interleaved, concurrency {CONCURRENCY}"
    )
    print(f"{'':<8} {'proxy CPU':>12} {'decisions/s':>12} {'round trips':>12} "
          f"{'commands':>9} {'redis CPU':>11}")  # fmt: skip
    best: dict[str, dict[str, float]] = {}
    for name, runs in results.items():
        best[name] = {key: (max if key == "rate" else min)(r[key] for r in runs) for key in runs[0]}
        b = best[name]
        print(
            f"{name:<8} {b['cpu_us']:9.1f} µs {b['rate']:12.0f} {b['trips']:12.2f} "
            f"{b['commands']:9.1f} {b['server_us']:8.1f} µs"
        )
    w, o = best["with"], best["without"]
    print(
        f"with/without: proxy CPU {w['cpu_us'] / o['cpu_us']:.3f}x "
        f"(+{w['cpu_us'] - o['cpu_us']:.1f} µs), round trips +{w['trips'] - o['trips']:.2f}, "
        f"redis CPU +{w['server_us'] - o['server_us']:.1f} µs, "
        f"commands +{w['commands'] - o['commands']:.1f}"
    )
    await store.close()
    await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=8000)
    args = parser.parse_args()
    from tests.servers import start_redis

    with tempfile.TemporaryDirectory() as directory:
        server = start_redis(Path(directory))
        try:
            asyncio.run(run(server.url, args.decisions))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
