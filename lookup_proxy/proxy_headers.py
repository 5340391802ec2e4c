"""Header names a terminal never gets to set on the backend's request.

Hop-by-hop headers describe one connection, not the lookup (RFC 9110 §7.6.1); the identity
headers are what the backend believes about who asked and why, so only the proxy writes them.
Both the forward step and the policy loader (which refuses them in ``forward_headers``) need the
lists, so they live here rather than in either.
"""

from __future__ import annotations

from typing import Final

HOP_BY_HOP: Final = frozenset(
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

PROXY_OWNED: Final = frozenset(
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
"""Set by the proxy from what it verified (or by the HTTP client from the body it sends)."""

NEVER_FORWARDED: Final = HOP_BY_HOP | PROXY_OWNED
