"""The honest month an adversary hides in: past lookups (``--events``) or a simulated chain.

An insider's probes are judged among real work: their own honest lookups, their store's and
region's peers' (store-, region- and chain-wide rules and peer comparisons see those), on the
days and in the hours they work. So the baseline keeps every honest row as it was (its own
``found`` included), and tells each employee's working days, the span of each working day and
the customers they have already met (whose numbers a typo farmer retypes).
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from lookup_proxy.errors import Refusal
from lookup_proxy.numbers import normalise_number
from lookup_proxy.policy import Policy
from lookup_proxy.replay import (
    ACCOUNT_EVENT_COLUMNS,
    EVENT_COLUMNS,
    BadRow,
    ReplayFailed,
    load_accounts,
    load_roster,
    parse_timestamp,
)
from lookup_proxy.simulation.contracts import CORPORATE_ROLE, KST
from lookup_proxy.simulation.month import event_row, month_days, roles_of
from lookup_proxy.simulation.roster import (
    CorporateAccount,
    SimConfig,
    build_roster,
    business_of,
    corporate_accounts,
)
from lookup_proxy.simulation.roster import spread_out as spread_over
from lookup_proxy.simulation.world import World

DAY = 86_400


@dataclass(frozen=True)
class Staff:
    """One employee of the baseline: where they work and what HR says they may do."""

    employee: str
    store: str
    region: str
    roles: frozenset[str]


@dataclass
class Workday:
    """One employee's day: when their first and last honest lookups fell (epoch seconds)."""

    first: float
    last: float


