"""Guard state across restarts, on a real redis-server killed (SIGKILL) and started again.

With persistence (AOF) locks and counters come back with Redis; started empty, the proxy
notices on its first new connection and writes the lock journal back before any lookup is
decided; emptied without a restart (FLUSHALL), the marker check does the same. The memory
store loses everything when the proxy restarts: the journal brings its locks back.
"""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest
import redis

from lookup_proxy.customers import CustomerBase
from lookup_proxy.guard.redis_store import RedisStore
from lookup_proxy.metrics import ProxyMetrics
from lookup_proxy.policy import Policy
from tests.harness import policy, running_proxy, token
from tests.servers import RedisServer, start_redis

BASE = CustomerBase()
NUMBERS = BASE.find_customers(8)

RATE = """
[[rules]]
name = "per-minute"
kind = "rate"
window = "1m"
limit = 3
"""


def guarded(backend: str, journal: Path | None) -> Policy:
    store = '[store]\ncheck_interval = "1h"\n'  # tests call verify() themselves
    if journal is not None:
        store += f'lock_journal = "{journal}"\n'
    return policy(backend, rules=RATE, extra=store)


async def status(
    client: aiohttp.ClientSession, url: str, p: Policy, employee: str, number: str
) -> tuple[int, str]:
    """(status, problem type or '') of one lookup."""
    async with client.get(
        f"{url}/customers/{number}",
        headers={"Authorization": f"Bearer {token(p, employee)}", "X-Lookup-Reason": "PLAN_CHANGE"},
    ) as response:
        if response.content_type == "application/problem+json":
            body = await response.json(content_type=None)
            return response.status, str(body["type"]).rsplit(":", 1)[1]
        return response.status, ""


def restart(server: RedisServer, *, persistence: bool) -> RedisServer:
    server.kill()
    return start_redis(server.directory, persistence=persistence, port=server.port)


def sample(metrics: ProxyMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


async def test_with_persistence_locks_and_counters_come_back_with_redis(
    backend: str, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """No journal needed: AOF keeps the lock and the rate window through a SIGKILL."""
    server = start_redis(tmp_path / "redis", persistence=True)
    p = guarded(backend, journal=None)
    store = RedisStore.from_url(server.url, cluster=False, timeout=1.0)
    try:
        async with running_proxy(p, store=store) as (url, proxy):
            await proxy.guard.lock("mallory")
            assert [(await status(client, url, p, "alice", n))[0] for n in NUMBERS[:3]] == [200] * 3
            server = restart(server, persistence=True)
            assert await status(client, url, p, "mallory", NUMBERS[4]) == (403, "locked-out")
            assert await status(client, url, p, "alice", NUMBERS[5]) == (429, "rate-limited")
            assert (
                sample(proxy.metrics, "lookup_proxy_store_recoveries_total", found="restarted") == 1
            )
    finally:
        server.stop()


async def test_restarted_empty_redis_gets_the_journal_locks_before_any_lookup(
    backend: str, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The locked employee's very first lookup after the restart is refused; counts start over."""
    server = start_redis(tmp_path / "redis")
    p = guarded(backend, journal=tmp_path / "journal")
    store = RedisStore.from_url(server.url, cluster=False, timeout=1.0)
    try:
        async with running_proxy(p, store=store) as (url, proxy):
            await proxy.guard.lock("mallory")
            assert [(await status(client, url, p, "alice", n))[0] for n in NUMBERS[:3]] == [200] * 3
            server = restart(server, persistence=False)
            assert await status(client, url, p, "mallory", NUMBERS[4]) == (403, "locked-out")
            assert (await status(client, url, p, "alice", NUMBERS[5]))[0] == 200
            assert sample(proxy.metrics, "lookup_proxy_store_recoveries_total", found="empty") == 1
            assert sample(proxy.metrics, "lookup_proxy_locks_restored_total") >= 1
    finally:
        server.stop()


async def test_without_a_journal_an_empty_restart_is_logged_as_lost_locks(
    backend: str, client: aiohttp.ClientSession, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The failure mode the README names: no journal, no persistence, the lock is gone — loudly."""
    server = start_redis(tmp_path / "redis")
    p = guarded(backend, journal=None)
    store = RedisStore.from_url(server.url, cluster=False, timeout=1.0)
    try:
        async with running_proxy(p, store=store) as (url, proxy):
            await proxy.guard.lock("mallory")
            server = restart(server, persistence=False)
            with caplog.at_level(logging.ERROR, "lookup_proxy.recovery"):
                assert (await status(client, url, p, "mallory", NUMBERS[4]))[0] == 200
            [record] = [r for r in caplog.records if r.name == "lookup_proxy.recovery"]
            assert "no lock journal is configured" in record.getMessage()
            assert record.exc_info is None
    finally:
        server.stop()


async def test_a_flushed_redis_is_noticed_by_the_marker_and_gets_its_locks_back(
    backend: str, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server = start_redis(tmp_path / "redis")
    p = guarded(backend, journal=tmp_path / "journal")
    store = RedisStore.from_url(server.url, cluster=False, timeout=1.0)
    try:
        async with running_proxy(p, store=store) as (url, proxy):
            await proxy.guard.lock("mallory")
            redis.Redis(port=server.port).flushall()
            await store.verify()
            assert await status(client, url, p, "mallory", NUMBERS[4]) == (403, "locked-out")
            assert (
                sample(proxy.metrics, "lookup_proxy_store_recoveries_total", found="flushed") == 1
            )
    finally:
        server.stop()


async def test_memory_store_locks_survive_a_proxy_restart_and_unlocks_on_other_instances(
    backend: str, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Instance one locks two clerks; instance two unlocks one; a third start knows both."""
    p = guarded(backend, journal=tmp_path / "journal")
    async with running_proxy(p) as (_, first):
        await first.guard.lock("mallory")
        await first.guard.lock("bob")
    async with running_proxy(p) as (url, second):
        assert await status(client, url, p, "bob", NUMBERS[0]) == (403, "locked-out")
        assert await second.guard.unlock("bob")
    async with running_proxy(p) as (url, _):
        assert await status(client, url, p, "mallory", NUMBERS[1]) == (403, "locked-out")
        assert (await status(client, url, p, "bob", NUMBERS[2]))[0] == 200
