"""Strict requests: only the shape a route declares is judged, and only that goes upstream.

A proxy that judges one thing and forwards another is a way around it: the guard counts the
number in the path while a backend that also reads ``?number=`` answers for a number nobody
counted; the guard believes the first ``Authorization`` while a component behind it reads the
last. So whatever a route did not declare is refused before anything is judged, and the URL the
backend receives is rebuilt from the parts that were checked, never copied from the request line.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

from aiohttp import web

from lookup_proxy.errors import Refusal, bad_request
from lookup_proxy.policy import Route

SINGLE_HEADERS: Final = ("Host", "Authorization", "X-Lookup-Reason", "X-Lookup-Reference")
"""Headers that say who asks and why: two values would let two readers disagree."""

BODILESS_METHODS: Final = frozenset({"GET", "HEAD"})

# RFC 3986 pchar without "/" (a number never spans segments) and query characters without the
# separators "&", "=", "+" and ";" that a backend's query parser might split on.
_PATH_SAFE: Final = "-._~!$&'()*+,;=:@"
_QUERY_SAFE: Final = "-._~!$'()*,:@"


def check_framing(request: web.Request) -> None:
    """Refuse what no route carries: a target that is not a path, repeated identity headers,
    and a body on a method that has none (the backend might read it; the guard never did)."""
    target = request.raw_path
    # Origin form only (RFC 9112 §3.2.1): an absolute URL names a host the proxy would have to
    # ignore, "//host/..." reads as one to URL parsers, and a fragment is never sent on the wire.
    if not target.startswith("/") or target.startswith("//") or "#" in target:
        raise bad_request(
            "Send the request to a path on this service (a single / and the path), not to a "
            "full address. Ask the help desk to check the terminal's settings.",
            "bad-target",
        )
    for name in SINGLE_HEADERS:
        if len(request.headers.getall(name, ())) > 1:
            raise bad_request(
                f"The request carries the {name} header more than once. Send it once. If this "
                "keeps happening, call the help desk.",
                "duplicate-header",
                {"header": name},
            )
    if request.method in BODILESS_METHODS and (
        "Transfer-Encoding" in request.headers or (request.content_length or 0) > 0
    ):
        raise bad_request(
            f"A {request.method} request carries no body. Send the lookup without one. If this "
            "keeps happening, call the help desk.",
            "unexpected-body",
        )


def _refuse_query(route: Route) -> Refusal:
    if route.number_from == "query":
        detail = f"This lookup takes only the '{route.number_param}' parameter, once."
    else:
        detail = "This lookup takes no query string (the part after '?'); send the number only."
    return bad_request(f"{detail} If this keeps happening, call the help desk.", "unexpected-query")


def lookup_target(request: web.Request, route: Route) -> tuple[str, str]:
    """The number as the terminal typed it, and the backend's target rebuilt around it.

    The number itself is checked by the *target* step; this step makes sure nothing else rides
    along, so the target holds nothing the guard did not see.
    """
    if route.number_from == "path":
        if request.query_string:
            raise _refuse_query(route)
        raw = request.match_info.get(route.number_param, "")
        placeholder = "{" + route.number_param + "}"
        return raw, route.path.replace(placeholder, quote(raw, safe=_PATH_SAFE), 1)
    query = request.query
    if any(name != route.number_param for name in query):
        raise _refuse_query(route)
    values = query.getall(route.number_param, [])
    if len(values) != 1:
        raise bad_request("Enter exactly one phone number to look up.", "bad-number")
    raw = values[0]
    return raw, f"{route.path}?{quote(route.number_param)}={quote(raw, safe=_QUERY_SAFE)}"
