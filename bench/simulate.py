"""Generate a month of store-terminal customer lookups with planted insiders, for policy backtests.

A policy can only be judged on traffic whose ground truth is known, and real logs have none: the
2021 abuse was found by a whistle-blower, not by anyone reading logs. So this simulator writes
EVENTS.csv (what `lookup-proxy replay` consumes) plus TRUTH.csv, row-aligned, saying which rows
were malicious, and TRUTH.employees.csv saying who the attackers were and when they started.
EVENTS.roster.csv (employee,roles) is what an HR directory would give replay's --roster.

Honest traffic follows DESIGN.md's picture of a clerk serving a queue, because a policy that
only sees attackers would happily block everyone. Every random choice comes from generators
seeded by (seed, purpose, employee, day), so a run is reproducible bit for bit and changing one
knob (say, attack intensity) leaves the honest traffic untouched.

Usage:
    python bench/simulate.py --seed 1 --employees 300 --days 30 --start 2026-10-01 \\
        --out EVENTS.csv --truth TRUTH.csv [--attackers-per-class 2] [--customer-share 0.14]
"""

from __future__ import annotations

import abc
import argparse
import csv
import random
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from operator import itemgetter
from pathlib import Path
from typing import Final

from sim_model import (
    CORPORATE_REASON,
    EMPLOYEE_HEADER,
    EVENT_HEADER,
    SUBSCRIBER_MAX,
    SUBSCRIBER_MIN,
    THREATS,
    TRUTH_HEADER,
    CustomerBook,
    employees_path_for,
    format_number,
    is_customer,
    number_of,
    random_subscriber,
    roster_path_for,
)

__all__ = ["SimConfig", "Summary", "build_roster", "is_customer", "main", "simulate"]

HOUR: Final = 3600
LAST_SECOND: Final = 24 * HOUR - 1

# Reasons an honest clerk or a careful attacker would pick; CORPORATE_ACCOUNT needs a reference
# and a role, so only corporate reps (and the rotating attacker, who tries everything) use it.
EVERYDAY_REASONS: Final = (
    "NEW_SUBSCRIPTION",
    "CONTRACT_RENEWAL",
    "PLAN_CHANGE",
    "BILLING_INQUIRY",
    "DEVICE_SUPPORT",
)
REASON_WEIGHTS: Final = (0.12, 0.20, 0.22, 0.26, 0.20)
LAUNCH_REASON_WEIGHTS: Final = (0.25, 0.40, 0.15, 0.10, 0.10)

# Shift templates as (start, end, starts_a_shift) in seconds of the day; a segment that does not
# start a shift follows a lunch break. Split shifts are two real shifts in one day.
SHIFTS: Final[dict[str, tuple[tuple[int, int, bool], ...]]] = {
    "open": ((10 * HOUR, 13 * HOUR, True), (14 * HOUR, 19 * HOUR, False)),
    "mid": ((11 * HOUR, 14 * HOUR, True), (15 * HOUR, 20 * HOUR, False)),
    "close": ((12 * HOUR, 16 * HOUR, True), (17 * HOUR, 21 * HOUR, False)),
    "split": ((10 * HOUR, 14 * HOUR, True), (16 * HOUR, 20 * HOUR, True)),
}
SHIFT_WEIGHTS: Final = {"open": 0.30, "mid": 0.30, "close": 0.25, "split": 0.15}

WALK_IN_SHARE: Final = 0.10  # switching from another carrier: not a customer, not found
FAMILY_SHARE: Final = 0.12  # several unrelated numbers in one visit
TYPO_RATE: Final = 0.04  # per intended lookup: a mistyped number first, then the retype
REGULAR_SHARE: Final = 0.5  # visits by the store's own regulars rather than any customer
WEEKEND_FACTOR: Final = 1.5
LAUNCH_FACTOR: Final = 3.0
CORPORATE_VISIT_FACTOR: Final = 0.5  # reps spend part of their day on business accounts

Segment = tuple[int, int, bool]
# (second of day, number as typed, reason, reference, found, employee, threat or "")
Event = tuple[int, str, str, str, bool, "Employee", str]


