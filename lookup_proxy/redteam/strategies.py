"""Evasion strategies of an insider who has read the policy: each a small parametrised class.

Every strategy plans a month of probes for a given intensity (probes per working day, per
insider) and a few knobs of its own (reason, shape, gap, group size); the search varies them.
A strategy's ``name`` is its row in the report. They place probes only on the insider's
working days and, except where hours are the point, inside the span of their honest work, so
the attack hides where the policy would have to find it.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from itertools import cycle
from typing import ClassVar

from lookup_proxy.policy import MissesRule, Policy
from lookup_proxy.redteam.baseline import Staff
from lookup_proxy.redteam.probes import (
    HOUR,
    Blocks,
    Probe,
    Stage,
    probes_over,
    sittings,
    spread,
    walk,
)
from lookup_proxy.simulation.contracts import CORPORATE_ROLE
from lookup_proxy.simulation.number_space import number_of, typo_of
from lookup_proxy.simulation.roster import business_lines

Knob = str | int | float
Knobs = Mapping[str, Knob]

LENIENT_REASON = "NEW_SUBSCRIPTION"
"""The reason an informed prober claims where nothing else matters: the one a walk-in who is
not a customer honestly gets, so the one a policy must forgive misses under."""


class Strategy(abc.ABC):
    """One way to probe; ``knobs`` lists each knob's values, the first being the default."""

    name: str
    role: ClassVar[str] = "clerk"
    """``clerk`` or ``corporate``: whom the insider must be."""
    start: ClassVar[int] = 4
    """The first intensity the search tries."""
    ceiling: ClassVar[int] = 240
    """The most probes per working day the search tries (a person at a keyboard)."""
    in_headline: ClassVar[bool] = True
    """Whether the row competes for the headline (and for combinations): not for an insider
    who already has a list of real customers (:class:`CustomerList`), which is beyond what a
    lookup pattern can find at an honest pace; the report gives that row a line of its own."""

    def __init__(self, name: str, knobs: Mapping[str, Sequence[Knob]] | None = None) -> None:
        self.name = name
        self.knobs: dict[str, tuple[Knob, ...]] = {k: tuple(v) for k, v in (knobs or {}).items()}

    def insiders(self, knobs: Knobs) -> int:
        """How many insiders take part (groups: their size)."""
        del knobs
        return 1

    def describe(self, intensity: float, knobs: Knobs) -> str:
        """A parameter set as the report shows it."""
        return " ".join([f"{intensity:g}/day", *(f"{k}={v}" for k, v in knobs.items())])

    @abc.abstractmethod
    def plan(self, stage: Stage, intensity: float, knobs: Knobs) -> list[Probe]:
        """Every probe of the period, for every insider of the stage."""

    def own_work(self, knobs: Knobs) -> float:
        """The share of the insiders' own honest lookups kept in the trial (all of them,
        but for an insider who does little honest work: :class:`Quiet`)."""
        del knobs
        return 1.0

    def regions(self, knobs: Knobs) -> int:
        """How many regions each insider's working days rotate over, their honest work and
        probes alike (their own only, but for a relief clerk: :class:`Relief`)."""
        del knobs
        return 1

    def region_work(self, knobs: Knobs) -> float:
        """The share of the honest visits kept of the insiders' colleagues in their region
        (all of them, but in a region of quiet stores: :class:`QuietRegion`)."""
        del knobs
        return 1.0


