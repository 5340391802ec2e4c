"""One exchange with the backend (lookup_proxy/upstream/exchange.py): every way an answer can be
framed is read whole and intact, every way it can break is an error (never a short answer
passed off as complete), and both timeouts hold against a backend that stalls or trickles."""

from __future__ import annotations

import asyncio

import pytest

from lookup_proxy.upstream import Pool, Timeouts, UpstreamError, UpstreamTimeout
from tests.upstream_backends import (
    TIMEOUTS,
    Backend,
    answering_once,
    ok,
    read_request,
    scripted,
)


async def ask(
    backend: Backend,
    *,
    method: str = "GET",
    timeouts: Timeouts = TIMEOUTS,
    pool: Pool | None = None,
) -> tuple[int, dict[str, str], bytes]:
    own = pool is None
    pool = pool or Pool(4)
    try:
        answer = await pool.exchange(backend.origin, method, "/customers/1", [], None, timeouts)
        try:
            body = await answer.read()
        finally:
            answer.release()
        return answer.status, dict(answer.headers), body
    finally:
        if own:
            await pool.close()


async def test_a_content_length_answer_is_read_whole() -> None:
    async with scripted() as backend:
        status, headers, body = await ask(backend)
    assert (status, body) == (200, b'{"ok": true}')
    assert headers["Content-Type"] == "application/json"


async def test_a_chunked_answer_is_read_whole() -> None:
    async def chunked(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, b: Backend
    ) -> None:
        await read_request(reader, b)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in (b"first,", b"second,", b"third"):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with scripted(chunked) as backend:
        status, _, body = await ask(backend)
    assert (status, body) == (200, b"first,second,third")


async def test_a_body_that_runs_until_close_is_read_whole() -> None:
    close_delimited = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it"
    async with scripted(answering_once(close_delimited)) as backend:
        status, _, body = await ask(backend)
    assert (status, body) == (200, b"all of it")


async def test_a_body_shorter_than_announced_is_an_error_not_an_answer() -> None:
    short = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"
    async with scripted(answering_once(short)) as backend:
        with pytest.raises(UpstreamError, match="mid-answer") as raised:
            await ask(backend)
    assert raised.value.answered


async def test_a_broken_off_chunked_answer_is_an_error() -> None:
    cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    async with scripted(answering_once(cut)) as backend:
        with pytest.raises(UpstreamError):
            await ask(backend)


async def test_an_answer_that_is_not_http_is_an_error() -> None:
    async def garbage(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, b: Backend
    ) -> None:
        await read_request(reader, b)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.5)

    async with scripted(garbage) as backend:
        with pytest.raises(UpstreamError, match="not HTTP"):
            await ask(backend)


async def test_informational_answers_are_skipped_for_the_final_one() -> None:
    async def hints(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, b: Backend) -> None:
        await read_request(reader, b)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
        writer.write(ok(b"final"))
        await writer.drain()

    async with scripted(hints) as backend:
        status, headers, body = await ask(backend)
    assert (status, body) == (200, b"final")
    assert "Link" not in headers


async def test_a_head_answer_ends_at_its_headers_and_its_connection_is_not_reused() -> None:
    async def head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, b: Backend) -> None:
        while await read_request(reader, b) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n")
            await writer.drain()

    async with scripted(head) as backend:
        pool = Pool(4)
        first = await ask(backend, method="HEAD", pool=pool)
        second = await ask(backend, method="HEAD", pool=pool)
        await pool.close()
    assert first[0] == second[0] == 200
    assert first[2] == second[2] == b""
    assert backend.connections == 2


async def test_a_backend_that_never_answers_times_out_at_the_read_timeout() -> None:
    async def silent(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, b: Backend
    ) -> None:
        await read_request(reader, b)
        await asyncio.sleep(5)

    async with scripted(silent) as backend:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(UpstreamTimeout):
            await ask(backend, timeouts=Timeouts(connect=1.0, read=0.2, total=3.0))
        waited = loop.time() - started
    assert 0.2 <= waited < 2.0  # the read timeout, not the total


async def test_a_trickling_backend_times_out_at_the_total_deadline() -> None:
    """Each byte comes well within the read timeout; the total still ends the exchange."""

    async def trickle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, b: Backend
    ) -> None:
        await read_request(reader, b)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(100):
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.05)

    async with scripted(trickle) as backend:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(UpstreamTimeout) as raised:
            await ask(backend, timeouts=Timeouts(connect=1.0, read=0.5, total=0.6))
        waited = loop.time() - started
    assert raised.value.answered
    assert 0.6 <= waited < 2.0


async def test_a_large_answer_read_slowly_arrives_intact() -> None:
    """Reading pauses while the reader lags (HIGH_WATER), and nothing is lost or reordered."""
    payload = bytes(range(256)) * 8192  # 2 MiB
    async with scripted(answering_once(ok(payload))) as backend:
        pool = Pool(1)
        answer = await pool.exchange(backend.origin, "GET", "/big", [], None, TIMEOUTS)
        parts = []
        while chunk := await answer.readany():
            parts.append(chunk)
            await asyncio.sleep(0)
        answer.release()
        await pool.close()
    assert b"".join(parts) == payload


async def test_a_large_answer_read_whole_is_not_stalled_by_flow_control() -> None:
    payload = b"y" * (3 << 20)  # far over HIGH_WATER
    async with scripted(answering_once(ok(payload))) as backend:
        status, _, body = await ask(backend)
    assert (status, len(body)) == (200, len(payload))


@pytest.mark.parametrize(
    ("head", "refused"),
    [
        (b"".join(b"X-Many-%d: x\r\n" % i for i in range(200)), "more than 128 headers"),
        (b"X-Huge: " + b"x" * (70 * 1024) + b"\r\n", "head is over"),
    ],
)
async def test_an_answer_head_past_its_bounds_is_an_error(head: bytes, refused: str) -> None:
    """llhttp bounds no header: the client does (MAX_HEADERS, MAX_HEAD), so a backend cannot
    make the proxy hold an unbounded head in memory until the timeout."""

    async def endless(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, b: Backend
    ) -> None:
        await read_request(reader, b)
        writer.write(b"HTTP/1.1 200 OK\r\n" + head + b"Content-Length: 2\r\n\r\n{}")
        await writer.drain()
        await asyncio.sleep(1)

    async with scripted(endless) as backend:
        with pytest.raises(UpstreamError, match=refused):
            await ask(backend)
