"""Chaos under load: two proxies on one Redis, many employees, while things break.

Bounded in time (a few seconds per scenario). Redis is SIGKILLed and restarted, with and without
persistence; separately the upstream is stopped, restarted and made slow. Whatever happens:
no lookup reaches the upstream without an allowing guard decision, the locked employee never
does, every request gets a real answer or a problem body within its timeout, and both proxies
recover by themselves.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from lookup_proxy.guard.redis_store import RedisStore
from lookup_proxy.policy import Policy
from tests.harness import policy, running_proxy, token
from tests.servers import RedisServer, free_port, start_redis

EMPLOYEES = [f"E{i:03d}" for i in range(30)]
LOCKED = "MALLORY"
CLIENT_TIMEOUT = 5.0
"""Far above every proxy timeout (store 300 ms, upstream 1 s): a request still open past it
is a hang, not a slow answer."""


SCENARIO_DEADLINE = 120.0
"""A scenario takes a few seconds; one still running after this has hung somewhere."""


def bounded(scenario: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Run the scenario under a deadline, so that a hang fails with the traceback of the await
    that never finished (the event loop's own stack, all pytest-timeout can show, says nothing:
    one run in many dozens has hung here, 2026-12-02 and 2026-12-04, never reproduced)."""

    @functools.wraps(scenario)
    async def run(*args: object, **kwargs: object) -> None:
        async with asyncio.timeout(SCENARIO_DEADLINE):
            await scenario(*args, **kwargs)

    return run


class Upstream:
    """A recording backend that can be stopped, started again on its port, and slowed."""

    def __init__(self) -> None:
        self.port = free_port()
        self.delay = 0.0
        self.seen: list[tuple[str, str]] = []
        """(request id, employee id) of every request that reached it."""
        self._runner: web.AppRunner | None = None

    async def _lookup(self, request: web.Request) -> web.Response:
        self.seen.append((request.headers["X-Request-Id"], request.headers["X-Employee-Id"]))
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.json_response({"number": request.match_info["number"]})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/customers/{number}", self._lookup)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@dataclass
class Load:
    """Concurrent lookups over both proxies until stopped; every answer kept."""

    urls: list[str]
    policy: Policy
    answers: list[tuple[str, str, int, str]] = field(default_factory=list)
    """(employee, request id, status, content type)."""
    failures: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _worker(self, seed: int, client: aiohttp.ClientSession) -> None:
        rng = random.Random(seed)
        tokens = {e: token(self.policy, e) for e in [*EMPLOYEES, LOCKED]}
        while not self._stop.is_set():
            employee = LOCKED if rng.random() < 0.1 else rng.choice(EMPLOYEES)
            number = f"010{rng.randrange(10**8):08d}"
            url = rng.choice(self.urls)
            try:
                async with client.get(
                    f"{url}/customers/{number}",
                    headers={
                        "Authorization": f"Bearer {tokens[employee]}",
                        "X-Lookup-Reason": "PLAN_CHANGE",
                    },
                ) as response:
                    await response.read()
                    self.answers.append(
                        (
                            employee,
                            response.headers.get("X-Request-Id", ""),
                            response.status,
                            response.content_type,
                        )
                    )
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.failures.append(f"{employee}: {type(exc).__name__}")

    @asynccontextmanager
    async def running(self, workers: int = 12) -> AsyncIterator[Load]:
        timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as client:
            tasks = [asyncio.create_task(self._worker(i, client)) for i in range(workers)]
            try:
                yield self
            finally:
                self._stop.set()
                await asyncio.gather(*tasks)

    def served_since(self, mark: int) -> set[int]:
        return {status for _, _, status, _ in self.answers[mark:]}


async def eventually_served(load: Load, urls: list[str], seconds: float = 20.0) -> None:
    """Both proxies answer real lookups again (bounded: a regression fails, never hangs)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    mark = len(load.answers)
    while True:
        recent = load.answers[mark:]
        if sum(1 for e, _, s, _ in recent if s == 200 and e != LOCKED) >= 20:
            return
        assert loop.time() < deadline, f"no recovery: {sorted({s for *_, s, _ in recent})}"
        await asyncio.sleep(0.1)


def check_invariants(load: Load, upstream: Upstream) -> None:
    assert load.failures == [], load.failures[:5]
    answered = {rid: (employee, status, kind) for employee, rid, status, kind in load.answers}
    for rid, employee in upstream.seen:
        assert employee != LOCKED, "the locked employee reached the upstream"
        if rid in answered:  # a request the proxy refused never reaches the upstream
            assert answered[rid][1] not in (403, 429, 503), answered[rid]
    for employee, _, status, kind in load.answers:
        assert status in (200, 403, 429, 502, 503, 504), status
        if status != 200:
            assert kind == "application/problem+json", (status, kind)
        if employee == LOCKED:
            assert status in (403, 503), status


@asynccontextmanager
async def two_proxies(
    tmp_path: Path, server: RedisServer, upstream: Upstream
) -> AsyncIterator[tuple[list[str], Policy]]:
    extra = f"""
[store]
timeout = "300ms"
breaker_failures = 1
retry_interval = "100ms"
check_interval = "200ms"
lock_journal = "{tmp_path / "journal"}"
"""
    p = policy(f"http://127.0.0.1:{upstream.port}", extra=extra)
    async with AsyncExitStack() as stack:
        urls = []
        for _ in range(2):
            store = RedisStore.from_url(server.url, cluster=False, timeout=0.3)
            url, proxy = await stack.enter_async_context(running_proxy(p, store=store))
            urls.append(url)
        await proxy.guard.lock(LOCKED)
        yield urls, p


@pytest.mark.parametrize("persistence", [True, False], ids=["aof", "empty"])
@bounded
async def test_redis_killed_and_restarted_under_load(tmp_path: Path, persistence: bool) -> None:
    server = start_redis(tmp_path / "redis", persistence=persistence)
    upstream = Upstream()
    await upstream.start()
    try:
        async with two_proxies(tmp_path, server, upstream) as (urls, p):
            load = Load(urls, p)
            async with load.running():
                await eventually_served(load, urls)
                server.kill()
                mark = len(load.answers)
                await asyncio.sleep(1.0)
                assert load.served_since(mark) <= {503, 200, 403}
                assert 503 in load.served_since(mark)
                server = start_redis(server.directory, persistence=persistence, port=server.port)
                await eventually_served(load, urls)
            check_invariants(load, upstream)
    finally:
        server.stop()
        await upstream.stop()


@bounded
async def test_upstream_killed_restarted_and_slow_under_load(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis")
    upstream = Upstream()
    await upstream.start()
    try:
        async with two_proxies(tmp_path, server, upstream) as (urls, p):
            load = Load(urls, p)
            async with load.running():
                await eventually_served(load, urls)
                await upstream.stop()
                mark = len(load.answers)
                await asyncio.sleep(0.7)
                assert 502 in load.served_since(mark)
                await upstream.start()
                await eventually_served(load, urls)
                upstream.delay = 2.0  # past the proxy's 500 ms read timeout
                mark = len(load.answers)
                await asyncio.sleep(1.5)
                assert 504 in load.served_since(mark)
                upstream.delay = 0.0
                await eventually_served(load, urls)
            check_invariants(load, upstream)
    finally:
        server.stop()
        await upstream.stop()
