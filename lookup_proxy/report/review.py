"""Computing the monthly review from the month's audit records.

Everything here is counting and robust statistics; nothing reads files or writes HTML. Peers
are the employees of the same store (or, in a store with fewer than ``MIN_PEERS`` reviewed
employees, the same region; failing that, everyone reviewed). An employee stands out on a
measure when the modified z-score ``(x - median) / (1.4826 * MAD)`` of their value among their
peers is at least ``OUTLIER_Z`` (Iglewicz and Hoaglin's 3.5); when the MAD is zero (more than
half the peers agree exactly) the mean absolute deviation times 1.2533 stands in for it. The
spread is never taken below ``MIN_SPREAD`` (5 % of the median for counts, 2 points for the
not-found ratio), so peers who happen to agree closely do not turn a small difference into a
finding. Only the high side counts: doing less than one's peers is not a finding.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from lookup_proxy.policy import Hours
from lookup_proxy.report.archive import Month, Reading

OUTLIER_Z: Final = 3.5
MIN_PEERS: Final = 5
MIN_OUTCOMES: Final = 10
"""Found + not-found outcomes below which a not-found ratio is too noisy to compare."""
AFTER_HOURS_LISTED: Final = 500
"""After-hours lookups listed one by one (all are counted)."""

Measure = Literal["lookups", "not_found_ratio", "distinct"]
RELATIVE_MIN_SPREAD: Final = 0.05
RATIO_MIN_SPREAD: Final = 0.02
MEASURES: Final[tuple[Measure, ...]] = ("lookups", "not_found_ratio", "distinct")
MEASURE_NAMES: Final[Mapping[Measure, str]] = {
    "lookups": "lookups",
    "not_found_ratio": "not-found ratio",
    "distinct": "distinct numbers",
}


@dataclass(frozen=True)
class Comparison:
    """One employee's value on one measure against their peers."""

    value: float | None
    median: float | None
    mad: float | None
    z: float | None
    outlier: bool


@dataclass
class EmployeeMonth:
    """One employee's month, and how it compares with their peers."""

    employee: str
    store: str | None
    region: str | None
    lookups: int = 0
    allowed: int = 0
    refused: int = 0
    found: int = 0
    not_found: int = 0
    after_hours: int = 0
    locks: int = 0
    cases: int = 0
    subjects: set[str] = field(default_factory=set, repr=False)
    peer_group: str = ""
    peers: int = 0
    compared: dict[Measure, Comparison] = field(default_factory=dict)

    @property
    def distinct(self) -> int:
        return len(self.subjects)

    @property
    def not_found_ratio(self) -> float | None:
        outcomes = self.found + self.not_found
        return self.not_found / outcomes if outcomes >= MIN_OUTCOMES else None

    def value(self, measure: Measure) -> float | None:
        if measure == "lookups":
            return float(self.lookups)
        if measure == "distinct":
            return float(self.distinct)
        return self.not_found_ratio

    @property
    def findings(self) -> list[Measure]:
        return [m for m in MEASURES if m in self.compared and self.compared[m].outlier]

    @property
    def outlier(self) -> bool:
        return bool(self.findings)

    @property
    def highest_z(self) -> float:
        return max((c.z for c in self.compared.values() if c.z is not None), default=0.0)


@dataclass(frozen=True)
class LockEvent:
    at: str
    employee: str
    store: str | None
    action: Literal["locked", "unlocked"]
    by: str
    """The rule that locked (the guard), or the reviewer's id (an admin action)."""
    note: str | None


@dataclass
class CaseMonth:
    """A case with events in the month (events before the month are not in the files read)."""

    id: str
    employee: str | None
    store: str | None = None
    rules: list[str] = field(default_factory=list)
    opened_at: str | None = None
    status: str = "open"
    raised: int = 0
    resolved_at: str | None = None
    resolved_by: str | None = None
    resolution: str | None = None
    note: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class AfterHoursLookup:
    at: str
    """Local time of the lookup, as the reviewer reads it."""
    employee: str | None
    store: str | None
    reason: str | None
    last4: str | None


