"""The *forward* step: one shared upstream client, bodies streamed, headers made trustworthy.

What the backend learns about a lookup comes only from us: the terminal's Authorization and any
identity headers it tried to set are dropped, and ours (request id, employee, store, reason) are
added. Hop-by-hop headers (RFC 9110 §7.6.1, plus any the Connection header names) stop here.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from lookup_proxy.employee import Employee
from lookup_proxy.errors import upstream_timeout, upstream_unavailable
from lookup_proxy.justify import Justification
from lookup_proxy.policy import Upstream

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Headers only the proxy may set: a terminal that sends them is ignored, never believed.
_OURS = frozenset(
    {
        "authorization",
        "host",
        "x-request-id",
        "x-employee-id",
        "x-store-id",
        "x-region-id",
        "x-lookup-reason",
        "x-lookup-reference",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "forwarded",
        "x-real-ip",
        "content-length",
    }
)


def _connection_named(headers: CIMultiDictProxy[str]) -> set[str]:
    named: set[str] = set()
    for value in headers.getall("Connection", []):
        named.update(token.strip().lower() for token in value.split(",") if token.strip())
    return named


def end_to_end(headers: CIMultiDictProxy[str], drop: Iterable[str] = ()) -> CIMultiDict[str]:
    """The headers that may cross the proxy: no hop-by-hop ones, none named in Connection."""
    blocked = HOP_BY_HOP | _connection_named(headers) | set(drop)
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in blocked)


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


class UpstreamClient:
    """The one ClientSession to the customer-lookup backend, with explicit limits."""

    def __init__(self, config: Upstream, credential: str | None) -> None:
        self.config = config
        self.base = URL(config.url.rstrip("/"))
        self._credential = credential
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.config.pool_size, limit_per_host=self.config.pool_size, ttl_dns_cache=60
        )
        timeout = aiohttp.ClientTimeout(
            total=self.config.total_timeout,
            connect=self.config.connect_timeout,
            sock_connect=self.config.connect_timeout,
            sock_read=self.config.read_timeout,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

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
        employee: Employee,
        justification: Justification,
        request_id: str,
        forwarded_for: str,
        response_headers: Mapping[str, str],
    ) -> Forwarded:
        """Send the lookup upstream unchanged and stream the answer back to the terminal."""
        assert self._session is not None, "UpstreamClient.start() was not awaited"
        headers = end_to_end(request.headers, _OURS)
        headers["X-Request-Id"] = request_id
        headers["X-Employee-Id"] = employee.id
        headers["X-Store-Id"] = employee.store
        if employee.region is not None:
            headers["X-Region-Id"] = employee.region
        headers["X-Lookup-Reason"] = justification.reason
        if justification.reference is not None:
            headers["X-Lookup-Reference"] = justification.reference
        headers["X-Forwarded-For"] = forwarded_for
        if self._credential is not None:
            headers[self.config.credential_header] = self._credential
        url = URL(str(self.base) + request.raw_path, encoded=True)
        body = request.content if request.can_read_body else None
        response: web.StreamResponse | None = None
        try:
            async with self._session.request(
                request.method, url, headers=headers, data=body, allow_redirects=False
            ) as upstream:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                response.headers.update(end_to_end(upstream.headers, ("content-length",)))
                response.headers.update(response_headers)
                if upstream.content_length is not None:
                    response.content_length = upstream.content_length
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return Forwarded(upstream.status, response)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            if response is not None and response.prepared:
                # Headers already went out: the only honest signal left is a cut connection.
                if request.transport is not None:
                    request.transport.close()
                return Forwarded(response.status, response, complete=False)
            if isinstance(exc, (TimeoutError, aiohttp.ServerTimeoutError)):
                raise upstream_timeout(
                    "The customer system did not answer in time. Try again in a moment."
                ) from None
            raise upstream_unavailable(
                "The customer system could not be reached. Try again in a moment; if it "
                "keeps failing, call the help desk."
            ) from None
