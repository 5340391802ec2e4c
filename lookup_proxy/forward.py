"""The *forward* step: one shared upstream pool, small answers whole and large ones streamed,
headers made trustworthy.

What the backend learns about a lookup comes only from us: of the terminal's headers only the
policy's ``forward_headers`` cross (never its Authorization or identity headers), and ours
(request id, employee, store, reason) are added. Hop-by-hop headers (RFC 9110 §7.6.1, plus any
the Connection header names) stop here in both directions.

What the clerk learns comes only from an answer the backend finished: a 5xx body (a stack trace,
an internal host name) is replaced by our problem body and kept in the log, and an answer cut
short after its headers went out ends in an aborted connection, never in a short "complete" one.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from lookup_proxy.accounts import AccountCheck
from lookup_proxy.employee import Employee
from lookup_proxy.errors import (
    Refusal,
    body_too_large,
    upstream_error,
    upstream_timeout,
    upstream_unavailable,
)
from lookup_proxy.http_edge import request_timeout
from lookup_proxy.justify import Justification
from lookup_proxy.minimise import (
    FieldSet,
    Unfilterable,
    is_json,
    parse_answer,
    read_answer,
    unfilterable,
)
from lookup_proxy.policy import Upstream
from lookup_proxy.problems import problem_response
from lookup_proxy.proxy_headers import HOP_BY_HOP, NEVER_FORWARDED
from lookup_proxy.upstream import (
    Answer,
    Origin,
    Pool,
    RequestNotSendable,
    Timeouts,
    UpstreamError,
    UpstreamTimeout,
)

log = logging.getLogger("lookup_proxy.forward")

ERROR_BODY_LOGGED = 2048
"""Bytes of an upstream 5xx body kept in the log: enough to diagnose, bounded for the log."""


def _connection_named(headers: CIMultiDictProxy[str]) -> set[str]:
    named: set[str] = set()
    for value in headers.getall("Connection", []):
        named.update(token.strip().lower() for token in value.split(",") if token.strip())
    return named


def end_to_end(
    headers: CIMultiDictProxy[str], drop: frozenset[str] = frozenset()
) -> CIMultiDict[str]:
    """The headers that may cross the proxy: no hop-by-hop ones, none named in Connection, none
    in ``drop`` (lower-case names)."""
    blocked = _blocked(drop)
    if "Connection" in headers:  # rare from a backend: the set of this answer's own
        blocked = blocked | _connection_named(headers)
    return CIMultiDict([(k, v) for k, v in headers.items() if k.lower() not in blocked])


@functools.lru_cache(maxsize=8)
def _blocked(drop: frozenset[str]) -> frozenset[str]:
    """Hop-by-hop and ``drop``: a handful of fixed sets, built once, not per answer."""
    return HOP_BY_HOP | drop


def forwardable(allowed: Iterable[str]) -> frozenset[str]:
    """The allow-list as lower-case names, less anything hop-by-hop or set by the proxy itself
    (the policy loader refuses those too): computed once, not per lookup."""
    return frozenset(name.lower() for name in allowed) - NEVER_FORWARDED


def allowed_terminal_headers(
    headers: CIMultiDictProxy[str], names: frozenset[str]
) -> list[tuple[str, str]]:
    """The terminal's headers the backend may see: ``names`` less any the Connection header
    names (usually none)."""
    if "Connection" in headers:
        names = names - _connection_named(headers)
    return [(k, v) for k, v in headers.items() if k.lower() in names]


class TrustedProxies:
    """Which peers may tell us who the real client is (X-Forwarded-For)."""

    def __init__(self, networks: Iterable[str]) -> None:
        self._networks = [ipaddress.ip_network(n, strict=False) for n in networks]

    def trusts(self, address: str | None) -> bool:
        if not address or not self._networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)

    def client_chain(self, peer: str | None, forwarded_for: str | None) -> tuple[str, str]:
        """(client address, X-Forwarded-For to send upstream)."""
        peer = peer or "unknown"
        if not self.trusts(peer) or not forwarded_for:
            return peer, peer
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        client = peer
        for hop in reversed(hops):
            client = hop
            if not self.trusts(hop):
                break
        return client, ", ".join([*hops, peer])


@dataclass(frozen=True, slots=True)
class Forwarded:
    """What the backend answered, once streamed to the terminal."""

    status: int
    response: web.StreamResponse
    complete: bool = True
    truncated: bool = False
    """The backend broke off its answer (the terminal's connection was aborted)."""


class UpstreamClient:
    """The backend's client (``lookup_proxy.upstream``), with explicit limits.

    A policy reload builds a new client ``sharing`` the running one's pool (sized once, at
    start): URL, timeouts and headers follow the new policy, while lookups still in flight
    finish with the client they began with.
    """

    def __init__(
        self,
        config: Upstream,
        credential: str | None,
        *,
        sharing: UpstreamClient | None = None,
        body_timeout: float = 10.0,
    ) -> None:
        self.config = config
        self._body_timeout = body_timeout
        """Seconds a terminal has to send a request body ([server] header_timeout)."""
        self.base = URL(config.url.rstrip("/"))
        self._origin = Origin.of(self.base.scheme, self.base.host or "localhost", self.base.port)
        self._prefix = self.base.raw_path.rstrip("/")
        self._forwardable = forwardable(config.forward_headers)
        self._credential: tuple[tuple[str, str], ...] = (
            () if credential is None else ((config.credential_header, credential),)
        )
        self._pool: Pool = sharing._pool if sharing is not None else Pool(config.pool_size)
        self._timeouts = Timeouts(
            connect=config.connect_timeout,
            read=config.read_timeout,
            total=config.total_timeout,
        )

    async def start(self) -> None:
        """Nothing to open: connections are made on the first lookups and kept."""

    async def close(self) -> None:
        await self._pool.close()

    async def reachable(self) -> bool:
        """Whether a TCP connection to the backend opens (for /readyz)."""
        host = self.base.host or "localhost"
        port = self.base.port or (443 if self.base.scheme == "https" else 80)
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), self.config.connect_timeout
            )
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True

    async def forward(
        self,
        request: web.Request,
        target: str,
        employee: Employee,
        justification: Justification,
        request_id: str,
        forwarded_for: str,
        response_headers: Mapping[str, str],
        fields: FieldSet | None = None,
        accounts: AccountCheck | None = None,
    ) -> Forwarded:
        """Send the lookup to ``target`` (path and query, already checked) and send the
        backend's answer back to the terminal (whole when small, else streamed); with
        ``fields``, the answer is read whole and only the fields named reach the terminal
        (lookup_proxy/minimise.py); with ``accounts``, a found answer is read whole and a record
        of a business line the lookup may not see is a 403 Refusal raised in its place
        (lookup_proxy/accounts.py)."""
        headers = allowed_terminal_headers(request.headers, self._forwardable)
        headers.append(("X-Request-Id", request_id))
        headers.append(("X-Employee-Id", employee.id))
        headers.append(("X-Store-Id", employee.store))
        if employee.region is not None:
            headers.append(("X-Region-Id", employee.region))
        headers.append(("X-Lookup-Reason", justification.reason))
        if justification.reference is not None:
            headers.append(("X-Lookup-Reference", justification.reference))
        headers.append(("X-Forwarded-For", forwarded_for))
        headers.extend(self._credential)
        body = await _request_body(request, self._body_timeout) if request.can_read_body else None
        response: web.StreamResponse | None = None
        try:
            upstream = await self._pool.exchange(
                self._origin, request.method, self._prefix + target, headers, body, self._timeouts
            )
        except (UpstreamError, RequestNotSendable) as exc:
            log.warning(
                "upstream request failed", extra={"request_id": request_id, "error": str(exc)}
            )
            raise _not_answered(exc) from None
        try:
            if upstream.status >= 500:
                await _log_error_answer(upstream, request_id)
                raise upstream_error(
                    "The customer system had a problem answering. Try again in a moment; "
                    "if it keeps failing, call the help desk.",
                    upstream.status,
                )
            if fields is not None or (accounts is not None and 200 <= upstream.status < 300):
                checked = await _checked(
                    upstream, fields, accounts, justification.reference, self.config, request_id
                )
                # Unprepared, as a whole answer is: aiohttp then writes status line, headers
                # and body at once (preparing here first cost a write more per lookup).
                checked.headers.update(response_headers)
                return Forwarded(upstream.status, checked)
            length = upstream.content_length
            if length is not None and length <= WHOLE_ANSWER_MAX:
                return await _whole(upstream, response_headers, request_id)
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            response.headers.update(end_to_end(upstream.headers, _LENGTH))
            response.headers.update(response_headers)
            if length is not None:
                response.content_length = length
            await response.prepare(request)
            return await _relay(upstream, request, response, request_id)
        except (UpstreamError, OSError) as exc:
            if response is not None and response.prepared:
                # The terminal went away while we wrote to it: nobody is left to tell.
                return Forwarded(response.status, response, complete=False)
            raise _not_answered(exc) from None
        finally:
            upstream.release()


