"""What an adversary types and when: probes, the stage they are planned on, and their pacing.

A probe is one malicious lookup by one insider; a cover lookup (a retype of a customer the
insider already knows, by a typo farmer) is sent as a probe is but discloses nothing new. The
stage holds what an insider who read the policy and watched their own terminal would know:
their working days and hours, the customers they have met, and the customer book the probes
are answered from.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from lookup_proxy.guard.rules import is_typo_of
from lookup_proxy.redteam.baseline import Baseline, Staff, Workday
from lookup_proxy.simulation.customer_book import CustomerBook
from lookup_proxy.simulation.number_space import (
    SUBSCRIBER_MAX,
    SUBSCRIBER_MIN,
    canonical,
    format_number,
    number_of,
    random_subscriber,
)
from lookup_proxy.simulation.roster import CorporateAccount

HOUR = 3600
MIN_GAP = 4.0
"""Seconds between two lookups of one person at a keyboard, at the fastest."""


RETYPE_WITHIN = 60.0
"""Seconds within which a found lookup after a miss makes the miss a typo, to an insider
counting their own misses."""


Placement = Callable[[float, float, int, random.Random], list[float]]
"""Where in [first, last] a day's probes go: ``spread`` or ``sittings``."""


@dataclass(frozen=True, slots=True)
class Probe:
    """One lookup the adversary sends; ``counts`` is False for cover lookups."""

    at: float
    insider: str
    number: str
    reason: str
    reference: str = ""
    style: int = 0
    counts: bool = True
    found: bool | None = None
    """The backend's answer when the adversary knows it (a retyped customer); else the book's."""

    @property
    def typed(self) -> str:
        """The number as the insider types it."""
        return format_number(self.number, self.style)


@dataclass
class Stage:
    """Everything a strategy plans one trial with."""

    baseline: Baseline
    insiders: list[Staff]
    book: CustomerBook
    rng: random.Random
    left_out: frozenset[int] | None = None
    """The honest rows (indices in ``baseline.rows``) this trial leaves out, when it is
    decided before the plan (``Arena.thin``): a quiet insider, or everyone in a quiet region,
    keeps only some visits, and the customers they met are only those of the visits kept.
    A padded or typo-farming plan that drew on the whole month's met customers looked up,
    in a quiet insider's trial, up to hundreds of customers a day new to them and counted
    none (red-team seed 5, 2026-12-07)."""

    def days(self, insider: Staff) -> Iterator[tuple[int, Workday]]:
        """The insider's working days in order, with each day's span of honest work."""
        days = self.baseline.workdays.get(insider.employee, {})
        for day in sorted(days):
            yield day, days[day]

    def daily(
        self, insider: Staff, intensity: float, every: int = 1
    ) -> Iterator[tuple[int, Workday, int]]:
        """The insider's working days with how many probes each gets: ``intensity`` a day on
        average, evenly (0.5: one every other working day; 3: three every day); with ``every``
        above 1, all of that many working days' probes on the first of them (a surge)."""
        for index, (day, span) in enumerate(self.days(insider)):
            if index % every:
                continue
            count = probes_over(index, index + every, intensity)
            if count:
                yield day, span, count

    def moments(
        self, intensity: float, place: Placement | None = None, every: int = 1
    ) -> Iterator[tuple[Staff, int, float]]:
        """(insider, day, moment) for ``intensity`` probes a day on each insider's working
        days (``every``: as :meth:`daily`), placed within the day's span of honest work
        (evenly spread by default)."""
        place = place or spread
        for insider in self.insiders:
            for day, span, count in self.daily(insider, intensity, every):
                for at in place(span.first, span.last, count, self.rng):
                    yield insider, day, at

    def met(self, insider: Staff) -> list[tuple[float, str, str]]:
        """The insider's honest finds (when, number, reason) in this trial: the month's, less
        those of visits the trial leaves out."""
        met = self.baseline.met.get(insider.employee, [])
        if not self.left_out:
            return met
        rows = self.baseline.met_rows.get(insider.employee, [])
        left_out = self.left_out
        return [entry for entry, row in zip(met, rows, strict=True) if row not in left_out]

    def met_before(self, insider: Staff, when: float) -> list[str]:
        """Customers the insider found by honest lookups before ``when``, oldest first."""
        met = self.met(insider)
        seen: dict[str, None] = {}
        for at, number, _ in met:
            if at >= when:
                break
            seen[number] = None
        return list(seen)

    def first_met(self, insider: Staff, since: float, when: float) -> list[tuple[str, str]]:
        """Customers the insider first found by an honest lookup of the month in [``since``,
        ``when``), oldest first, each with that lookup's reason: the customers of a visit still
        going on, new to the insider."""
        firsts: dict[str, tuple[float, str]] = {}
        for at, number, reason in self.met(insider):
            if at >= when:
                break
            firsts.setdefault(number, (at, reason))
        return [(number, reason) for number, (at, reason) in firsts.items() if at >= since]

    def first_visits(self, insider: Staff) -> dict[int, list[tuple[float, str, str]]]:
        """Per working day, the insider's honest lookups of a customer not looked up earlier
        that day (when, canonical number, reason): the counter visits a variant can precede."""
        visits: dict[int, list[tuple[float, str, str]]] = {}
        seen: set[tuple[int, str]] = set()
        for at, number, reason in self.met(insider):
            day = self.baseline.day_of(at)
            if (day, number) not in seen:
                seen.add((day, number))
                visits.setdefault(day, []).append((at, number, reason))
        return visits

    def honest_misses(self, insider: Staff) -> dict[int, int]:
        """Per working day, the insider's honest lookups that found nothing and were not
        retyped within ``RETYPE_WITHIN`` as a found number one digit or one swap away (a
        typo, which the policy forgives): the misses the insider saw on their own screen."""
        left_out = self.left_out or frozenset()
        mine = [
            (when, row)
            for index, (when, row) in enumerate(self.baseline.rows)
            if row[1] == insider.employee and index not in left_out
        ]
        misses: dict[int, int] = {}
        for index, (when, row) in enumerate(mine):
            if _found(row):
                continue
            if any(
                at - when <= RETYPE_WITHIN and _found(later) and _retype_of(row, later)
                for at, later in mine[index + 1 : index + 4]
            ):
                continue
            day = self.baseline.day_of(when)
            misses[day] = misses.get(day, 0) + 1
        return misses

    def foreign_businesses(self, insider: Staff) -> list[CorporateAccount]:
        """The business customers whose reference ``insider`` never worked under."""
        own = self.baseline.references.get(insider.employee, set())
        return [b for b in self.baseline.businesses if b.reference not in own]

    def found(self, probe: Probe) -> bool:
        """The backend's answer: whether it has a record of the number (every line of a
        business customer is one)."""
        if probe.found is not None:
            return probe.found
        return self.book.found(probe.number)

    def account(self, probe: Probe) -> str:
        """The business account the backend's record names (EVENTS.csv's ``account``): replay
        withholds the record where the policy's ``[accounts]`` would, as the live proxy does."""
        if not self.found(probe):
            return ""
        business = self.baseline.business_of(int(probe.number[3:]))
        return "" if business is None else business.reference

    def random_number(self) -> str:
        """A number drawn uniformly from the allocated range, as a random typist types one."""
        return number_of(random_subscriber(self.rng))


