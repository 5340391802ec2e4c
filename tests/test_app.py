"""End to end: a terminal's request through a real proxy to a real backend, on real sockets."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yarl
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from lookup_proxy.app import build_app
from lookup_proxy.customers import CustomerBase
from lookup_proxy.demo_backend import build_demo_backend
from lookup_proxy.errors import ConfigError
from lookup_proxy.guard.primitives import GuardStore
from tests.harness import ENV, policy, running_proxy, serving, token
from tests.servers import free_port

BASE = CustomerBase()
FOUND = BASE.find_customers(3)
MISSING = BASE.find_non_customers(1)[0]


def dashed(number: str) -> str:
    return f"{number[:3]}-{number[3:7]}-{number[7:]}"


def headers(tok: str, reason: str = "PLAN_CHANGE", **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}", "X-Lookup-Reason": reason, **more}


async def seen(client: aiohttp.ClientSession, backend: str) -> list[dict[str, object]]:
    async with client.get(backend + "/_demo/requests") as response:
        result: list[dict[str, object]] = await response.json()
        return result


async def problem(response: aiohttp.ClientResponse) -> dict[str, object]:
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert response.headers["X-Request-Id"]
    body: dict[str, object] = await response.json(content_type=None)
    assert body["status"] == response.status
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["request_id"] == response.headers["X-Request-Id"]
    return body


async def test_valid_lookup_is_forwarded_with_our_headers_and_without_the_token(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """A signed-in clerk with a reason gets the record; the backend sees who and why, no token."""
    p = policy(backend)
    tok = token(p, employee="E100", store="S7", region="R2")
    async with running_proxy(p) as (url, _):
        spoof = {"X-Employee-Id": "E999", "X-Store-Id": "S999", "X-Request-Id": "short"}
        async with client.get(
            f"{url}/customers/{dashed(FOUND[0])}", headers=headers(tok, **spoof)
        ) as response:
            assert response.status == 200
            record = await response.json()
            request_id = response.headers["X-Request-Id"]
    assert record["number"] == FOUND[0]
    assert response.headers["Server"] == "lookup-proxy"
    forwarded = (await seen(client, backend))[-1]
    sent = forwarded["headers"]
    assert isinstance(sent, dict)
    assert forwarded["path"] == f"/customers/{dashed(FOUND[0])}"
    assert "authorization" not in sent
    assert sent["x-employee-id"] == "E100"
    assert sent["x-store-id"] == "S7"
    assert sent["x-region-id"] == "R2"
    assert sent["x-lookup-reason"] == "PLAN_CHANGE"
    assert sent["x-request-id"] == request_id != "short"
    assert sent["x-forwarded-for"] == "127.0.0.1"


async def test_a_well_formed_request_id_from_the_terminal_is_kept(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """Terminals that send their own correlation id see it echoed and forwarded."""
    p = policy(backend)
    async with running_proxy(p) as (url, _):
        async with client.get(
            f"{url}/customers/{FOUND[0]}",
            headers=headers(token(p), **{"X-Request-Id": "terminal-0042-abc"}),
        ) as response:
            assert response.headers["X-Request-Id"] == "terminal-0042-abc"
    assert (await seen(client, backend))[-1]["headers"]["x-request-id"] == "terminal-0042-abc"  # type: ignore[index]


async def test_not_found_passes_through_as_the_backends_404(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """A number that is not a customer is the backend's answer, not a refusal."""
    p = policy(backend)
    async with running_proxy(p) as (url, _):
        async with client.get(f"{url}/customers/{MISSING}", headers=headers(token(p))) as r:
            assert r.status == 404
            assert await r.json() == {"error": "not found"}