@dataclass
class Review:
    """The month, computed: what the report shows and the CSV lists."""

    month: Month
    scope: str
    hours: Hours
    reading: Reading
    generated_at: datetime
    employees: list[EmployeeMonth] = field(default_factory=list)
    attempts: int = 0
    unattributed: int = 0
    """Attempts refused before the employee was known (bad token and the like)."""
    allowed: int = 0
    refused: int = 0
    found: int = 0
    not_found: int = 0
    upstream_failures: int = 0
    no_outcome: int = 0
    refusals: Counter[str] = field(default_factory=Counter)
    locks: list[LockEvent] = field(default_factory=list)
    cases: list[CaseMonth] = field(default_factory=list)
    after_hours: list[AfterHoursLookup] = field(default_factory=list)
    after_hours_total: int = 0
    by_hour: list[tuple[int, int]] = field(default_factory=lambda: [(0, 0)] * 24)
    """Per local hour of the day: (lookups in opening hours, lookups after hours)."""
    policies: Counter[str] = field(default_factory=Counter)

    @property
    def outliers(self) -> list[EmployeeMonth]:
        return [e for e in self.employees if e.outlier]

    def local(self, at: str) -> str:
        return _local(at, self.month.utc_offset)

    @property
    def offset_label(self) -> str:
        return _offset_label(self.month.utc_offset)


def _offset_label(offset: int) -> str:
    sign = "-" if offset < 0 else "+"
    return f"UTC{sign}{abs(offset) // 3600:02d}:{abs(offset) % 3600 // 60:02d}"


def _when(at: str) -> datetime:
    return datetime.fromisoformat(at.replace("Z", "+00:00"))


def _local(at: str, offset: int) -> str:
    try:
        moment = _when(at) + timedelta(seconds=offset)
    except ValueError:
        return at
    return moment.strftime("%Y-%m-%d %H:%M")


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


class _Scope:
    def __init__(self, store: str | None, region: str | None) -> None:
        self.store, self.region = store, region

    @property
    def label(self) -> str:
        if self.store is not None:
            return f"store {self.store}"
        if self.region is not None:
            return f"region {self.region}"
        return "all stores"

    @property
    def everything(self) -> bool:
        return self.store is None and self.region is None

    def admits(self, store: object, region: object) -> bool:
        if self.store is not None:
            return store == self.store
        if self.region is not None:
            return region == self.region
        return True


class _Attempt:
    """An attempt waiting for its outcome record."""

    __slots__ = ("person",)

    def __init__(self, person: EmployeeMonth | None) -> None:
        self.person = person


