"""One HTTP/1.1 exchange with the backend over one kept-alive connection.

The proxy talks to one backend whose answers are a customer record of a kilobyte or two, and it
did so through aiohttp's ClientSession, whose general machinery (per-request timer contexts,
request and response objects of a general client, a trace and cookie path) cost about 80 µs of
CPU a request on the dev machine against 15 µs for a protocol that writes the request in one
buffer and lets llhttp (``httptools``, the parser uvicorn uses; aiohttp's own parser is llhttp
too) read the answer. That difference was a quarter of a guarded lookup's CPU (issue 12).

What it keeps of a careful client: one timer an exchange for both the total deadline and the
read timeout (re-armed lazily, not on every chunk); reading paused while more than
:data:`HIGH_WATER` bytes wait for a slow terminal; an answer cut short (a reset, a parse error,
a body shorter than announced) is an error, never a short complete answer; an answer whose
connection cannot carry another (``Connection: close``, HTTP/1.0, a HEAD, an unread body) is
never put back in the pool.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Hashable
from typing import cast

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

MAX_HEAD = 64 * 1024
"""Bytes of an answer's status line and headers (names and values) before it is refused:
llhttp itself sets no bound, and aiohttp's client refused lines over 8 KiB."""
MAX_HEADERS = 128

HIGH_WATER = 256 * 1024
"""Bytes of an answer buffered before reading pauses (a terminal slower than the backend)."""
LOW_WATER = 64 * 1024


class UpstreamError(Exception):
    """The backend could not be reached, or broke off its answer."""

    def __init__(self, message: str, *, answered: bool = False) -> None:
        super().__init__(message)
        self.answered = answered
        """Whether any byte of the answer had arrived (a retry is only safe when none had)."""


class UpstreamTimeout(UpstreamError):
    """The backend was too slow: no answer, or no data for the read timeout, or past the total."""