@pytest.mark.parametrize(
    ("request_headers", "path_number", "status", "cause"),
    [
        ({}, FOUND[0], 401, "token-missing"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, FOUND[0], 401, "token-malformed"),
        ({"Authorization": "Bearer not.a.token"}, FOUND[0], 401, "token-malformed"),
        ("TOKEN", FOUND[0], 400, "missing-reason"),
        ("TOKEN:PROSPECTING", FOUND[0], 400, "unknown-reason"),
        ("TOKEN:FRAUD_REVIEW", FOUND[0], 403, "reason-not-permitted"),
        ("TOKEN:CORPORATE_ACCOUNT", FOUND[0], 400, "missing-reference"),
        ("TOKEN:CORPORATE_ACCOUNT:CORP-12", FOUND[0], 400, "bad-reference"),
        ("TOKEN:PLAN_CHANGE", "010-12a4-5678", 400, "bad-number"),
        ("TOKEN:PLAN_CHANGE", "02-123-4567", 400, "bad-number"),
        ("TOKEN:PLAN_CHANGE", "０１０１２３４５６７８", 400, "bad-number"),
    ],
)
async def test_each_refusal_has_its_status_and_a_problem_body(
    backend: str,
    client: aiohttp.ClientSession,
    request_headers: dict[str, str] | str,
    path_number: str,
    status: int,
    cause: str,
) -> None:
    """Every way a lookup can be incomplete is refused with RFC 9457 and never forwarded."""
    p = policy(backend)
    if isinstance(request_headers, str):
        _, *parts = request_headers.split(":")
        request_headers = {"Authorization": f"Bearer {token(p)}"}
        if parts:
            request_headers["X-Lookup-Reason"] = parts[0]
        if len(parts) > 1:
            request_headers["X-Lookup-Reference"] = parts[1]
    async with running_proxy(p) as (url, _):
        async with client.get(f"{url}/customers/{path_number}", headers=request_headers) as r:
            assert r.status == status
            body = await problem(r)
    assert body["type"] == f"urn:lookup-proxy:problem:{cause}"
    assert r.headers["Server"] == "lookup-proxy"
    assert await seen(client, backend) == []