@dataclass
class Baseline:
    """Honest rows in time order, with what an insider hiding among them would know.

    ``rows`` are (epoch seconds, the nine EVENTS.csv fields as text, ``account`` last: empty
    where the file had no such column); ``start`` is the first day of the period (Korean
    calendar), ``days`` its length.
    """

    rows: list[tuple[float, tuple[str, ...]]]
    staff: dict[str, Staff]
    start: date
    days: int
    workdays: dict[str, dict[int, Workday]] = field(default_factory=dict)
    met: dict[str, list[tuple[float, str, str]]] = field(default_factory=dict)
    """Per employee: (when, canonical number, reason) of each customer found by their honest
    lookups."""
    met_rows: dict[str, list[int]] = field(default_factory=dict)
    """Per employee, the row (index in ``rows``) of each entry of ``met``: a trial that leaves
    some honest visits out (a quiet insider) knows whom the insider still met."""
    businesses: list[CorporateAccount] = field(default_factory=list)
    """The business customers of the period, whose lines are runs of consecutive customers: a
    walk along them finds a record at every step, where a random number finds one in seven.
    An insider who has watched a corporate rep's screen, or holds a business's number, knows
    where they are (the worst case: all of them)."""
    references: dict[str, set[str]] = field(default_factory=dict)
    """Per employee: the references they worked under honestly (their own businesses)."""
    assignments: dict[str, frozenset[str]] = field(default_factory=dict)
    """Per employee: the business accounts their tokens name (``[auth.claims] accounts``):
    a simulated rep's accounts, or the roster's ``accounts`` column."""

    def business_of(self, line: int) -> CorporateAccount | None:
        """The business whose line ``line`` (a subscriber part) is, if any."""
        return business_of(self.businesses, line)

    def business_ranges(self) -> tuple[tuple[int, int], ...]:
        """Every business's lines as (first, last): the customer book's corporate ranges."""
        return tuple((b.first, b.first + b.size - 1) for b in self.businesses)

    def midnight(self, day: int) -> float:
        """Epoch seconds of 00:00 KST on a day of the period."""
        start = datetime.combine(self.start + timedelta(days=day), datetime.min.time(), KST)
        return start.timestamp()

    def day_of(self, when: float) -> int:
        """The day of the period (Korean calendar: a fixed offset) an epoch second falls on."""
        return int((when - self.midnight(0)) // DAY)

    def roles(self) -> dict[str, frozenset[str]]:
        """Employee id → roles, as replay's ``--roster`` gives them."""
        return {e: s.roles for e, s in self.staff.items()}

    def clerks(self) -> list[Staff]:
        """Employees without the corporate role who work on at least one day, in id order."""
        return [
            s
            for _, s in sorted(self.staff.items())
            if CORPORATE_ROLE not in s.roles and self.workdays.get(s.employee)
        ]

    def corporate(self) -> list[Staff]:
        """Employees with the corporate role who work on at least one day, in id order."""
        return [
            s
            for _, s in sorted(self.staff.items())
            if CORPORATE_ROLE in s.roles and self.workdays.get(s.employee)
        ]

    def learn_days(self, policy: Policy) -> None:
        """Derive working days and met customers from the rows (numbers read as replay does)."""
        self.workdays.clear()
        self.met.clear()
        self.met_rows.clear()
        self.references.clear()
        for index, (when, row) in enumerate(self.rows):
            employee = row[1]
            day = self.day_of(when)
            days = self.workdays.setdefault(employee, {})
            span = days.get(day)
            if span is None:
                days[day] = Workday(when, when)
            else:
                span.last = when
            if row[6]:
                self.references.setdefault(employee, set()).add(row[6])
            if row[7].strip().lower() == "true":
                try:
                    number = normalise_number(row[4], policy.numbers)
                except Refusal:
                    continue  # the live proxy would have refused it: nobody met a customer
                self.met.setdefault(employee, []).append((when, number, row[5]))
                self.met_rows.setdefault(employee, []).append(index)


def seen_businesses(baseline: Baseline, policy: Policy) -> list[CorporateAccount]:
    """The businesses an EVENTS.csv shows: per account (the ``account`` column, or failing it
    the reference looked up under), the span of the lines found (the lines between a run's
    first and last taken to be customers too, as a business's consecutive lines are)."""
    spans: dict[str, tuple[int, int]] = {}
    for _, row in baseline.rows:
        account = row[8] or row[6]
        line = _found_line(row, policy) if account else None
        if line is None:
            continue
        low, high = spans.get(account, (line, line))
        spans[account] = (min(low, line), max(high, line))
    return [
        CorporateAccount(low, high - low + 1, ref) for ref, (low, high) in sorted(spans.items())
    ]


def from_events(policy: Policy, events: Path, roster: Path | None) -> Baseline:
    """Read EVENTS.csv (and the HR roster) as the honest month; bad rows fail as replay fails."""
    rows: list[tuple[float, tuple[str, ...]]] = []
    staff: dict[str, Staff] = {}
    roles = load_roster(roster) if roster is not None else {}
    assignments = load_accounts(roster) if roster is not None else {}
    with events.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        names = None if header is None else [h.strip() for h in header]
        if names != list(EVENT_COLUMNS) and names != list(ACCOUNT_EVENT_COLUMNS):
            expected = f"{','.join(EVENT_COLUMNS)}[,{ACCOUNT_EVENT_COLUMNS[-1]}]"
            raise ReplayFailed(str(events), [BadRow(1, f"header must be {expected}")], 1)
        width = len(names)
        for line, record in enumerate(reader, start=2):
            if len(record) != width:
                problem = f"expected {width} columns, found {len(record)}"
                raise ReplayFailed(str(events), [BadRow(line, problem)], 1)
            if width == len(EVENT_COLUMNS):
                record.append("")  # named below, from the businesses the file shows
            try:
                when = parse_timestamp(record[0])
            except ValueError as error:
                raise ReplayFailed(str(events), [BadRow(line, f"timestamp: {error}")], 1) from None
            rows.append((when, tuple(record)))
            employee = record[1]
            if employee not in staff:
                staff[employee] = Staff(
                    employee, record[2], record[3], roles.get(employee, frozenset())
                )
    if not rows:
        raise ValueError(f"{events}: no events to hide an attack among")
    rows.sort(key=lambda r: r[0])
    first = datetime.fromtimestamp(rows[0][0], KST).date()
    last = datetime.fromtimestamp(rows[-1][0], KST).date()
    baseline = Baseline(rows, staff, first, (last - first).days + 1)
    baseline.learn_days(policy)
    baseline.businesses = seen_businesses(baseline, policy)
    baseline.assignments = assignments
    if width == len(EVENT_COLUMNS):
        _name_accounts(baseline, policy)
    return baseline


def _name_accounts(baseline: Baseline, policy: Policy) -> None:
    """Fill in the ``account`` of found rows from the businesses the file shows, where it had
    no such column: the red-team's model of which records are business lines, the probes'
    and the honest rows' alike (a rep's own runs name their reference; a clerk's lookup of a
    line inside a business's span is withheld as the live proxy would)."""
    for index, (when, row) in enumerate(baseline.rows):
        line = _found_line(row, policy)
        business = None if line is None else baseline.business_of(line)
        if business is not None:
            baseline.rows[index] = (when, (*row[:8], business.reference))


def _found_line(row: tuple[str, ...], policy: Policy) -> int | None:
    """The subscriber part of a found row's number, read as replay reads it; None for a miss,
    a number the live proxy would refuse, or one outside the customer book's 010 space."""
    if row[7].strip().lower() != "true":
        return None
    try:
        number = normalise_number(row[4], policy.numbers)
    except Refusal:
        return None
    if len(number) != 11 or not number.startswith("010"):
        return None
    return int(number[3:])


def simulated_config(seed: int, employees: int, days: int, regulars: int = 400) -> SimConfig:
    """A small chain with real peers: stores of 4-8 staff in regions of 2-3 stores, no attackers,
    ``regulars`` customers a store who come back (``bench/simulate.py``'s months have 2,500)."""
    return SimConfig(
        seed=seed,
        employees=employees,
        days=days,
        attackers_per_class=0,
        collusion_groups=0,
        corporate_reps=max(2, employees // 20),
        corporate_accounts=4,
        store_customers=regulars,
        stores_per_region=(2, 2),  # regions of 2-3 stores: even a small chain has several
    )


def simulated(policy: Policy, cfg: SimConfig) -> Baseline:
    """Simulate an honest month (lookup_proxy.simulation) to hide the adversary in."""
    roster = build_roster(cfg)
    world = World(cfg)
    rows: list[tuple[float, tuple[str, ...]]] = []
    midnight = datetime.combine(cfg.start, datetime.min.time(), KST).timestamp()
    for day, out in month_days(cfg, roster, world, {}):
        for event in out:
            rows.append((midnight + day * DAY + event[0], event_row(cfg, day, event, world)))
    staff = {e.id: Staff(e.id, e.store, e.region, frozenset(roles_of(e))) for e in roster}
    baseline = Baseline(rows, staff, cfg.start, cfg.days)
    baseline.learn_days(policy)
    baseline.businesses = corporate_accounts(cfg)
    baseline.assignments = {e.id: frozenset(a.reference for a in e.accounts) for e in roster}
    return baseline


def spread_out(
    baseline: Baseline, count: int, rng: random.Random, spared: frozenset[str] = frozenset()
) -> list[Staff]:
    """Up to ``count`` clerks of the baseline but ``spared`` ones in different stores and,
    while any are left, different regions (``lookup_proxy.simulation.roster.spread_out``)."""
    return spread_over([c for c in baseline.clerks() if c.employee not in spared], count, rng)
