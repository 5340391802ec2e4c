"""What answering an HTTP request costs a Python process before any proxying: the floor under
issue 12's throughput ratios.

Two servers answer ``GET /customers/{number}`` with the same fixed JSON body, nothing else:
aiohttp's web server (``web.Application``, one route: what lookup-proxy and bench/perf's bare
pass-through both run on) and an ``asyncio.Protocol`` on ``httptools`` (llhttp, the parser
lookup_proxy/upstream uses for the backend's answers) writing one prepared answer. Both on uvloop,
one process each, driven by ``wrk`` (32 connections, bench/perf's requests: a lookup's headers), in
interleaved rounds; printed: requests/s and the server's CPU per request.

bench/perf's bare pass-through costs about this aiohttp floor plus a ``ClientSession`` request; a
guarded lookup costs the same floor plus everything the walk does. The difference between the two
servers is what a server of our own could save at most; the rest of a lookup's cost is the walk.

Needs ``wrk`` (Debian: ``apt-get install wrk``). ``python -m bench.bench_http_floor [--rounds 3]
[--duration 6]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.perf import WRK_HINT, free_port, run_wrk, serve_until_sigterm, start, wrk_script

BODY = b'{"number":"010-2000-0007","name":"Jane Doe","plan":"basic","account":null}'


def serve_aiohttp(port: int) -> None:
    import uvloop
    from aiohttp import web

    async def customer(_request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/json")

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/customers/{number}", customer)
    app.router.add_get("/healthz", healthz)
    uvloop.run(serve_until_sigterm(app, port))


def serve_httptools(port: int) -> None:
    import httptools
    import uvloop

    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nServer: floor\r\n"
        b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY
    )

    class Answering(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: Any = transport  # uvloop's, not an asyncio.Transport subclass
            self.parser = httptools.HttpRequestParser(self)
            self.headers: list[tuple[bytes, bytes]] = []

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name, value))

        def on_message_complete(self) -> None:
            self.headers = []
            self.transport.write(answer)

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Answering, "127.0.0.1", port)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        server.close()

    uvloop.run(main())


SERVERS = {"aiohttp web server": "aiohttp", "httptools protocol": "httptools"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--serve", choices=sorted(SERVERS.values()), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        (serve_aiohttp if args.serve == "aiohttp" else serve_httptools)(args.port)
        return
    if shutil.which("wrk") is None:
        raise SystemExit(WRK_HINT)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in SERVERS}
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as name:
        directory = Path(name)
        numbers = [f"010-2000-{n:04d}" for n in range(10_000)]
        script = wrk_script(directory, ["aaaa.bbbb.cccc"], numbers)  # bench/perf's requests
        for round_ in range(args.rounds):
            for label, kind in SERVERS.items():
                port = free_port()
                argv = [sys.executable, "-m", "bench.bench_http_floor", "--serve", kind,
                        "--port", str(port)]  # fmt: skip
                ready = f"http://127.0.0.1:{port}/healthz"
                if kind == "httptools":
                    ready = f"http://127.0.0.1:{port}/customers/1"
                server = start(f"{kind}-{round_}", argv, dict(os.environ), directory, ready)
                try:
                    run_wrk(f"http://127.0.0.1:{port}", script, 1.0, 1)  # warm up
                    cpu = server.cpu
                    wrk = run_wrk(f"http://127.0.0.1:{port}", script, args.duration, 1)
                    cpu = server.cpu - cpu
                finally:
                    server.stop()
                rate = wrk["requests"] / (wrk["duration_us"] / 1e6)
                per = cpu / wrk["requests"] * 1e6
                results[label].append((rate, per))
                print(f"round {round_ + 1} {label:20} {rate:9,.0f} requests/s, "
                      f"{per:5.1f} µs CPU a request", flush=True)  # fmt: skip
    print("\n| server | requests/s | CPU a request |\n|---|---:|---:|")
    for label, runs in results.items():
        rate = statistics.median(r for r, _ in runs)
        per = statistics.median(p for _, p in runs)
        print(f"| {label} | {rate:,.0f} | {per:.1f} µs |")


if __name__ == "__main__":
    main()
