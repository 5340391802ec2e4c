"""What one request to the backend costs the proxy's process: aiohttp's ClientSession against
the client of ``lookup_proxy/upstream/`` (issue 12).

Starts the demo backend (``lookup-proxy demo-backend``) on a free port, then sends
``--requests`` lookups of random customer numbers through each client in turn, rounds
interleaved, ``--concurrency`` at a time over kept-alive connections, with the headers and the
timeouts the forward step sends (``ClientSession`` configured as ``forward.py`` configured it
before the change: no auto headers, no decompression, a dummy cookie jar, a per-request
timeout). Prints per client the CPU of this process per request (``time.process_time``: the
backend runs in its own process) and requests per second, min and median over the rounds, and
the ratio of the medians. Run from the repository root: ``python -m bench.bench_upstream
[--requests 20000] [--concurrency 32] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable

import aiohttp
import uvloop

from lookup_proxy.customers import CustomerBase
from lookup_proxy.upstream import Origin, Pool, Timeouts

HEADERS = {
    "X-Request-Id": "0123456789abcdef0123456789abcdef",
    "X-Employee-Id": "E1001",
    "X-Store-Id": "S001",
    "X-Region-Id": "R1",
    "X-Lookup-Reason": "BILLING_INQUIRY",
    "X-Forwarded-For": "127.0.0.1",
}
TIMEOUTS = Timeouts(connect=1.0, read=3.0, total=5.0)

Client = Callable[[str, int, list[str], int], Awaitable[None]]


async def with_session(host: str, port: int, numbers: list[str], concurrency: int) -> None:
    timeout = aiohttp.ClientTimeout(total=5.0, connect=1.0, sock_connect=1.0, sock_read=3.0)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100, limit_per_host=100),
        timeout=timeout,
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    base = f"http://{host}:{port}/customers/"

    async def worker(share: list[str]) -> None:
        for number in share:
            async with session.request(
                "GET", base + number, headers=HEADERS, allow_redirects=False, timeout=timeout
            ) as answer:
                await answer.read()

    await asyncio.gather(*(worker(numbers[i::concurrency]) for i in range(concurrency)))
    await session.close()


async def with_pool(host: str, port: int, numbers: list[str], concurrency: int) -> None:
    pool = Pool(100)
    origin = Origin.of("http", host, port)
    headers = list(HEADERS.items())

    async def worker(share: list[str]) -> None:
        for number in share:
            answer = await pool.exchange(
                origin, "GET", "/customers/" + number, headers, None, TIMEOUTS
            )
            await answer.read()
            answer.release()

    await asyncio.gather(*(worker(numbers[i::concurrency]) for i in range(concurrency)))
    await pool.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(url: str) -> None:
    for _ in range(100):
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the demo backend did not answer at {url}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    backend = subprocess.Popen(
        [sys.executable, "-m", "lookup_proxy", "demo-backend", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz")
        customers = CustomerBase().find_customers(500)
        rng = random.Random(1)
        numbers = [rng.choice(customers) for _ in range(args.requests)]
        clients: dict[str, Client] = {
            "aiohttp ClientSession": with_session,
            "lookup_proxy.upstream": with_pool,
        }
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
        for _ in range(args.rounds):
            for name, client in clients.items():
                cpu, wall = time.process_time(), time.perf_counter()
                uvloop.run(client("127.0.0.1", port, numbers, args.concurrency))
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                figures[name].append((cpu / args.requests * 1e6, args.requests / wall))
    finally:
        backend.terminate()
        backend.wait()
    print(
        f"{args.requests} requests a round to the demo backend, {args.concurrency} at a time, "
        f"{args.rounds} rounds interleaved"
    )
    print("| client | CPU/request, min | median | requests/s, median |")
    print("|---|---:|---:|---:|")
    medians: dict[str, float] = {}
    for name, rows in figures.items():
        cpus = [cpu for cpu, _ in rows]
        medians[name] = statistics.median(cpus)
        rate = statistics.median(rate for _, rate in rows)
        print(f"| {name} | {min(cpus):.0f} µs | {medians[name]:.0f} µs | {rate:,.0f} |")
    ours, theirs = medians["lookup_proxy.upstream"], medians["aiohttp ClientSession"]
    print(f"lookup_proxy.upstream / ClientSession, CPU per request: {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