def _not_answered(exc: Exception) -> Refusal:
    """504 for a backend too slow, 502 for one unreachable or broken off."""
    if isinstance(exc, UpstreamTimeout):
        return upstream_timeout(
            "The customer system did not answer in time. Try again in a moment."
        )
    return upstream_unavailable(
        "The customer system could not be reached. Try again in a moment; if it keeps failing, "
        "call the help desk."
    )


async def _request_body(request: web.Request, within: float) -> bytes:
    """The terminal's body, whole (bounded by the app's ``client_max_size`` and, like a request
    head, by ``[server] header_timeout``), so the request leaves in one write and a retry on a
    fresh connection can send it again."""
    try:
        async with asyncio.timeout(within):
            return await request.read()
    except TimeoutError:
        raise request_timeout() from None  # as for a head that came too slowly
    except web.HTTPRequestEntityTooLarge:
        raise body_too_large(
            "The request body is larger than a lookup may carry. Ask the help desk to check the "
            "terminal's settings."
        ) from None


WHOLE_ANSWER_MAX = 64 * 1024
"""Answers of a known length up to this are read whole and sent in one write; longer or
chunked ones are streamed."""


async def _whole(
    upstream: Answer, response_headers: Mapping[str, str], request_id: str
) -> Forwarded:
    """The backend's answer read whole, then sent as one response.

    A customer record is a kilobyte or two: streaming it cost a write for the headers and one
    for each chunk (a fifth of the proxy's CPU went to writes under load), and sending it whole
    lets aiohttp write status line, headers and body at once. Reading first also means that an
    answer broken off mid-body reaches the clerk as a 502 problem, not as a reset connection:
    nothing has gone out yet.
    """
    try:
        body = await upstream.read()
    except UpstreamError as exc:
        _log_cut_short(upstream, request_id, exc, "answered with a problem")
        refusal = upstream_error(
            "The customer system broke off its answer. Try again in a moment; if it keeps "
            "failing, call the help desk.",
            upstream.status,
        )
        return Forwarded(502, problem_response(refusal, request_id), complete=False, truncated=True)
    response = web.Response(status=upstream.status, reason=upstream.reason, body=body)
    response.headers.update(end_to_end(upstream.headers, _LENGTH))
    response.headers.update(response_headers)
    return Forwarded(upstream.status, response)


