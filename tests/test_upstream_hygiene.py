"""What the clerk sees of a backend that breaks: our problem for a 5xx or for a short answer
broken off half-way (read whole before anything goes out), a cut connection for a long or
chunked one broken off after its head went out. The misbehaving backends are raw sockets, so
they can do what no well-behaved HTTP server would."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client.parser import text_string_to_metric_families

from lookup_proxy.customers import CustomerBase
from tests.harness import audit_records, policy, running_proxy, serving, token

NUMBER = CustomerBase().find_customers(1)[0]
SECRET_PAGE = "Traceback (most recent call last): db-primary.internal:5432 password=hunter2"

Answer = Callable[[asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_upstream(answer: Answer) -> AsyncIterator[str]:
    """A TCP backend that reads one request head and then runs ``answer`` on the socket."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await answer(writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def short_by_content_length(writer: asyncio.StreamWriter) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    writer.write(b'{"number": "' + b"0" * 80)
    await writer.drain()


async def long_short_by_content_length(writer: asyncio.StreamWriter) -> None:
    """Announces more than the proxy reads whole (64 KiB), so it is streamed, then breaks off."""
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    )
    writer.write(b'{"number": "' + b"0" * 80)
    await writer.drain()


async def chunked_cut_mid_chunk(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
    writer.write(b"Transfer-Encoding: chunked\r\n\r\n")
    writer.write(b"10\r\n0123456789abcdef\r\n")
    writer.write(b"400\r\n" + b"x" * 100)
    await writer.drain()


def lookup_headers(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}", "X-Lookup-Reason": "PLAN_CHANGE"}


def truncated_count(metrics_text: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "lookup_proxy_upstream_truncated":
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    return 0.0


@pytest.mark.parametrize("answer", [long_short_by_content_length, chunked_cut_mid_chunk])
async def test_a_streamed_body_broken_off_reaches_the_terminal_as_an_error_never_as_complete(
    answer: Answer, client: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """A streamed body (over 64 KiB announced, or chunked) broken off aborts the terminal's
    connection; it is logged without a traceback and counted by route."""
    caplog.set_level(logging.INFO, logger="lookup_proxy")
    async with raw_upstream(answer) as upstream_url:
        p = policy(upstream_url)
        async with running_proxy(p) as (url, _):
            async with client.get(
                f"{url}/customers/{NUMBER}", headers=lookup_headers(token(p))
            ) as r:
                request_id = r.headers["X-Request-Id"]
                with pytest.raises(aiohttp.ClientError):
                    await r.read()
            async with client.get(url + "/metrics") as m:
                assert truncated_count(await m.text()) == 1
    cut = [rec for rec in caplog.records if rec.getMessage().startswith("upstream answer cut")]
    assert [rec.__dict__["request_id"] for rec in cut] == [request_id]
    assert not any(rec.exc_info for rec in caplog.records)


@dataclass
class ProblemAnswer:
    """What a lookup through the proxy got when the backend failed it."""

    headers: CIMultiDict[str]
    text: str
    body: dict[str, Any]
    outcome: dict[str, Any]
    """The lookup's outcome audit record."""
    truncated: float
    """lookup_proxy_upstream_truncated_total afterwards."""


async def problem_through_proxy(client: aiohttp.ClientSession, upstream_url: str) -> ProblemAnswer:
    """One lookup through a proxy in front of ``upstream_url``, answered with a 502 problem."""
    p = policy(upstream_url)
    async with running_proxy(p) as (url, proxy):
        async with client.get(f"{url}/customers/{NUMBER}", headers=lookup_headers(token(p))) as r:
            assert r.status == 502
            assert r.headers["Content-Type"] == "application/problem+json"
            text = await r.text()
            headers = CIMultiDict(r.headers)
        async with client.get(url + "/metrics") as m:
            truncated = truncated_count(await m.text())
        await proxy.audit.flush()
        [outcome] = audit_records(proxy.audit.file.directory, "outcome")
    return ProblemAnswer(headers, text, json.loads(text), outcome, truncated)


async def test_a_short_answer_broken_off_becomes_a_problem_and_is_audited_as_an_error(
    client: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """An answer of a known, small length is read whole before anything goes out, so one
    broken off reaches the clerk as a 502 problem; logged, counted and audited as cut short."""
    caplog.set_level(logging.INFO, logger="lookup_proxy")
    async with raw_upstream(short_by_content_length) as upstream_url:
        answer = await problem_through_proxy(client, upstream_url)
    body, outcome = answer.body, answer.outcome
    assert answer.truncated == 1
    assert body["type"] == "urn:lookup-proxy:problem:upstream-error"
    assert body["upstream_status"] == 200
    assert "broke off" in body["detail"]
    assert outcome["outcome"] == "upstream_error"
    cut = [rec for rec in caplog.records if rec.getMessage().startswith("upstream answer cut")]
    assert [rec.__dict__["request_id"] for rec in cut] == [body["request_id"]]
    assert not any(rec.exc_info for rec in caplog.records)


async def error_page(_request: web.Request) -> web.Response:
    return web.Response(status=503, text=SECRET_PAGE * 100, headers={"X-Backend-Node": "db7"})


async def test_an_upstream_5xx_body_is_replaced_by_a_problem_and_kept_in_the_log(
    client: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """The clerk gets a 502 problem naming the backend's status; the log keeps 2 KiB of the
    original body, with the request id and no traceback."""
    caplog.set_level(logging.INFO, logger="lookup_proxy")
    upstream = web.Application()
    upstream.router.add_get("/customers/{number}", error_page)
    async with serving(upstream) as upstream_url:
        answer = await problem_through_proxy(client, upstream_url)
    body, text, outcome = answer.body, answer.text, answer.outcome
    assert "X-Backend-Node" not in answer.headers
    assert answer.truncated == 0
    assert body["type"] == "urn:lookup-proxy:problem:upstream-error"
    assert body["upstream_status"] == 503
    assert body["request_id"] == answer.headers["X-Request-Id"]
    assert "hunter2" not in text and "internal" not in text
    [logged] = [rec for rec in caplog.records if rec.getMessage().startswith("upstream error")]
    assert logged.__dict__["request_id"] == body["request_id"]
    assert logged.__dict__["upstream_status"] == 503
    kept = logged.__dict__["upstream_body"]
    assert kept.startswith(SECRET_PAGE) and len(kept) == 2048
    assert not any(rec.exc_info for rec in caplog.records)
    assert (outcome["cause"], outcome["upstream_status"]) == ("upstream-error", 503)
