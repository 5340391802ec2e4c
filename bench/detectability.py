"""How fast *any* miss-counting rule can tell a quiet prober from honest clerks: the bound.

An insider who has read the policy hides a few NEW_SUBSCRIPTION probes a day among walk-ins who
are not customers. The only thing such a prober cannot hide is the misses (about six of seven
random numbers are nobody's); every other part of the pattern can be copied from honest work.
So the question a security officer needs answered is not "which rule?" but "how many days of
probing does it take before the misses of a prober differ from an honest clerk's by more than
chance, at the share of honest clerks we accept to flag?". This script answers it from a month of
honest traffic (a simulated one, or real EVENTS.csv with its truth), with the detector that is
optimal for the question: a CUSUM (Page's test) of each clerk's daily misses against what the
clerk's own number of lookups and the region's share that day predict, with the prober's rate as
the alternative (the detector is told the rate it is looking for: no real rule can do better).

For every probes-per-day rate it sets the threshold so that a given share of honest clerks is
flagged in the month (``--flag-share``), then plants a prober on every honest clerk in turn
(from a random day, the probes' misses drawn at the customer density) and reports the days
until the prober's CUSUM passes the threshold and the customer records the probes found
meanwhile. Misses a clerk retypes within 60 s into a number that is a typo of them are
forgiven first, as the guard forgives them.

Usage:
    python bench/detectability.py --events out/evaluate/events-11.csv \\
        --truth out/evaluate/truth-11.csv [--flag-share 0.03] [--density 0.14] [--seed 7]
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import statistics
import sys
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

from lookup_proxy.guard.rules import is_typo_of
from lookup_proxy.simulation.number_space import canonical

TYPO_SECONDS = 60
RATES = (1, 2, 3, 4, 5, 6, 8, 10)
CORPORATE = "CORPORATE_ACCOUNT"


Day = tuple[int, int, int]
"""A clerk's day: distinct numbers, distinct misses not forgiven, misses forgiven as typos."""
MISSES, TYPOS = 1, 2


def honest_days(events: Path, truth: Path) -> tuple[dict[str, list[Day]], dict[str, str]]:
    """Per honest clerk, their days (see ``Day``); and their regions."""
    actors = {}
    with truth.open(newline="") as handle:
        for row in csv.DictReader(handle):
            actors[int(row["row"])] = (row["actor"], row["threat"])
    honest_ids: set[str] = set()
    days: dict[str, dict[int, dict[str, bool]]] = defaultdict(lambda: defaultdict(dict))
    typos: dict[str, Counter[int]] = defaultdict(Counter)
    last_miss: dict[str, tuple[float, str]] = {}
    region: dict[str, str] = {}
    first_day: int | None = None
    excluded: set[str] = set()
    with events.open(newline="") as handle:
        for index, row in enumerate(csv.DictReader(handle), start=1):
            employee = row["employee"]
            actor, threat = actors.get(index, ("honest", ""))
            if actor != "honest" or threat:
                excluded.add(employee)  # attackers and corporate reps are not the baseline
                continue
            if row["reason"] == CORPORATE:
                continue
            moment = datetime.fromisoformat(row["timestamp"])
            stamp = moment.timestamp()
            day = moment.toordinal()
            first_day = day if first_day is None else min(first_day, day)
            number = canonical(row["number"])
            found = row["found"] == "true"
            region[employee] = row["region"]
            honest_ids.add(employee)
            numbers = days[employee][day]
            if found:
                previous = last_miss.get(employee)
                # Forgiven: a typo and its retype (the typo leaves the day's numbers).
                if (
                    previous is not None
                    and stamp - previous[0] <= TYPO_SECONDS
                    and is_typo_of(previous[1], number)
                    and numbers.pop(previous[1], None) is False
                ):
                    typos[employee][day] += 1
                numbers[number] = True
            else:
                numbers.setdefault(number, False)
                last_miss[employee] = (stamp, number)
    assert first_day is not None, "no honest lookups in the events"
    span = max(d for per in days.values() for d in per) - first_day + 1
    table: dict[str, list[Day]] = {}
    for employee in sorted(honest_ids - excluded):  # sorted: the planted draws repeat
        per = days[employee]
        table[employee] = [
            (
                len(per.get(first_day + d, {})),
                sum(not f for f in per.get(first_day + d, {}).values()),
                typos[employee][first_day + d],
            )
            for d in range(span)
        ]
    return table, region