def _log_cut_short(upstream: Answer, request_id: str, exc: BaseException, then: str) -> None:
    """An expected failure of the backend's: a warning with the request id, no traceback."""
    log.warning(
        f"upstream answer cut short; {then}",
        extra={
            "request_id": request_id,
            "upstream_status": upstream.status,
            "error": type(exc).__name__,
        },
    )


async def _relay(
    upstream: Answer,
    request: web.Request,
    response: web.StreamResponse,
    request_id: str,
) -> Forwarded:
    """Stream the body; if the backend breaks off, abort the terminal's connection.

    The status line and headers already went out, so a problem body is impossible, and a
    graceful close after a short body could pass for a complete answer (no Content-Length, or
    a client that does not check it). A reset cannot.
    """
    while True:
        try:
            chunk = await upstream.readany()
        except UpstreamError as exc:
            _log_cut_short(upstream, request_id, exc, "terminal connection aborted")
            if request.transport is not None:
                request.transport.abort()
            return Forwarded(upstream.status, response, complete=False, truncated=True)
        if not chunk:
            break
        await response.write(chunk)
    await response.write_eof()
    return Forwarded(upstream.status, response)


_LENGTH = frozenset(("content-length",))
"""Dropped from a relayed answer's headers: the proxy sets the length of what it sends."""

