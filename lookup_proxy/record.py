"""The *record* step: the lookup's outcome in the audit trail, and the request metrics.

The trail answers "who looked up this customer, when, from where, and why?" without holding the
number in clear (a keyed pseudonym and the last four digits). Every lookup request, refused or
not, leaves a ``lookup`` record (its attempt: made before the guard decides, see app.py) and an
``outcome`` record keyed to it; losing one silently is a bug.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lookup_proxy.audit.trail import AuditTrail
from lookup_proxy.errors import Refusal
from lookup_proxy.metrics import ProxyMetrics
from lookup_proxy.numbers import normalise_number
from lookup_proxy.policy import Numbers


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
    """Canonical, once read; only ever written to the trail as its pseudonym."""
    raw_number: str | None = None
    """As the terminal sent it, for a lookup refused before its number was read."""
    decision: str = "refuse"
    rule: str | None = None
    flags: tuple[str, ...] = ()
    locked: tuple[str, ...] = ()
    cause: str | None = None
    status: int = 0
    upstream_status: int | None = None
    outcome: str = "refused"
    fields: str | None = None
    """The field allow-list applied to the answer (data minimisation), if any."""
    attempted: bool = False
    """The ``lookup`` record is durable (with the decision, or in the archive file)."""

    def attempt(self) -> dict[str, Any]:
        """The ``lookup`` record's fields (the number is added as its pseudonym)."""
        return {
            "request_id": self.request_id,
            "employee": self.employee,
            "store": self.store,
            "region": self.region,
            "client": self.client,
            "route": self.route,
            "reason": self.reason,
            "reference": self.reference,
        }

    def outcome_fields(self, duration: float) -> dict[str, Any]:
        """The ``outcome`` record's fields, keyed to the attempt by ``of``."""
        return {
            "of": self.request_id,
            "decision": self.decision,
            "rule": self.rule,
            "flags": list(self.flags),
            "locked": list(self.locked),
            "cause": self.cause,
            "status": self.status,
            "upstream_status": self.upstream_status,
            "outcome": self.outcome,
            "latency_ms": round(duration * 1000, 3),
            "fields": self.fields,
        }


class Recorder:
    """Writes the outcome record (and a late attempt record) and the request metrics."""

    def __init__(self, metrics: ProxyMetrics, trail: AuditTrail) -> None:
        self.metrics = metrics
        self.trail = trail

    def record(self, entry: LookupRecord, duration: float, numbers: Numbers) -> None:
        """``numbers``: the lookup's policy's, to read a number it was refused before reading."""
        metrics = self.metrics
        metrics.counted(entry.route, entry.outcome, entry.reason or "none").inc()
        metrics.timed(entry.route).observe(duration)
        if entry.cause is not None:
            metrics.refused(entry.cause, str(entry.status)).inc()
        trail = self.trail
        if not entry.attempted:
            # Refused before its record was made durable (a bad token, a bad number, the store
            # out): the attempt is recorded with what is known, then its outcome.
            number = entry.number
            if number is None and entry.raw_number is not None:
                try:  # who asked for which customer matters most when they were turned away
                    number = normalise_number(entry.raw_number, numbers)
                except Refusal:
                    number = None  # not a number: nobody's record was at stake
            trail.deliver("lookup", trail.lookup(entry.attempt(), number))
            entry.attempted = True
        trail.write("outcome", entry.outcome_fields(duration))
