"""Store-down modes on a real redis-server killed and restarted under a running proxy.

``refuse``: a fast 503 behind a circuit breaker that stops asking a dead Redis; ``local``: the
embedded store with cut limits and the journal's locks; both come back to Redis on their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from lookup_proxy.customers import CustomerBase
from lookup_proxy.guard.redis_store import RedisStore
from lookup_proxy.policy import Policy
from lookup_proxy.resilience.fallback import local_policy
from tests.harness import policy, running_proxy
from tests.servers import start_redis
from tests.test_recovery import sample, status

BASE = CustomerBase()
NUMBERS = BASE.find_customers(12)

RULES = """
[[rules]]
name = "per-minute"
kind = "rate"
window = "1m"
limit = 4

[[rules]]
name = "lock-rate"
kind = "rate"
window = "1m"
limit = 6
action = "lock"
"""


def store_down(backend: str, journal: Path, **store: str) -> Policy:
    lines = "".join(f"{key} = {value}\n" for key, value in store.items())
    extra = f'[store]\nlock_journal = "{journal}"\ncheck_interval = "1h"\n{lines}'
    return policy(backend, rules=RULES, extra=extra)


async def forwarded(client: aiohttp.ClientSession, backend: str) -> int:
    async with client.get(backend + "/_demo/requests") as response:
        return len(await response.json())


async def eventually(check: object, seconds: float = 15.0) -> None:
    """Poll an async predicate until it holds (bounded, so a regression fails, never hangs)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await check():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


class BlackHole:
    """A 'Redis' that accepts connections and reads, and never answers: the worst outage."""

    def __init__(self) -> None:
        self.received = 0
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while data := await reader.read(65536):
            self.received += len(data)
        writer.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"


@pytest.fixture
async def black_hole() -> AsyncIterator[BlackHole]:
    hole = BlackHole()
    yield hole
    if hole.server is not None:
        hole.server.close()


def test_local_limits_are_cut_to_the_share_and_never_below_one(tmp_path: Path) -> None:
    p = store_down(
        "http://127.0.0.1:9", tmp_path, on_unavailable='"local"', local_limit_share="0.1"
    )
    local = local_policy(p)
    assert [r.limit for r in local.rules] == [1, 1]
    assert [r.limit for r in p.rules] == [4, 6]


async def test_an_open_circuit_refuses_at_once_without_asking_redis(
    backend: str, client: aiohttp.ClientSession, tmp_path: Path, black_hole: BlackHole
) -> None:
    """After breaker_failures timeouts, lookups get a 503 and the dead Redis gets no bytes."""
    p = store_down(backend, tmp_path / "j", breaker_failures="2", retry_interval='"1h"')
    store = RedisStore.from_url(await black_hole.start(), cluster=False, timeout=0.2)
    async with running_proxy(p, store=store) as (url, proxy):
        for number in NUMBERS[:2]:
            assert await status(client, url, p, "alice", number) == (503, "guard-unavailable")
        assert sample(proxy.metrics, "lookup_proxy_store_mode", mode="refusing") == 1
        received, connections = black_hole.received, black_hole.connections
        for number in NUMBERS[2:6]:
            assert await status(client, url, p, "alice", number) == (503, "guard-unavailable")
        assert (black_hole.received, black_hole.connections) == (received, connections)
        assert await forwarded(client, backend) == 0


async def test_refuse_mode_comes_back_by_itself_when_redis_does(
    backend: str, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server = start_redis(tmp_path / "redis")
    p = store_down(backend, tmp_path / "j", breaker_failures="1", retry_interval='"100ms"')
    store = RedisStore.from_url(server.url, cluster=False, timeout=0.5)
    try:
        async with running_proxy(p, store=store) as (url, proxy):
            await proxy.guard.lock("mallory")
            server.kill()
            assert await status(client, url, p, "alice", NUMBERS[0]) == (503, "guard-unavailable")
            assert await status(client, url, p, "alice", NUMBERS[1]) == (503, "guard-unavailable")
            assert await forwarded(client, backend) == 0
            server = start_redis(server.directory, port=server.port)

            async def served() -> bool:
                return (await status(client, url, p, "alice", NUMBERS[2]))[0] == 200

            await eventually(served)
            assert sample(proxy.metrics, "lookup_proxy_store_mode", mode="shared") == 1
            assert (
                sample(proxy.metrics, "lookup_proxy_store_mode_transitions_total", mode="refusing")
                == 1
            )
            assert await status(client, url, p, "mallory", NUMBERS[3]) == (403, "locked-out")
    finally:
        server.stop()


async def test_local_mode_guards_with_cut_limits_and_every_lock_then_hands_back(
    backend: str, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Redis dies: lookups go on under half the limits, the journal's lock holds, a lock made
    meanwhile reaches Redis when it is back."""
    server = start_redis(tmp_path / "redis")
    p = store_down(
        backend,
        tmp_path / "j",
        on_unavailable='"local"',
        local_limit_share="0.5",
        breaker_failures="1",
        retry_interval='"100ms"',
    )
    store = RedisStore.from_url(server.url, cluster=False, timeout=0.5)
    try:
        async with running_proxy(p, store=store) as (url, proxy):
            await proxy.guard.lock("mallory")
            server.kill()
            served = [await status(client, url, p, "alice", n) for n in NUMBERS[:3]]
            assert served == [(200, ""), (200, ""), (429, "rate-limited")]  # 4 → 2 a minute
            assert sample(proxy.metrics, "lookup_proxy_store_mode", mode="local") == 1
            async with client.get(url + "/readyz") as ready:  # degraded, still serving
                assert ready.status == 200
                assert (await ready.json())["store_mode"] == "local"
            assert await status(client, url, p, "mallory", NUMBERS[3]) == (403, "locked-out")
            for number in NUMBERS[4:8]:  # lock-rate: 6 → 3 a minute, locks on the fourth
                await status(client, url, p, "eve", number)
            assert await status(client, url, p, "eve", NUMBERS[8]) == (403, "locked-out")

            server = start_redis(server.directory, port=server.port)

            async def shared() -> bool:
                return sample(proxy.metrics, "lookup_proxy_store_mode", mode="shared") == 1

            await eventually(shared)
            assert await proxy.guard.lock_status("eve") is not None
            assert await status(client, url, p, "eve", NUMBERS[9]) == (403, "locked-out")
            assert (await status(client, url, p, "alice", NUMBERS[10]))[0] == 200
    finally:
        server.stop()
