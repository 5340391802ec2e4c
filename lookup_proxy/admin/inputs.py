"""Strict admin input: every query parameter, path segment and JSON field is checked, and
whatever is wrong is named in a 400 problem body (``parameter`` or ``field``).

Security staff's tools (the console, scripts) are the only clients; a typo that is silently
ignored (``?stauts=resolved``) shows the wrong cases to someone deciding about a colleague, so
nothing unknown is ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from aiohttp import web

from lookup_proxy.errors import Refusal

EMPLOYEE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
"""What an employee id in the admin API may be. The id becomes part of store keys and key
patterns (listing and unlocking scan for them), so glob characters (``*``, ``?``, ``[``),
hash-tag braces, separators and path tricks must never reach the store."""

CASE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}~(0|[1-9][0-9]{0,17})")
"""``<employee>~<n>`` (see :mod:`lookup_proxy.cases.model`)."""
STORE_ID: Final = EMPLOYEE_ID

NOTE_MAX: Final = 2000
"""Characters in a reviewer's note."""

NOTE_PATTERN: Final = "^[^\\u0000-\\u0008\\u000b-\\u001f\\u007f]*$"
"""No control characters but tab and newline: notes are shown in consoles and terminals."""

_NOTE: Final = re.compile(NOTE_PATTERN)

LIMIT_MAX: Final = 1000
LIMIT_DEFAULT: Final = 100

TITLE: Final = "Admin request invalid"


def invalid(detail: str, cause: str, **extra: object) -> Refusal:
    """400 for the admin API, naming the parameter or field in ``extra``."""
    return Refusal(detail, status=400, cause=cause, title=TITLE, extra=extra)


def employee_id(value: str, name: str = "employee") -> str:
    if EMPLOYEE_ID.fullmatch(value) is None:
        raise invalid(
            "That is not an employee id: 1 to 128 letters, digits and . _ @ + - "
            "(starting with a letter or digit).",
            "bad-employee-id",
            parameter=name,
        )
    return value


def case_id(value: str) -> str:
    if CASE_ID.fullmatch(value) is None:
        raise invalid(
            "That is not a case id: the employee id, ~ and a number (E1001~0).", "bad-case-id"
        )
    return value


def query(request: web.Request, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query parameters, each at most once and each one of ``allowed``."""
    values: dict[str, str] = {}
    for name, value in request.query.items():
        if name not in allowed:
            known = ", ".join(allowed) if allowed else "none"
            raise invalid(
                f"Unknown query parameter '{name[:64]}' (this address takes: {known}).",
                "unknown-parameter",
                parameter=name[:64],
            )
        if name in values:
            raise invalid(f"Give '{name}' once.", "bad-parameter", parameter=name)
        values[name] = value
    return values


def choice(values: dict[str, str], name: str, options: tuple[str, ...], default: str) -> str:
    value = values.get(name, default)
    if value not in options:
        raise invalid(
            f"'{name}' must be one of {', '.join(options)}.", "bad-parameter", parameter=name
        )
    return value


def instant(values: dict[str, str], name: str) -> datetime | None:
    """An ISO-8601 time with a UTC offset (``2026-12-03T07:40:01Z``), or None when absent."""
    raw = values.get(name)
    if raw is None:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise invalid(
            f"'{name}' must be an ISO-8601 time with a UTC offset, e.g. 2026-12-03T07:40:01Z.",
            "bad-parameter",
            parameter=name,
        )
    return parsed.astimezone(UTC)


def limit(values: dict[str, str]) -> int:
    raw = values.get("limit")
    if raw is None:
        return LIMIT_DEFAULT
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= LIMIT_MAX:
        raise invalid(
            f"'limit' must be a whole number from 1 to {LIMIT_MAX}.",
            "bad-parameter",
            parameter="limit",
        )
    return int(raw)


@dataclass(frozen=True)
class Field:
    """One JSON body field: its type, whether it must be there, and (strings) its choices."""

    kind: type
    required: bool = False
    options: tuple[str, ...] = ()
    nullable: bool = True


async def body(request: web.Request, fields: dict[str, Field]) -> dict[str, Any]:
    """The JSON object body, checked field by field; an absent body is ``{}``."""
    raw = await request.read()
    if not raw:
        document: Any = {}
    else:
        content_type = request.content_type
        if content_type != "application/json":
            raise invalid(
                "Send the body as JSON (Content-Type: application/json).",
                "bad-json",
            )
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise invalid("The body is not valid JSON.", "bad-json") from None
    if not isinstance(document, dict):
        raise invalid("The body must be a JSON object.", "bad-json")
    for name in document:
        if name not in fields:
            known = ", ".join(fields) if fields else "none"
            raise invalid(
                f"Unknown field '{str(name)[:64]}' (this address takes: {known}).",
                "unknown-field",
                field=str(name)[:64],
            )
    checked: dict[str, Any] = {}
    for name, spec in fields.items():
        value = document.get(name)
        if value is None:
            if spec.required or (name in document and not spec.nullable):
                raise invalid(f"'{name}' is required.", "missing-field", field=name)
            checked[name] = None
            continue
        if spec.kind is bool and not isinstance(value, bool):
            raise invalid(f"'{name}' must be true or false.", "bad-field", field=name)
        if spec.kind is str:
            if not isinstance(value, str):
                raise invalid(f"'{name}' must be a string.", "bad-field", field=name)
            if spec.options and value not in spec.options:
                raise invalid(
                    f"'{name}' must be one of {', '.join(spec.options)}.", "bad-field", field=name
                )
        checked[name] = value
    return checked


def note(value: object, *, required: bool) -> str | None:
    """A reviewer's note: at most :data:`NOTE_MAX` characters, no control characters."""
    if value is None:
        if required:
            raise invalid("'note' is required: say what you found.", "missing-field", field="note")
        return None
    assert isinstance(value, str)
    if len(value) > NOTE_MAX:
        raise invalid(
            f"'note' is longer than {NOTE_MAX} characters.", "note-too-long", field="note"
        )
    if _NOTE.fullmatch(value) is None:
        raise invalid(
            "'note' may not hold control characters (tab and newline are fine).",
            "bad-field",
            field="note",
        )
    if required and not value.strip():
        raise invalid("'note' is required: say what you found.", "missing-field", field="note")
    return value
