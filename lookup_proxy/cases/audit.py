"""Where case and admin transitions are also written: the audit trail.

The trail itself (``lookup_proxy.audit.trail.AuditTrail``, chained and archived) is the
proxy's ``audit``; the book and the admin API only need its ``write``. :class:`LoggedAudit`
stands in where no trail is wired yet: one JSON log line per record on the
``lookup_proxy.audit`` logger, so nothing is silently dropped.
"""

from __future__ import annotations

import logging
from typing import Protocol

from lookup_proxy.cases.model import Case

log = logging.getLogger("lookup_proxy.audit")


class AuditWriter(Protocol):
    """``AuditTrail.write``: queue one record of ``kind``; never blocks, never raises."""

    def write(self, kind: str, fields: dict[str, object]) -> None: ...


class LoggedAudit:
    """Records as log lines (``extra={"audit": record}``), for want of a trail."""

    def write(self, kind: str, fields: dict[str, object]) -> None:
        log.info(kind, extra={"audit": {"v": 1, "kind": kind, **fields}})


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
