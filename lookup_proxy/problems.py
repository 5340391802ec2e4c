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
    response = web.Response(
        status=refusal.status, body=orjson.dumps(body), content_type=PROBLEM_JSON
    )
    response.headers.update(refusal.headers)
    return response
