"""Shared fixtures: real Redis servers for the guard's stores, and a store of every kind.

The servers are session-scoped subprocesses (starting a cluster takes a second or two); each
test that uses one gets it flushed. Missing binaries fail loudly: a guard suite that silently
skips its Redis half would prove nothing about the store production runs on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

import aiohttp
import pytest

from lookup_proxy.customers import CustomerBase
from lookup_proxy.demo_backend import build_demo_backend
from lookup_proxy.guard.memory import MemoryStore
from lookup_proxy.guard.primitives import GuardStore
from lookup_proxy.guard.redis_store import RedisStore
from tests.harness import serving
from tests.servers import LocalCluster, MissingRedis, RedisServer, flush, start_cluster, start_redis

_Server = TypeVar("_Server", RedisServer, LocalCluster)

STORE_TIMEOUT = 2.0
"""Generous for a loaded CI machine; the prompt-failure tests set their own."""

STORE_KINDS = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis"),
    pytest.param("redis-cluster", id="redis-cluster", marks=pytest.mark.cluster),
]
REDIS_KINDS = STORE_KINDS[1:]


def _or_fail(start: Callable[[], _Server]) -> _Server:
    """Start a server, or fail the test with the install hint (not a traceback) if Redis is missing."""
    try:
        return start()
    except MissingRedis as exc:
        missing = str(exc)
    pytest.fail(missing, pytrace=False)


@pytest.fixture(scope="session")
def redis_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One standalone redis-server for the whole session."""
    server = _or_fail(lambda: start_redis(tmp_path_factory.mktemp("redis")))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cluster_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three cluster masters for the whole session."""
    cluster = _or_fail(lambda: start_cluster(tmp_path_factory.mktemp("redis-cluster")))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_server(redis_process: RedisServer) -> str:
    """URL of the session's standalone Redis."""
    return redis_process.url


@pytest.fixture(scope="session")
def redis_cluster(cluster_processes: LocalCluster) -> str:
    """Startup URL of the session's Redis Cluster."""
    return cluster_processes.url


@pytest.fixture
def fresh_redis(redis_process: RedisServer) -> str:
    """The standalone Redis, emptied for this test."""
    flush([redis_process.port])
    return redis_process.url


@pytest.fixture
def fresh_cluster(cluster_processes: LocalCluster) -> str:
    """The Redis Cluster, every master emptied for this test."""
    flush(cluster_processes.ports)
    return cluster_processes.url


async def open_store(request: pytest.FixtureRequest, kind: str) -> GuardStore:
    """A store of ``kind`` over emptied state; Redis servers start on first use."""
    if kind == "memory":
        return MemoryStore()
    if kind == "redis":
        url: str = request.getfixturevalue("fresh_redis")
        return RedisStore.from_url(url, cluster=False, timeout=STORE_TIMEOUT)
    url = request.getfixturevalue("fresh_cluster")
    return RedisStore.from_url(url, cluster=True, timeout=STORE_TIMEOUT)


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[GuardStore]:
    """A fresh, empty store of every kind: memory, standalone Redis, Redis Cluster."""
    opened = await open_store(request, request.param)
    yield opened
    await opened.close()


@pytest.fixture(params=REDIS_KINDS)
async def redis_store(request: pytest.FixtureRequest) -> AsyncIterator[RedisStore]:
    """A fresh, empty Redis store, standalone and Cluster."""
    opened = await open_store(request, request.param)
    assert isinstance(opened, RedisStore)
    yield opened
    await opened.close()


@pytest.fixture
async def backend() -> AsyncIterator[str]:
    """The demo customer backend on a real socket; yields its base URL."""
    async with serving(build_demo_backend(CustomerBase())) as url:
        yield url


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for talking to proxies and backends under test."""
    async with aiohttp.ClientSession() as session:
        yield session
