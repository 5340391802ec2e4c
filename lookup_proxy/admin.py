"""The admin API for security staff: see and lift lockouts on every instance at once.

It sits behind the same token verification as lookups and requires the policy's admin role;
every action is written to the audit log with who did it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Final

import orjson
from aiohttp import web

from lookup_proxy.employee import Employee
from lookup_proxy.errors import bad_request, not_permitted
from lookup_proxy.guard import Guard
from lookup_proxy.guard.lockouts import LockInfo
from lookup_proxy.identify import TokenVerifier
from lookup_proxy.request_id import REQUEST_ID

audit_log = logging.getLogger("lookup_proxy.audit")

EMPLOYEE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
"""What an employee id in the admin API may be. The id becomes part of store keys and key
patterns (listing and unlocking scan for them), so glob characters (``*``, ``?``, ``[``),
hash-tag braces, separators and path tricks must never reach the store."""


def _employee(request: web.Request) -> str:
    employee = request.match_info["employee"]
    if EMPLOYEE_ID.fullmatch(employee) is None:
        raise bad_request(
            "That is not an employee id: 1 to 128 letters, digits and . _ @ + - "
            "(starting with a letter or digit).",
            "bad-employee-id",
        )
    return employee


def _lock_json(info: LockInfo) -> dict[str, object]:
    return {
        "employee": info.employee,
        "rule": info.rule,
        "at": info.at,
        "until": info.until,
        "because": list(info.because),
    }


def admin_employee(verifier: TokenVerifier, role: str, request: web.Request) -> Employee:
    """The signed-in employee, if they hold the admin ``role``; a 401/403 Refusal if not."""
    employee = verifier.verify(request.headers.get("Authorization"))
    if role not in employee.roles:
        raise not_permitted(
            f"Only staff with the '{role}' role may use the admin API.", "admin-only"
        )
    return employee


def add_admin_routes(
    app: web.Application,
    verifier: Callable[[], TokenVerifier],
    guard_now: Callable[[], Guard],
    role: Callable[[], str],
) -> None:
    """``GET /admin/locks``, ``GET|DELETE|PUT /admin/locks/{employee}``. The verifier, guard
    and role are asked for at each call: a policy reload replaces them."""

    def admin(request: web.Request) -> Employee:
        return admin_employee(verifier(), role(), request)

    def respond(body: object, status: int = 200) -> web.Response:
        return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")

    async def list_locks(request: web.Request) -> web.Response:
        admin(request)
        return respond({"locks": [_lock_json(i) for i in await guard_now().locked_employees()]})

    async def show_lock(request: web.Request) -> web.Response:
        admin(request)
        employee = _employee(request)
        info = await guard_now().lock_status(employee)
        return respond(
            {
                "employee": employee,
                "locked": info is not None,
                "lock": None if info is None else _lock_json(info),
            }
        )

    async def unlock(request: web.Request) -> web.Response:
        actor = admin(request)
        employee = _employee(request)
        removed = await guard_now().unlock(employee)
        audit_log.info(
            "unlock",
            extra={
                "admin": actor.id,
                "employee": employee,
                "was_locked": removed,
                "request_id": request[REQUEST_ID],
            },
        )
        return respond({"employee": employee, "unlocked": removed})

    async def lock(request: web.Request) -> web.Response:
        actor = admin(request)
        employee = _employee(request)
        info = await guard_now().lock(employee, rule="manual")
        audit_log.info(
            "lock",
            extra={"admin": actor.id, "employee": employee, "request_id": request[REQUEST_ID]},
        )
        return respond(_lock_json(info), status=201)

    routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.Response]]]] = [
        ("GET", "/admin/locks", list_locks),
        ("GET", "/admin/locks/{employee}", show_lock),
        ("DELETE", "/admin/locks/{employee}", unlock),
        ("PUT", "/admin/locks/{employee}", lock),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
