"""The admin API's routes: the review queue, lockouts, activity and audit search.

Every handler runs inside :func:`_audited`, which writes exactly one ``admin`` audit record per
call (actor, action, target, note, status, query) whatever the outcome, refusals included: who
looked at which case, and who was refused, is itself part of the record.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import orjson
from aiohttp import web

from lookup_proxy.admin import inputs
from lookup_proxy.admin.inputs import Field
from lookup_proxy.admin.openapi import DOCUMENT
from lookup_proxy.admin.search import case_evidence, search_lookups, subjects
from lookup_proxy.cases import RESOLUTIONS, STATUSES, CaseClosed, CaseNotFound
from lookup_proxy.cases.audit import case_record
from lookup_proxy.employee import Employee
from lookup_proxy.errors import Refusal, not_permitted
from lookup_proxy.guard.lockouts import LockInfo
from lookup_proxy.guard.primitives import StoreUnavailable
from lookup_proxy.identify import TokenVerifier
from lookup_proxy.numbers import normalise_number
from lookup_proxy.request_id import REQUEST_ID

if TYPE_CHECKING:
    from lookup_proxy.app import Proxy
    from lookup_proxy.cases import Case


@dataclass
class Call:
    """What one admin call did, for its audit record."""

    action: str
    actor: Employee | None = None
    target: str | None = None
    note: str | None = None
    query: dict[str, object] | None = None
    extra: dict[str, object] = field(default_factory=dict)


AdminHandler = Callable[[web.Request, Call], Awaitable[web.Response]]

ROUTES: Final[list[tuple[str, str, str]]] = [
    ("GET", "/admin/cases", "cases.list"),
    ("GET", "/admin/cases/{case}", "cases.show"),
    ("POST", "/admin/cases/{case}/acknowledge", "cases.acknowledge"),
    ("POST", "/admin/cases/{case}/resolve", "cases.resolve"),
    ("GET", "/admin/locks", "locks.list"),
    ("GET", "/admin/locks/{employee}", "locks.show"),
    ("PUT", "/admin/locks/{employee}", "locks.lock"),
    ("DELETE", "/admin/locks/{employee}", "locks.unlock"),
    ("GET", "/admin/employees/{employee}/activity", "activity.show"),
    ("GET", "/admin/audit", "audit.search"),
    ("GET", "/admin/openapi.json", "openapi.show"),
    ("GET", "/admin/policy", "policy.show"),
    ("POST", "/admin/policy/reload", "policy.reload"),
]
"""(method, path, action): the table :mod:`lookup_proxy.admin.openapi` documents."""

POLICY_ACTIONS: Final = frozenset({"policy.show", "policy.reload"})
"""Served by :func:`lookup_proxy.admin.policy.add_policy_routes` (their own audit frame)."""


def admin_employee(verifier: TokenVerifier, role: str, request: web.Request) -> Employee:
    """The signed-in employee, if they hold the admin ``role``; a 401/403 Refusal if not."""
    employee = verifier.verify(request.headers.get("Authorization"))
    if role not in employee.roles:
        raise not_permitted(
            f"Only staff with the '{role}' role may use the admin API.", "admin-only"
        )
    return employee


STATUS_FILTERS: Final = (*STATUSES, "all")


def lock_json(info: LockInfo) -> dict[str, object]:
    return {
        "employee": info.employee,
        "rule": info.rule,
        "at": info.at,
        "until": info.until,
        "because": list(info.because),
    }


def respond(body: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _store_unavailable() -> Refusal:
    return Refusal(
        "The case store cannot be reached right now. Try again in a few seconds.",
        status=503,
        cause="store-unavailable",
        title="Store unavailable",
        headers={"Retry-After": "5"},
    )


def _not_found(case_id: str) -> Refusal:
    return Refusal(
        "There is no such case (or it is older than the store keeps; search the audit archive).",
        status=404,
        cause="case-not-found",
        title="No such case",
    )


def _closed(case: Case) -> Refusal:
    return Refusal(
        f"Case {case.id} was already resolved; reload it to see by whom.",
        status=409,
        cause="case-resolved",
        title="Case already resolved",
        extra={"case": case.as_json()},
    )


class AdminApi:
    """The handlers, bound to one proxy."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    @property
    def role(self) -> str:
        """Read at each call (as the verifier and guard are): a policy reload replaces it."""
        return self.proxy.policy.server.admin_role

    # -- the frame every call goes through ---------------------------------------------------

    def _admin(self, request: web.Request, call: Call) -> Employee:
        employee = self.proxy.verifier.verify(request.headers.get("Authorization"))
        call.actor = employee
        if self.role not in employee.roles:
            raise not_permitted(
                f"Only staff with the '{self.role}' role may use the admin API.", "admin-only"
            )
        return employee

    def audited(self, action: str, handler: AdminHandler) -> Callable[..., Any]:
        async def handle(request: web.Request) -> web.Response:
            call = Call(action)
            status = 500
            try:
                response = await handler(request, call)
                status = response.status
                return response
            except Refusal as refusal:
                status = refusal.status
                raise
            except StoreUnavailable:
                status = 503
                raise _store_unavailable() from None
            finally:
                self._record(request, call, status)

        return handle

    def _record(self, request: web.Request, call: Call, status: int) -> None:
        self.proxy.metrics.admin_requests.labels(call.action, str(status)).inc()
        client, _ = self.proxy.trusted.client_chain(
            request.remote, request.headers.get("X-Forwarded-For")
        )
        self.proxy.audit.write(
            "admin",
            {
                "request_id": request[REQUEST_ID],
                "employee": None if call.actor is None else call.actor.id,
                "client": client,
                "action": call.action,
                "target": call.target,
                "note": call.note,
                "status": status,
                "query": call.query,
            },
        )

    # -- cases -------------------------------------------------------------------------------

    async def list_cases(self, request: web.Request, call: Call) -> web.Response:
        self._admin(request, call)
        values = inputs.query(request, ("status",))
        status = inputs.choice(values, "status", STATUS_FILTERS, "open")
        call.query = {"status": status}
        cases = await self.proxy.cases.cases(status)
        return respond({"cases": [case.as_json() for case in cases]})

    async def _case(self, request: web.Request, call: Call) -> str:
        case_id = inputs.case_id(request.match_info["case"])
        call.target = case_id
        return case_id

    async def show_case(self, request: web.Request, call: Call) -> web.Response:
        self._admin(request, call)
        case_id = await self._case(request, call)
        inputs.query(request, ())
        try:
            case = await self.proxy.cases.case(case_id)
        except CaseNotFound:
            raise _not_found(case_id) from None
        evidence = await case_evidence(self.proxy, case)
        return respond({**case.as_json(), "evidence": evidence})

    async def acknowledge(self, request: web.Request, call: Call) -> web.Response:
        actor = self._admin(request, call)
        case_id = await self._case(request, call)
        inputs.query(request, ())
        given = await inputs.body(request, {"note": Field(str)})
        call.note = inputs.note(given["note"], required=False)
        return await self._review(case_id, actor, call, None, unlock=False)

    async def resolve(self, request: web.Request, call: Call) -> web.Response:
        actor = self._admin(request, call)
        case_id = await self._case(request, call)
        inputs.query(request, ())
        given = await inputs.body(
            request,
            {
                "note": Field(str, required=True),
                "resolution": Field(str, required=True, options=RESOLUTIONS),
                "unlock": Field(bool, nullable=False),
            },
        )
        call.note = inputs.note(given["note"], required=True)
        return await self._review(
            case_id, actor, call, given["resolution"], unlock=bool(given["unlock"])
        )

    async def _review(
        self, case_id: str, actor: Employee, call: Call, resolution: str | None, *, unlock: bool
    ) -> web.Response:
        book = self.proxy.cases
        try:
            if resolution is None:
                case = await book.acknowledge(case_id, actor.id, call.note)
                event = "acknowledged"
            else:
                case = await book.resolve(case_id, actor.id, call.note, resolution)
                event = "resolved"
        except CaseNotFound:
            raise _not_found(case_id) from None
        except CaseClosed as closed:
            raise _closed(closed.case) from None
        self.proxy.metrics.cases.events.labels(event=event).inc()
        self.proxy.audit.write("case", case_record(case, event, by=actor.id, note=call.note))
        if unlock:
            await self.proxy.guard.unlock(case.employee)
        return respond(case.as_json())

    # -- locks -------------------------------------------------------------------------------

    async def list_locks(self, request: web.Request, call: Call) -> web.Response:
        self._admin(request, call)
        inputs.query(request, ())
        return respond({"locks": [lock_json(i) for i in await self.proxy.guard.locked_employees()]})

    def _employee(self, request: web.Request, call: Call) -> str:
        employee = inputs.employee_id(request.match_info["employee"])
        call.target = employee
        return employee

    async def show_lock(self, request: web.Request, call: Call) -> web.Response:
        self._admin(request, call)
        employee = self._employee(request, call)
        inputs.query(request, ())
        info = await self.proxy.guard.lock_status(employee)
        return respond(
            {
                "employee": employee,
                "locked": info is not None,
                "lock": None if info is None else lock_json(info),
            }
        )

    async def lock(self, request: web.Request, call: Call) -> web.Response:
        self._admin(request, call)
        employee = self._employee(request, call)
        inputs.query(request, ())
        given = await inputs.body(request, {"note": Field(str)})
        call.note = inputs.note(given["note"], required=False)
        info = await self.proxy.guard.lock(employee, rule="manual")
        return respond(lock_json(info), status=201)

    async def unlock(self, request: web.Request, call: Call) -> web.Response:
        self._admin(request, call)
        employee = self._employee(request, call)
        inputs.query(request, ())
        given = await inputs.body(request, {"note": Field(str)})
        call.note = inputs.note(given["note"], required=False)
        removed = await self.proxy.guard.unlock(employee)
        return respond({"employee": employee, "unlocked": removed})

    # -- activity and audit search -----------------------------------------------------------

    async def activity(self, request: web.Request, call: Call) -> web.Response:
        self._admin(request, call)
        employee = self._employee(request, call)
        values = inputs.query(request, ("since", "until", "limit"))
        since, until = inputs.instant(values, "since"), inputs.instant(values, "until")
        limit = inputs.limit(values)
        call.query = {"employee": employee, **_period(since, until), "limit": limit}
        lookups = await search_lookups(
            self.proxy, employee=employee, since=since, until=until, limit=limit
        )
        return respond({"lookups": lookups})

    async def search(self, request: web.Request, call: Call) -> web.Response:
        self._admin(request, call)
        values = inputs.query(request, ("number", "employee", "store", "since", "until", "limit"))
        given = [name for name in ("number", "employee", "store") if name in values]
        if len(given) != 1:
            raise inputs.invalid(
                "Search by exactly one of 'number', 'employee' or 'store'.",
                "bad-search",
                parameters=given,
            )
        since, until = inputs.instant(values, "since"), inputs.instant(values, "until")
        limit = inputs.limit(values)
        period = {"since": since, "until": until, "limit": limit}
        shown: dict[str, object] = {**_period(since, until), "limit": limit}
        criterion = given[0]
        if criterion == "number":
            try:
                number = normalise_number(values["number"], self.proxy.policy.numbers)
            except Refusal:
                raise inputs.invalid(
                    "'number' is not a phone number this service knows.",
                    "bad-parameter",
                    parameter="number",
                ) from None
            pseudonyms = subjects(self.proxy, number)
            shown["subjects"] = pseudonyms
            records = await search_lookups(self.proxy, subjects=pseudonyms, **period)
        else:
            value = inputs.employee_id(values[criterion], criterion)
            shown[criterion] = value
            records = await search_lookups(self.proxy, **{criterion: value}, **period)
        call.query = shown
        return respond({"records": records})

    async def openapi(self, request: web.Request, call: Call) -> web.Response:
        self._admin(request, call)
        inputs.query(request, ())
        return respond(DOCUMENT)


def _period(since: Any, until: Any) -> dict[str, object]:
    return {
        "since": None if since is None else since.isoformat(),
        "until": None if until is None else until.isoformat(),
    }


def add_admin_routes(app: web.Application, proxy: Proxy) -> None:
    """Every route of :data:`ROUTES`, audited."""
    api = AdminApi(proxy)
    handlers: dict[str, AdminHandler] = {
        "cases.list": api.list_cases,
        "cases.show": api.show_case,
        "cases.acknowledge": api.acknowledge,
        "cases.resolve": api.resolve,
        "locks.list": api.list_locks,
        "locks.show": api.show_lock,
        "locks.lock": api.lock,
        "locks.unlock": api.unlock,
        "activity.show": api.activity,
        "audit.search": api.search,
        "openapi.show": api.openapi,
    }
    for method, path, action in ROUTES:
        if action not in POLICY_ACTIONS:
            app.router.add_route(method, path, api.audited(action, handlers[action]))
