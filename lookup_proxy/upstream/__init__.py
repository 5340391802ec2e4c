"""The HTTP/1.1 client the *forward* step talks to the backend with (see ``exchange.py`` for why
it is not aiohttp's ClientSession): kept-alive connections in a bounded pool, one exchange each
at a time."""

from lookup_proxy.upstream.exchange import Answer, UpstreamError, UpstreamTimeout
from lookup_proxy.upstream.pool import Origin, Pool, RequestNotSendable, Timeouts

__all__ = [
    "Answer",
    "Origin",
    "Pool",
    "RequestNotSendable",
    "Timeouts",
    "UpstreamError",
    "UpstreamTimeout",
]
