"""``GET /admin/policy`` and ``POST /admin/policy/reload``: the policy in force, and a hot
reload (:mod:`lookup_proxy.reload` does the reloading), for the admin role only, every call
audited (refusals too: who asked is recorded even when the role is missing)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from lookup_proxy.admin.routes import admin_employee
from lookup_proxy.errors import Refusal, bad_request
from lookup_proxy.problems import problem_response
from lookup_proxy.request_id import REQUEST_ID

if TYPE_CHECKING:
    from lookup_proxy.app import Proxy


def _audit(proxy: Proxy, fields: dict[str, object]) -> None:
    """An ``admin`` audit record (contract: request_id, employee, client, action, target,
    note, status, query)."""
    proxy.audit.write("admin", fields)


def _no_query(request: web.Request) -> None:
    if request.query_string:
        raise bad_request(
            "This admin address takes no query parameters.",
            "unexpected-query",
        )


async def _note(request: web.Request) -> str | None:
    """The optional ``{"note": "..."}`` body of a reload, for the audit record."""
    if not request.can_read_body:
        return None
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    note = body.get("note") if isinstance(body, dict) and set(body) <= {"note"} else False
    if note is not None and (not isinstance(note, str) or len(note) > 1000):
        raise bad_request(
            'Send no body, or a JSON object {"note": "..."} (at most 1000 characters).',
            "bad-body",
        )
    return note


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body, option=orjson.OPT_SORT_KEYS),
        content_type="application/json",
    )


def add_policy_routes(app: web.Application, proxy: Proxy) -> None:
    """``GET /admin/policy`` and ``POST /admin/policy/reload``, for the admin role only."""

    async def audited(
        request: web.Request,
        action: str,
        respond: Callable[[str], Awaitable[tuple[web.Response, str | None]]],
    ) -> web.Response:
        generation = proxy.generation
        client = generation.trusted.client_chain(
            request.remote, request.headers.get("X-Forwarded-For")
        )[0]
        record: dict[str, object] = {
            "request_id": request[REQUEST_ID],
            "employee": None,
            "client": client,
            "action": action,
            "target": None,
            "note": None,
            "status": 500,
            "query": None,
        }
        try:
            # Who asked is recorded even when the role is missing (a 403).
            record["employee"] = generation.verifier.verify(request.headers.get("Authorization")).id
            actor = admin_employee(
                generation.verifier, generation.policy.server.admin_role, request
            )
            _no_query(request)
            response, note = await respond(actor.id)
            record["note"] = note
            record["status"] = response.status
            return response
        except Refusal as refusal:
            record["status"] = refusal.status
            raise
        finally:
            _audit(proxy, record)

    async def show(request: web.Request) -> web.Response:
        async def respond(_actor: str) -> tuple[web.Response, str | None]:
            generation = proxy.generation
            policy = generation.policy.model_dump(mode="json")
            return _json({"hash": generation.hash, "policy": policy}), generation.hash

        return await audited(request, "policy.show", respond)

    async def reload(request: web.Request) -> web.Response:
        async def respond(actor: str) -> tuple[web.Response, str | None]:
            note = await _note(request)
            done = proxy.reloader.reload(f"admin:{actor}")
            summary = f"{done.result}: {done.previous} -> {done.hash}"
            if note:
                summary = f"{summary}; {note}"
            if done.result == "error":
                refusal = Refusal(
                    f"The policy file was not reloaded: {len(done.problems)} problem(s). The "
                    f"running policy ({done.hash}) stays in force.",
                    status=422,
                    cause="policy-invalid",
                    title="Policy not reloaded",
                    extra={
                        "hash": done.hash,
                        "errors": [
                            {
                                "file": p.file,
                                "key": p.key,
                                "expected": p.expected,
                                "found": p.found,
                            }
                            for p in done.problems
                        ],
                    },
                )
                return problem_response(refusal, request[REQUEST_ID]), summary
            return _json({"result": done.result, "hash": done.hash}), summary

        return await audited(request, "policy.reload", respond)

    app.router.add_get("/admin/policy", show)
    app.router.add_post("/admin/policy/reload", reload)
