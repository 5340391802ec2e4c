"""The HTTP edge: what anything that connects to the proxy's port is answered, and for how long
a connection may hold a place.

Our contract holds for every byte sequence, not only for requests that reach a route: every answer
is a problem+json body with ``X-Request-Id`` and ``Server: lookup-proxy``, never quoting what was
sent; a connection that broke HTTP framing is closed; a connection that is slow to say what it
wants is cut off within seconds; and the number of connections has a ceiling.

Why a small subclass of aiohttp's ``RequestHandler`` (handed out by a ``web.Server`` subclass that
an ``AppRunner`` subclass builds) rather than a piece of our own in front of aiohttp:

- A piece in front would have to find where each request head ends, which means parsing HTTP a
  second time. Two parsers that can disagree about where a message ends are what request
  smuggling feeds on; one parser (llhttp in aiohttp's C extension) keeps one opinion.
- Every parser rejection already reaches one method, ``RequestHandler.handle_error``: the parser
  error is queued as a message whose handler calls it. Nothing at the application level sees
  these requests (they match no route, so neither middlewares nor ``on_response_prepare`` run),
  which is why they came back as ``text/plain`` with aiohttp's ``Server`` header and the parser's
  message — the message quotes the offending bytes.
- The deadlines need two moments, both visible from the protocol object without a second parser:
  the first byte of a request head (asyncio's ``data_received``) and its completion (the server's
  request factory is called once per parsed head, or parser error).

The price is leaning on aiohttp internals (``RequestHandler``, ``web.Server.__call__``,
``AppRunner._make_server``) rather than documented API; ``tests/test_http_edge.py`` pins the
behaviour over real sockets, so an aiohttp upgrade that moves them fails there.

Decisions:

- **Causes come from the parser's exception class, never its message.** aiohttp has two parsers,
  the C one (llhttp) and a pure-Python one (``AIOHTTP_NO_EXTENSIONS=1``, or no compiled wheel).
  They word their messages differently but raise the same classes: ``LineTooLong`` for a request
  line or header field over its limit (431 ``request-head-too-large``, like more headers than
  allowed, which both report as "Too many headers received"); everything else — smuggling
  attempts (Content-Length with Transfer-Encoding, two Content-Lengths), obs-fold, bad bytes in
  names or values, bad versions or methods, no ``Host`` — is 400 ``malformed-request``. The
  message is neither sent nor logged: it contains the input. Where the two parsers disagree on
  what is acceptable, the stricter answer is ours: llhttp takes an HTTP/0.9 request line, which
  is refused here after parsing. (One disagreement stays: the pure-Python parser upper-cases a
  lowercase method, ``get``, where llhttp refuses it; framing is the same either way.)
- **header_timeout** counts from the connection or the end of the previous response. A client
  that began a request and did not finish its head in time gets 408 ``request-timeout`` and is
  closed: a terminal on a bad line learns why. A client that sent nothing at all is closed
  silently at **keepalive_timeout**: an unsolicited 408 on an idle keep-alive connection can be
  read by the client as the answer to the request it is sending at that moment.
- **max_connections**: a connection beyond it is answered 503 ``too-many-connections`` with
  ``Retry-After`` and closed, instead of not being accepted. asyncio's (and uvloop's) servers
  cannot pause ``accept()`` without closing the listening socket, and connections left in the
  kernel's backlog leave a clerk's terminal hanging until its connect timeout with nothing to
  show. The answer is sent when the connection's first bytes arrive, not at accept: closing a
  socket with unread bytes makes the kernel send a reset, and the client may lose the answer.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from lookup_proxy.errors import Refusal
from lookup_proxy.policy import Server as ServerLimits
from lookup_proxy.problems import PROBLEM_JSON, problem_body, problem_response
from lookup_proxy.request_id import REQUEST_ID

__all__ = ["Listener", "ServerLimits", "listening"]

log = logging.getLogger("lookup_proxy.edge")

SERVER_NAME = "lookup-proxy"

RefusalCounter = Callable[[Refusal], None]

_VERSIONS = (HttpVersion10, HttpVersion11)

_TOO_MANY_HEADERS = "Too many headers"
"""The one message both parsers share; a change in aiohttp degrades it to malformed-request."""

_TIMER_SLACK = 0.002
"""How early a timer may fire and still count as on time (the loop's timers are in whole
milliseconds); earlier, it arms again for what is due."""

_HELP = "If it keeps happening, call the help desk and give them the request id."


def malformed_request() -> Refusal:
    return Refusal(
        f"The terminal sent a request the lookup service cannot read. Try again. {_HELP}",
        status=400,
        cause="malformed-request",
        title="Unreadable request",
    )


def request_head_too_large() -> Refusal:
    return Refusal(
        "The terminal's request was larger than the lookup service accepts. Sign in again at "
        f"the terminal and try again. {_HELP}",
        status=431,
        cause="request-head-too-large",
        title="Request too large",
    )


def request_timeout() -> Refusal:
    return Refusal(
        f"The terminal did not finish sending its request in time. Try again. {_HELP}",
        status=408,
        cause="request-timeout",
        title="Request too slow",
    )


def too_many_connections() -> Refusal:
    return Refusal(
        "The lookup service is busy. Try again in a moment.",
        status=503,
        cause="too-many-connections",
        title="Lookup service busy",
        headers={"Retry-After": "2"},
    )


def _internal_error(status: int) -> Refusal:
    if status == 500:
        return Refusal(
            f"Something went wrong in the lookup service. Try again. {_HELP}",
            status=500,
            cause="internal-error",
            title="Internal error",
        )
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    return Refusal(phrase, status=status, cause=f"http-{status}", title=phrase)


def _refusal_for(status: int, exc: BaseException | None) -> Refusal:
    if isinstance(exc, LineTooLong):
        return request_head_too_large()
    if isinstance(exc, HttpProcessingError):
        if _TOO_MANY_HEADERS in exc.message:
            return request_head_too_large()
        return malformed_request()
    return _internal_error(status)


def _raw_answer(refusal: Refusal, request_id: str) -> bytes:
    """A whole HTTP/1.1 answer for moments with no request object (no head, or none allowed)."""
    body = problem_body(refusal, request_id)
    lines = [
        f"HTTP/1.1 {refusal.status} {HTTPStatus(refusal.status).phrase}",
        f"Content-Type: {PROBLEM_JSON}",
        f"Content-Length: {len(body)}",
        f"X-Request-Id: {request_id}",
        f"Date: {formatdate(usegmt=True)}",
        f"Server: {SERVER_NAME}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in refusal.headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


class EdgeConnection(RequestHandler):
    """One client connection: aiohttp's handler with our answers, deadlines and admission."""

    def __init__(self, server: EdgeServer, *, limits: ServerLimits, **kwargs: Any) -> None:
        super().__init__(server, **kwargs)
        self._edge = server
        self._limits = limits
        self._admitted = False
        self._awaiting_head = False
        self._head_begun = False
        self._waiting_since = 0.0
        self._deadline: asyncio.TimerHandle | None = None
        self._armed_at = 0.0

    # -- admission and deadlines -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._admitted = self._edge.admit()
        self._await_head()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_deadline()
        if self._admitted:
            self._admitted = False
            self._edge.release()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            if data and self.transport is not None:
                self._refuse(too_many_connections(), "over server.max_connections")
            return
        if data and self._awaiting_head and not self._head_begun:
            self._head_begun = True
            self._arm(self._waiting_since + self._limits.header_timeout)
        super().data_received(data)

    def head_arrived(self) -> None:
        """A request head (or a parser error) is complete: the handler's time starts (a timer
        still armed finds nothing to do when it fires)."""
        self._awaiting_head = False

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        finished = await super().finish_response(request, resp, start_time)
        self._await_head()  # the next request's deadlines count from the end of this answer
        return finished

    def _await_head(self) -> None:
        self._awaiting_head = True
        self._head_begun = False
        self._waiting_since = self._loop.time()
        limits = self._limits
        self._arm(self._waiting_since + min(limits.header_timeout, limits.keepalive_timeout))

    def _arm(self, when: float) -> None:
        """Have the timer fire by ``when``. A timer armed to fire no later is kept: it works out
        what is due when it fires and arms again if nothing is yet. A timer set and cancelled for
        every request (two of each) was 1.6 % of a lookup's instructions (bench/instructions.py);
        this way a kept-alive connection in use arms about one every ``keepalive_timeout`` (or
        ``header_timeout``, the shorter)."""
        if self._deadline is not None:
            if self._armed_at <= when:
                return
            self._deadline.cancel()
        self._armed_at = when
        self._deadline = self._loop.call_at(when, self._deadline_passed)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self.transport is None or not self._awaiting_head:
            return  # answering a request: the end of its answer arms the next wait
        limits = self._limits
        timeout = limits.header_timeout if self._head_begun else limits.keepalive_timeout
        due = self._waiting_since + timeout
        if self._loop.time() < due - _TIMER_SLACK:
            self._arm(due)
            return
        if self._head_begun:
            self._refuse(request_timeout(), "request head not finished within header_timeout")
        else:
            self.force_close()  # idle keep-alive: closing quietly is the ordinary ending

    def _refuse(self, refusal: Refusal, why: str) -> None:
        request_id = uuid.uuid4().hex
        self._edge.count(refusal)
        log.warning(
            "refused at the HTTP edge: %s",
            why,
            extra={
                "request_id": request_id,
                "cause": refusal.cause,
                "status": refusal.status,
                "client": _host(self.peername),
            },
        )
        if self.transport is not None:
            self.transport.write(_raw_answer(refusal, request_id))
        self.force_close()  # the transport sends what is buffered, then closes

    # -- answers -----------------------------------------------------------------------------

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Parser rejections and handler crashes as problem bodies; the connection closes."""
        refusal = _refusal_for(status, exc)
        offered = request.get(REQUEST_ID)
        request_id = offered if isinstance(offered, str) else uuid.uuid4().hex
        self._edge.count(refusal)
        details = {
            "request_id": request_id,
            "cause": refusal.cause,
            "status": refusal.status,
            "client": _host(self.peername),
        }
        if isinstance(exc, HttpProcessingError):
            # The class says what broke; the message would repeat the client's bytes into the log.
            details["parser_error"] = type(exc).__name__
            log.warning("refused at the HTTP edge: unreadable request", extra=details)
        else:
            log.error("unexpected error answering a request", exc_info=exc, extra=details)
        if request.writer.output_size > 0:
            raise ConnectionError("part of a response was sent; the connection must just close")
        return _closing_problem(refusal, request_id)


def _closing_problem(refusal: Refusal, request_id: str) -> web.Response:
    """A problem answer for a request no route saw (no middleware adds our headers to it)."""
    response = problem_response(refusal, request_id)
    response.headers["X-Request-Id"] = request_id
    response.headers["Server"] = SERVER_NAME
    response.headers["Connection"] = "close"
    response.force_close()
    return response


def _host(peer: object) -> str | None:
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return None


RequestFactory = Callable[
    [RawRequestMessage, StreamReader, RequestHandler, AbstractStreamWriter, "asyncio.Task[None]"],
    web.BaseRequest,
]


class EdgeServer(web.Server):
    """Hands out ``EdgeConnection``s and keeps the count of admitted connections."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        *,
        request_factory: RequestFactory,
        limits: ServerLimits,
        on_refusal: RefusalCounter | None,
        **handler_kwargs: Any,
    ) -> None:
        super().__init__(self._one_opinion, request_factory=self._request_head, **handler_kwargs)
        self._app_handler = handler
        self._app_request = request_factory
        self._limits = limits
        self._on_refusal = on_refusal
        self._handler_kwargs = handler_kwargs
        self._event_loop = asyncio.get_running_loop()
        self.admitted = 0

    def __call__(self) -> RequestHandler:
        return EdgeConnection(
            self, limits=self._limits, loop=self._event_loop, **self._handler_kwargs
        )

    def admit(self) -> bool:
        if self.admitted >= self._limits.max_connections:
            return False
        self.admitted += 1
        return True

    def release(self) -> None:
        self.admitted -= 1

    def count(self, refusal: Refusal) -> None:
        if self._on_refusal is not None:
            self._on_refusal(refusal)

    async def _one_opinion(self, request: web.BaseRequest) -> web.StreamResponse:
        """HTTP/1.1 and 1.0 only: llhttp takes an HTTP/0.9 line (no version, no headers, so no
        Host) that the pure-Python parser refuses; refused here whichever parser runs."""
        if request.version in _VERSIONS:
            response: web.StreamResponse = await self._app_handler(request)
            return response
        refusal = malformed_request()
        request_id = uuid.uuid4().hex
        self.count(refusal)
        log.warning(
            "refused at the HTTP edge: HTTP version other than 1.0 or 1.1",
            extra={"request_id": request_id, "cause": refusal.cause, "status": refusal.status},
        )
        return _closing_problem(refusal, request_id)

    def _request_head(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        if isinstance(protocol, EdgeConnection):
            protocol.head_arrived()
        return self._app_request(message, payload, protocol, writer, task)


class _EdgeRunner(web.AppRunner):
    """An ``AppRunner`` whose server is an ``EdgeServer`` (the app's start-up runs as usual)."""

    def __init__(
        self,
        app: web.Application,
        limits: ServerLimits,
        on_refusal: RefusalCounter | None,
        shutdown_timeout: float,
    ) -> None:
        super().__init__(app, access_log=None, shutdown_timeout=shutdown_timeout)
        self._limits = limits
        self._on_refusal = on_refusal

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's on_startup and freezes it
        limits = self._limits
        return EdgeServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            limits=limits,
            on_refusal=self._on_refusal,
            access_log=None,
            # aiohttp's own idle timer only backs ours up; ours fire first and answer.
            keepalive_timeout=limits.header_timeout * 2 + 1,
            max_line_size=limits.max_request_line,
            max_field_size=limits.max_header_size,
            max_headers=limits.max_headers,
        )


