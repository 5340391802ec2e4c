"""The HTTP edge over raw sockets: what aiohttp's parser rejects, slow and idle connections, the
connection ceiling, and a bounded fuzz pass — each against a real proxy and a recording upstream.

Every case ends with a good lookup through the same proxy: a refusal that harms the server is no
refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lookup_proxy.customers import CustomerBase
from lookup_proxy.policy import Policy
from tests.harness import policy, running_proxy, token

FOUND = CustomerBase().find_customers(1)[0]
MARK = b"EVIL-7f3a"
"""Planted in every offending request: it must never come back, nor reach the logs."""

GENEROUS = 15.0
"""Only keeps a failing test from hanging; no assertion is about time."""

EDGE = """
header_timeout = "2s"
keepalive_timeout = "1s"
max_request_line = 1024
max_header_size = 2048
max_headers = 24
"""


@dataclass
class Answer:
    status: int
    version: str
    headers: dict[str, str]
    body: bytes


def parse_answers(raw: bytes) -> list[Answer]:
    """Every HTTP response in ``raw`` (a connection's whole output); fails on anything else."""
    answers: list[Answer] = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        assert sep, f"an unfinished response head: {raw[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        version, status, _ = lines[0].split(" ", 2)
        assert version.startswith("HTTP/"), lines[0]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            assert name.lower() not in headers or name.lower() == "set-cookie", lines
            headers[name.lower()] = value.strip()
        if int(status) < 200:  # 100 Continue: the real answer follows
            raw = rest
            continue
        length = int(headers.get("content-length", "0"))
        assert "transfer-encoding" not in headers, headers
        assert len(rest) >= length, "a truncated body"
        answers.append(Answer(int(status), version, headers, rest[:length]))
        raw = rest[length:]
    return answers


async def exchange(port: int, raw: bytes) -> tuple[bytes, bool]:
    """Send ``raw`` on a fresh connection; everything the server sent, and whether it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""
    closed = False
    try:
        writer.write(raw)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        async with asyncio.timeout(GENEROUS):
            while chunk := await reader.read(65536):
                received += chunk
        closed = True
    except ConnectionResetError:
        closed = True
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return received, closed


def lookup_head(tok: str, number: str = FOUND, *, version: str = "HTTP/1.1") -> bytes:
    return (
        f"GET /customers/{number} {version}\r\nHost: proxy.test\r\n"
        f"Authorization: Bearer {tok}\r\nX-Lookup-Reason: BILLING_INQUIRY\r\n"
    ).encode()


def assert_problem(answer: Answer, status: int, cause: str) -> dict[str, object]:
    assert answer.status == status
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.headers["server"] == "lookup-proxy"
    request_id = answer.headers["x-request-id"]
    body: dict[str, object] = json.loads(answer.body)
    assert body["type"] == f"urn:lookup-proxy:problem:{cause}"
    assert body["status"] == status
    assert body["request_id"] == request_id
    assert isinstance(body["detail"], str) and body["detail"]
    return body


async def upstream_saw(backend: str) -> list[object]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(backend + "/_demo/requests") as response,
    ):
        seen: list[object] = await response.json()
        return seen


async def good_lookup_still_served(url: str, p: Policy) -> None:
    """A fresh connection (not a pooled one) gets a customer's record."""
    headers = {"Authorization": f"Bearer {token(p)}", "X-Lookup-Reason": "BILLING_INQUIRY"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/customers/{FOUND}", headers=headers) as response,
    ):
        assert response.status == 200
        assert response.headers["Server"] == "lookup-proxy"
        assert (await response.json())["number"] == FOUND


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def assert_clean_logs(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert record.exc_info is None, record.getMessage()
        assert "Traceback" not in record.getMessage()
        assert MARK.decode() not in record.getMessage() + repr(record.__dict__)


@pytest.fixture
async def edge(backend: str) -> AsyncIterator[tuple[str, Policy, str]]:
    """(proxy URL, policy, valid token) with the test's short edge limits."""
    p = policy(backend, server=EDGE)
    async with running_proxy(p) as (url, _):
        yield url, p, token(p)


def _case(name: str, status: int, cause: str, build: object) -> object:
    return pytest.param(status, cause, build, id=name)


G = "\r\n"
# Each builds the raw request from a valid lookup head (token included), so a case the parser
# let through would be forwarded: "nothing reached the upstream" means something.
PARSER_CASES = [
    _case(
        "content-length-with-transfer-encoding",
        400,
        "malformed-request",
        lambda h: (
            h
            + b"Content-Length: 9\r\nTransfer-Encoding: chunked\r\nX-Note: EVIL-7f3a\r\n\r\n0\r\n\r\n"
        ),
    ),
    _case(
        "two-content-lengths",
        400,
        "malformed-request",
        lambda h: h + b"Content-Length: 9\r\nContent-Length: 10\r\n\r\nEVIL-7f3a",
    ),
    _case(
        "obs-fold",
        400,
        "malformed-request",
        lambda h: h + b"X-Lookup-Reference: CORP\r\n EVIL-7f3a\r\n\r\n",
    ),
    _case("bad-byte-in-name", 400, "malformed-request", lambda h: h + b"X<EVIL-7f3a>: 1\r\n\r\n"),
    _case(
        "nul-in-value", 400, "malformed-request", lambda h: h + b"X-Note: a\x00EVIL-7f3a\r\n\r\n"
    ),
    _case(
        "bare-cr-in-value", 400, "malformed-request", lambda h: h + b"X-Note: a\rEVIL-7f3a\r\n\r\n"
    ),
    _case(
        "space-before-colon", 400, "malformed-request", lambda h: h + b"X-Note : EVIL-7f3a\r\n\r\n"
    ),
    _case("two-hosts", 400, "malformed-request", lambda h: h + b"Host: EVIL-7f3a\r\n\r\n"),
    _case(
        "no-host-on-http-1.1",
        400,
        "malformed-request",
        lambda h: h.replace(b"Host: proxy.test\r\n", b"") + b"X-Note: EVIL-7f3a\r\n\r\n",
    ),
    _case(
        "bad-version",
        400,
        "malformed-request",
        lambda h: h.replace(b"HTTP/1.1", b"HTTP/1.EVIL-7f3a", 1) + b"\r\n",
    ),
    _case(
        "http-0.9-line",
        400,
        "malformed-request",
        lambda h: h.split(b" HTTP/1.1", 1)[0] + b"?EVIL-7f3a\r\n\r\n",
    ),
    _case("bad-method", 400, "malformed-request", lambda h: b"G<EVIL-7f3a>" + h[3:] + b"\r\n"),
    _case(
        "space-in-target",
        400,
        "malformed-request",
        lambda h: h.replace(b"/customers/", b"/customers/EVIL-7f3a ", 1) + b"\r\n",
    ),
    _case(
        "bare-lf-line-endings",
        400,
        "malformed-request",
        lambda h: h.replace(b"\r\n", b"\n") + b"X-Note: EVIL-7f3a\n\n",
    ),
    _case(
        "bad-transfer-encoding",
        400,
        "malformed-request",
        lambda h: h + b"Transfer-Encoding: EVIL-7f3a\r\n\r\n",
    ),
    _case(
        "content-length-not-a-number",
        400,
        "malformed-request",
        lambda h: h + b"Content-Length: 1EVIL-7f3a\r\n\r\n",
    ),
    _case(
        "tls-on-the-http-port",
        400,
        "malformed-request",
        lambda h: b"\x16\x03\x01\x02\x00\x01\x00\x01\xfcEVIL-7f3a\r\n\r\n",
    ),
    _case(
        "http2-preface",
        400,
        "malformed-request",
        lambda h: b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nEVIL-7f3a",
    ),
    _case(
        "request-line-over-max_request_line",
        431,
        "request-head-too-large",
        lambda h: h.replace(b"/customers/", b"/customers/" + b"EVIL-7f3a" * 200, 1) + b"\r\n",
    ),
    _case(
        "header-over-max_header_size",
        431,
        "request-head-too-large",
        lambda h: h + b"X-Note: " + b"EVIL-7f3a" * 400 + b"\r\n\r\n",
    ),
    _case(
        "more-than-max_headers",
        431,
        "request-head-too-large",
        lambda h: h + b"".join(b"X-N%d: EVIL-7f3a\r\n" % i for i in range(40)) + b"\r\n",
    ),
]


@pytest.mark.parametrize(("status", "cause", "build"), PARSER_CASES)
async def test_parser_rejection_is_our_problem_and_closes(
    status: int,
    cause: str,
    build: object,
    edge: tuple[str, Policy, str],
    backend: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What the parser refuses is answered by us: problem+json, request id, our Server header,
    none of the input, the connection closed, nothing forwarded, the server unharmed."""
    caplog.set_level(logging.DEBUG)
    url, p, tok = edge
    assert callable(build)
    raw = build(lookup_head(tok))
    assert MARK in raw

    received, closed = await exchange(port_of(url), raw)

    assert closed
    (answer,) = parse_answers(received)
    assert_problem(answer, status, cause)
    assert answer.headers["connection"] == "close"
    assert MARK not in received
    assert await upstream_saw(backend) == []
    assert_clean_logs(caplog)
    await good_lookup_still_served(url, p)


async def test_edge_refusals_are_counted(edge: tuple[str, Policy, str]) -> None:
    """An unreadable request shows up in the refusal metric like any other refusal."""
    url, _, tok = edge
    await exchange(port_of(url), lookup_head(tok) + b"X<bad>: 1\r\n\r\n")
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as response:
        text = await response.text()
    counted = {
        (sample.labels["cause"], sample.labels["status"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "lookup_proxy_refusals"
        for sample in family.samples
        if sample.name == "lookup_proxy_refusals_total"
    }
    assert counted[("malformed-request", "400")] == 1


async def trickled(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, every: float
) -> bytes:
    """Send a header line ``every`` seconds (a head begun and never finished) until the server
    closes; everything it sent. Fails if it closed only after the sender stopped."""
    received = b""

    async def trickle() -> None:
        for n in range(60):
            await asyncio.sleep(every)
            writer.write(b"X-Slow-%d: EVIL-7f3a\r\n" % n)
            await writer.drain()

    sender = asyncio.create_task(trickle())
    try:
        async with asyncio.timeout(GENEROUS):
            while chunk := await reader.read(65536):
                received += chunk
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sender
        writer.close()
    assert not sender.done() or sender.cancelled()  # closed while it was still trickling
    return received


async def test_slow_header_sender_gets_408_and_is_closed(
    edge: tuple[str, Policy, str], backend: str
) -> None:
    """A connection trickling a header line a second is cut off at header_timeout with a 408,
    however long it would go on; the lookup it was building never reaches the upstream."""
    url, p, tok = edge
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url))
    writer.write(lookup_head(tok))
    received = await trickled(reader, writer, every=1.0)
    (answer,) = parse_answers(received)
    assert_problem(answer, 408, "request-timeout")
    assert MARK not in received
    assert await upstream_saw(backend) == []
    await good_lookup_still_served(url, p)


async def test_idle_connection_is_closed_quietly(edge: tuple[str, Policy, str]) -> None:
    """A connection that never sends a byte is closed at keepalive_timeout, without an answer."""
    url, p, _ = edge
    received, closed = await exchange(port_of(url), b"")
    assert closed
    assert received == b""
    await good_lookup_still_served(url, p)


async def test_keep_alive_connection_closes_after_idle_timeout(
    edge: tuple[str, Policy, str],
) -> None:
    """After an answer, a kept-alive connection that sends nothing more is closed quietly."""
    url, p, tok = edge
    received, closed = await exchange(port_of(url), lookup_head(tok) + b"\r\n")
    assert closed
    (answer,) = parse_answers(received)
    assert answer.status == 200
    assert answer.headers.get("connection", "keep-alive") != "close"
    await good_lookup_still_served(url, p)


async def read_one_answer(reader: asyncio.StreamReader) -> Answer:
    """The next whole answer on a kept-alive connection (its body by Content-Length)."""
    async with asyncio.timeout(GENEROUS):
        head = await reader.readuntil(b"\r\n\r\n")
        (length,) = [
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ]
        body = await reader.readexactly(length)
    (answer,) = parse_answers(head + body)
    return answer


async def test_a_kept_alive_connection_in_use_is_not_cut(edge: tuple[str, Policy, str]) -> None:
    """Lookups a little under keepalive_timeout apart, for longer than both deadlines together:
    every wait is counted from the end of the answer before it, so none of them is cut."""
    url, _, tok = edge
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url))
    try:
        for _ in range(6):  # 6 x 0.6 s, against keepalive 1 s and header 2 s
            writer.write(lookup_head(tok) + b"\r\n")
            await writer.drain()
            assert (await read_one_answer(reader)).status == 200
            await asyncio.sleep(0.6)
        writer.write(lookup_head(tok) + b"\r\n")
        await writer.drain()
        assert (await read_one_answer(reader)).status == 200
    finally:
        writer.close()


async def test_a_slow_second_head_on_a_kept_alive_connection_gets_408(
    edge: tuple[str, Policy, str], backend: str
) -> None:
    """After an answer, a head begun within keepalive_timeout but trickled must still be whole
    within header_timeout of that answer: a 408 and the close, nothing forwarded."""
    url, p, tok = edge
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url))
    writer.write(lookup_head(tok) + b"\r\n")
    await writer.drain()
    assert (await read_one_answer(reader)).status == 200
    forwarded = len(await upstream_saw(backend))
    await asyncio.sleep(0.5)
    writer.write(lookup_head(tok))
    received = await trickled(reader, writer, every=0.4)
    (answer,) = parse_answers(received)
    assert_problem(answer, 408, "request-timeout")
    assert len(await upstream_saw(backend)) == forwarded
    await good_lookup_still_served(url, p)


async def test_connections_beyond_the_limit_get_503_and_close(backend: str) -> None:
    """Over max_connections a new connection is refused with a 503 problem at once; a place freed
    is a place taken again."""
    p = policy(
        backend, server='max_connections = 2\nheader_timeout = "30s"\nkeepalive_timeout = "30s"'
    )
    tok = token(p)
    async with running_proxy(p) as (url, _):
        port = port_of(url)
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        # The held connections are admitted once the server has seen them: an answer proves it.
        for reader, writer in held:
            writer.write(lookup_head(tok) + b"\r\n")
            await writer.drain()
            async with asyncio.timeout(GENEROUS):
                await reader.readuntil(b"\r\n\r\n")

        received, closed = await exchange(port, lookup_head(tok) + b"X-Note: EVIL-7f3a\r\n\r\n")

        assert closed
        (answer,) = parse_answers(received)
        assert_problem(answer, 503, "too-many-connections")
        assert answer.headers["retry-after"] == "2"
        assert MARK not in received
        forwarded = len(await upstream_saw(backend))
        assert forwarded == 2

        for _, writer in held:
            writer.close()
        async with asyncio.timeout(GENEROUS):
            while True:  # the server notices the closes in its own time
                received, _ = await exchange(port, lookup_head(tok, version="HTTP/1.0") + b"\r\n")
                if parse_answers(received)[0].status == 200:
                    break
                await asyncio.sleep(0.05)


def mutate(rng: random.Random, raw: bytes) -> bytes:
    """One to three of: byte flips, CR/LF/NUL/high-byte insertions, duplicated, dropped or
    truncated lines, huge tokens."""
    data = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(7)
        at = rng.randrange(len(data) + 1)
        if kind == 0 and data:
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif kind == 1:
            data[at:at] = rng.choice([b"\r", b"\n", b"\x00", b"\xff", b"\x80", b"\r\n", b" ", b":"])
        elif kind == 2:
            lines = bytes(data).split(b"\r\n")
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            data = bytearray(b"\r\n".join(lines))
        elif kind == 3:
            lines = bytes(data).split(b"\r\n")
            del lines[rng.randrange(len(lines))]
            data = bytearray(b"\r\n".join(lines))
        elif kind == 4:
            data = data[: rng.randrange(len(data) + 1)]
        elif kind == 5:
            data[at:at] = bytes([rng.choice(b"A0%/-:;,")]) * rng.choice([64, 1500, 9000])
        else:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(data)


async def test_fuzzed_requests_get_an_http_answer_or_a_close(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """300 mutated lookups (fixed seed): whatever comes back is HTTP, a problem body or a real
    answer, never a 500, never the planted marker; no tracebacks; the server still serves."""
    caplog.set_level(logging.DEBUG)
    p = policy(backend, server='header_timeout = "1s"\nkeepalive_timeout = "500ms"')
    tok = token(p)
    valid = lookup_head(tok) + b"X-Note: EVIL-7f3a\r\n\r\n"
    rng = random.Random(20261202)
    inputs = [mutate(rng, valid) for _ in range(300)]
    gate = asyncio.Semaphore(30)
    async with running_proxy(p) as (url, _):

        async def one(raw: bytes) -> tuple[bytes, bytes]:
            async with gate:
                received, _ = await exchange(port_of(url), raw)
                return raw, received

        async with asyncio.timeout(60):
            results = await asyncio.gather(*(one(raw) for raw in inputs))
        statuses: set[int] = set()
        for raw, received in results:
            for answer in parse_answers(received):
                statuses.add(answer.status)
                assert answer.status != 500, raw
                assert answer.headers["server"] == "lookup-proxy", raw
                assert answer.headers["x-request-id"], raw
                assert MARK not in answer.body, raw
                if answer.headers["content-type"].startswith("application/problem+json"):
                    body = json.loads(answer.body)
                    assert body["type"].startswith("urn:lookup-proxy:problem:"), raw
                    assert body["status"] == answer.status, raw
                else:  # the backend's own answer: found, or not found
                    assert answer.status in (200, 404), raw
        assert {200, 400} <= statuses  # the mutations reached both sides of the parser
        assert_clean_logs(caplog)
        await good_lookup_still_served(url, p)
