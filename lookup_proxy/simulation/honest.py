"""Honest work: a clerk serving a queue, and a corporate rep walking a business's lines.

A policy that only ever saw attackers would happily block everyone; this is the traffic that
must flow untouched, modelled on DESIGN.md: repeat lookups in one visit, families, typos retyped
within seconds, walk-ins who are not customers, runs of consecutive corporate lines.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Final

from lookup_proxy.simulation.contracts import CORPORATE_REASON
from lookup_proxy.simulation.number_space import format_number, number_of, typo_of
from lookup_proxy.simulation.roster import Employee
from lookup_proxy.simulation.workday import HOUR, LAST_SECOND, Event, Segment, time_in
from lookup_proxy.simulation.world import World

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

WALK_IN_SHARE: Final = 0.10  # switching from another carrier: not a customer, not found
FAMILY_SHARE: Final = 0.12  # several unrelated numbers in one visit
TYPO_RATE: Final = 0.04  # per intended lookup: a mistyped number first, then the retype
CORPORATE_VISIT_FACTOR: Final = 0.5  # reps spend part of their day on business accounts


def honest_style(employee: Employee, rng: random.Random) -> int:
    """Pick how a clerk types this number: mostly their habit, sometimes anything."""
    roll = rng.random()
    if roll < 0.85:
        return employee.style
    if roll < 0.95:
        return 1 - employee.style
    return rng.randint(2, 4)


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