@dataclass(frozen=True)
class SimConfig:
    """Every knob of one run; the defaults describe the month DESIGN.md asks us to survive."""

    seed: int
    employees: int = 300
    days: int = 30
    start: date = date(2026, 10, 1)
    attackers_per_class: int = 2
    customer_share: float = 1 / 7
    corporate_reps: int | None = None  # None: one per 60 employees, at least 2
    corporate_accounts: int = 12
    collusion_groups: int | None = None  # None: one group when there are attackers at all
    collusion_size: int | None = None  # None: 3-5 members per group
    attack_intensity: float = 1.0
    attack_start_within: int = 7  # attacks start within this many days of --start
    launch_day: date | None = None  # None: a seeded day in the middle third of the period
    store_customers: int = 2500  # size of each store's pool of regulars

    @property
    def reps(self) -> int:
        """Resolve the default number of corporate reps from the roster size."""
        if self.corporate_reps is not None:
            return self.corporate_reps
        return max(2, self.employees // 60)

    @property
    def groups(self) -> int:
        """Resolve the default number of collusion groups."""
        if self.collusion_groups is not None:
            return self.collusion_groups
        return 1 if self.attackers_per_class > 0 else 0


@dataclass(eq=False)
class Employee:
    """One member of staff and everything that shapes their lookups."""

    id: str
    store: str
    region: str
    shift: str
    style: int  # the number spelling this clerk habitually types (0 or 1)
    rate: float  # visits per hour on an ordinary weekday
    workdays: frozenset[int]
    role: str = "honest"
    threat: str = ""
    attack_start: int | None = None  # day index of the first malicious lookup
    accounts: list[CorporateAccount] = field(default_factory=list)


@dataclass(frozen=True)
class CorporateAccount:
    """A business customer owning consecutive lines, looked up in runs by its rep."""

    first: int  # subscriber part of the first line
    size: int
    reference: str


@dataclass
class Summary:
    """What a run produced, for the stderr report and for tests."""

    rows: int = 0
    by_actor: Counter[str] = field(default_factory=Counter)
    by_threat: Counter[str] = field(default_factory=Counter)
    found_by_threat: Counter[str] = field(default_factory=Counter)
    roster: list[Employee] = field(default_factory=list)
    launch_day: date | None = None


# --------------------------------------------------------------------------- roster


def _work_schedule(rng: random.Random, start: date, days: int) -> frozenset[int]:
    """Give an employee one or two days off per calendar week, mostly on weekdays.

    Days off are drawn over the whole calendar week, even where the period cuts a week short,
    so the first and last days of the period are staffed like any other day.
    """
    weekdays = list(range(7))
    # Stores are busiest at weekends, so weekend days off are rarer.
    weights = [3.0, 3.0, 3.0, 3.0, 3.0, 1.0, 1.0]
    off_by_week: dict[tuple[int, int], set[int]] = {}
    working: set[int] = set()
    for day in range(days):
        iso = (start + timedelta(days=day)).isocalendar()
        week = (iso.year, iso.week)
        if week not in off_by_week:
            candidates, candidate_weights = list(weekdays), list(weights)
            off: set[int] = set()
            for _ in range(1 if rng.random() < 0.4 else 2):
                pick = rng.choices(range(len(candidates)), weights=candidate_weights)[0]
                off.add(candidates.pop(pick) + 1)  # ISO weekdays run 1..7
                candidate_weights.pop(pick)
            off_by_week[week] = off
        if iso.weekday not in off_by_week[week]:
            working.add(day)
    return frozenset(working)


def _partition(rng: random.Random, total: int, low: int, high: int) -> list[int]:
    """Split a count into chunks of low..high, folding a short tail into the last chunk."""
    sizes: list[int] = []
    remaining = total
    while remaining > 0:
        size = min(rng.randint(low, high), remaining)
        if size < low and sizes:
            sizes[-1] += size
        else:
            sizes.append(size)
        remaining -= size
    return sizes


def build_roster(cfg: SimConfig) -> list[Employee]:
    """Lay out stores and regions, then decide who is a rep and who attacks how."""
    rng = random.Random(f"{cfg.seed}/roster")
    store_sizes = _partition(rng, cfg.employees, 4, 8)
    region_sizes = _partition(rng, len(store_sizes), 4, 8)
    region_of: list[str] = []
    for region_index, count in enumerate(region_sizes, start=1):
        region_of.extend([f"R{region_index:02d}"] * count)

    roster: list[Employee] = []
    shifts = list(SHIFT_WEIGHTS)
    shift_weights = list(SHIFT_WEIGHTS.values())
    for store_index, size in enumerate(store_sizes):
        for _ in range(size):
            roster.append(
                Employee(
                    id=f"E{len(roster) + 1:05d}",
                    store=f"S{store_index + 1:03d}",
                    region=region_of[store_index],
                    shift=rng.choices(shifts, weights=shift_weights)[0],
                    style=0 if rng.random() < 0.6 else 1,
                    rate=rng.uniform(2.5, 6.0),
                    workdays=_work_schedule(rng, cfg.start, cfg.days),
                )
            )
    _assign_roles(cfg, roster)
    return roster


def _first_workday(employee: Employee, day: int) -> int | None:
    """Find the day an attack planned for `day` actually begins for someone on that rota."""
    later = [d for d in employee.workdays if d >= day]
    return min(later) if later else None


def _assign_roles(cfg: SimConfig, roster: list[Employee]) -> None:
    """Pick attackers and reps; collusion first, as it is the hardest to place."""
    rng = random.Random(f"{cfg.seed}/roles")
    free = {e.id: e for e in roster}
    start_limit = max(1, min(cfg.attack_start_within, cfg.days))

    def take(employee: Employee, threat: str, start_day: int) -> None:
        del free[employee.id]
        employee.role = "attacker"
        employee.threat = threat
        # Someone off that day starts on their next shift; the truth names the real first day.
        first = _first_workday(employee, start_day)
        employee.attack_start = start_day if first is None else first

    for _ in range(cfg.groups):
        size = cfg.collusion_size or rng.randint(3, 5)
        by_region: dict[str, dict[str, list[Employee]]] = {}
        for employee in free.values():
            by_region.setdefault(employee.region, {}).setdefault(employee.store, []).append(
                employee
            )
        regions = sorted(r for r, stores in by_region.items() if len(stores) >= size)
        if not regions:
            raise ValueError(f"no region has {size} stores with free staff for a collusion group")
        stores = by_region[rng.choice(regions)]
        start_day = rng.randrange(start_limit)
        for store in rng.sample(sorted(stores), size):
            take(rng.choice(stores[store]), "collusion", start_day)

    for threat in THREATS:
        if threat == "collusion":
            continue
        for _ in range(cfg.attackers_per_class):
            if not free:
                raise ValueError("not enough employees for the requested attackers")
            take(free[rng.choice(sorted(free))], threat, rng.randrange(start_limit))

    if cfg.reps > len(free):
        raise ValueError("not enough employees left for the requested corporate reps")
    reps = [free[key] for key in rng.sample(sorted(free), cfg.reps)]
    for rep in reps:
        rep.role = "corporate"
    accounts = corporate_accounts(cfg)
    for index, account in enumerate(accounts):
        if reps:
            reps[index % len(reps)].accounts.append(account)


def corporate_accounts(cfg: SimConfig) -> list[CorporateAccount]:
    """Draw the business customers from the seed alone, so membership never depends on rota."""
    rng = random.Random(f"{cfg.seed}/corporate")
    accounts: list[CorporateAccount] = []
    references: set[str] = set()
    for _ in range(cfg.corporate_accounts):
        size = rng.randint(20, 300)
        reference = f"CORP-{rng.randrange(1_000_000):06d}"
        while reference in references:
            reference = f"CORP-{rng.randrange(1_000_000):06d}"
        references.add(reference)
        first = rng.randint(SUBSCRIBER_MIN, SUBSCRIBER_MAX - size)
        accounts.append(CorporateAccount(first, size, reference))
    return accounts


# --------------------------------------------------------------------------- shared helpers


class World:
    """The parts of the month every employee shares: customers, calendar, number habits."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        ranges = tuple((a.first, a.first + a.size - 1) for a in corporate_accounts(cfg))
        self.book = CustomerBook(cfg.seed, cfg.customer_share, ranges)
        self._pools: dict[str, list[str]] = {}
        if cfg.launch_day is not None:
            self.launch = (cfg.launch_day - cfg.start).days
        else:
            self.launch = random.Random(f"{cfg.seed}/launch").randint(
                cfg.days // 3, max(cfg.days // 3, 2 * cfg.days // 3 - 1)
            )

    def busyness(self, day: int) -> float:
        """Scale visit rates: weekends are busier, a phone launch triples the queue."""
        if day == self.launch:
            return LAUNCH_FACTOR
        if (self.cfg.start + timedelta(days=day)).weekday() >= 5:
            return WEEKEND_FACTOR
        return 1.0

    def fresh_customer(self, rng: random.Random) -> str:
        """Draw any customer of the operator, by rejection against the customer book."""
        if self.cfg.customer_share <= 0:
            raise ValueError("honest traffic needs a positive customer share")
        return self.book.draw(rng, found=True)

    def non_customer(self, rng: random.Random) -> str:
        """Draw a number the operator does not serve, as a walk-in switching carriers has."""
        if self.cfg.customer_share >= 1:
            raise ValueError("walk-ins need a customer share below 1")
        return self.book.draw(rng, found=False)

    def regular(self, store: str, rng: random.Random) -> str:
        """Draw one of a store's regular customers, who come back during the month."""
        pool = self._pools.get(store)
        if pool is None:
            pool_rng = random.Random(f"{self.cfg.seed}/pool/{store}")
            pool = [self.fresh_customer(pool_rng) for _ in range(self.cfg.store_customers)]
            self._pools[store] = pool
        return rng.choice(pool)

    def customer(self, store: str, rng: random.Random) -> str:
        """Draw the customer standing at the counter."""
        if rng.random() < REGULAR_SHARE and self.cfg.store_customers > 0:
            return self.regular(store, rng)
        return self.fresh_customer(rng)


def day_segments(employee: Employee, rng: random.Random) -> list[Segment]:
    """Turn the employee's shift template into today's working periods, with human jitter."""
    template = SHIFTS[employee.shift]
    lunch_shift = rng.randint(-1800, 1800)
    segments: list[Segment] = []
    for index, (start, end, fresh) in enumerate(template):
        start += rng.randint(-600, 600) if fresh else lunch_shift
        before_break = index + 1 < len(template) and not template[index + 1][2]
        end += lunch_shift if before_break else rng.randint(-600, 600)
        segments.append((start, end, fresh))
    return segments


def typo_of(number: str, rng: random.Random) -> str:
    """Mistype a number the two ways people do: swap two adjacent digits or hit a wrong key."""
    digits = list(number)
    if rng.random() < 0.5:
        i = rng.randint(3, 9)
        if digits[i] != digits[i + 1] and not (i == 3 and digits[4] in "01"):
            digits[i], digits[i + 1] = digits[i + 1], digits[i]
            return "".join(digits)
    i = rng.randint(3, 10)
    choices = [c for c in ("23456789" if i == 3 else "0123456789") if c != digits[i]]
    digits[i] = rng.choice(choices)
    return "".join(digits)


def honest_style(employee: Employee, rng: random.Random) -> int:
    """Pick how a clerk types this number: mostly their habit, sometimes anything."""
    roll = rng.random()
    if roll < 0.85:
        return employee.style
    if roll < 0.95:
        return 1 - employee.style
    return rng.randint(2, 4)


def time_in(segments: Sequence[Segment], rng: random.Random, margin: int = 0) -> int:
    """Pick a moment inside working hours, weighting segments by length."""
    weights = [max(1, end - start - margin) for start, end, _ in segments]
    start, end, _ = rng.choices(segments, weights=weights)[0]
    return rng.randint(start, max(start, end - margin))


def session(start: int, count: int, rng: random.Random, gap: tuple[int, int]) -> Iterator[int]:
    """Space lookups the way a person at a keyboard can: seconds apart, never instant."""
    t = start
    for _ in range(count):
        yield min(t, LAST_SECOND)
        t += rng.randint(*gap)


def split_count(total: int, parts: int, rng: random.Random) -> list[int]:
    """Divide a day's quota among sessions unevenly, as attention comes and goes."""
    if parts <= 1 or total <= parts:
        return [total]
    cuts = sorted(rng.sample(range(1, total), parts - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]


# --------------------------------------------------------------------------- honest work


def honest_day(
    world: World,
    employee: Employee,
    segments: Sequence[Segment],
    day: int,
    rng: random.Random,
    out: list[Event],
) -> None:
    """Serve the day's queue: visits arrive at random, each producing a few lookups."""
    factor = world.busyness(day)
    if employee.role == "corporate":
        factor *= CORPORATE_VISIT_FACTOR
    per_second = employee.rate * factor / HOUR
    weights = LAUNCH_REASON_WEIGHTS if day == world.launch else REASON_WEIGHTS
    for start, end, _ in segments:
        t = start + rng.expovariate(per_second)
        while t < end:
            _visit(world, employee, int(t), weights, rng, out)
            t += rng.expovariate(per_second)
    if employee.accounts:
        _corporate_runs(employee, segments, rng, out)


def _visit(
    world: World,
    employee: Employee,
    t: int,
    weights: Sequence[float],
    rng: random.Random,
    out: list[Event],
) -> None:
    """Produce the lookups of one customer visit, retyping whenever the clerk mistypes."""
    reason = rng.choices(EVERYDAY_REASONS, weights=weights)[0]

    def look(t: int, number: str, found: bool, reason: str) -> int:
        if rng.random() < TYPO_RATE:
            wrong = typo_of(number, rng)
            typed = format_number(wrong, honest_style(employee, rng))
            out.append((t, typed, reason, "", world.book.found(wrong), employee, ""))
            t += rng.randint(2, 12)
        typed = format_number(number, honest_style(employee, rng))
        out.append((min(t, LAST_SECOND), typed, reason, "", found, employee, ""))
        return t

    roll = rng.random()
    if roll < WALK_IN_SHARE:
        number = world.non_customer(rng)
        t = look(t, number, False, "NEW_SUBSCRIPTION")
        if rng.random() < 0.3:
            look(t + rng.randint(60, 600), number, False, "NEW_SUBSCRIPTION")
        return
    if roll < WALK_IN_SHARE + FAMILY_SHARE:
        for _ in range(rng.randint(2, 4)):
            number = world.customer(employee.store, rng)
            for _ in range(rng.choice((1, 1, 2))):
                t = look(t, number, True, reason) + rng.randint(20, 180)
                if rng.random() < 0.4:
                    reason = rng.choices(EVERYDAY_REASONS, weights=weights)[0]
            t += rng.randint(30, 240)
        return
    number = world.customer(employee.store, rng)
    repeats = rng.choices((1, 2, 3), weights=(0.45, 0.35, 0.20))[0]
    for _ in range(repeats):
        t = look(t, number, True, reason) + rng.randint(60, 600)
        if rng.random() < 0.4:
            reason = rng.choices(EVERYDAY_REASONS, weights=weights)[0]


def _corporate_runs(
    employee: Employee, segments: Sequence[Segment], rng: random.Random, out: list[Event]
) -> None:
    """Walk through consecutive lines of a business customer, one reference per run."""
    runs = rng.choices((0, 1, 2), weights=(0.4, 0.4, 0.2))[0]
    starts = sorted(time_in(segments, rng, margin=1800) for _ in range(runs))
    not_before = 0
    for start in starts:
        account = rng.choice(employee.accounts)
        length = min(account.size, rng.randint(5, 30))
        first = account.first + rng.randint(0, account.size - length)
        t = max(start, not_before)
        for offset in range(length):
            typed = format_number(number_of(first + offset), honest_style(employee, rng))
            reference = account.reference
            out.append(
                (min(t, LAST_SECOND), typed, CORPORATE_REASON, reference, True, employee, "")
            )
            t += rng.randint(8, 45)
        not_before = t + 120  # runs never interleave, so each stays one consecutive series


# --------------------------------------------------------------------------- attacks


class Campaign(abc.ABC):
    """One attacker's malicious lookups over the month; subclasses decide numbers and timing.

    Attackers rotate number spellings at random (the rotation class does so systematically)
    and always give an everyday reason, since the catalogue has no "prospecting" code.
    """

    def __init__(self, world: World, employee: Employee) -> None:
        self.world = world
        self.employee = employee
        self.rng = random.Random(f"{world.cfg.seed}/attack/{employee.id}")

    def scaled(self, low: int, high: int) -> int:
        """Draw a daily quota and apply the run's attack intensity."""
        return max(1, round(self.rng.randint(low, high) * self.world.cfg.attack_intensity))

    def emit(
        self,
        out: list[Event],
        t: int,
        number: str,
        reason: str,
        reference: str = "",
        style: int | None = None,
    ) -> None:
        """Record one malicious lookup with the backend's true answer."""
        if style is None:
            style = self.rng.randint(0, 4)
        out.append(
            (
                t,
                format_number(number, style),
                reason,
                reference,
                self.world.book.found(number),
                self.employee,
                self.employee.threat,
            )
        )

    @abc.abstractmethod
    def day(self, segments: Sequence[Segment], out: list[Event]) -> None:
        """Add today's malicious lookups; called only on the attacker's working days."""

    def reason(self) -> str:
        """Pick a cover reason the way a clerk would."""
        return self.rng.choices(EVERYDAY_REASONS, weights=REASON_WEIGHTS)[0]


class NumberStream:
    """Where a prober's next number comes from: random guesses or a walk with a fixed step."""

    def __init__(self, rng: random.Random, step: int) -> None:
        self.rng = rng
        self.step = step
        self.cursor = random_subscriber(rng)

    def draw(self) -> str:
        """Produce the next number to probe."""
        if self.step == 0:
            return number_of(random_subscriber(self.rng))
        self.cursor += self.step
        if not SUBSCRIBER_MIN <= self.cursor <= SUBSCRIBER_MAX:
            self.cursor = random_subscriber(self.rng)
        return number_of(self.cursor)


class SessionCampaign(Campaign):
    """Probing in a few sittings a day, seconds between lookups."""

    quota: tuple[int, int] = (40, 250)
    sittings: tuple[int, int] = (2, 5)
    gap: tuple[int, int] = (3, 15)

    def __init__(self, world: World, employee: Employee, step: int) -> None:
        super().__init__(world, employee)
        self.numbers = NumberStream(self.rng, step)

    def next_number(self) -> str:
        """Produce the next number to probe."""
        return self.numbers.draw()

    def day(self, segments: Sequence[Segment], out: list[Event]) -> None:
        total = self.scaled(*self.quota)
        for count in split_count(total, self.rng.randint(*self.sittings), self.rng):
            reason = self.reason()
            start = time_in(segments, self.rng)
            for t in session(start, count, self.rng, self.gap):
                self.emit(out, t, self.next_number(), reason)


class RandomTyping(SessionCampaign):
    """The reported case: random numbers until records appear, tens to hundreds a day."""

    def __init__(self, world: World, employee: Employee) -> None:
        super().__init__(world, employee, step=0)


class Scan(SessionCampaign):
    """Ascending, descending or strided walks that resume where yesterday stopped."""

    quota = (60, 200)
    sittings = (1, 3)
    gap = (2, 10)


class BlockShuffle(SessionCampaign):
    """Every number of one block, shuffled so that no step between lookups looks like a scan."""

    quota = (80, 250)
    sittings = (1, 3)
    gap = (3, 12)

    def __init__(self, world: World, employee: Employee) -> None:
        super().__init__(world, employee, step=0)
        self.order: list[int] = []

    def next_number(self) -> str:
        if not self.order:
            self.order = _block(self.rng)
            self.rng.shuffle(self.order)
        return number_of(self.order.pop())


def _block(rng: random.Random) -> list[int]:
    """Choose a number block: a whole 010-XXXX prefix or one thousand-line sub-block of it."""
    prefix = rng.randint(SUBSCRIBER_MIN // 10_000, SUBSCRIBER_MAX // 10_000)
    if rng.random() < 0.5:
        return list(range(prefix * 10_000, prefix * 10_000 + 10_000))
    sub = prefix * 10_000 + rng.randrange(10) * 1_000
    return list(range(sub, sub + 1_000))


class SlowProbe(Campaign):
    """A handful of guesses a day, each alone among honest lookups, every working day."""

    def day(self, segments: Sequence[Segment], out: list[Event]) -> None:
        for _ in range(self.scaled(5, 15)):
            t = time_in(segments, self.rng)
            self.emit(
                out,
                t,
                number_of(random_subscriber(self.rng)),
                self.reason(),
                style=self.rng.choice((0, 0, 1, 1, 2, 3, 4)),
            )


class CollusionBlock:
    """The block a group shares; members take consecutive slices from a common cursor."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.remaining: list[int] = []

    def take(self, count: int) -> list[int]:
        """Hand out the next slice, opening a new block when this one is exhausted."""
        if len(self.remaining) < count:
            self.remaining = _block(self.rng)
        piece, self.remaining = self.remaining[:count], self.remaining[count:]
        return piece


class Collusion(Campaign):
    """One member of a group covering a block together, each staying small every day."""

    def __init__(self, world: World, employee: Employee, block: CollusionBlock) -> None:
        super().__init__(world, employee)
        self.block = block

    def day(self, segments: Sequence[Segment], out: list[Event]) -> None:
        piece = self.block.take(self.scaled(10, 30))
        self.rng.shuffle(piece)
        for subscriber in piece:
            self.emit(out, time_in(segments, self.rng), number_of(subscriber), self.reason())


class Rotation(SessionCampaign):
    """Probing that cycles spellings and reason codes to split any per-format or per-reason count.

    It includes CORPORATE_ACCOUNT with an invented reference: a clerk without the role who
    tries every code would try that one too.
    """

    quota = (30, 150)
    sittings = (2, 4)
    gap = (4, 15)

    def __init__(self, world: World, employee: Employee) -> None:
        rng = random.Random(f"{world.cfg.seed}/rotation/{employee.id}")
        super().__init__(world, employee, step=rng.choice((0, 0, 1, -1)))
        self.turn = 0

    def day(self, segments: Sequence[Segment], out: list[Event]) -> None:
        total = self.scaled(*self.quota)
        for count in split_count(total, self.rng.randint(*self.sittings), self.rng):
            start = time_in(segments, self.rng)
            for t in session(start, count, self.rng, self.gap):
                reason = _ALL_REASONS[self.turn % len(_ALL_REASONS)]
                reference = (
                    f"CORP-{self.rng.randrange(1_000_000):06d}"
                    if (reason == CORPORATE_REASON)
                    else ""
                )
                self.emit(out, t, self.next_number(), reason, reference, style=self.turn % 5)
                self.turn += 1


_ALL_REASONS: Final = (*EVERYDAY_REASONS, CORPORATE_REASON)


class ShiftBurst(SessionCampaign):
    """A burst in the first 10-20 minutes of each shift, before the queue builds up."""

    def __init__(self, world: World, employee: Employee) -> None:
        rng = random.Random(f"{world.cfg.seed}/burst/{employee.id}")
        super().__init__(world, employee, step=rng.choice((0, 1)))

    def day(self, segments: Sequence[Segment], out: list[Event]) -> None:
        for start, _, fresh in segments:
            if not fresh:
                continue
            count = self.scaled(20, 60)
            duration = self.rng.randint(600, 1200)
            t0 = start + self.rng.randint(0, 180)
            reason = self.reason()
            for index in range(count):
                t = t0 + index * duration // count + self.rng.randint(0, 3)
                self.emit(out, min(t, LAST_SECOND), self.next_number(), reason)


def build_campaigns(world: World, roster: Sequence[Employee]) -> dict[str, Campaign]:
    """Create each attacker's campaign; colluders in one region share a block."""
    campaigns: dict[str, Campaign] = {}
    blocks: dict[str, CollusionBlock] = {}
    for employee in roster:
        if employee.role != "attacker":
            continue
        threat = employee.threat
        campaign: Campaign
        if threat == "random_typing":
            campaign = RandomTyping(world, employee)
        elif threat in ("sequential_asc", "sequential_desc", "strided"):
            step_rng = random.Random(f"{world.cfg.seed}/step/{employee.id}")
            fixed = {"sequential_asc": 1, "sequential_desc": -1}
            step = fixed.get(threat) or step_rng.randint(3, 20)
            campaign = Scan(world, employee, step)
        elif threat == "block_shuffle":
            campaign = BlockShuffle(world, employee)
        elif threat == "slow_probe":
            campaign = SlowProbe(world, employee)
        elif threat == "collusion":
            # Members of one group share a region; each group gets its own block.
            if employee.region not in blocks:
                blocks[employee.region] = CollusionBlock(
                    random.Random(f"{world.cfg.seed}/collusion/{employee.region}")
                )
            campaign = Collusion(world, employee, blocks[employee.region])
        elif threat == "rotation":
            campaign = Rotation(world, employee)
        elif threat == "shift_burst":
            campaign = ShiftBurst(world, employee)
        else:
            raise ValueError(f"unknown threat class {threat!r}")
        campaigns[employee.id] = campaign
    return campaigns


# --------------------------------------------------------------------------- driver


def simulate(cfg: SimConfig, events_path: Path, truth_path: Path) -> Summary:
    """Write EVENTS, TRUTH and TRUTH.employees, one day at a time to bound memory."""
    roster = build_roster(cfg)
    world = World(cfg)
    campaigns = build_campaigns(world, roster)
    summary = Summary(roster=roster)
    if 0 <= world.launch < cfg.days:
        summary.launch_day = cfg.start + timedelta(days=world.launch)

    with (
        events_path.open("w", newline="", encoding="utf-8") as events_file,
        truth_path.open("w", newline="", encoding="utf-8") as truth_file,
    ):
        events = csv.writer(events_file, lineterminator="\n")
        truth = csv.writer(truth_file, lineterminator="\n")
        events.writerow(EVENT_HEADER)
        truth.writerow(TRUTH_HEADER)
        row = 0
        for day in range(cfg.days):
            out: list[Event] = []
            for employee in roster:
                if day not in employee.workdays:
                    continue
                rng = random.Random(f"{cfg.seed}/{employee.id}/{day}")
                segments = day_segments(employee, rng)
                honest_day(world, employee, segments, day, rng, out)
                campaign = campaigns.get(employee.id)
                if campaign and employee.attack_start is not None and day >= employee.attack_start:
                    campaign.day(segments, out)
            out.sort(key=itemgetter(0))  # stable: equal seconds keep generation order
            prefix = f"{(cfg.start + timedelta(days=day)).isoformat()}T"
            for t, number, reason, reference, found, employee, threat in out:
                row += 1
                stamp = f"{prefix}{t // HOUR:02d}:{t // 60 % 60:02d}:{t % 60:02d}+09:00"
                events.writerow(
                    (
                        stamp,
                        employee.id,
                        employee.store,
                        employee.region,
                        number,
                        reason,
                        reference,
                        "true" if found else "false",
                    )
                )
                truth.writerow((row, employee.id, employee.role, threat))
                summary.by_actor[employee.role] += 1
                if threat:
                    summary.by_threat[threat] += 1
                    summary.found_by_threat[threat] += found
        summary.rows = row

    with employees_path_for(truth_path).open("w", newline="", encoding="utf-8") as roster_file:
        writer = csv.writer(roster_file, lineterminator="\n")
        writer.writerow(EMPLOYEE_HEADER)
        for employee in roster:
            start = (
                (cfg.start + timedelta(days=employee.attack_start)).isoformat()
                if employee.attack_start is not None
                else ""
            )
            writer.writerow(
                (
                    employee.id,
                    employee.store,
                    employee.region,
                    employee.role,
                    employee.threat,
                    start,
                )
            )
    # What HR's directory says: roles only, no truth. Replay takes it as --roster, so that
    # role-limited reasons (CORPORATE_ACCOUNT) are judged as the live proxy judges them.
    with roster_path_for(events_path).open("w", newline="", encoding="utf-8") as roster_file:
        writer = csv.writer(roster_file, lineterminator="\n")
        writer.writerow(("employee", "roles"))
        for employee in roster:
            roles = "clerk;corporate-sales" if employee.role == "corporate" else "clerk"
            writer.writerow((employee.id, roles))
    return summary


def report(summary: Summary, cfg: SimConfig) -> str:
    """Summarise a run for the person who started it."""
    roles = Counter(e.role for e in summary.roster)
    stores = len({e.store for e in summary.roster})
    regions = len({e.region for e in summary.roster})
    last = cfg.start + timedelta(days=cfg.days - 1)
    lines = [
        f"{summary.rows} events, {cfg.start} .. {last}, launch day {summary.launch_day}",
        f"{len(summary.roster)} employees in {stores} stores / {regions} regions: "
        + ", ".join(f"{roles[r]} {r}" for r in ("honest", "corporate", "attacker")),
        "rows by actor: "
        + ", ".join(f"{a} {summary.by_actor[a]}" for a in ("honest", "corporate", "attacker")),
        f"{'threat':<16}{'attackers':>10}{'malicious':>11}{'found':>8}",
    ]
    attackers = Counter(e.threat for e in summary.roster if e.role == "attacker")
    for threat in THREATS:
        lines.append(
            f"{threat:<16}{attackers[threat]:>10}{summary.by_threat[threat]:>11}"
            f"{summary.found_by_threat[threat]:>8}"
        )
    return "\n".join(lines)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date like 2026-10-01, got {text!r}") from None


def parse_args(argv: Sequence[str] | None) -> tuple[SimConfig, Path, Path]:
    """Read the command line into a config, refusing values that cannot make a month."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--employees", type=int, default=300)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--start", type=_date, default=date(2026, 10, 1))
    parser.add_argument("--out", type=Path, required=True, help="EVENTS.csv to write")
    parser.add_argument(
        "--truth",
        type=Path,
        required=True,
        help="TRUTH.csv to write (TRUTH.employees.csv goes next to it)",
    )
    parser.add_argument("--attackers-per-class", type=int, default=2)
    parser.add_argument("--customer-share", type=float, default=1 / 7)
    parser.add_argument(
        "--corporate-reps", type=int, default=None, help="default: one per 60 employees, at least 2"
    )
    parser.add_argument("--corporate-accounts", type=int, default=12)
    parser.add_argument(
        "--collusion-groups",
        type=int,
        default=None,
        help="default: 1 if there are attackers, else 0",
    )
    parser.add_argument(
        "--collusion-size",
        type=int,
        default=None,
        help="members per collusion group (default: 3-5)",
    )
    parser.add_argument(
        "--attack-intensity",
        type=float,
        default=1.0,
        help="multiplies every attacker's daily quota",
    )
    parser.add_argument(
        "--attack-start-within",
        type=int,
        default=7,
        help="attacks start within this many days of --start",
    )
    parser.add_argument(
        "--launch-day",
        type=_date,
        default=None,
        help="phone launch day with triple traffic (default: seeded)",
    )
    parser.add_argument(
        "--store-customers", type=int, default=2500, help="regular customers per store"
    )
    args = parser.parse_args(argv)
    if args.employees < 1 or args.days < 1:
        parser.error("--employees and --days must be positive")
    if not 0 < args.customer_share < 1:
        parser.error("--customer-share must be between 0 and 1 (exclusive)")
    if args.collusion_size is not None and not 2 <= args.collusion_size <= 8:
        parser.error("--collusion-size must be 2..8")
    for name in ("attackers_per_class", "corporate_accounts", "store_customers"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must not be negative")
    cfg = SimConfig(
        seed=args.seed,
        employees=args.employees,
        days=args.days,
        start=args.start,
        attackers_per_class=args.attackers_per_class,
        customer_share=args.customer_share,
        corporate_reps=args.corporate_reps,
        corporate_accounts=args.corporate_accounts,
        collusion_groups=args.collusion_groups,
        collusion_size=args.collusion_size,
        attack_intensity=args.attack_intensity,
        attack_start_within=args.attack_start_within,
        launch_day=args.launch_day,
        store_customers=args.store_customers,
    )
    return cfg, args.out, args.truth


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator from the command line."""
    cfg, events_path, truth_path = parse_args(argv)
    try:
        summary = simulate(cfg, events_path, truth_path)
    except ValueError as error:
        print(f"simulate: {error}", file=sys.stderr)
        return 2
    print(report(summary, cfg), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
