"""Kept-alive connections to the backend: at most ``pool_size`` open, the newest idle one first.

A policy reload may point the proxy at another backend, so idle connections are kept per origin;
the limit is over all of them, as aiohttp's connector limit was. A connection the backend closed
while it sat idle is found out when a request sent on it gets no answer at all; such a request
is sent once more on a new connection when its method is idempotent (RFC 9110 §9.2.2), which a
lookup's GET is, so a backend's keep-alive timeout never reaches a clerk as a 502.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from lookup_proxy.upstream.exchange import Answer, Connection, UpstreamError, UpstreamTimeout

IDLE_TIMEOUT = 15.0
"""Seconds an idle connection is kept (aiohttp's default keep-alive, too)."""

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
"""Methods whose request says its length even when it has no body (as aiohttp did)."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where the backend is, and how its requests name it.

    Two origins of one URL are one key of the pool's idle connections, whatever their TLS
    context object: a policy reload builds a new client (and context) for the same backend,
    and its lookups should find the connections the last generation kept."""

    host: str
    port: int
    secure: bool
    host_header: str
    tls: ssl.SSLContext | None = field(default=None, compare=False, hash=False)

    @classmethod
    def of(cls, scheme: str, host: str, port: int | None) -> Origin:
        secure = scheme == "https"
        port = port or (443 if secure else 80)
        default = 443 if secure else 80
        named = f"[{host}]" if ":" in host else host
        return cls(
            host,
            port,
            secure,
            named if port == default else f"{named}:{port}",
            ssl.create_default_context() if secure else None,
        )


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    read: float
    total: float


class RequestNotSendable(ValueError):
    """A header that would split the request (CR, LF or NUL in it): never written."""


def request_bytes(
    origin: Origin,
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]],
    body: bytes | None,
) -> bytes:
    """The request's head (and body) in one buffer, so it leaves in one write."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {origin.host_header}"]
    for name, value in headers:
        if "\r" in value or "\n" in value or "\0" in value:
            raise RequestNotSendable(f"header {name} holds a line break or NUL")
        lines.append(f"{name}: {value}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    elif method in BODY_METHODS:
        lines.append("Content-Length: 0")
    lines.append("\r\n")
    try:
        # A terminal's header bytes that are not UTF-8 reach us surrogate-escaped (aiohttp's
        # parser): they leave as they came.
        head = "\r\n".join(lines).encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise RequestNotSendable("a header holds text that has no bytes") from None
    return head + body if body else head


class Pool:
    """The backend connections every generation of the upstream client shares."""

    def __init__(self, size: int, *, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.size = size
        self._idle_timeout = idle_timeout
        self._idle: dict[Hashable, list[Connection]] = {}
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False

    @property
    def open(self) -> int:
        """Connections open or being opened (for tests and the bench)."""
        return self._open

    async def exchange(
        self,
        origin: Origin,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]],
        body: bytes | None,
        timeouts: Timeouts,
    ) -> Answer:
        """Send the request and wait for the answer's head; the caller reads the body and
        releases the answer."""
        request = request_bytes(origin, method, target, headers, body)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeouts.total
        fresh = False
        while True:
            connection = await self._acquire(origin, timeouts, deadline, fresh=fresh)
            reused = connection.exchanges > 0
            answer = connection.send(
                request, head_only=method == "HEAD", deadline=deadline, read_timeout=timeouts.read
            )
            try:
                await answer.head()
            except UpstreamError as exc:
                answer.release()
                retry = (
                    reused
                    and not exc.answered
                    and not isinstance(exc, UpstreamTimeout)
                    and method in IDEMPOTENT
                )
                if retry:  # once: the new connection has carried nothing, so is not reused
                    fresh = True
                    continue
                raise
            except BaseException:  # cancelled while waiting: nobody will read this answer
                answer.release()
                raise
            return answer

    async def _acquire(
        self, origin: Origin, timeouts: Timeouts, deadline: float, *, fresh: bool
    ) -> Connection:
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise UpstreamError("the upstream client is closed")
            idle = self._idle.get(origin)
            now = loop.time()
            while idle and not fresh:
                connection = idle.pop()
                if not connection.closed and now - connection.idle_since < self._idle_timeout:
                    return connection
                self._discard(connection)
            if self._open >= self.size:
                self._drop_stale_idle(now)
            if self._open < self.size:
                break
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                # asyncio.timeout_at, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that meets a wake-up, and the cancelled lookup would take the connection.
                async with asyncio.timeout_at(deadline):
                    await waiter
            except (TimeoutError, asyncio.CancelledError) as exc:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # woken as it gave up: the freed place goes to the next one
                if isinstance(exc, TimeoutError):
                    raise UpstreamTimeout(
                        "no connection to the backend came free in time"
                    ) from None
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self._open += 1
        try:
            async with asyncio.timeout_at(min(loop.time() + timeouts.connect, deadline)):
                _, connection = await loop.create_connection(
                    lambda: Connection(loop, origin, self._done),
                    origin.host,
                    origin.port,
                    ssl=origin.tls,
                    server_hostname=origin.host if origin.tls is not None else None,
                )
        except TimeoutError:
            self._slot_freed()
            raise UpstreamTimeout("connecting to the backend timed out") from None
        except OSError as exc:
            self._slot_freed()
            raise UpstreamError(f"cannot connect to the backend: {exc}") from None
        except BaseException:
            self._slot_freed()
            raise
        return connection

    def _done(self, connection: Connection, reusable: bool) -> None:
        if reusable and not self._closed:
            self._idle.setdefault(connection.origin, []).append(connection)
            self._wake()
        else:
            self._discard(connection)

    def _discard(self, connection: Connection) -> None:
        if connection.counted:
            connection.counted = False
            connection.abort()
            self._slot_freed()

    def _slot_freed(self) -> None:
        self._open -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _drop_stale_idle(self, now: float) -> None:
        for idle in self._idle.values():
            stale = [c for c in idle if c.closed or now - c.idle_since >= self._idle_timeout]
            for connection in stale:
                idle.remove(connection)
                self._discard(connection)

    async def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                self._discard(connection)
            idle.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
