"""Who works where and when, and who among them attacks: the simulated chain's roster.

Stores of 4-8 staff grouped in regions of 4-8 stores, each employee with a shift, a typing
habit, a pace and a rota; attackers and corporate reps are drawn from a seed of their own, so
changing how many attackers there are never reshuffles the honest staff's days.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Final, Protocol, TypeVar

from lookup_proxy.policy import Policy
from lookup_proxy.simulation.contracts import CLASSIC_THREATS, INFORMED_THREATS, QUIET_WORK
from lookup_proxy.simulation.number_space import SUBSCRIBER_MAX, SUBSCRIBER_MIN

SHIFT_WEIGHTS: Final = {"open": 0.30, "mid": 0.30, "close": 0.25, "split": 0.15}


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
    stores_per_region: tuple[int, int] = (4, 8)  # a small chain wants more, smaller regions
    families: tuple[str, ...] = ("classic",)  # threat families planted (see contracts.FAMILIES)
    policy: Policy | None = None  # what informed insiders have read; needed for that family

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

    def lines(self) -> range:
        """Every line's subscriber part, in order."""
        return range(self.first, self.first + self.size)


def business_lines(businesses: Sequence[CorporateAccount], stride: int) -> Iterator[int]:
    """Every line of ``businesses`` once (subscriber parts): one of each business in turn,
    each business's in passes ``stride`` apart (0, s, 2s, ..., then 1, 1 + s, ...)."""
    walks = [
        iter([line for start in range(stride) for line in b.lines()[start::stride]])
        for b in businesses
    ]
    while walks:
        for lines in list(walks):
            line = next(lines, None)
            if line is None:
                walks.remove(lines)
            else:
                yield line


def business_of(accounts: Sequence[CorporateAccount], line: int) -> CorporateAccount | None:
    """The business whose lines include ``line`` (a subscriber part), if any: the account the
    backend's record of that line names (a chain has a few dozen, so a scan does)."""
    for account in accounts:
        if account.first <= line < account.first + account.size:
            return account
    return None


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
    region_sizes = _partition(rng, len(store_sizes), *cfg.stores_per_region)
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

    for _ in range(cfg.groups if "classic" in cfg.families else 0):
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

    for threat in CLASSIC_THREATS if "classic" in cfg.families else ():
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
    for rep in reps:
        del free[rep.id]
    if "informed" in cfg.families:
        # A generator of its own: planting informed insiders leaves every classic choice as it was.
        informed = random.Random(f"{cfg.seed}/informed-roles")
        for threat in INFORMED_THREATS:
            if threat == "informed_groups":
                if cfg.groups:
                    size = cfg.collusion_size or informed.randint(3, 5)
                    start_day = informed.randrange(start_limit)
                    for member in spread_out(sorted(free.values(), key=_id), size, informed):
                        take(member, threat, start_day)
                continue
            for _ in range(cfg.attackers_per_class):
                if not free:
                    raise ValueError("not enough employees for the requested attackers")
                chosen = free[informed.choice(sorted(free))]
                take(chosen, threat, informed.randrange(start_limit))
                if threat == "informed_quiet":
                    chosen.rate *= QUIET_WORK


def _id(employee: Employee) -> str:
    return employee.id


class Placed(Protocol):
    """Anyone who works in a store of a region."""

    @property
    def store(self) -> str: ...

    @property
    def region(self) -> str: ...


P = TypeVar("P", bound=Placed)


def spread_out(people: Sequence[P], count: int, rng: random.Random) -> list[P]:
    """Up to ``count`` people in different stores, taking a new region whenever one is left.

    Colluders who know that group rules count a store or a region together sit in different
    ones; in a chain with fewer regions than colluders, stores still differ.
    """
    shuffled = list(people)
    rng.shuffle(shuffled)
    chosen: list[P] = []
    for fresh_region in (True, False):
        for person in shuffled:
            if len(chosen) >= count:
                return chosen
            if person in chosen or any(c.store == person.store for c in chosen):
                continue
            if fresh_region and any(c.region == person.region for c in chosen):
                continue
            chosen.append(person)
    return chosen


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
