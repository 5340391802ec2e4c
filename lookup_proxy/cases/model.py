"""Cases as a fold over an employee's case events.

A case is never stored as a document that writers read, change and write back: two instances
doing that at once lose one of the changes. What is stored is each transition, appended once
(see :mod:`lookup_proxy.cases.book`); a case is what folding an employee's transitions in
store order gives. Every instance folds the same events in the same order, so every instance
sees the same cases, and no transition can overwrite another.

The fold's rules: a guard signal with no unresolved case opens one, otherwise it raises the
open one (rules merged, ``locked`` set by a lock). A reviewer's event names the case it was
meant for and takes effect only if that case is still unresolved when the event is reached: of
two reviewers resolving at once, the first in store order resolves, the second is told the case
was already resolved.

A case's id is ``<employee>~<n>``: ``n`` is the id of the resolution that closed the employee's
previous case (0 for their first). It depends only on reviewers' events, never on which of
several concurrent signals came first, so concurrent signals can never give one case two ids.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

STATUSES: Final = ("open", "acknowledged", "resolved")
RESOLUTIONS: Final = ("false-positive", "abuse-confirmed", "other")

SIGNAL: Final = "signal"
"""The stored kind of a guard event; the fold calls it ``opened`` or ``raised``."""


def iso(at: float) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``, as audit records write time."""
    whole, millis = divmod(int(at * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


@dataclass(frozen=True)
class Signal:
    """What one or more guard decisions say about an employee: the rules that flagged or
    locked, whether a lock happened, and how many decisions it stands for (merged while
    waiting for the store)."""

    employee: str
    rules: tuple[str, ...]
    locked: bool
    store: str | None = None
    region: str | None = None
    count: int = 1

    def merge(self, newer: Signal) -> Signal:
        rules = self.rules + tuple(r for r in newer.rules if r not in self.rules)
        return Signal(
            self.employee,
            rules,
            self.locked or newer.locked,
            newer.store or self.store,
            newer.region or self.region,
            self.count + newer.count,
        )


@dataclass(frozen=True)
class CaseEvent:
    """One transition as the admin API shows it."""

    at: float
    event: str
    by: str | None
    note: str | None
    rules: tuple[str, ...]

    def as_json(self) -> dict[str, object]:
        return {
            "at": iso(self.at),
            "event": self.event,
            "by": self.by,
            "note": self.note,
            "rules": list(self.rules),
        }


@dataclass
class Case:
    """One employee's review case, as folded from their events."""

    id: str
    employee: str
    store: str | None
    region: str | None
    opened_at: float
    updated_at: float
    status: str = "open"
    rules: list[str] = field(default_factory=list)
    locked: bool = False
    raised: int = 0
    events: list[CaseEvent] = field(default_factory=list)
    resolution: str | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "employee": self.employee,
            "store": self.store,
            "region": self.region,
            "status": self.status,
            "opened_at": iso(self.opened_at),
            "updated_at": iso(self.updated_at),
            "rules": list(self.rules),
            "locked": self.locked,
            "raised": self.raised,
            "events": [event.as_json() for event in self.events],
            "resolution": self.resolution,
        }


@dataclass
class Folded:
    """An employee's cases, oldest first, and which stored events took effect (by id)."""

    cases: list[Case]
    effective: set[int]
    placed: dict[int, tuple[str, str]]
    """Event id → (case id, event name) for every event that took effect."""
    newest: float = 0.0
    """The latest event time: the next event is written after it (see ``book``)."""

    def open_case(self) -> Case | None:
        last = self.cases[-1] if self.cases else None
        return last if last is not None and last.status != "resolved" else None

    def find(self, case_id: str) -> Case | None:
        for case in self.cases:
            if case.id == case_id:
                return case
        return None


def case_id(employee: str, after: int) -> str:
    """The id of the employee's case that follows resolution ``after`` (0: their first)."""
    return f"{employee}~{after}"


def employee_of(case_id: str) -> str:
    return case_id.rpartition("~")[0]


def fold(employee: str, events: Iterable[Mapping[str, Any]], repeats: Mapping[str, int]) -> Folded:
    """The employee's cases from their events in store order; ``repeats`` are the raises
    counted without an event (a signal that brought nothing new), per case id."""
    cases: list[Case] = []
    effective: set[int] = set()
    placed: dict[int, tuple[str, str]] = {}
    current: Case | None = None
    after = 0
    newest = 0.0
    for event in events:
        event_id = int(event["i"])
        kind = event["k"]
        at = float(event["t"])
        newest = max(newest, at)
        if kind == SIGNAL:
            rules = tuple(str(rule) for rule in event.get("rules", ()))
            count = int(event.get("n", 1))
            if current is None:
                current = Case(
                    case_id(employee, after),
                    employee,
                    event.get("store"),
                    event.get("region"),
                    at,
                    at,
                    raised=count - 1,
                )
                cases.append(current)
                name = "opened"
            else:
                current.raised += count
                name = "raised"
            for rule in rules:
                if rule not in current.rules:
                    current.rules.append(rule)
            current.locked = current.locked or bool(event.get("locked"))
            current.updated_at = at
            current.events.append(CaseEvent(at, name, None, None, rules))
            placed[event_id] = (current.id, name)
            effective.add(event_id)
            continue
        if current is None or current.id != event.get("case"):
            continue  # meant for a case already resolved: the first reviewer's event won
        if kind == "acknowledged" and current.status == "open":
            current.status = "acknowledged"
        elif kind == "resolved":
            current.status = "resolved"
            current.resolution = event.get("resolution")
        elif kind != "acknowledged":
            continue
        current.updated_at = at
        current.events.append(CaseEvent(at, kind, event.get("by"), event.get("note"), ()))
        placed[event_id] = (current.id, kind)
        effective.add(event_id)
        if current.status == "resolved":
            current, after = None, event_id
    for case in cases:
        case.raised += repeats.get(case.id, 0)
    return Folded(cases, effective, placed, newest)