class Answer:
    """The backend's answer as it arrives: status and headers first, then the body."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_connection",
        "_deadline",
        "_error",
        "_head_size",
        "_header_list",
        "_informational",
        "_loop",
        "_read_timeout",
        "_reading_whole",
        "_reason",
        "_timer",
        "_waiter",
        "complete",
        "headers",
        "keep_alive",
        "last_activity",
        "received",
        "status",
    )

    def __init__(
        self,
        connection: Connection,
        loop: asyncio.AbstractEventLoop,
        deadline: float,
        read_timeout: float,
    ) -> None:
        self._connection = connection
        self._loop = loop
        self._deadline = deadline
        self._read_timeout = read_timeout
        self.last_activity = loop.time()
        self._timer: asyncio.TimerHandle | None = loop.call_at(
            min(deadline, self.last_activity + read_timeout), self._check_time
        )
        self._waiter: asyncio.Future[None] | None = None
        self._error: UpstreamError | None = None
        self._header_list: list[tuple[str, str]] = []
        self._head_size = 0
        self._reason: list[bytes] = []
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._informational = False
        self._reading_whole = False
        self.received = False
        self.status = 0
        self.headers: CIMultiDictProxy[str] = _NO_HEADERS
        self.keep_alive = False
        self.complete = False

    # -- what the forward step reads ---------------------------------------------------------

    @property
    def reason(self) -> str:
        return b"".join(self._reason).decode("latin-1").strip()

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        if value is None or not value.isdigit():
            return None
        return int(value)

    @property
    def content_type(self) -> str:
        """The media type, lower-case without parameters (aiohttp's default when absent)."""
        raw = self.headers.get("Content-Type")
        if raw is None:
            return "application/octet-stream"
        return raw.split(";", 1)[0].strip().lower()

    @property
    def charset(self) -> str | None:
        raw = self.headers.get("Content-Type")
        if raw is None:
            return None
        for parameter in raw.split(";")[1:]:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "charset":
                return value.strip().strip('"') or None
        return None

    async def head(self) -> None:
        """Wait for the status line and headers."""
        while not self.status and self._error is None:
            await self._wait()
        if not self.status and self._error is not None:
            raise self._error

    async def readany(self) -> bytes:
        """The next part of the body; b"" once the whole body has arrived."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self.complete:
                return b""
            await self._wait()
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        self.last_activity = self._loop.time()
        if self._buffered < LOW_WATER:
            self._connection.resume()
        return chunk

    async def read(self) -> bytes:
        """The whole body (the caller bounds it: reading is never paused for it)."""
        self._reading_whole = True
        self._connection.resume()
        while not self.complete:
            if self._error is not None:
                raise self._error
            await self._wait()
        if self._error is not None:
            raise self._error
        body = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        return body

    def release(self) -> None:
        """Done with the answer: its connection goes back to the pool if it can carry another
        exchange, else it is closed."""
        self._stop_timer()
        self._connection.finished(self, self.complete and self.keep_alive and self._error is None)

    # -- what the connection reports ---------------------------------------------------------

    def _wait(self) -> asyncio.Future[None]:
        waiter = self._loop.create_future()
        self._waiter = waiter
        return waiter

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def fail(self, error: UpstreamError) -> None:
        if self._error is None and not self.complete:
            self._error = error
        self._stop_timer()
        self._wake()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check_time(self) -> None:
        """One timer for both limits: re-armed when data came since it was set."""
        self._timer = None
        if self.complete or self._error is not None:
            return
        now = self._loop.time()
        due = min(self._deadline, self.last_activity + self._read_timeout)
        if now + 0.001 < due:
            self._timer = self._loop.call_at(due, self._check_time)
            return
        self.fail(UpstreamTimeout("the backend did not answer in time", answered=self.received))
        self._connection.abort()

    def on_status(self, status: bytes) -> None:
        self._reason.append(status)
        self._head_bytes(len(status))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_list.append((name.decode("latin-1"), value.decode("latin-1")))
        self._head_bytes(len(name) + len(value))
        if len(self._header_list) > MAX_HEADERS:
            raise UpstreamError(f"the backend's answer has more than {MAX_HEADERS} headers")

    def _head_bytes(self, more: int) -> None:
        self._head_size += more
        if self._head_size > MAX_HEAD:
            raise UpstreamError(f"the backend's answer head is over {MAX_HEAD} bytes")

    def on_headers_complete(self, status: int, keep_alive: bool, head_only: bool) -> None:
        if 100 <= status < 200:  # 103 Early Hints and the like: the answer is still to come
            self._informational = True
            self._header_list.clear()
            self._reason.clear()
            self._head_size = 0
            return
        self.status = status
        self.keep_alive = keep_alive and not head_only
        self.headers = CIMultiDictProxy(CIMultiDict(self._header_list))
        if head_only:  # a HEAD answer has no body, whatever Content-Length says
            self.complete = True
            self._stop_timer()
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._reading_whole:
            self._connection.pause()
        self._wake()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self.complete = True
        self._stop_timer()
        self._wake()

    def close_delimited(self) -> bool:
        """Whether the body runs until the connection closes (neither a length nor chunks)."""
        if not self.status:
            return False
        return "Content-Length" not in self.headers and "Transfer-Encoding" not in self.headers


_NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


Done = Callable[["Connection", bool], None]
"""What the pool is told when an exchange ends: the connection, and whether it can be reused."""


class Connection(asyncio.Protocol):
    """A connection to the backend, carrying one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: Hashable, on_done: Done) -> None:
        self._loop = loop
        self.origin = origin
        self.counted = True
        """Whether it still holds one of the pool's slots."""
        self._on_done = on_done
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._answer: Answer | None = None
        self._head_only = False
        self._paused = False
        self.closed = False
        self.exchanges = 0
        """Exchanges finished on it: a reused connection may have been closed by the backend
        while idle, which is why a request that got no answer on one may be retried."""
        self.idle_since = 0.0

    # -- the exchange ------------------------------------------------------------------------

    def send(
        self, request: bytes, *, head_only: bool, deadline: float, read_timeout: float
    ) -> Answer:
        answer = Answer(self, self._loop, deadline, read_timeout)
        self._answer = answer
        self._head_only = head_only
        transport = self._transport
        if self.closed or transport is None or transport.is_closing():
            answer.fail(UpstreamError("the connection to the backend was closed"))
            return answer
        transport.write(request)
        return answer

    def finished(self, answer: Answer, reusable: bool) -> None:
        if self._answer is answer:
            self._answer = None
        if not reusable:
            self.abort()
        else:
            self.exchanges += 1
            self.idle_since = self._loop.time()
        self._on_done(self, reusable and not self.closed)

    def pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()

    def abort(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        answer = self._answer
        if answer is None or answer.complete:
            # Nothing was asked, or more came than one answer: this connection cannot be trusted
            # to frame the next one.
            if answer is not None:
                answer.keep_alive = False
            self.abort()
            return
        answer.received = True
        answer.last_activity = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            answer.fail(UpstreamError("the backend switched protocols", answered=True))
            self.abort()
        except httptools.HttpParserError as exc:
            cause = exc.__context__  # what a callback of ours raised: a bound (MAX_HEAD, ...)
            if isinstance(cause, UpstreamError):
                answer.fail(UpstreamError(str(cause), answered=True))
                self.abort()
                return
            answer.fail(UpstreamError(f"the backend's answer is not HTTP: {exc}", answered=True))
            self.abort()

    def eof_received(self) -> bool:
        return False  # the transport closes itself; connection_lost settles the answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        answer = self._answer
        if answer is None or answer.complete:
            return
        if answer.close_delimited() and exc is None:
            answer.on_message_complete()  # the close is the end of this body
            answer.keep_alive = False
            return
        answer.fail(
            UpstreamError("the backend closed the connection mid-answer", answered=answer.received)
        )

    # -- httptools callbacks (the parser calls them by these names) ---------------------------

    def on_status(self, status: bytes) -> None:
        if self._answer is not None:
            self._answer.on_status(status)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._answer is not None:
            self._answer.on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._answer is not None:
            self._answer.on_headers_complete(
                self._parser.get_status_code(), self._parser.should_keep_alive(), self._head_only
            )

    def on_body(self, body: bytes) -> None:
        if self._answer is not None:
            self._answer.on_body(body)

    def on_message_complete(self) -> None:
        if self._answer is not None:
            self._answer.on_message_complete()