REPRESENTATION_HEADERS = frozenset(
    ("content-length", "etag", "content-md5", "digest", "content-digest", "repr-digest")
)
"""Headers about the backend's whole answer, false once it is trimmed."""


async def _checked(
    upstream: Answer,
    fields: FieldSet | None,
    accounts: AccountCheck | None,
    reference: str | None,
    config: Upstream,
    request_id: str,
) -> web.Response:
    """The backend's answer, read whole: a found one's business account checked (a 403
    Refusal for a record the lookup may not see), then with only ``fields`` left in it (the
    body as it came without them); a 502 Refusal when it cannot be checked or trimmed."""
    limit = config.max_filtered_body
    problem: str | None = None
    if upstream.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        problem = "encoded (Content-Encoding)"
    elif upstream.status == 206 or "Content-Range" in upstream.headers:
        problem = "partial (Content-Range)"
    elif upstream.content_length is not None and upstream.content_length > limit:
        problem = "larger than upstream.max_filtered_body"
    body = b""
    if problem is None:
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = await upstream.readany()
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        body = b"".join(chunks)
        if size > limit:
            problem = "larger than upstream.max_filtered_body"
        elif body and not is_json(upstream.content_type, upstream.charset):
            problem = "not declared JSON (Content-Type)"
    checked = accounts is not None and 200 <= upstream.status < 300
    answer: object = None
    if problem is None and body and (checked or fields is not None):
        try:
            if fields is not None:
                answer = parse_answer(body)
                body = fields.dump(fields.apply(answer))
            else:  # only read (the account): relayed as it came
                answer = read_answer(body)
        except Unfilterable as exc:
            problem = str(exc)
    if problem is not None:
        # Never the body: it is the customer data the reason may not see.
        log.warning(
            "upstream answer refused: cannot be checked or trimmed for the reason",
            extra={
                "request_id": request_id,
                "upstream_status": upstream.status,
                "fields": None if fields is None else fields.name,
                "accounts": None if accounts is None else accounts.path,
                "problem": problem,
                "content_type": upstream.headers.get("Content-Type"),
            },
        )
        raise unfilterable(upstream.status)
    if checked and accounts is not None:
        withheld = accounts.refusal(answer, reference, upstream.status)
        if withheld is not None:
            raise withheld
    response = web.Response(status=upstream.status, reason=upstream.reason, body=body)
    response.headers.update(end_to_end(upstream.headers, REPRESENTATION_HEADERS))
    return response


async def _log_error_answer(upstream: Answer, request_id: str) -> None:
    """Keep the start of a 5xx body for the operators; the clerk gets our problem instead."""
    sample = b""
    try:
        while len(sample) < ERROR_BODY_LOGGED:
            chunk = await upstream.readany()
            if not chunk:
                break
            sample += chunk
    except UpstreamError:
        pass  # what arrived is still worth logging; the clerk's answer is the same
    log.warning(
        "upstream error answer replaced by a problem",
        extra={
            "request_id": request_id,
            "upstream_status": upstream.status,
            "upstream_body": sample[:ERROR_BODY_LOGGED].decode("utf-8", "replace"),
        },
    )
