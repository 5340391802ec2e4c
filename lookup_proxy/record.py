"""The *record* step: one audit line per lookup, and the request metrics.

The audit line answers "who looked up this customer, and why?" without holding the number in
clear (masked until the audit pseudonyms arrive). It is written for every lookup request, refused
or not; losing one silently is a bug.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lookup_proxy.metrics import ProxyMetrics

audit_log = logging.getLogger("lookup_proxy.audit")


@dataclass(slots=True)
class LookupRecord:
    """Everything known about one lookup request by the time it is answered."""

    request_id: str
    route: str
    client: str
    started: float
    employee: str | None = None
    store: str | None = None
    region: str | None = None
    reason: str | None = None
    reference: str | None = None
    number: str | None = None
    """Masked."""
    decision: str = "refuse"
    rule: str | None = None
    flags: tuple[str, ...] = ()
    locked: tuple[str, ...] = ()
    cause: str | None = None
    status: int = 0
    upstream_status: int | None = None
    outcome: str = "refused"
    fields: str | None = None
    """The field allow-list the answer was trimmed to (its reason code), or None: untouched."""


class Recorder:
    """Writes the audit line and the request metrics for each finished lookup."""

    def __init__(self, metrics: ProxyMetrics, audit_enabled: bool) -> None:
        self.metrics = metrics
        self.audit_enabled = audit_enabled

    def record(self, entry: LookupRecord, duration: float) -> None:
        metrics = self.metrics
        metrics.requests.labels(entry.route, entry.outcome, entry.reason or "none").inc()
        metrics.request_latency.labels(entry.route).observe(duration)
        if entry.cause is not None:
            metrics.refusals.labels(entry.cause, str(entry.status)).inc()
        if not self.audit_enabled:
            return
        audit_log.info(
            "lookup",
            extra={
                "request_id": entry.request_id,
                "route": entry.route,
                "client": entry.client,
                "employee": entry.employee,
                "store": entry.store,
                "region": entry.region,
                "reason": entry.reason,
                "reference": entry.reference,
                "number": entry.number,
                "decision": entry.decision,
                "rule": entry.rule,
                "flags": list(entry.flags),
                "locked": list(entry.locked),
                "cause": entry.cause,
                "status": entry.status,
                "upstream_status": entry.upstream_status,
                "outcome": entry.outcome,
                "fields": entry.fields,
                "duration_ms": round(duration * 1000, 3),
            },
        )