def _found(row: tuple[str, ...]) -> bool:
    """Whether an EVENTS.csv row found a record."""
    return row[7].strip().lower() == "true"


def _retype_of(miss: tuple[str, ...], later: tuple[str, ...]) -> bool:
    """Whether ``later``'s number is ``miss``'s retyped (as ``rules.is_typo_of`` says); a
    number the proxy would refuse is no one's retype."""
    try:
        return is_typo_of(canonical(miss[4]), canonical(later[4]))
    except ValueError:
        return False


def probes_over(first: int, end: int, intensity: float) -> int:
    """Probes that working days ``first`` to ``end`` (exclusive) get at ``intensity`` a day,
    rounded so that consecutive stretches add up to the whole period's (0.5: one every other
    day)."""
    return int(end * intensity + 1e-9) - int(first * intensity + 1e-9)


def spread(first: float, last: float, count: int, rng: random.Random) -> list[float]:
    """``count`` moments spread evenly over [first, last], each jittered within its slot."""
    if count <= 0:
        return []
    width = max(last - first, MIN_GAP * count) / count
    return [first + (i + rng.uniform(0.1, 0.9)) * width for i in range(count)]


def sittings(
    first: float, last: float, count: int, rng: random.Random, size: int = 10
) -> list[float]:
    """``count`` moments in sittings of ``size`` lookups seconds apart, sittings spread out."""
    starts = spread(first, last, -(-count // size), rng)
    times: list[float] = []
    for start in starts:
        for i in range(min(size, count - len(times))):
            times.append(start + i * rng.uniform(MIN_GAP, 3 * MIN_GAP))
    return times


class Blocks:
    """Numbers of one random 010-XXXX block in shuffled order (no step looks like a scan),
    a new block once it is used up or when asked."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.numbers: list[str] = []

    def fresh(self) -> None:
        """Start on a new block."""
        prefix = self.rng.randint(SUBSCRIBER_MIN // 10_000, SUBSCRIBER_MAX // 10_000)
        self.numbers = [number_of(prefix * 10_000 + i) for i in range(10_000)]
        self.rng.shuffle(self.numbers)

    def next(self) -> str:
        """The block's next number."""
        if not self.numbers:
            self.fresh()
        return self.numbers.pop()


def walk(rng: random.Random, step: int) -> Iterator[str]:
    """Numbers ``step`` apart from a random start, restarting at the range's end."""
    cursor = random_subscriber(rng)
    while True:
        cursor += step
        if not SUBSCRIBER_MIN <= cursor <= SUBSCRIBER_MAX:
            cursor = random_subscriber(rng)
        yield number_of(cursor)
