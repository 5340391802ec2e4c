"""The backend connections (lookup_proxy/upstream/pool.py): kept alive and reused, never more
open than the pool's size, a connection the backend closed while idle costs a retry and not a
502 (idempotent methods only), and a header that would split the request is never sent."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from lookup_proxy.upstream import (
    Origin,
    Pool,
    RequestNotSendable,
    Timeouts,
    UpstreamError,
    UpstreamTimeout,
)
from lookup_proxy.upstream.pool import request_bytes
from tests.upstream_backends import (
    TIMEOUTS,
    Backend,
    answering_once,
    ok,
    read_request,
    scripted,
)


async def get(
    pool: Pool, backend: Backend, method: str = "GET", body: bytes | None = None
) -> bytes:
    answer = await pool.exchange(backend.origin, method, "/customers/1", [], body, TIMEOUTS)
    try:
        return await answer.read()
    finally:
        answer.release()


async def test_one_connection_carries_many_lookups() -> None:
    async with scripted() as backend:
        pool = Pool(4)
        for _ in range(5):
            assert await get(pool, backend) == b'{"ok": true}'
        await pool.close()
    assert backend.connections == 1
    assert len(backend.requests) == 5


async def test_never_more_connections_than_the_pool_size() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, b: Backend) -> None:
        while await read_request(reader, b) is not None:
            await asyncio.sleep(0.05)
            writer.write(ok())
            await writer.drain()

    async with scripted(slow) as backend:
        pool = Pool(2)
        answers = await asyncio.gather(*(get(pool, backend) for _ in range(8)))
        assert pool.open == 2
        await pool.close()
    assert answers == [b'{"ok": true}'] * 8
    assert backend.most_open == 2


async def test_waiting_for_a_free_connection_ends_at_the_total_deadline() -> None:
    async def stuck(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, b: Backend) -> None:
        await read_request(reader, b)
        await asyncio.sleep(3)

    async with scripted(stuck) as backend:
        pool = Pool(1)
        long = Timeouts(connect=1.0, read=5.0, total=1.0)
        short = Timeouts(connect=1.0, read=5.0, total=0.2)
        first = asyncio.ensure_future(pool.exchange(backend.origin, "GET", "/a", [], None, long))
        await asyncio.sleep(0.05)
        with pytest.raises(UpstreamTimeout, match="came free"):
            await pool.exchange(backend.origin, "GET", "/b", [], None, short)
        with pytest.raises(UpstreamTimeout, match="did not answer"):
            await first
        await pool.close()


async def test_a_waiter_that_gives_up_as_it_is_woken_passes_the_place_on() -> None:
    """With one connection, two lookups wait; the first is woken and cancelled in the same
    turn (its terminal went away): the second gets the connection at once, not at its
    deadline."""
    async with scripted() as backend:
        pool = Pool(1)
        holder = await pool.exchange(backend.origin, "GET", "/a", [], None, TIMEOUTS)
        patient = Timeouts(connect=1.0, read=5.0, total=5.0)
        first = asyncio.ensure_future(pool.exchange(backend.origin, "GET", "/b", [], None, patient))
        second = asyncio.ensure_future(
            pool.exchange(backend.origin, "GET", "/c", [], None, patient)
        )
        await asyncio.sleep(0.05)  # both wait for the one connection
        await holder.read()
        holder.release()  # wakes the first waiter...
        first.cancel()  # ...which gives up before it runs
        answer = await asyncio.wait_for(second, 1.0)
        assert await answer.read() == b'{"ok": true}'
        answer.release()
        await pool.close()


async def test_a_connection_the_backend_closed_while_idle_is_retried_on_a_new_one() -> None:
    """The backend answers one request per connection and then closes it without saying so
    (no Connection: close), as a backend whose keep-alive timeout passed does."""

    async with scripted(answering_once(ok())) as backend:
        pool = Pool(4)
        assert await get(pool, backend) == b'{"ok": true}'
        await asyncio.sleep(0.05)  # the close has arrived, unread, on the idle connection
        assert await get(pool, backend) == b'{"ok": true}'
        await pool.close()
    assert backend.connections == 2


async def test_a_post_that_got_no_answer_is_not_sent_twice() -> None:
    async def drop_the_second(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, b: Backend
    ) -> None:
        await read_request(reader, b)
        writer.write(ok())
        await writer.drain()
        await read_request(reader, b)  # read, then hang up without answering

    async with scripted(drop_the_second) as backend:
        pool = Pool(4)
        assert await get(pool, backend, "POST", b"{}") == b'{"ok": true}'
        with pytest.raises(UpstreamError):
            await get(pool, backend, "POST", b'{"second": 1}')
        await pool.close()
    assert [r.endswith(b'{"second": 1}') for r in backend.requests] == [False, True]


async def test_connection_close_answers_are_not_reused() -> None:
    async def closing(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, b: Backend
    ) -> None:
        await read_request(reader, b)
        writer.write(ok(extra=b"Connection: close\r\n"))
        await writer.drain()
        await asyncio.sleep(0.5)  # the close is the client's to make

    async with scripted(closing) as backend:
        pool = Pool(4)
        for _ in range(3):
            assert await get(pool, backend) == b'{"ok": true}'
        await pool.close()
    assert backend.connections == 3


async def test_an_answer_released_before_its_body_arrived_closes_its_connection() -> None:
    async def large_first(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, b: Backend
    ) -> None:
        while await read_request(reader, b) is not None:
            writer.write(ok(b"x" * (4 << 20) if len(b.requests) == 1 else b'{"ok": true}'))
            await writer.drain()

    async with scripted(large_first) as backend:
        pool = Pool(4)
        answer = await pool.exchange(backend.origin, "GET", "/a", [], None, TIMEOUTS)
        answer.release()  # the body is still on the wire: this connection cannot frame another
        assert await get(pool, backend) == b'{"ok": true}'
        await pool.close()
    assert backend.connections == 2


async def test_idle_connections_past_the_idle_timeout_are_not_used() -> None:
    async with scripted() as backend:
        pool = Pool(4, idle_timeout=0.05)
        await get(pool, backend)
        await asyncio.sleep(0.1)
        await get(pool, backend)
        await pool.close()
    assert backend.connections == 2


async def test_the_request_leaves_as_one_well_formed_message() -> None:
    async with scripted() as backend:
        pool = Pool(1)
        answer = await pool.exchange(
            backend.origin,
            "POST",
            "/customers/search",
            [("X-Employee-Id", "E1"), ("Content-Type", "application/json")],
            b'{"number": "01012345678"}',
            TIMEOUTS,
        )
        await answer.read()
        answer.release()
        await pool.close()
    port = backend.origin.port
    assert backend.requests == [
        b"POST /customers/search HTTP/1.1\r\n"
        + f"Host: 127.0.0.1:{port}\r\n".encode()
        + b"X-Employee-Id: E1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 25\r\n\r\n"
        b'{"number": "01012345678"}'
    ]


@pytest.mark.parametrize("value", ["E1\r\nX-Employee-Id: E2", "E1\nX", "E1\0"])
def test_a_header_that_would_split_the_request_is_refused(value: str) -> None:
    with pytest.raises(RequestNotSendable, match="X-Employee-Id"):
        request_bytes(
            Origin.of("http", "backend", 80), "GET", "/", [("X-Employee-Id", value)], None
        )


def test_one_backend_url_is_one_origin_across_policy_generations() -> None:
    """A reload builds a new client, and a new TLS context, for the same backend: its origin
    is the same key of the pool's idle connections, so they are reused, not stranded."""
    first, second = Origin.of("https", "backend", None), Origin.of("https", "backend", None)
    assert first == second and hash(first) == hash(second)
    assert first.tls is not None and first.tls is not second.tls
    assert first.host_header == "backend" and first.port == 443
    assert Origin.of("http", "backend", 8080) != Origin.of("https", "backend", 8080)