async def test_a_reference_and_a_permitted_role_are_accepted(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """A corporate lookup with a valid reference, and a role-limited code with the role, pass."""
    p = policy(backend)
    async with running_proxy(p) as (url, _):
        corporate = headers(token(p), "CORPORATE_ACCOUNT", **{"X-Lookup-Reference": "CORP-004211"})
        async with client.get(f"{url}/customers/{FOUND[0]}", headers=corporate) as r:
            assert r.status == 200
        fraud = headers(token(p, roles=["fraud-analyst"]), "FRAUD_REVIEW")
        async with client.get(f"{url}/customers/{FOUND[1]}", headers=fraud) as r:
            assert r.status == 200
    assert (await seen(client, backend))[0]["headers"]["x-lookup-reference"] == "CORP-004211"  # type: ignore[index]


async def test_query_parameter_routes_take_exactly_one_number(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """A route can take the number from the query; two numbers in one request are refused."""
    p = policy(
        backend,
        routes='[[routes]]\npath = "/search"\nnumber_from = "query"\nnumber_param = "msisdn"\n',
    )
    async with running_proxy(p) as (url, _):
        async with client.get(
            f"{url}/search",
            params=[("msisdn", FOUND[0]), ("msisdn", FOUND[1])],
            headers=headers(token(p)),
        ) as r:
            assert r.status == 400
            assert (await problem(r))["type"] == "urn:lookup-proxy:problem:bad-number"
        async with client.get(
            f"{url}/search", params={"msisdn": dashed(FOUND[0])}, headers=headers(token(p))
        ) as r:
            assert r.status == 404  # the demo backend has no /search: the proxy forwarded it
        async with client.get(
            f"{url}/search",
            params=[("msisdn", FOUND[0]), ("page", "2")],
            headers=headers(token(p)),
        ) as r:
            assert r.status == 400
            assert (await problem(r))["type"] == "urn:lookup-proxy:problem:unexpected-query"
    assert [entry["path"] for entry in await seen(client, backend)] == [
        f"/search?msisdn={dashed(FOUND[0])}"
    ]


async def test_the_backend_gets_a_target_rebuilt_from_the_checked_number(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """Whatever encoding the terminal used, the path upstream holds only the number it typed."""
    p = policy(backend)
    async with running_proxy(p) as (url, _):
        spaced = FOUND[0][:3] + "%20" + FOUND[0][3:7] + "%20" + FOUND[0][7:]
        async with client.get(
            yarl.URL(f"{url}/customers/{spaced}", encoded=True), headers=headers(token(p))
        ) as r:
            assert r.status == 200
    assert (await seen(client, backend))[-1]["path"] == f"/customers/{spaced}"


async def hop_upstream(request: web.Request) -> web.Response:
    response = web.json_response({"got": dict(request.headers)})
    response.headers["Connection"] = "X-Upstream-Hop"
    response.headers["X-Upstream-Hop"] = "secret"
    response.headers["Keep-Alive"] = "timeout=5"
    response.headers["Proxy-Authenticate"] = "Basic"
    response.headers["X-Upstream-Plain"] = "kept"
    return response


async def test_hop_by_hop_headers_are_stripped_both_ways(client: aiohttp.ClientSession) -> None:
    """RFC 9110 §7.6.1 headers, and any the Connection header names, never cross the proxy."""
    upstream = web.Application()
    upstream.router.add_get("/customers/{number}", hop_upstream)
    async with serving(upstream) as upstream_url:
        p = policy(upstream_url)
        sent = headers(
            token(p),
            **{
                "Connection": "keep-alive, X-Terminal-Hop",
                "X-Terminal-Hop": "private",
                "Keep-Alive": "timeout=5",
                "TE": "trailers",
                "Proxy-Authorization": "Basic Zm9vOmJhcg==",
                "Upgrade": "websocket",
                "X-Terminal-Plain": "not on the allow-list",
                "Accept-Language": "ko-KR",
            },
        )
        async with running_proxy(p) as (url, _):
            async with client.get(f"{url}/customers/{FOUND[0]}", headers=sent) as r:
                assert r.status == 200
                got = {k.lower(): v for k, v in (await r.json())["got"].items()}
                answer = {k.lower() for k in r.headers}
    for hop in (
        "x-terminal-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
        "authorization",
        "x-terminal-plain",
    ):
        assert hop not in got, hop
    assert got["accept-language"] == "ko-KR"
    assert {"x-upstream-hop", "keep-alive", "proxy-authenticate"}.isdisjoint(answer)
    assert r.headers["X-Upstream-Plain"] == "kept"


async def test_only_the_configured_terminal_headers_reach_the_backend(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """``forward_headers`` is the whole list: a header named there crosses, others stop."""
    p = policy(backend, upstream_extra='forward_headers = ["X-Terminal-Model"]')
    sent = headers(
        token(p), **{"X-Terminal-Model": "T-800", "Accept-Language": "ko", "Cookie": "a=b"}
    )
    async with running_proxy(p) as (url, _):
        async with client.get(f"{url}/customers/{FOUND[0]}", headers=sent) as r:
            assert r.status == 200
    got = (await seen(client, backend))[-1]["headers"]
    assert isinstance(got, dict)
    assert got["x-terminal-model"] == "T-800"
    assert "accept-language" not in got and "cookie" not in got


async def test_forwarded_for_is_believed_only_from_trusted_proxies(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """A terminal cannot claim another address; a trusted load balancer can pass one on."""
    spoof = {"X-Forwarded-For": "203.0.113.9"}
    untrusted = policy(backend)
    async with running_proxy(untrusted) as (url, _):
        async with client.get(
            f"{url}/customers/{FOUND[0]}", headers=headers(token(untrusted), **spoof)
        ) as r:
            assert r.status == 200
    assert (await seen(client, backend))[-1]["headers"]["x-forwarded-for"] == "127.0.0.1"  # type: ignore[index]
    trusted = policy(backend, server='trusted_proxies = ["127.0.0.0/8"]')
    async with running_proxy(trusted) as (url, _):
        async with client.get(
            f"{url}/customers/{FOUND[0]}", headers=headers(token(trusted), **spoof)
        ) as r:
            assert r.status == 200
    assert (await seen(client, backend))[-1]["headers"][
        "x-forwarded-for"
    ] == "203.0.113.9, 127.0.0.1"  # type: ignore[index]


async def test_upstream_down_is_a_502_problem(client: aiohttp.ClientSession) -> None:
    """Nothing listening upstream: the clerk gets a plain 502, not a traceback."""
    p = policy(f"http://127.0.0.1:{free_port()}")
    async with running_proxy(p) as (url, _):
        async with client.get(f"{url}/customers/{FOUND[0]}", headers=headers(token(p))) as r:
            assert r.status == 502
            assert (await problem(r))["type"] == "urn:lookup-proxy:problem:upstream-unavailable"


async def test_upstream_too_slow_is_a_504_problem(client: aiohttp.ClientSession) -> None:
    """An upstream slower than the read timeout ends in a 504 problem."""
    async with serving(build_demo_backend(BASE, latency=2.0)) as slow:
        p = policy(slow)
        async with running_proxy(p) as (url, _):
            async with client.get(f"{url}/customers/{FOUND[0]}", headers=headers(token(p))) as r:
                assert r.status == 504
                assert (await problem(r))["type"] == "urn:lookup-proxy:problem:upstream-timeout"


async def big_upstream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.content_type = "application/octet-stream"
    await response.prepare(request)
    for index in range(64):
        await response.write(bytes([index]) * 16384)
    await response.write_eof()
    return response


async def test_large_bodies_stream_through_intact(client: aiohttp.ClientSession) -> None:
    """A 1 MiB chunked answer arrives byte for byte."""
    upstream = web.Application()
    upstream.router.add_get("/customers/{number}", big_upstream)
    async with serving(upstream) as upstream_url:
        p = policy(upstream_url)
        async with running_proxy(p) as (url, _):
            async with client.get(f"{url}/customers/{FOUND[0]}", headers=headers(token(p))) as r:
                body = await r.read()
    assert body == b"".join(bytes([i]) * 16384 for i in range(64))


async def test_service_endpoints_report_health_readiness_and_metrics(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """/healthz, /readyz and /metrics answer without a token; metrics carry no ids or numbers."""
    p = policy(backend)
    async with running_proxy(p) as (url, _):
        await client.get(f"{url}/customers/{FOUND[0]}", headers=headers(token(p, employee="E4242")))
        await client.get(f"{url}/customers/{FOUND[0]}")
        async with client.get(url + "/healthz") as r:
            assert r.status == 200 and r.headers["X-Request-Id"]
        async with client.get(url + "/readyz") as r:
            assert r.status == 200
            assert (await r.json())["checks"] == {
                "policy": "loaded",
                "store": "ok",
                "upstream": "ok",
            }
        async with client.get(url + "/metrics") as r:
            text = await r.text()
    assert (
        'lookup_proxy_requests_total{outcome="found",reason="PLAN_CHANGE",route="GET /customers/{number}"} 1.0'
        in text
    )
    assert 'lookup_proxy_refusals_total{cause="token-missing",status="401"} 1.0' in text
    assert "lookup_proxy_request_duration_seconds_bucket" in text
    assert "lookup_proxy_upstream_duration_seconds_bucket" in text
    label_values = {
        value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        for name, value in sample.labels.items()
        if name != "le"
    }
    assert not any("E4242" in v or FOUND[0][-4:] in v for v in label_values), label_values


async def test_readyz_fails_while_the_upstream_is_down(client: aiohttp.ClientSession) -> None:
    """A proxy whose backend is unreachable is alive but not ready."""
    p = policy(f"http://127.0.0.1:{free_port()}")
    async with running_proxy(p) as (url, _):
        async with client.get(url + "/readyz") as r:
            assert r.status == 503
            assert (await r.json())["checks"]["upstream"] == "unreachable"
        async with client.get(url + "/healthz") as r:
            assert r.status == 200


async def test_concurrent_lookups_all_complete(backend: str, client: aiohttp.ClientSession) -> None:
    """Fifty lookups at once through one shared upstream session all get their own answers."""
    p = policy(backend)
    numbers = BASE.find_customers(50)
    async with running_proxy(p) as (url, _):

        async def one(number: str) -> str:
            async with client.get(f"{url}/customers/{number}", headers=headers(token(p))) as r:
                assert r.status == 200
                return str((await r.json())["number"])

        answers = await asyncio.gather(*(one(n) for n in numbers))
    assert answers == numbers


async def test_the_upstream_credential_comes_from_the_environment(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """A configured upstream credential is read from its env var and sent to the backend only."""
    p = policy(
        backend,
        upstream_extra='credential_env = "UPSTREAM_KEY"\ncredential_header = "X-Api-Key"',
    )
    environ = {**ENV, "UPSTREAM_KEY": "backend-key-123"}
    async with running_proxy(p, environ=environ) as (url, _):
        async with client.get(f"{url}/customers/{FOUND[0]}", headers=headers(token(p))) as r:
            assert r.status == 200
            assert "X-Api-Key" not in r.headers
    assert (await seen(client, backend))[-1]["headers"]["x-api-key"] == "backend-key-123"  # type: ignore[index]


def test_a_missing_upstream_credential_refuses_to_start(backend: str) -> None:
    """A policy naming a credential variable that is unset is a configuration error."""
    p = policy(backend, upstream_extra='credential_env = "UPSTREAM_KEY"')
    with pytest.raises(ConfigError) as caught:
        build_app(p, base_dir=Path("."), environ=ENV)
    assert caught.value.problems[0].key == "UPSTREAM_KEY"


ECHOED: list[str] = []
"""What the echo backend was sent, in order (cleared by its fixture)."""


@pytest.fixture
async def echo_backend() -> AsyncIterator[str]:
    """A backend that answers a POST lookup with what it received (method, headers, body)."""
    ECHOED.clear()

    async def echo(request: web.Request) -> web.Response:
        ECHOED.append(request.path)
        return web.json_response(
            {
                "method": request.method,
                "content_type": request.headers.get("Content-Type"),
                "content_length": request.headers.get("Content-Length"),
                "employee": request.headers.get("X-Employee-Id"),
                "body": (await request.read()).decode(),
            }
        )

    app = web.Application()
    app.router.add_post("/customers/{number}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


POST_ROUTE = '[[routes]]\nmethod = "POST"\npath = "/customers/{number}"\n'


async def test_a_post_lookups_body_reaches_the_backend_intact(
    echo_backend: str, client: aiohttp.ClientSession
) -> None:
    p = policy(echo_backend, routes=POST_ROUTE)
    body = '{"note": "walk-in, ' + "x" * 5000 + '"}'
    sent = headers(token(p, employee="E5"), **{"Content-Type": "application/json"})
    async with running_proxy(p) as (url, _):
        async with client.post(f"{url}/customers/{FOUND[0]}", data=body, headers=sent) as r:
            assert r.status == 200
            got = await r.json()
    assert got == {
        "method": "POST",
        "content_type": "application/json",
        "content_length": str(len(body)),
        "employee": "E5",
        "body": body,
    }


async def test_a_post_body_over_the_limit_is_a_413_and_never_reaches_the_backend(
    echo_backend: str, client: aiohttp.ClientSession
) -> None:
    p = policy(echo_backend, routes=POST_ROUTE)
    async with running_proxy(p) as (url, _):
        async with client.post(
            f"{url}/customers/{FOUND[0]}", data=b"x" * (65 * 1024), headers=headers(token(p))
        ) as r:
            assert r.status == 413
            assert (await problem(r))["type"] == "urn:lookup-proxy:problem:body-too-large"
        async with client.post(
            f"{url}/customers/{FOUND[0]}", data=b"{}", headers=headers(token(p))
        ) as r:
            assert r.status == 200
    assert [f"/customers/{FOUND[0]}"] == ECHOED  # only the second


async def test_a_forwarded_header_that_is_not_utf8_is_served_not_a_500(backend: str) -> None:
    """An allow-listed header whose bytes are not UTF-8 crosses as the same bytes: the
    lookup is served, and nothing in between tries to read it as text."""
    p = policy(backend)
    async with running_proxy(p) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (
            f"GET /customers/{FOUND[0]} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token(p)}\r\nX-Lookup-Reason: PLAN_CHANGE\r\n"
            "Connection: close\r\n"
        ).encode()
        writer.write(head + b"Accept: application/json; q=\xff\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert FOUND[0].encode() in answer.partition(b"\r\n\r\n")[2]


async def test_a_post_body_sent_too_slowly_is_a_408_and_never_reaches_the_backend(
    echo_backend: str,
) -> None:
    """A body is bounded in time like a request head ([server] header_timeout): a terminal
    that trickles it gets a 408 problem, and the backend never sees the lookup."""
    p = policy(
        echo_backend,
        routes=POST_ROUTE,
        server='header_timeout = "500ms"\nkeepalive_timeout = "500ms"',
    )
    async with running_proxy(p) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            (
                f"POST /customers/{FOUND[0]} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {token(p)}\r\nX-Lookup-Reason: PLAN_CHANGE\r\n"
                "Content-Length: 100\r\nConnection: close\r\n\r\n{"
            ).encode()
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"urn:lookup-proxy:problem:request-timeout" in answer
    assert ECHOED == []


CYCLE_RULES = """
[[rules]]
name = "per-minute"
kind = "rate"
window = "1m"
limit = 1

[[rules]]
name = "distinct"
kind = "distinct"
window = "1h"
limit = 1
action = "lock"
reasons = ["BILLING_INQUIRY"]
"""


async def test_answering_a_refusal_leaves_no_garbage_for_the_collector(
    backend: str, client: aiohttp.ClientSession, store: GuardStore
) -> None:
    """Refusals arrive in floods (a prober hammering past a limit or while locked out, a
    terminal with a dead token): answering one must leave nothing that only the garbage
    collector frees, or every young collection walks the flood's leftovers (a refused lookup
    left about 26 objects in reference cycles: 30-40 ms young collections at 500 refusals a
    second). Allowed lookups are the baseline: they leave none either."""
    p = policy(backend, rules=CYCLE_RULES)
    async with running_proxy(p, store=store) as (url, proxy):
        refused = token(p, employee="E-refused")
        locked = token(p, employee="E-locked")
        billing = headers(locked, "BILLING_INQUIRY")
        async with client.get(f"{url}/customers/{FOUND[0]}", headers=billing) as r:
            assert r.status == 200
        async with client.get(
            f"{url}/customers/{FOUND[1]}", headers=headers(locked, "BILLING_INQUIRY")
        ) as r:
            assert r.status == 403  # locked by the distinct rule
        async with client.get(f"{url}/customers/{FOUND[0]}", headers=headers(refused)) as r:
            assert r.status == 200  # the minute's one lookup: the rest are refused
        kinds: dict[str, tuple[int, dict[str, str]]] = {
            "allowed": (200, {}),
            "rate-limited": (429, headers(refused)),
            "locked": (403, headers(locked)),
            "no reason": (400, {"Authorization": f"Bearer {refused}"}),
            "bad token": (401, headers("not-a-token")),
        }
        for kind, (status, sent) in kinds.items():
            await proxy.guard_idle()
            gc.collect()
            gc.disable()
            try:
                for index in range(20):
                    if kind == "allowed":
                        sent = headers(token(p, employee=f"E-allowed-{index}"))
                    async with client.get(f"{url}/customers/{FOUND[0]}", headers=sent) as r:
                        assert r.status == status, kind
                        await r.read()
                await proxy.guard_idle()
                left = gc.collect()
            finally:
                gc.enable()
            assert left == 0, f"{kind}: {left} objects in reference cycles"