@dataclass(frozen=True, slots=True)
class Listener:
    """Where an app listens once ``listening`` has bound it."""

    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@asynccontextmanager
async def listening(
    app: web.Application,
    host: str,
    port: int,
    *,
    limits: ServerLimits | None = None,
    shutdown_timeout: float | None = None,
    reuse_port: bool = False,
) -> AsyncIterator[Listener]:
    """``app`` behind the HTTP edge on ``host:port`` (0: a free port) until the block ends.

    The one way this package opens a listening socket (``serve``, ``demo`` and the tests), so the
    contract above holds wherever a proxy answers. A proxy's limits come from its policy's
    ``[server]`` section and its edge refusals are counted in its refusal metric; other apps (the
    demo backend) get the defaults.

    Leaving the block is the drain: aiohttp's ``runner.cleanup()`` closes the listening socket,
    closes idle keep-alive connections, waits up to ``shutdown_timeout`` for every request being
    handled (its connection closes after the answer), then runs the app's cleanup. With
    ``reuse_port`` several processes listen on one port (``serve --workers``, see
    lookup_proxy/serving/master.py).
    """
    from lookup_proxy.middleware import PROXY  # the app wires proxies; this module only serves

    proxy = app.get(PROXY)
    on_refusal: RefusalCounter | None = None
    if proxy is not None:
        limits = limits or proxy.policy.server
        refusals = proxy.metrics.refusals

        def on_refusal(refusal: Refusal) -> None:
            refusals.labels(refusal.cause, str(refusal.status)).inc()

    limits = limits or ServerLimits()
    runner = _EdgeRunner(
        app,
        limits,
        on_refusal,
        limits.shutdown_timeout if shutdown_timeout is None else shutdown_timeout,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
        bound = runner.addresses[0]
        yield Listener(str(bound[0]), int(bound[1]))
    finally:
        await runner.cleanup()
