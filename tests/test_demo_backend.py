"""The demo backend over a real socket: lookups in any format, and what it was sent."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web

from lookup_proxy.customers import CustomerBase
from lookup_proxy.demo_backend import REQUEST_LOG_SIZE, build_demo_backend, run_demo_backend

BASE = CustomerBase()
CUSTOMER = BASE.find_customers(1)[0]
STRANGER = BASE.find_non_customers(1)[0]


async def _serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def backend() -> AsyncIterator[str]:
    async for url in _serve(build_demo_backend(BASE)):
        yield url


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _dashed(canonical: str) -> str:
    return f"{canonical[:3]}-{canonical[3:7]}-{canonical[7:]}"


async def test_a_customer_number_returns_the_record(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """A customer's canonical number answers 200 with the base's record."""
    async with client.get(f"{backend}/customers/{CUSTOMER}") as response:
        assert response.status == 200
        assert await response.json() == BASE.record(CUSTOMER)


@pytest.mark.parametrize(
    "typed",
    [
        _dashed(CUSTOMER),
        f"{CUSTOMER[:3]} {CUSTOMER[3:7]} {CUSTOMER[7:]}",
        f"+82 {_dashed(CUSTOMER)[1:]}",
        f"+82{CUSTOMER[1:]}",
        f"0082{CUSTOMER[1:]}",
    ],
)
async def test_any_format_of_the_same_number_returns_the_same_record(
    backend: str, client: aiohttp.ClientSession, typed: str
) -> None:
    """The number arrives URL-encoded as typed, and every format finds the same customer."""
    async with client.get(f"{backend}/customers/{quote(typed, safe='')}") as response:
        assert response.status == 200
        body = await response.json()
    assert body["number"] == CUSTOMER
    assert body == BASE.record(CUSTOMER)


async def test_a_number_nobody_holds_is_404(backend: str, client: aiohttp.ClientSession) -> None:
    """A well-formed number without a customer answers 404 with a JSON error."""
    async with client.get(f"{backend}/customers/{_dashed(STRANGER)}") as response:
        assert response.status == 404
        assert await response.json() == {"error": "not found"}


@pytest.mark.parametrize("typed", ["hello", "123", "+1 212 555 0100", "0" * 14])
async def test_garbage_is_400(backend: str, client: aiohttp.ClientSession, typed: str) -> None:
    """Input that cannot be a Korean number answers 400 with a JSON error."""
    async with client.get(f"{backend}/customers/{quote(typed, safe='')}") as response:
        assert response.status == 400
        assert await response.json() == {"error": "bad number"}


async def test_healthz_answers(backend: str, client: aiohttp.ClientSession) -> None:
    """The health endpoint answers 200 so a proxy's readiness check can use it."""
    async with client.get(f"{backend}/healthz") as response:
        assert response.status == 200


async def test_the_request_log_shows_forwarded_headers(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """Tests can read which headers reached the backend, names lower-cased, newest last."""
    headers = {"X-Request-Id": "req-1", "X-Lookup-Reason": "BILLING_INQUIRY"}
    async with client.get(f"{backend}/customers/{CUSTOMER}?x=1", headers=headers):
        pass
    async with client.get(f"{backend}/_demo/requests") as response:
        seen = await response.json()
    assert len(seen) == 1  # the log endpoint does not log itself
    assert seen[0]["method"] == "GET"
    assert seen[0]["path"] == f"/customers/{CUSTOMER}?x=1"
    assert seen[0]["headers"]["x-request-id"] == "req-1"
    assert seen[0]["headers"]["x-lookup-reason"] == "BILLING_INQUIRY"
    assert "authorization" not in seen[0]["headers"]

    async with client.delete(f"{backend}/_demo/requests") as response:
        assert response.status == 204
    async with client.get(f"{backend}/_demo/requests") as response:
        assert await response.json() == []


async def test_the_request_log_keeps_only_the_latest_requests(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """Only the last hundred requests are kept, so a long demo cannot grow it without bound."""
    for index in range(REQUEST_LOG_SIZE + 5):
        async with client.get(f"{backend}/healthz", headers={"X-Index": str(index)}):
            pass
    async with client.get(f"{backend}/_demo/requests") as response:
        seen = await response.json()
    assert len(seen) == REQUEST_LOG_SIZE
    assert seen[0]["headers"]["x-index"] == "5"
    assert seen[-1]["headers"]["x-index"] == str(REQUEST_LOG_SIZE + 4)


async def test_latency_delays_lookups(client: aiohttp.ClientSession) -> None:
    """The optional latency slows customer lookups, for timeout demos."""
    async for url in _serve(build_demo_backend(BASE, latency=0.2)):
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with client.get(f"{url}/customers/{CUSTOMER}") as response:
            assert response.status == 200
        assert loop.time() - started >= 0.19


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_run_demo_backend_serves_until_cancelled(client: aiohttp.ClientSession) -> None:
    """The CLI entry point serves lookups and releases its port when cancelled."""
    port = _free_port()
    task = asyncio.create_task(run_demo_backend("127.0.0.1", port, seed=7, share=1 / 7))
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            async with client.get(f"{url}/customers/{CUSTOMER}") as response:
                assert await response.json() == BASE.record(CUSTOMER)
            break
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.02)
    else:
        pytest.fail("demo backend never started listening")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with socket.socket() as probe:
        # REUSEADDR tolerates the closed connections' TIME_WAIT, but not a listener still there.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
