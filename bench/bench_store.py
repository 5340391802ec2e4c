"""Client CPU per guard decision: the Lua primitive interpreter against a plain pipeline.

The proxy's machines have two cores and the Redis round trip is mostly waiting, so what a
decision costs the *client* in CPU decides how many lookups an instance serves. This runs N
decisions of a realistic batch (the lock ``get`` plus eight rule primitives of one employee) at
concurrency 32 against a private redis-server and prints process CPU per batch for:

- ``lua``:      ``RedisStore.execute`` — one ``EVALSHA`` of ``primitives.lua``;
- ``pipeline``: the same information from raw commands (ZREMRANGEBYSCORE, ZADD, cap, PEXPIRE,
  ZCARD, ZRANGE ... per add; ZCOUNT; ZRANGEBYSCORE; GET) in one non-transactional pipeline;
- ``lua-2grp``: a batch with a store-scoped group too (two EVALSHAs in one pipeline), the cost
  of a policy with group rules;
- ``lua-1call``: that same batch as a single EVALSHA encoded as the store does, sent through
  redis-py's ``execute_command`` rather than the store's own sending (``RedisStore._call``).

Run from the repository root: ``python -m bench.bench_store [--decisions 20000] [--uvloop]``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from lookup_proxy.guard.primitives import ADD, COUNT, GET, MEMBERS, Op
from lookup_proxy.guard.redis_store import RedisStore
from lookup_proxy.guard.script_calls import encode

CONCURRENCY = 32
Batch = Callable[[int], list[Op]]


def employee_batch(seq: int) -> list[Op]:
    """Lock, two rate windows, distinct, sequential (add + members), block, misses (2 counts)."""
    employee = f"e{seq % 500}"
    tag = f"lp:{{e:{employee}}}"
    now = time.time()
    number = f"010{random.randrange(10**8):08d}"
    request = f"req-{seq}"
    return [
        (GET, f"{tag}:lock", now),
        (ADD, f"{tag}:per-minute", now, request, 60.0, 11, 10),
        (ADD, f"{tag}:per-hour", now, request, 3600.0, 61, 60),
        (ADD, f"{tag}:distinct", now, number, 3600.0, 41, 40),
        (ADD, f"{tag}:sequential", now, number, 3600.0, 64, 0),
        (MEMBERS, f"{tag}:sequential", now - 3600.0),
        (ADD, f"{tag}:block:{number[:7]}", now, number, 86400.0, 21, 0),
        (COUNT, f"{tag}:misses:miss", now - 3600.0),
        (COUNT, f"{tag}:misses:found", now - 3600.0),
    ]


def two_group_batch(seq: int) -> list[Op]:
    """The employee batch plus a store-scoped colluding-block rule (a second hash tag)."""
    ops = employee_batch(seq)
    now, number = ops[0][2], ops[3][3]
    block = f"lp:{{s:store{seq % 50}}}:store-block:{number[:7]}"
    ops.append((ADD, block, now, number, 86400.0, 31, 0))
    ops.append((ADD, block + ":who", now, f"e{seq % 500}|{number}", 86400.0, 240, 0))
    return ops


class RawPipeline:
    """The batch as raw commands: what the guard would cost without the interpreter."""

    def __init__(self, client: Redis) -> None:
        self.client = client

    async def execute(self, ops: list[Op]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        shape: list[tuple[str, int]] = []
        for op in ops:
            code, key = op[0], op[1]
            if code == ADD:
                _, _, now, member, window, cap, nth = op
                pipe.zremrangebyscore(key, "-inf", now - window)
                pipe.zadd(key, {member: now})
                pipe.zremrangebyrank(key, 0, -(cap + 1))
                pipe.pexpire(key, math.ceil(window * 1000))
                pipe.zcard(key)
                pipe.zrange(key, 0, 0, withscores=True)
                width = 6
                if nth > 0:
                    pipe.zrange(key, -nth, -nth, withscores=True)
                    width = 7
                shape.append((code, width))
            elif code == COUNT:
                pipe.zcount(key, f"({op[2]!r}", "+inf")
                shape.append((code, 1))
            elif code == MEMBERS:
                pipe.zrangebyscore(key, f"({op[2]!r}", "+inf")
                shape.append((code, 1))
            else:
                pipe.get(key)
                shape.append((code, 1))
        replies = await pipe.execute()
        results: list[Any] = []
        position = 0
        for code, width in shape:
            part = replies[position : position + width]
            position += width
            if code == ADD:
                oldest = part[5][0][1]
                nth_score = part[6][0][1] if width == 7 and part[6] else None
                results.append([part[4], nth_score, oldest])
            else:
                results.append(part[0])
        return results


class SingleCall:
    """A whole batch as one script call regardless of hash tags (standalone Redis only),
    encoded as the store encodes it (``script_calls.encode``) but sent through redis-py's
    ``execute_command``: what the store's own sending saves."""

    def __init__(self, client: Redis) -> None:
        self.client = client
        self.remembered: dict[str, int] = {}
        self.latest = 0.0

    async def execute(self, ops: list[Op]) -> list[Any]:
        [call], refreshed, _, self.latest = encode(ops, False, self.remembered, self.latest)
        self.remembered.update(refreshed)
        reply: list[Any] = await self.client.execute_command(*call.command())  # type: ignore[no-untyped-call]
        return reply


async def measure(
    name: str, execute: Callable[[list[Op]], Awaitable[list[Any]]], batch: Batch, decisions: int
) -> float:
    # Batches are built before the clock starts: only the store's cost is measured.
    share = decisions // CONCURRENCY
    warm = [batch(seq) for seq in range(CONCURRENCY * 50)]
    batches = [batch(seq) for seq in range(len(warm), len(warm) + share * CONCURRENCY)]

    async def worker(mine: list[list[Op]]) -> None:
        for ops in mine:
            await execute(ops)

    await asyncio.gather(*(worker(warm[k::CONCURRENCY]) for k in range(CONCURRENCY)))
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(batches[k::CONCURRENCY]) for k in range(CONCURRENCY)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    done = share * CONCURRENCY
    per_batch = cpu / done * 1e6
    print(
        f"{name:<9} {per_batch:7.1f} µs CPU/batch   {done / wall:8.0f} batches/s   "
        f"({done} batches, {len(batch(0))} primitives each)"
    )
    return per_batch


async def run(url: str, decisions: int) -> None:
    store = RedisStore.from_url(url, cluster=False, timeout=1.0)
    raw = RawPipeline(Redis.from_url(url, decode_responses=True))
    assert len(await store.execute(employee_batch(0))) == len(await raw.execute(employee_batch(1)))
    lua = await measure("lua", store.execute, employee_batch, decisions)
    pipeline = await measure("pipeline", raw.execute, employee_batch, decisions)
    await measure("lua-2grp", store.execute, two_group_batch, decisions)
    await measure("lua-1call", SingleCall(raw.client).execute, two_group_batch, decisions)
    print(f"pipeline / lua = {pipeline / lua:.2f}x client CPU")
    await store.close()
    await raw.client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--url", help="an existing Redis to use (default: start a private one)")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop, as the proxy does")
    args = parser.parse_args()
    runner: Callable[[Awaitable[None]], None] = asyncio.run  # type: ignore[assignment]
    if args.uvloop:
        import uvloop

        runner = uvloop.run  # type: ignore[assignment]
    if args.url:
        runner(run(args.url, args.decisions))
        return
    from tests.servers import start_redis

    with tempfile.TemporaryDirectory() as directory:
        server = start_redis(Path(directory))
        try:
            runner(run(server.url, args.decisions))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