def region_shares(
    table: dict[str, list[Day]], region: dict[str, str], metric: int = MISSES
) -> dict[str, list[float]]:
    """The median clerk's share (of the metric among their numbers) per region and day: what
    predicts a clerk's count."""
    shares: dict[str, list[float]] = {}
    span = len(next(iter(table.values())))
    for name in set(region.values()):
        clerks = [table[e] for e in table if region[e] == name]
        daily = []
        for d in range(span):
            values = [c[d][metric] / c[d][0] for c in clerks if c[d][0] >= 20]
            daily.append(statistics.median(values) if values else 0.0)
        shares[name] = daily
    return shares


def cusum_path(
    days: list[Day], shares: list[float], shift: float, metric: int = MISSES
) -> list[float]:
    """Page's statistic after each day for a rise of ``shift`` a day in the metric (Poisson)."""
    statistic, path = 0.0, []
    for day, share in zip(days, shares, strict=True):
        numbers, count = day[0], day[metric]
        expected = max(share * numbers, 0.5) if numbers else 0.0
        if expected:
            statistic = max(0.0, statistic + count * math.log1p(shift / expected) - shift)
        path.append(statistic)
    return path


def ninetieth(values: list[int]) -> int:
    return values[int(0.9 * (len(values) - 1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=Path, required=True)
    parser.add_argument("--truth", type=Path, required=True)
    parser.add_argument("--flag-share", type=float, default=0.03)
    parser.add_argument("--density", type=float, default=0.14)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--metric",
        choices=("misses", "typos"),
        default="misses",
        help="misses: NEW_SUBSCRIPTION probes among walk-ins; typos: probes dressed as typos "
        "(a neighbour of a known customer, then the customer retyped: forgiven when they miss)",
    )
    args = parser.parse_args(argv)
    metric = MISSES if args.metric == "misses" else TYPOS
    table, region = honest_days(args.events, args.truth)
    shares = region_shares(table, region, metric)
    rng = random.Random(args.seed)
    span = len(next(iter(table.values())))
    miss_share = 1.0 - args.density
    print(
        f"{len(table)} honest clerks over {span} days; honest clerks flagged in the month: "
        f"{args.flag_share:.1%} (threshold set per rate); metric: {args.metric}"
    )
    print(
        "| probes/day | days to flag: median | 90th pct | worst | records before flag: median | 90th pct |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for rate in RATES:
        shift = rate * miss_share
        honest_peaks = sorted(
            max(cusum_path(days, shares[region[e]], shift, metric)) for e, days in table.items()
        )
        cut = honest_peaks[
            min(len(honest_peaks) - 1, int(len(honest_peaks) * (1 - args.flag_share)))
        ]
        delays: list[int] = []
        records: list[int] = []
        for employee, days in table.items():
            start = rng.randrange(span // 4)
            planted = list(days)
            found = 0
            for d in range(start, span):
                misses = sum(rng.random() < miss_share for _ in range(rate))
                found += rate - misses
                numbers, own_misses, own_typos = planted[d]
                if metric == MISSES:  # new numbers, most of them nobody's
                    planted[d] = (numbers + rate, own_misses + misses, own_typos)
                else:  # variants that miss are forgiven typos (not numbers); the rest are found
                    planted[d] = (numbers + rate - misses, own_misses, own_typos + misses)
                path = cusum_path(
                    planted[: d + 1], shares[region[employee]][: d + 1], shift, metric
                )
                if path[-1] > cut:
                    delays.append(d - start)
                    records.append(found)
                    break
            else:
                delays.append(span - start)
                records.append(found)
        delays.sort()
        records.sort()
        print(
            f"| {rate} | {statistics.median(delays):.0f} | {ninetieth(delays)} | {delays[-1]} | "
            f"{statistics.median(records):.0f} | {ninetieth(records)} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
