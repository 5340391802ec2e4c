"""The middleware every request passes (lookup_proxy/middleware.py), through a real proxy on real
sockets: default deny for what is not a route, 405 with Allow for another method, a problem body
with the request id for a surprise, whose traceback goes to the log and never to the client."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from lookup_proxy.app import build_app
from tests.harness import ENV, policy, running_proxy, serving, token
from tests.test_app import headers, problem, seen


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/customers"),
        ("GET", "/admin"),
        ("GET", "/customers/01012345678/contracts"),
        ("DELETE", "/customers/01012345678/contracts"),
    ],
)
async def test_paths_that_are_not_lookup_routes_are_refused(
    backend: str, client: aiohttp.ClientSession, method: str, path: str
) -> None:
    """Default deny: anything but a configured route is refused, even with a valid token."""
    p = policy(backend)
    async with running_proxy(p) as (url, _):
        async with client.request(method, url + path, headers=headers(token(p))) as r:
            assert r.status == 403
            body = await problem(r)
    assert body["type"] == "urn:lookup-proxy:problem:route-not-allowed"
    assert await seen(client, backend) == []


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/customers/01012345678", "GET"),
        ("DELETE", "/customers/01012345678", "GET"),
        ("HEAD", "/customers/01012345678", "GET"),
        ("POST", "/admin/locks", "GET"),
        ("POST", "/admin/locks/E1", "DELETE, GET, PUT"),
    ],
)
async def test_a_route_asked_with_another_method_is_a_405_naming_the_allowed_ones(
    backend: str, client: aiohttp.ClientSession, method: str, path: str, allow: str
) -> None:
    """A path that is a route but not for this method is 405 with Allow, not a 403."""
    p = policy(backend)
    async with running_proxy(p) as (url, _):
        async with client.request(method, url + path, headers=headers(token(p))) as r:
            assert r.status == 405
            assert r.headers["Allow"] == allow
            if method != "HEAD":
                assert (await problem(r))["type"] == "urn:lookup-proxy:problem:method-not-allowed"
    assert await seen(client, backend) == []


async def test_a_surprise_in_a_handler_is_a_500_problem_and_a_logged_traceback(
    backend: str, client: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """An exception nobody expected becomes a 500 problem naming the request id; the traceback
    and the exception's text go to the log (with that id), never to the clerk."""
    p = policy(backend)
    p = p.model_copy(update={"audit": p.audit.model_copy(update={"archive": str(tmp_path)})})
    app = build_app(p, base_dir=Path("."), environ=ENV)

    async def broken(_request: web.Request) -> web.Response:
        raise RuntimeError("internal detail EVIL-7f3a")

    app.router.add_get("/broken", broken)  # a real route of the real app, whose handler fails
    caplog.set_level(logging.ERROR, logger="lookup_proxy.app")
    async with serving(app) as url:
        async with client.get(url + "/broken", headers=headers(token(p))) as r:
            assert r.status == 500
            assert r.headers["Server"] == "lookup-proxy"
            text = await r.text()
            body = await problem(r)
    assert body["type"] == "urn:lookup-proxy:problem:internal-error"
    assert "EVIL-7f3a" not in text
    (logged,) = [rec for rec in caplog.records if rec.getMessage() == "unexpected error"]
    assert logged.exc_info is not None and "EVIL-7f3a" in str(logged.exc_info[1])
    assert getattr(logged, "request_id", None) == body["request_id"]