def compute_review(
    records: Iterable[dict[str, Any]],
    month: Month,
    hours: Hours,
    reading: Reading,
    *,
    store: str | None = None,
    region: str | None = None,
    now: datetime | None = None,
) -> Review:
    """The review of ``month`` (optionally one store or region) from the archive's records."""
    scope = _Scope(store, region)
    review = Review(month, scope.label, hours, reading, now or datetime.now(UTC))
    low, high = month.bounds()
    people: dict[str, EmployeeMonth] = {}
    pending: dict[str, _Attempt] = {}
    early: dict[str, dict[str, Any]] = {}  # outcomes read before their attempt
    admin_locks: list[dict[str, Any]] = []
    cases: dict[str, CaseMonth] = {}
    by_hour = [[0, 0] for _ in range(24)]
    store_hours = {s: (h.open, h.close) for s, h in hours.stores.items()}

    def outcome(attempt: _Attempt, record: dict[str, Any]) -> None:
        person = attempt.person
        refused = record.get("decision") == "refuse" or record.get("outcome") == "refused"
        if refused:
            review.refused += 1
            review.refusals[_text(record.get("cause")) or "unknown"] += 1
        else:
            review.allowed += 1
        result = record.get("outcome")
        if result == "found":
            review.found += 1
        elif result == "not_found":
            review.not_found += 1
        elif result in ("upstream_status", "upstream_error"):
            review.upstream_failures += 1
        if person is not None:
            person.refused += refused
            person.allowed += not refused
            person.found += result == "found"
            person.not_found += result == "not_found"
        locked = record.get("locked")
        if isinstance(locked, list) and low <= record["at"] < high:
            rule = _text(record.get("rule")) or "guard"
            for employee in locked:
                if isinstance(employee, str):
                    review.locks.append(
                        LockEvent(
                            record["at"],
                            employee,
                            person.store if person is not None else None,
                            "locked",
                            f"rule {rule}",
                            None,
                        )
                    )

    for record in records:
        kind, at = record["kind"], record["at"]
        if kind == "outcome":
            of = record.get("of")
            if not isinstance(of, str):
                continue
            attempt = pending.pop(of, None)
            if attempt is None:
                early[of] = record
            else:
                outcome(attempt, record)
            continue
        if not low <= at < high:
            continue
        policy = _text(record.get("policy"))
        if kind == "lookup":
            if not scope.admits(record.get("store"), record.get("region")):
                continue
            if policy is not None:
                review.policies[policy] += 1
            review.attempts += 1
            employee = _text(record.get("employee"))
            person: EmployeeMonth | None = None
            if employee is None:
                review.unattributed += 1
            else:
                person = people.get(employee)
                if person is None:
                    person = people[employee] = EmployeeMonth(
                        employee, _text(record.get("store")), _text(record.get("region"))
                    )
                else:  # an employee who moved is reviewed with their latest store
                    person.store = _text(record.get("store")) or person.store
                    person.region = _text(record.get("region")) or person.region
                person.lookups += 1
                subject = _text(record.get("subject"))
                if subject is not None:
                    person.subjects.add(subject[:24])  # 96 bits: no collisions, less memory
            shop = _text(record.get("store"))
            opens, closes = store_hours.get(shop or "", (hours.open, hours.close))
            second = int((_when(at).timestamp() + hours.utc_offset) % 86_400)
            after = not opens <= second < closes
            by_hour[second // 3600][after] += 1
            if after:
                review.after_hours_total += 1
                if person is not None:
                    person.after_hours += 1
                if len(review.after_hours) < AFTER_HOURS_LISTED:
                    review.after_hours.append(
                        AfterHoursLookup(
                            review.local(at),
                            employee,
                            shop,
                            _text(record.get("reason")),
                            _text(record.get("last4")),
                        )
                    )
            request_id = _text(record.get("request_id"))
            attempt = _Attempt(person)
            if request_id is not None:
                found = early.pop(request_id, None)
                if found is None:
                    pending[request_id] = attempt
                else:
                    outcome(attempt, found)
        elif kind == "admin":
            action = record.get("action")
            status = record.get("status")
            succeeded = isinstance(status, int) and (status == 0 or 200 <= status < 300)
            if action in ("locks.lock", "locks.unlock") and succeeded:
                admin_locks.append(record)
        elif kind == "case":
            case_id = _text(record.get("case"))
            if case_id is None:
                continue
            case = cases.get(case_id)
            if case is None:
                case = cases[case_id] = CaseMonth(case_id, _text(record.get("employee")))
            _case_event(case, record)

    review.no_outcome = len(pending)
    review.by_hour = [(inside, after) for inside, after in by_hour]
    stores = {p.employee: p.store for p in people.values()}

    def in_scope(employee: str | None) -> bool:
        return scope.everything or (employee is not None and employee in people)

    for record in admin_locks:
        target = _text(record.get("target"))
        if target is None or not in_scope(target):
            continue
        review.locks.append(
            LockEvent(
                record["at"],
                target,
                stores.get(target),
                "locked" if record["action"] == "locks.lock" else "unlocked",
                _text(record.get("employee")) or "unknown reviewer",
                _text(record.get("note")),
            )
        )
    review.locks = [lock for lock in review.locks if in_scope(lock.employee)]
    review.locks.sort(key=lambda lock: lock.at)
    for lock in review.locks:
        if lock.action == "locked" and lock.employee in people:
            people[lock.employee].locks += 1
    review.cases = sorted(
        (c for c in cases.values() if in_scope(c.employee)),
        key=lambda c: (c.opened_at or c.events[0]["at"], c.id),
    )
    for case in review.cases:
        if case.employee is not None:
            case.store = stores.get(case.employee)
            if case.employee in people:
                people[case.employee].cases += 1
    _compare(people.values())
    review.employees = sorted(
        people.values(), key=lambda p: (not p.outlier, -p.highest_z, p.employee)
    )
    return review


def _case_event(case: CaseMonth, record: dict[str, Any]) -> None:
    event = _text(record.get("event")) or "unknown"
    rules = record.get("rules")
    if isinstance(rules, list):
        case.rules.extend(r for r in rules if isinstance(r, str) and r not in case.rules)
    if case.employee is None:
        case.employee = _text(record.get("employee"))
    case.events.append(
        {
            "at": record["at"],
            "event": event,
            "by": _text(record.get("by")),
            "note": _text(record.get("note")),
        }
    )
    if event == "opened":
        case.opened_at = record["at"]
    elif event == "raised":
        case.raised += 1
    elif event == "acknowledged" and case.status == "open":
        case.status = "acknowledged"
    elif event == "resolved":
        case.status = "resolved"
        case.resolved_at = record["at"]
        case.resolved_by = _text(record.get("by"))
        case.resolution = _text(record.get("resolution"))
        case.note = _text(record.get("note"))


def _peer_groups(people: Iterable[EmployeeMonth]) -> dict[str, list[EmployeeMonth]]:
    everyone = list(people)
    by_store: dict[str | None, list[EmployeeMonth]] = {}
    by_region: dict[str | None, list[EmployeeMonth]] = {}
    for person in everyone:
        by_store.setdefault(person.store, []).append(person)
        by_region.setdefault(person.region, []).append(person)
    groups: dict[str, list[EmployeeMonth]] = {}
    for person in everyone:
        if person.store is not None and len(by_store[person.store]) >= MIN_PEERS:
            name = f"store {person.store}"
            members = by_store[person.store]
        elif person.region is not None and len(by_region[person.region]) >= MIN_PEERS:
            name = f"region {person.region}"
            members = by_region[person.region]
        else:
            name, members = "everyone reviewed", everyone
        person.peer_group = name
        groups[name] = members
    return groups


def _compare(people: Iterable[EmployeeMonth]) -> None:
    groups = _peer_groups(people)
    for members in groups.values():
        for measure in MEASURES:
            values = [v for v in (p.value(measure) for p in members) if v is not None]
            center, spread = _center_and_spread(values)
            for person in members:
                person.peers = len(members)
                value = person.value(measure)
                if value is None or center is None:
                    person.compared[measure] = Comparison(value, center, spread, None, False)
                    continue
                floor = (
                    RATIO_MIN_SPREAD
                    if measure == "not_found_ratio"
                    else RELATIVE_MIN_SPREAD * center
                )
                z = _z(value, center, spread, values, floor)
                outlier = z is not None and z >= OUTLIER_Z and len(values) >= 3
                person.compared[measure] = Comparison(value, center, spread, z, outlier)


def _center_and_spread(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    center = statistics.median(values)
    return center, statistics.median(abs(v - center) for v in values)


def _z(
    value: float, center: float, mad: float | None, values: list[float], floor: float
) -> float | None:
    mean_deviation = sum(abs(v - center) for v in values) / len(values)
    scale = max(1.4826 * mad if mad else 1.2533 * mean_deviation, floor)
    if scale == 0:  # everyone, this employee included, has the same value
        return None
    return (value - center) / scale