class Paced(Strategy):
    """Random numbers under one reason, spread over the working day (or in short sittings)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"paced {reason}", {"shape": ("even", "sittings")})
        self.reason = reason

    def plan(self, stage: Stage, intensity: float, knobs: Knobs) -> list[Probe]:
        place = spread if knobs["shape"] == "even" else sittings
        return [
            Probe(at, insider.employee, stage.random_number(), self.reason)
            for insider, _, at in stage.moments(intensity, place)
        ]


class TypoFarm(Strategy):
    """A one-digit or adjacent-swap variant of a known customer, then that customer retyped.

    The variant is the probe; the retype, seconds later, makes the miss look like a typo the
    policy forgives. ``same`` keeps retyping one customer; ``many`` cycles through every
    customer the insider has met (a fresh-looking retype each time). Both under a cover
    reason or the one whose misses are expected (``reason``). Given the policy's ``visit``
    (``typo_visit`` of a rule bounding returning customers' retypes), ``many`` also tries
    ``customer=this visit``: the newest customer met for the first time within the last
    visit's span (nine tenths of it) under that ``reason``, which such a rule forgives as a
    real retype.
    """

    def __init__(self, same: bool, visit: float | None = None) -> None:
        kind = "same customer" if same else "many customers"
        knobs: dict[str, tuple[Knob, ...]] = {
            "retype_after": (8, 40),
            "reason": ("BILLING_INQUIRY", LENIENT_REASON),
        }
        if visit is not None and not same:
            knobs["customer"] = ("any met", "this visit")
        super().__init__(f"typo-farm {kind}", knobs)
        self.same = same
        self.visit = visit or 0.0

    def plan(self, stage: Stage, intensity: float, knobs: Knobs) -> list[Probe]:
        retype_after = int(knobs["retype_after"])
        reason = str(knobs["reason"])
        this_visit = knobs.get("customer") == "this visit"
        probes: list[Probe] = []
        turn = 0
        for insider, _, at in stage.moments(intensity):
            if this_visit:
                visiting = stage.first_met(insider, at - 0.9 * self.visit, at)
                known = [number for number, first in visiting if first == reason]
                if not known:
                    continue
                customer = known[-1]
            else:
                known = stage.met_before(insider, at)
                if not known:
                    continue
                customer = known[0] if self.same else known[-1 - turn % len(known)]
                turn += 1
            me = insider.employee
            probes.append(Probe(at, me, typo_of(customer, stage.rng), reason))
            retyped = at + retype_after * stage.rng.uniform(0.8, 1.2)
            probes.append(Probe(retyped, me, customer, reason, counts=False, found=True))
        return probes


class TypoFarmOwnVisits(Strategy):
    """A variant typed seconds before one of the insider's own honest lookups of a customer.

    The honest lookup is the retype, so each forgiven miss is followed by a customer at the
    counter met for the first time that day, under the visit's own reason: nothing tells it
    from a real typo but the clerk's rate of typos. The variant goes before the first lookup
    of a customer that day, at most one per visit, on ``intensity`` visits a working day.
    """

    def __init__(self) -> None:
        super().__init__("typo-farm own visits", {"retype_after": (6, 12)})

    def plan(self, stage: Stage, intensity: float, knobs: Knobs) -> list[Probe]:
        retype_after = int(knobs["retype_after"])
        probes: list[Probe] = []
        for insider in stage.insiders:
            visits = stage.first_visits(insider)
            for day, _, count in stage.daily(insider, intensity):
                todays = visits.get(day, [])
                for at, number, reason in stage.rng.sample(todays, min(count, len(todays))):
                    variant = typo_of(number, stage.rng)
                    before = at - retype_after * stage.rng.uniform(0.8, 1.2)
                    probes.append(Probe(before, insider.employee, variant, reason))
        return probes


class CorporateExempt(Strategy):
    """A corporate-sales insider under the corporate reason, with a real-looking reference.

    ``random`` probes any number; ``runs`` walks consecutive lines from a random start, as a
    rep does for a business customer, the shape the scan rules exempt; ``other businesses``
    walks the lines of the chain's business customers the rep does not serve (every line a
    record), under the rep's own reference, which a policy without ``[accounts]`` ties to
    nothing; ``their references`` walks them under each business's own reference (a
    reference is no secret: it is on the contract and on a colleague's screen), which
    ``[accounts]`` alone cannot tell from that business's own rep.
    """

    role = "corporate"

    def __init__(self, reason: str) -> None:
        patterns = ("random", "runs", "other businesses", "their references")
        super().__init__(f"exempt {reason} (corporate rep)", {"pattern": patterns})
        self.reason = reason

    def plan(self, stage: Stage, intensity: float, knobs: Knobs) -> list[Probe]:
        pattern = knobs["pattern"]
        probes: list[Probe] = []
        numbers = walk(stage.rng, 1)
        references = {s.employee: self._reference(stage, s.employee) for s in stage.insiders}
        lines = {s.employee: business_lines(stage.foreign_businesses(s), 1) for s in stage.insiders}
        for insider, _, at in stage.moments(intensity):
            reference = references[insider.employee]
            if pattern in ("other businesses", "their references"):
                line = next(lines[insider.employee], None)
                if line is None:
                    continue  # every line walked: nothing more to find
                number = number_of(line)
                business = stage.baseline.business_of(line)
                if pattern == "their references" and business is not None:
                    reference = business.reference
            else:
                number = next(numbers) if pattern == "runs" else stage.random_number()
            probes.append(Probe(at, insider.employee, number, self.reason, reference))
        return probes

    def _reference(self, stage: Stage, employee: str) -> str:
        """A reference the insider has used honestly, or one shaped like them."""
        for _, row in stage.baseline.rows:
            if row[1] == employee and row[5] == self.reason and row[6]:
                return row[6]
        return f"CORP-{stage.rng.randrange(1_000_000):06d}"


class BusinessWalk(Strategy):
    """A clerk walking the lines of the chain's business customers under a cover reason.

    A business owns consecutive lines, so where a random number finds a record one time in
    seven, a step along a business's lines finds one every time and misses nothing: no rule
    on misses sees it. The walk goes round the businesses in turn (each number block's count
    grows as slowly as it can) and through each in passes ``stride`` apart (just past the
    policy's largest sequential ``distance``, or 1), so no two lookups in a row are close.
    """

    def __init__(self, reach: int) -> None:
        strides = (reach + 1, 1) if reach else (1,)
        super().__init__(
            "walk business lines",
            {"stride": strides, "reason": ("BILLING_INQUIRY", LENIENT_REASON)},
        )

    def plan(self, stage: Stage, intensity: float, knobs: Knobs) -> list[Probe]:
        stride, reason = int(knobs["stride"]), str(knobs["reason"])
        lines = {
            s.employee: business_lines(stage.baseline.businesses, stride) for s in stage.insiders
        }
        probes: list[Probe] = []
        for insider, _, at in stage.moments(intensity):
            line = next(lines[insider.employee], None)
            if line is not None:
                probes.append(Probe(at, insider.employee, number_of(line), reason))
        return probes


class CustomerList(Strategy):
    """An insider with a list of real customers (leaked, or noted at the counter) who are new
    to them: every lookup finds a record and none misses, so no share of misses moves; only
    how many they look up beside their own day's work shows. Business lines are left off the
    list (``[accounts]`` withholds those). Reported apart from the headline: at an honest pace
    no lookup pattern finds it (the threat model), above one the policy should.
    """

    start = 16
    ceiling = 640
    in_headline = False

    def __init__(self) -> None:
        super().__init__(
            "list of real customers", {"shape": ("even", "sittings"), "every": (1, 10, 20)}
        )

    def plan(self, stage: Stage, intensity: float, knobs: Knobs) -> list[Probe]:
        place = spread if knobs["shape"] == "even" else sittings
        met = {s.employee: {n for _, n, _ in stage.met(s)} for s in stage.insiders}
        taken: set[str] = set()
        probes: list[Probe] = []
        for insider, _, at in stage.moments(intensity, place, int(knobs["every"])):
            number = stage.random_number()
            while (
                number in taken
                or number in met[insider.employee]
                or not stage.book.found(number)
                or stage.baseline.business_of(int(number[3:])) is not None
            ):
                number = stage.random_number()
            taken.add(number)
            probes.append(Probe(at, insider.employee, number, LENIENT_REASON, found=True))
        return probes


class Slow(Strategy):
    """A few probes a day, every working day, at random moments, rotating everyday reasons."""

    start = 2
    ceiling = 12

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__("slow multi-week")
        self.reasons = tuple(reasons)

    def plan(self, stage: Stage, intensity: float, knobs: Knobs) -> list[Probe]:
        reasons = cycle(self.reasons)
        probes: list[Probe] = []
        for insider in stage.insiders:
            for _, span, count in stage.daily(insider, intensity):
                for _ in range(count):
                    at = stage.rng.uniform(span.first, span.last)
                    probes.append(Probe(at, insider.employee, stage.random_number(), next(reasons)))
        return probes


class AfterHours(Strategy):
    """Probes before the store opens (07:00-09:00) or after it closes (21:30-23:00), KST."""

    WINDOWS: ClassVar[dict[str, tuple[float, float]]] = {
        "morning": (7 * HOUR, 9 * HOUR),
        "evening": (21.5 * HOUR, 23 * HOUR),
    }

    def __init__(self) -> None:
        super().__init__("after hours", {"window": ("morning", "evening")})

    def plan(self, stage: Stage, intensity: float, knobs: Knobs) -> list[Probe]:
        low, high = self.WINDOWS[str(knobs["window"])]
        probes: list[Probe] = []
        for insider in stage.insiders:
            for day, _, count in stage.daily(insider, intensity):
                midnight = stage.baseline.midnight(day)
                for at in spread(midnight + low, midnight + high, count, stage.rng):
                    probes.append(
                        Probe(at, insider.employee, stage.random_number(), LENIENT_REASON)
                    )
        return probes


class Group(Strategy):
    """k insiders in different stores and regions, sharing one block or each on their own."""

    def __init__(self, shared: bool) -> None:
        how = "sharing a block" if shared else "independent"
        super().__init__(f"group {how}", {"k": (3, 5)})
        self.shared = shared

    def insiders(self, knobs: Knobs) -> int:
        return int(knobs["k"])

    def plan(self, stage: Stage, intensity: float, knobs: Knobs) -> list[Probe]:
        block = Blocks(stage.rng)
        return [
            Probe(
                at,
                insider.employee,
                block.next() if self.shared else stage.random_number(),
                LENIENT_REASON,
            )
            for insider, _, at in stage.moments(intensity)
        ]


class Rotation(Strategy):
    """Every everyday reason and every spelling in turn, to split per-reason counts."""

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__("format and reason rotation")
        self.reasons = tuple(reasons)

    def plan(self, stage: Stage, intensity: float, knobs: Knobs) -> list[Probe]:
        return [
            Probe(
                at,
                insider.employee,
                stage.random_number(),
                self.reasons[turn % len(self.reasons)],
                style=turn % 5,
            )
            for turn, (insider, _, at) in enumerate(stage.moments(intensity))
        ]


class ShiftBurst(Strategy):
    """All of a day's probes in the first minutes of the shift, before the queue builds."""

    def __init__(self) -> None:
        super().__init__("burst at shift start", {"minutes": (10, 30)})

    def plan(self, stage: Stage, intensity: float, knobs: Knobs) -> list[Probe]:
        minutes = int(knobs["minutes"])
        return [
            probe
            for insider in stage.insiders
            for _, span, count in stage.daily(insider, intensity)
            for probe in _lenient(stage, insider, span.first, span.first + 60 * minutes, count)
        ]


class Surge(Strategy):
    """Every probe of ``every`` working days on the first of them, spread over its span, and
    none between. Rules that compare a week or a month see one bad day, rules that count an
    hour see a busy one, and flags that need several days to lock get one or two: one day's
    probing must be bounded on that day."""

    def __init__(self) -> None:
        super().__init__("surge days", {"every": (5, 10, 30)})

    def plan(self, stage: Stage, intensity: float, knobs: Knobs) -> list[Probe]:
        every = int(knobs["every"])
        probes: list[Probe] = []
        for insider in stage.insiders:
            for _, span, count in stage.daily(insider, intensity, every):
                probes += _lenient(stage, insider, span.first, span.last, count)
        return probes


class WaitOut(Strategy):
    """Probing in one calendar week of every ``period`` and none in the others, at ``period``
    times the intensity while it lasts: a rule whose window is a week has forgotten the last
    stretch when the next begins, so only rules over longer windows (a fortnight, a month, the
    escalation's fortnight of flag-days) see more than one."""

    def __init__(self) -> None:
        super().__init__("wait out the week", {"period": (2, 3)})

    def plan(self, stage: Stage, intensity: float, knobs: Knobs) -> list[Probe]:
        period = int(knobs["period"])
        probes: list[Probe] = []
        for insider in stage.insiders:
            on = [(day, span) for day, span in stage.days(insider) if (day // 7) % period == 0]
            for index, (_, span) in enumerate(on):
                count = probes_over(index, index + 1, intensity * period)
                probes += _lenient(stage, insider, span.first, span.last, count)
        return probes


class BlockScan(Strategy):
    """Numbers of one 010-XXXX block in shuffled order; a new block daily or kept all week."""

    def __init__(self) -> None:
        super().__init__("block scan", {"block": ("daily", "kept")})

    def plan(self, stage: Stage, intensity: float, knobs: Knobs) -> list[Probe]:
        daily = knobs["block"] == "daily"
        block = Blocks(stage.rng)
        probes: list[Probe] = []
        today = -1
        for insider, day, at in stage.moments(intensity):
            if daily and day != today:
                block.fresh()
                today = day
            probes.append(Probe(at, insider.employee, block.next(), LENIENT_REASON))
        return probes


class SequentialScan(Strategy):
    """An ascending walk resumed every day; the step can sit just outside the rules' reach."""

    def __init__(self, steps: Sequence[int]) -> None:
        super().__init__("sequential scan", {"step": tuple(steps)})

    def plan(self, stage: Stage, intensity: float, knobs: Knobs) -> list[Probe]:
        numbers = walk(stage.rng, int(knobs["step"]))
        return [
            Probe(at, insider.employee, next(numbers), LENIENT_REASON)
            for insider, _, at in stage.moments(intensity)
        ]


class Wrapped(Strategy):
    """Another strategy's probes, unchanged, by an insider placed otherwise: one knob of the
    wrapper's own (``knob``), which the base strategy never sees, says how."""

    def __init__(self, base: Strategy, prefix: str, knob: str, values: Sequence[Knob]) -> None:
        super().__init__(f"{prefix} {base.name}", {**base.knobs, knob: tuple(values)})
        self.base = base
        self.knob = knob

    def plan(self, stage: Stage, intensity: float, knobs: Knobs) -> list[Probe]:
        return self.base.plan(stage, intensity, {k: v for k, v in knobs.items() if k != self.knob})


class Padded(Wrapped):
    """Another strategy, with the insider's own numbers inflated by customers they know.

    Ratios and peer shares divide misses (or forgiven typos) by the numbers an employee looked
    up, and a relative typo budget grows with them. Lookups of customers the insider met
    earlier disclose nothing new, but each is one more number: ``pad`` a working day of them
    (distinct that day, cycling through everyone met before, spread over the day, under the
    insider's other everyday reasons) make the same misses look like a smaller share.
    """

    def __init__(self, base: Strategy, reasons: Sequence[str]) -> None:
        super().__init__(base, "padded", "pad", (100, 50, 200, 400))
        self.reasons = [r for r in reasons if r != LENIENT_REASON] or list(reasons)

    def plan(self, stage: Stage, intensity: float, knobs: Knobs) -> list[Probe]:
        probes = super().plan(stage, intensity, knobs)
        pad = int(knobs["pad"])
        for insider in stage.insiders:
            for _, span in stage.days(insider):
                known = stage.met_before(insider, span.first)
                if not known:
                    continue
                start = stage.rng.randrange(len(known))
                moments = spread(span.first, span.last, min(pad, len(known)), stage.rng)
                for i, at in enumerate(moments):
                    number = known[(start + i) % len(known)]
                    reason = stage.rng.choice(self.reasons)
                    probes.append(
                        Probe(at, insider.employee, number, reason, counts=False, found=True)
                    )
        return probes


class Quiet(Wrapped):
    """Another strategy, by an insider who does little honest work of their own.

    A part-timer, a manager or a back-office clerk with a terminal looks up a handful of
    numbers a week; a rule that judges only employees with enough numbers of their own (a peer
    rule's ``min_outcomes`` did until 2026-12-06) never judges them, so every probe of theirs
    is free. ``own_work`` is the share of the insider's honest visits kept (the rest never
    happen, whole visits, so a typo keeps its retype: ``trial.Arena._thinned``; their
    working days and hours stay, and the probes go there).
    """

    def __init__(self, base: Strategy) -> None:
        super().__init__(base, "quiet", "own_work", (0.1, 0.0, 0.3))

    def own_work(self, knobs: Knobs) -> float:
        return float(knobs["own_work"])


class Relief(Wrapped):
    """Another strategy, by a relief clerk who works in stores of several regions.

    Peer rules compare an employee with the peers of the group their token names (a region, in
    the shipped policy): a clerk whose days rotate over ``regions`` regions shows each one a
    part of their month, with its share of their misses: the same share, but a part's excess
    is a part of the whole and against chance a part weighs less. Each working day goes, with
    the day's honest work and probes, to the next of the insider's home region and
    ``regions - 1`` others (a store drawn in each).
    """

    def __init__(self, base: Strategy) -> None:
        super().__init__(base, "relief", "regions", (3, 2))

    def regions(self, knobs: Knobs) -> int:
        return int(knobs["regions"])


class QuietRegion(Wrapped):
    """Another strategy, by an insider in a region of quiet stores, as quiet as the rest.

    A peer rule compares shares only of clerks with ``min_outcomes`` numbers in its window;
    where most of a region's clerks never get there (rural stores, part-timers), the region
    had members enough not to count as small, yet few peers to compare with, and no one
    below the floor was judged while most of the group was below it (until 2026-12-07: such
    a group now falls back on the chain). ``region_work`` is the share of honest visits kept
    for everyone in the insider's region, the insider included.
    """

    def __init__(self, base: Strategy) -> None:
        super().__init__(base, "quiet region", "region_work", (0.25, 0.1, 0.5))

    def own_work(self, knobs: Knobs) -> float:
        return float(knobs["region_work"])

    def region_work(self, knobs: Knobs) -> float:
        return float(knobs["region_work"])


class Combined(Strategy):
    """Several one-clerk strategies at once, each at a share of the edge it found alone.

    An insider who has read the policy spends every budget it leaves, not only one: intensity
    ``n`` runs each part at n/8 of its own edge (8: every part at its edge, together), so the
    search finds how much of the parts' budgets add up before something binds.
    """

    start = 8
    ceiling = 16

    def __init__(self, parts: Sequence[tuple[Strategy, float, Knobs]]) -> None:
        super().__init__("combined: " + " + ".join(part.name for part, _, _ in parts))
        self.parts = list(parts)

    def describe(self, intensity: float, knobs: Knobs) -> str:
        each = "; ".join(
            part.describe(edge * intensity / 8, part_knobs) for part, edge, part_knobs in self.parts
        )
        return f"{intensity / 8:g} of each edge ({each})"

    def plan(self, stage: Stage, intensity: float, knobs: Knobs) -> list[Probe]:
        probes: list[Probe] = []
        for part, edge, part_knobs in self.parts:
            probes += part.plan(stage, edge * intensity / 8, part_knobs)
        return probes

    def own_work(self, knobs: Knobs) -> float:
        """One insider does one day's work: the least any part keeps."""
        return min(part.own_work(part_knobs) for part, _, part_knobs in self.parts)

    def regions(self, knobs: Knobs) -> int:
        """One insider works where they work: the most regions any part rotates over."""
        return max(part.regions(part_knobs) for part, _, part_knobs in self.parts)

    def region_work(self, knobs: Knobs) -> float:
        """One region: the least work any part leaves its clerks."""
        return min(part.region_work(part_knobs) for part, _, part_knobs in self.parts)


class Budgeted(Strategy):
    """Probing that keeps the insider's misses level, as an insider who watches their own
    screen can: few probes on a day of many honest misses, more on a quiet one, and each
    day's probes go on until that day's quota of misses is spent, however many found a record
    on the way. Misses are what every comparison counts; a fixed pace has to stay far enough
    under a threshold that a day of many walk-ins does not push it over, and an insider who
    sees their answers need not. ``intensity`` counts the probes' misses, not the probes: the
    month's ``intensity`` × working days lift the days of fewest honest misses to one level.
    The probes go in the last quarter of each day's work, when the day's walk-ins are known;
    a day ends at ``ceiling`` probes, misses spent or not (a density near one rarely misses)."""

    def __init__(self) -> None:
        super().__init__("budgeted NEW_SUBSCRIPTION")

    def describe(self, intensity: float, knobs: Knobs) -> str:
        del knobs
        return f"{intensity:g} misses/day"

    def plan(self, stage: Stage, intensity: float, knobs: Knobs) -> list[Probe]:
        del knobs
        probes: list[Probe] = []
        for insider in stage.insiders:
            honest = stage.honest_misses(insider)
            days = list(stage.days(insider))
            quotas = levelled([honest.get(day, 0) for day, _ in days], intensity * len(days))
            for (_, span), quota in zip(days, quotas, strict=True):
                numbers: list[str] = []
                missed = 0
                while missed < quota and len(numbers) < self.ceiling:
                    numbers.append(stage.random_number())
                    missed += not stage.book.found(numbers[-1])
                late = span.last - (span.last - span.first) / 4
                moments = spread(late, span.last, len(numbers), stage.rng)
                probes += [
                    Probe(at, insider.employee, number, LENIENT_REASON)
                    for at, number in zip(moments, numbers, strict=True)
                ]
        return probes


def levelled(honest: Sequence[int], total: float) -> list[int]:
    """Misses to add to each day so that ``total`` of them (rounded) lift the days of fewest
    ``honest`` misses to one level, the earliest first among equals (water-filling)."""
    added = [0] * len(honest)
    for _ in range(round(total) if honest else 0):
        low = min(range(len(honest)), key=lambda i: honest[i] + added[i])
        added[low] += 1
    return added


def _lenient(stage: Stage, insider: Staff, first: float, last: float, count: int) -> list[Probe]:
    """``count`` random numbers spread over [first, last], under the lenient reason."""
    return [
        Probe(at, insider.employee, stage.random_number(), LENIENT_REASON)
        for at in spread(first, last, count, stage.rng)
    ]


def everyday_reasons(policy: Policy) -> list[str]:
    """Reason codes any clerk may use without a reference: the cover of every clerk strategy."""
    return [
        code
        for code, reason in policy.reasons.items()
        if reason.roles is None and reason.reference_pattern is None
    ]


def corporate_reasons(policy: Policy) -> list[str]:
    """Reason codes only the corporate role may use."""
    return [
        code
        for code, reason in policy.reasons.items()
        if reason.roles is not None and CORPORATE_ROLE in reason.roles
    ]


def scan_reach(policy: Policy) -> int:
    """The largest ``distance`` of the policy's sequential rules (0 when it has none)."""
    return max(
        (int(getattr(r, "distance", 0)) for r in policy.rules if r.kind == "sequential"), default=0
    )


def typo_visit(policy: Policy) -> float | None:
    """The longest ``typo_visit`` of the rules that bound returning customers' retypes (None
    when none does): a retype of a customer first met within it is forgiven as a real one."""
    visits = [
        r.typo_visit
        for r in policy.rules
        if isinstance(r, MissesRule) and r.typo_returning_limit is not None
    ]
    return max(visits, default=None)


def strategies_for(policy: Policy) -> list[Strategy]:
    """The whole family, shaped by what the policy file tells an insider."""
    everyday = everyday_reasons(policy)
    reach = scan_reach(policy)
    family: list[Strategy] = [Paced(reason) for reason in everyday]
    family += [TypoFarm(same=True), TypoFarm(same=False, visit=typo_visit(policy))]
    family += [TypoFarmOwnVisits()]
    family += [CorporateExempt(reason) for reason in corporate_reasons(policy)]
    family += [BusinessWalk(reach), CustomerList()]
    family += [
        Slow(everyday),
        AfterHours(),
        Group(shared=True),
        Group(shared=False),
        Rotation(everyday),
        ShiftBurst(),
        Surge(),
        WaitOut(),
        BlockScan(),
        SequentialScan((1, reach + 1) if reach else (1,)),
    ]
    if LENIENT_REASON in everyday:
        family.append(Budgeted())
        family.append(Padded(Paced(LENIENT_REASON), everyday))
        family.append(Quiet(Paced(LENIENT_REASON)))
        family.append(Relief(Paced(LENIENT_REASON)))
        family.append(QuietRegion(Paced(LENIENT_REASON)))
    family.append(Padded(TypoFarm(same=False), everyday))
    return family
