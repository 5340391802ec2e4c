"""Case transitions as audit records.

The trail itself (``lookup_proxy.audit.trail.AuditTrail``, chained and archived) is the
proxy's ``audit``; the raiser only needs its ``write`` (:class:`AuditWriter`), so it can be
tested with any writer.
"""

from __future__ import annotations

from typing import Protocol

from lookup_proxy.cases.model import Case


class AuditWriter(Protocol):
    """``AuditTrail.write``: queue one record of ``kind``; never blocks, never raises."""

    def write(self, kind: str, fields: dict[str, object]) -> None: ...


def case_record(
    case: Case,
    event: str,
    *,
    rules: tuple[str, ...] | list[str] = (),
    by: str | None = None,
    note: str | None = None,
) -> dict[str, object]:
    """The fields of a ``kind: "case"`` record for one transition of ``case``."""
    return {
        "case": case.id,
        "event": event,
        "employee": case.employee,
        "rules": list(rules),
        "by": by,
        "note": note,
        "resolution": case.resolution if event == "resolved" else None,
    }
