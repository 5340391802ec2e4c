"""A stand-in for the customer-lookup backend, for demos and end-to-end tests.

It behaves like the legacy system the proxy protects: it answers any number it can make sense
of, in any format, with no notion of who is asking or why. Its number parsing is deliberately
looser than the proxy's (any non-digits are ignored), because the proxy must not rely on the
backend to reject what the guard would miscount.

Tests need to see what the proxy forwarded (the employee's token must not leak upstream, a
request id must), so the app keeps the headers of its last requests at ``GET /_demo/requests``
(``DELETE`` clears them). Header names there are lower-cased, repeated headers joined by ", ".
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from functools import partial
from typing import TypedDict

from aiohttp import web
from aiohttp.typedefs import Handler

from lookup_proxy.customers import CustomerBase

__all__ = ["SeenRequest", "build_demo_backend", "run_demo_backend"]

log = logging.getLogger(__name__)

REQUEST_LOG_SIZE = 100


class SeenRequest(TypedDict):
    """One request as the backend received it."""

    method: str
    path: str
    headers: dict[str, str]


_BASE = web.AppKey("base", CustomerBase)
_LATENCY = web.AppKey("latency", float)


class _RequestLog:
    """The last requests' headers, oldest first."""

    def __init__(self, size: int) -> None:
        self.entries: deque[SeenRequest] = deque(maxlen=size)


_SEEN = web.AppKey("seen", _RequestLog)
_LOG_PATH = "/_demo/requests"
_DIGITS = frozenset("0123456789")

_dumps = partial(json.dumps, ensure_ascii=False)  # Hangul names stay readable in curl


def _tolerant_canonical(raw: str, country_code: str = "82") -> str | None:
    """Whatever digits were typed, read as a Korean number; None when they cannot be one."""
    digits = "".join(ch for ch in raw if ch in _DIGITS)
    international = raw.lstrip().startswith("+") or digits.startswith("00")
    if international:
        digits = digits.removeprefix("00")
        if not digits.startswith(country_code):
            return None
        digits = digits[len(country_code) :]
        if not digits.startswith("0"):
            digits = "0" + digits
    if digits.startswith("0") and 10 <= len(digits) <= 11:
        return digits
    return None


@web.middleware
async def _remember_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path != _LOG_PATH:
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        request.app[_SEEN].entries.append(
            {"method": request.method, "path": request.raw_path, "headers": headers}
        )
    return await handler(request)


async def _customer(request: web.Request) -> web.Response:
    latency = request.app[_LATENCY]
    if latency > 0:
        await asyncio.sleep(latency)
    canonical = _tolerant_canonical(request.match_info["number"])
    if canonical is None:
        return web.json_response({"error": "bad number"}, status=400, dumps=_dumps)
    record = request.app[_BASE].record(canonical)
    if record is None:
        return web.json_response({"error": "not found"}, status=404, dumps=_dumps)
    return web.json_response(record, dumps=_dumps)


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _seen(request: web.Request) -> web.Response:
    return web.json_response(list(request.app[_SEEN].entries), dumps=_dumps)


async def _forget(request: web.Request) -> web.Response:
    request.app[_SEEN].entries.clear()
    return web.Response(status=204)


def build_demo_backend(base: CustomerBase, *, latency: float = 0.0) -> web.Application:
    """The demo backend app; ``latency`` seconds are added to every customer lookup."""
    if latency < 0:
        raise ValueError(f"latency must not be negative, not {latency!r}")
    app = web.Application(middlewares=[_remember_headers])
    app[_BASE] = base
    app[_LATENCY] = float(latency)
    app[_SEEN] = _RequestLog(REQUEST_LOG_SIZE)
    app.router.add_get("/customers/{number}", _customer)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get(_LOG_PATH, _seen)
    app.router.add_delete(_LOG_PATH, _forget)
    return app


async def run_demo_backend(
    host: str, port: int, seed: int, share: float, *, latency: float = 0.0
) -> None:
    """Serve the demo backend until cancelled, then close the listening socket cleanly."""
    runner = web.AppRunner(build_demo_backend(CustomerBase(seed, share), latency=latency))
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        for address in runner.addresses:
            log.info("demo backend listening on %s:%s", address[0], address[1])
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