def test_header_bytes_that_are_not_utf8_leave_as_they_came() -> None:
    """aiohttp hands a terminal's non-UTF-8 header bytes over surrogate-escaped; they are sent
    back as the same bytes, and text with no bytes at all is refused, never a traceback."""
    origin = Origin.of("http", "backend", 80)
    sent = request_bytes(
        origin, "GET", "/", [("Accept", b"text/\xff".decode("utf-8", "surrogateescape"))], None
    )
    assert b"Accept: text/\xff\r\n" in sent
    with pytest.raises(RequestNotSendable):
        request_bytes(origin, "GET", "/", [("Accept", "\ud800")], None)


async def test_an_unreachable_backend_is_an_error_and_frees_its_slot() -> None:
    async with scripted() as backend:
        origin = backend.origin
    pool = Pool(1)
    for _ in range(3):  # each failure gives its slot back, or the third would wait
        with pytest.raises(UpstreamError, match="cannot connect"):
            await pool.exchange(origin, "GET", "/", [], None, TIMEOUTS)
    assert pool.open == 0
    await pool.close()


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (its own CA), and its key."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lookup-proxy test backend")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "backend.pem", directory / "backend.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_an_https_backend_is_verified_and_kept_alive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """https: the backend's certificate is checked against the trusted CAs (here the test's
    own, by SSL_CERT_FILE) and its name; one verified connection carries every lookup. An
    untrusted certificate is an error, never a lookup sent in the clear or unverified."""
    cert_file, key_file = _certificate(tmp_path)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert_file, key_file)
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        backend = Backend(Origin.of("https", "localhost", 443))
        try:
            while await read_request(reader, backend) is not None:
                writer.write(ok())
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=served)
    port = server.sockets[0].getsockname()[1]
    try:
        untrusted = Origin.of("https", "localhost", port)  # system CAs only
        pool = Pool(2)
        with pytest.raises(UpstreamError, match="cannot connect"):
            await pool.exchange(untrusted, "GET", "/", [], None, TIMEOUTS)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
        trusted = Origin.of("https", "localhost", port)
        for _ in range(3):
            answer = await pool.exchange(trusted, "GET", "/customers/1", [], None, TIMEOUTS)
            assert (answer.status, await answer.read()) == (200, b'{"ok": true}')
            answer.release()
        assert connections == 1  # the refused handshake never got a request through
        await pool.close()
    finally:
        server.close()
        await server.wait_closed()
