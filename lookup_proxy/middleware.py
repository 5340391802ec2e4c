"""The aiohttp middleware and response hook every request passes: request ids, strict framing,
refusals and surprises as problem bodies, our ``Server`` header.

Apart from app.py because app.py is compiled with mypyc (``native.COMPILED_MODULES``) and aiohttp
marks a middleware by setting an attribute on the function, which a compiled function refuses.
Its log lines keep the logger name they had there (``lookup_proxy.app``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from aiohttp import web

from lookup_proxy.errors import Refusal, not_permitted
from lookup_proxy.problems import problem_response
from lookup_proxy.request_id import REQUEST_ID, request_id_for
from lookup_proxy.request_shape import check_framing

if TYPE_CHECKING:
    from lookup_proxy.app import Proxy

__all__ = ["PROXY", "Handler", "problems", "server_header"]

log = logging.getLogger("lookup_proxy.app")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
"""What aiohttp calls with a request: a route's handler, or the rest of the middleware chain."""

PROXY: Final[web.AppKey[Proxy]] = web.AppKey("proxy")
"""The app's :class:`~lookup_proxy.app.Proxy` (set by ``build_app``)."""


def _not_a_route() -> Refusal:
    return not_permitted(
        "This address is not a customer lookup this proxy serves.", "route-not-allowed"
    )


def _method_not_allowed(request: web.Request, allowed: set[str]) -> Refusal:
    methods = ", ".join(sorted(allowed))
    return Refusal(
        f"This address does not answer {request.method} requests (only {methods}). "
        "Ask the help desk to check the terminal's settings.",
        status=405,
        cause="method-not-allowed",
        title="Method not allowed",
        headers={"Allow": methods},
    )


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request ids on every response; strict framing on every request; refusals and surprises
    as problem bodies, tracebacks only for surprises."""
    request_id = request_id_for(request)
    request[REQUEST_ID] = request_id
    proxy = request.app[PROXY]
    try:
        if request.match_info.route not in proxy.lookup_routes:
            check_framing(request)
        response = await handler(request)
    except Refusal as refusal:
        response = proxy.refused(request, refusal)
    except web.HTTPMethodNotAllowed as exc:
        response = proxy.refused(request, _method_not_allowed(request, exc.allowed_methods))
    except web.HTTPNotFound:
        response = proxy.refused(request, _not_a_route())
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = proxy.refused(
            request,
            Refusal(exc.reason, status=exc.status, cause=f"http-{exc.status}", title=exc.reason),
        )
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unexpected error", extra={"request_id": request_id})
        internal = Refusal(
            "Something went wrong in the lookup service. Try again; if it keeps happening, "
            "call the help desk and give them the request id.",
            status=500,
            cause="internal-error",
            title="Internal error",
        )
        response = problem_response(internal, request_id)
    if not response.prepared:
        response.headers["X-Request-Id"] = request_id
    return response


async def server_header(_request: web.Request, response: web.StreamResponse) -> None:
    """Name the product, not the Python, aiohttp or backend versions an attacker could look up."""
    response.headers["Server"] = "lookup-proxy"
