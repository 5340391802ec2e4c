"""RFC 9457 problem details: how every refusal reaches the terminal."""

from __future__ import annotations

import orjson
from aiohttp import web

from lookup_proxy.errors import Refusal

PROBLEM_JSON = "application/problem+json"
REQUEST_URN = "urn:lookup-proxy:request:"


def problem_response(refusal: Refusal, request_id: str) -> web.Response:
    """A problem+json response with the refusal's headers and the request id."""
    response = web.Response(
        status=refusal.status,
        body=problem_body(refusal, request_id),
        content_type=PROBLEM_JSON,
    )
    response.headers.update(refusal.headers)
    return response


def problem_body(refusal: Refusal, request_id: str) -> bytes:
    """The RFC 9457 document alone, for answers written below aiohttp's response objects.

    ``instance`` names the occurrence by its request id, never by the request's path: an
    answer must not echo what the terminal sent (a number, or bytes aimed at whatever shows it).
    """
    body: dict[str, object] = {
        "type": refusal.type_uri,
        "title": refusal.title,
        "status": refusal.status,
        "detail": refusal.detail,
        "request_id": request_id,
        "instance": REQUEST_URN + request_id,
    }
    body.update(refusal.extra)
    return orjson.dumps(body)
