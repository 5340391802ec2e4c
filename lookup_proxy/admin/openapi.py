"""The OpenAPI 3.1 document served at ``/admin/openapi.json``.

Written by hand, next to the routes, because it is read by people (integrators, the console's
author) as much as by tools; ``tests/test_openapi.py`` keeps it honest: every route of
``routes.ROUTES`` and nothing else is documented, and schemathesis drives the running app with
what the document says and checks every answer against it.
"""

from __future__ import annotations

from typing import Any, Final

from lookup_proxy.admin.inputs import CASE_ID, EMPLOYEE_ID, LIMIT_MAX, NOTE_MAX, NOTE_PATTERN
from lookup_proxy.cases.model import RESOLUTIONS, STATUSES

JSON: Final = "application/json"
PROBLEM: Final = "application/problem+json"

_TIME = {"type": "string", "description": "ISO-8601 UTC time with milliseconds and Z"}
_NULLABLE_STRING = {"type": ["string", "null"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM: {"schema": _ref("Problem")}}}


_REFUSALS: Final = {
    "400": _problem("Invalid request: names the parameter or field that was wrong."),
    "401": _problem("No valid token."),
    "403": _problem("The token's employee lacks the admin role."),
    "503": _problem("The store (Redis) cannot be reached."),
}


def _answer(
    schema: dict[str, Any],
    description: str,
    status: str = "200",
    more: dict[str, Any] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        status: {"description": description, "content": {JSON: {"schema": schema}}},
        **_REFUSALS,
    }
    responses.update(more or {})
    return responses


def _path_parameter(name: str, pattern: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": f"^{pattern}$"},
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _body(schema: dict[str, Any], *, required: bool) -> dict[str, Any]:
    return {"required": required, "content": {JSON: {"schema": schema}}}


_CASE_PARAMETER = _path_parameter(
    "case", CASE_ID.pattern, "Case id: employee id, ~ and a number, e.g. E1001~0."
)
_EMPLOYEE_PARAMETER = _path_parameter("employee", EMPLOYEE_ID.pattern, "Employee id.")
_PERIOD = [
    _query("since", {"type": "string", "format": "date-time"}, "From (ISO-8601 with offset)."),
    _query("until", {"type": "string", "format": "date-time"}, "Until (ISO-8601 with offset)."),
    _query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": LIMIT_MAX, "default": 100},
        "At most this many records, newest first.",
    ),
]
_NOTE = {
    "type": "string",
    "maxLength": NOTE_MAX,
    "pattern": NOTE_PATTERN,
    "description": "Free text (no control characters but tab and newline).",
}
_NOTE_ONLY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"note": {"oneOf": [_NOTE, {"type": "null"}]}},
}
_NOT_FOUND = {"404": _problem("No such case.")}
_CLOSED = {"409": _problem("The case was already resolved.")}

SCHEMAS: Final[dict[str, Any]] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details; extra members name what was wrong.",
        "required": ["type", "title", "status", "detail", "request_id", "instance"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "request_id": {"type": "string"},
            "instance": {"type": "string"},
            "parameter": _NULLABLE_STRING,
            "field": _NULLABLE_STRING,
        },
    },
    "CaseEvent": {
        "type": "object",
        "additionalProperties": False,
        "required": ["at", "event", "by", "note", "rules"],
        "properties": {
            "at": _TIME,
            "event": {"enum": ["opened", "raised", "acknowledged", "resolved"]},
            "by": {**_NULLABLE_STRING, "description": "Reviewer, or null for the guard."},
            "note": _NULLABLE_STRING,
            "rules": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Case": {
        "type": "object",
        "additionalProperties": False,
        "required": [
            "id",
            "employee",
            "store",
            "region",
            "status",
            "opened_at",
            "updated_at",
            "rules",
            "locked",
            "raised",
            "events",
            "resolution",
        ],
        "properties": {
            "id": {"type": "string"},
            "employee": {"type": "string"},
            "store": _NULLABLE_STRING,
            "region": _NULLABLE_STRING,
            "status": {"enum": list(STATUSES)},
            "opened_at": _TIME,
            "updated_at": _TIME,
            "rules": {"type": "array", "items": {"type": "string"}},
            "locked": {"type": "boolean"},
            "raised": {"type": "integer", "minimum": 0},
            "events": {"type": "array", "items": _ref("CaseEvent")},
            "resolution": {"enum": [*RESOLUTIONS, None]},
        },
    },
    "CaseWithEvidence": {
        "allOf": [
            _ref("Case"),
            {
                "type": "object",
                "required": ["evidence"],
                "properties": {"evidence": {"type": "array", "items": _ref("AuditLookup")}},
            },
        ]
    },
    "AuditLookup": {
        "type": "object",
        "description": "A kind 'lookup' audit record merged with its outcome's fields "
        "(outcome null when none was written).",
    },
    "Lock": {
        "type": "object",
        "additionalProperties": False,
        "required": ["employee", "rule", "at", "until", "because"],
        "properties": {
            "employee": {"type": "string"},
            "rule": {"type": "string"},
            "at": {"type": "number", "description": "Epoch seconds."},
            "until": {"type": ["number", "null"], "description": "Null: until unlocked."},
            "because": {"type": "array", "items": {"type": "string"}},
        },
    },
}

