"""RFC 9457 problem details: how every refusal reaches the terminal."""

from __future__ import annotations

import orjson
from aiohttp import web

from lookup_proxy.errors import Refusal

PROBLEM_JSON = "application/problem+json"


def problem_response(
    refusal: Refusal, request_id: str, instance: str | None = None
) -> web.Response:
    """A problem+json response with the refusal's headers and the request id."""
    response = web.Response(
        status=refusal.status,
        body=problem_body(refusal, request_id, instance),
        content_type=PROBLEM_JSON,
    )
    response.headers.update(refusal.headers)
    return response


def problem_body(refusal: Refusal, request_id: str, instance: str | None = None) -> bytes:
    """The RFC 9457 document alone, for answers written below aiohttp's response objects."""
    body: dict[str, object] = {
        "type": refusal.type_uri,
        "title": refusal.title,
        "status": refusal.status,
        "detail": refusal.detail,
        "request_id": request_id,
    }
    if instance is not None:
        body["instance"] = instance
    body.update(refusal.extra)
    return orjson.dumps(body)
