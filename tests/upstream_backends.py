"""Raw-socket backends for the upstream client's tests: they do what a real backend may do on
the wire (keep connections, close idle ones, answer in pieces, misbehave), and count the
connections they were given."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from lookup_proxy.upstream import Origin, Timeouts

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Backend"], Awaitable[None]]

TIMEOUTS = Timeouts(connect=1.0, read=1.0, total=3.0)


@dataclass
class Backend:
    origin: Origin
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    requests: list[bytes] = field(default_factory=list)


async def read_request(reader: asyncio.StreamReader, backend: Backend) -> bytes | None:
    """One request (head, and a body of the Content-Length it names); None once the client
    closed the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    backend.requests.append(head + body)
    return head + body


def ok(body: bytes = b'{"ok": true}', extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n"
        + extra
        + b"\r\n"
        + body
    )


async def keep_answering(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, backend: Backend
) -> None:
    """A well-behaved keep-alive backend: every request answered on the same connection."""
    while await read_request(reader, backend) is not None:
        writer.write(ok())
        await writer.drain()


def answering_once(reply: bytes) -> Handler:
    """A backend that answers the connection's first request with ``reply``, the raw bytes on
    the wire (well-formed or not), and then closes the connection."""

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, backend: Backend
    ) -> None:
        await read_request(reader, backend)
        writer.write(reply)
        await writer.drain()

    return handler


@asynccontextmanager
async def scripted(handler: Handler = keep_answering) -> AsyncIterator[Backend]:
    backend: Backend | None = None

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert backend is not None
        backend.connections += 1
        backend.open_now += 1
        backend.most_open = max(backend.most_open, backend.open_now)
        try:
            await handler(reader, writer, backend)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            backend.open_now -= 1
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = Backend(Origin.of("http", "127.0.0.1", port))
    try:
        yield backend
    finally:
        server.close()
        await server.wait_closed()