PATHS: Final[dict[str, Any]] = {
    "/admin/cases": {
        "get": {
            "operationId": "cases.list",
            "summary": "Review cases, newest first",
            "parameters": [
                _query(
                    "status",
                    {"enum": [*STATUSES, "all"], "default": "open"},
                    "Which cases (default open).",
                )
            ],
            "responses": _answer(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["cases"],
                    "properties": {"cases": {"type": "array", "items": _ref("Case")}},
                },
                "The cases.",
            ),
        }
    },
    "/admin/cases/{case}": {
        "get": {
            "operationId": "cases.show",
            "summary": "One case with its evidence (the employee's lookups around it)",
            "parameters": [_CASE_PARAMETER],
            "responses": _answer(_ref("CaseWithEvidence"), "The case.", more=_NOT_FOUND),
        }
    },
    "/admin/cases/{case}/acknowledge": {
        "post": {
            "operationId": "cases.acknowledge",
            "summary": "Take a case in hand",
            "parameters": [_CASE_PARAMETER],
            "requestBody": _body(_NOTE_ONLY, required=False),
            "responses": _answer(
                _ref("Case"),
                "The case, acknowledged.",
                more=_NOT_FOUND | _CLOSED,
            ),
        }
    },
    "/admin/cases/{case}/resolve": {
        "post": {
            "operationId": "cases.resolve",
            "summary": "Close a case with a resolution (and optionally lift the lock)",
            "parameters": [_CASE_PARAMETER],
            "requestBody": _body(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["note", "resolution"],
                    "properties": {
                        "note": {**_NOTE, "minLength": 1},
                        "resolution": {"enum": list(RESOLUTIONS)},
                        "unlock": {"type": "boolean", "default": False},
                    },
                },
                required=True,
            ),
            "responses": _answer(
                _ref("Case"),
                "The case, resolved.",
                more=_NOT_FOUND | _CLOSED,
            ),
        }
    },
    "/admin/locks": {
        "get": {
            "operationId": "locks.list",
            "summary": "Every current lockout",
            "responses": _answer(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["locks"],
                    "properties": {"locks": {"type": "array", "items": _ref("Lock")}},
                },
                "The lockouts.",
            ),
        }
    },
    "/admin/locks/{employee}": {
        "parameters": [_EMPLOYEE_PARAMETER],
        "get": {
            "operationId": "locks.show",
            "summary": "One employee's lockout",
            "responses": _answer(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["employee", "locked", "lock"],
                    "properties": {
                        "employee": {"type": "string"},
                        "locked": {"type": "boolean"},
                        "lock": {"oneOf": [_ref("Lock"), {"type": "null"}]},
                    },
                },
                "Whether the employee is locked out.",
            ),
        },
        "put": {
            "operationId": "locks.lock",
            "summary": "Lock an employee out by hand (rule 'manual')",
            "requestBody": _body(_NOTE_ONLY, required=False),
            "responses": _answer(_ref("Lock"), "The lockout.", status="201"),
        },
        "delete": {
            "operationId": "locks.unlock",
            "summary": "Lift a lockout on every instance (and the employee's own counters)",
            "requestBody": _body(_NOTE_ONLY, required=False),
            "responses": _answer(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["employee", "unlocked"],
                    "properties": {
                        "employee": {"type": "string"},
                        "unlocked": {"type": "boolean", "description": "False: was not locked."},
                    },
                },
                "Unlocked.",
            ),
        },
    },
    "/admin/employees/{employee}/activity": {
        "get": {
            "operationId": "activity.show",
            "summary": "An employee's recent lookups, newest first",
            "parameters": [_EMPLOYEE_PARAMETER, *_PERIOD],
            "responses": _answer(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["lookups"],
                    "properties": {"lookups": {"type": "array", "items": _ref("AuditLookup")}},
                },
                "The lookups.",
            ),
        }
    },
    "/admin/audit": {
        "get": {
            "operationId": "audit.search",
            "summary": "Search the audit archive by exactly one of number, employee or store",
            "parameters": [
                _query(
                    "number",
                    {"type": "string", "maxLength": 32},
                    "A customer number (pseudonymised before the search; never stored).",
                ),
                _query("employee", {"type": "string", "pattern": f"^{EMPLOYEE_ID.pattern}$"}, ""),
                _query("store", {"type": "string", "pattern": f"^{EMPLOYEE_ID.pattern}$"}, ""),
                *_PERIOD,
            ],
            "responses": _answer(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["records"],
                    "properties": {"records": {"type": "array", "items": _ref("AuditLookup")}},
                },
                "Matching lookups, newest first.",
            ),
        }
    },
    "/admin/policy": {
        "get": {
            "operationId": "policy.show",
            "summary": "The effective policy in force and its hash",
            "responses": _answer(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["hash", "policy"],
                    "properties": {
                        "hash": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                        "policy": {"type": "object"},
                    },
                },
                "The policy, defaults included, durations in seconds.",
            ),
        }
    },
    "/admin/policy/reload": {
        "post": {
            "operationId": "policy.reload",
            "summary": "Re-read the policy file (all or nothing)",
            "requestBody": _body(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"note": {"type": "string", "maxLength": 1000}},
                },
                required=False,
            ),
            "responses": _answer(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["result", "hash"],
                    "properties": {
                        "result": {"enum": ["reloaded", "unchanged"]},
                        "hash": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                    },
                },
                "The policy now in force.",
                more={"422": _problem("The file has errors (listed); the old policy stays.")},
            ),
        }
    },
    "/admin/openapi.json": {
        "get": {
            "operationId": "openapi.show",
            "summary": "This document",
            "responses": _answer({"type": "object"}, "The OpenAPI document."),
        }
    },
}

DOCUMENT: Final[dict[str, Any]] = {
    "openapi": "3.1.0",
    "info": {
        "title": "lookup-proxy admin API",
        "version": "1",
        "description": "For security staff: the review queue (cases), lockouts, an employee's "
        "activity, the audit search and the policy (show, hot reload). Every call needs a "
        "token with the policy's admin role and is itself written to the audit trail.",
    },
    "security": [{"bearer": []}],
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
    },
}
