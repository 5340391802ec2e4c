"""The classic threat classes: insiders enumerating numbers who do not know the policy.

Each class is one Campaign subclass deciding which numbers an attacker types and when, inside
their own working hours and among their own honest work; ``build_campaigns`` gives every
planted attacker of a roster theirs. These are the attacks of DESIGN.md's threat model as they
were known before anyone read the policy; policy-aware insiders live in ``informed``.
"""

from __future__ import annotations

import abc
import random
from collections.abc import Sequence
from typing import Final

from lookup_proxy.simulation.contracts import CORPORATE_REASON, INFORMED_THREATS
from lookup_proxy.simulation.honest import EVERYDAY_REASONS, REASON_WEIGHTS
from lookup_proxy.simulation.number_space import (
    SUBSCRIBER_MAX,
    SUBSCRIBER_MIN,
    format_number,
    number_of,
    random_subscriber,
)
from lookup_proxy.simulation.roster import Employee
from lookup_proxy.simulation.workday import (
    LAST_SECOND,
    Event,
    Segment,
    session,
    split_count,
    time_in,
)
from lookup_proxy.simulation.world import World


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
        if threat in INFORMED_THREATS:
            continue  # lookup_proxy.simulation.informed plans those
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
