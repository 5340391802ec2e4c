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
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from lookup_proxy.guard.rules import is_typo_of
from lookup_proxy.simulation.number_space import canonical

TYPO_SECONDS = 60
RATES = (1, 2, 3, 4, 5, 6, 8, 10)
CORPORATE = "CORPORATE_ACCOUNT"


def honest_days(
    events: Path, truth: Path
) -> tuple[dict[str, list[tuple[int, int]]], dict[str, str]]:
    """Per honest clerk: (distinct numbers, distinct misses not forgiven) per day; their regions."""
    actors = {}
    with truth.open(newline="") as handle:
        for row in csv.DictReader(handle):
            actors[int(row["row"])] = (row["actor"], row["threat"])
    honest_ids: set[str] = set()
    days: dict[str, dict[int, dict[str, bool]]] = defaultdict(lambda: defaultdict(dict))
    last_miss: dict[str, tuple[float, str, int]] = {}
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
                if (
                    previous
                    and stamp - previous[0] <= TYPO_SECONDS
                    and is_typo_of(previous[1], number)
                ):
                    numbers.pop(previous[1], None)  # forgiven: a typo and its retype
                numbers[number] = True
            else:
                numbers.setdefault(number, False)
                last_miss[employee] = (stamp, number, day)
    assert first_day is not None, "no honest lookups in the events"
    span = max(d for per in days.values() for d in per) - first_day + 1
    table: dict[str, list[tuple[int, int]]] = {}
    for employee in honest_ids - excluded:
        per = days[employee]
        table[employee] = [
            (
                len(per.get(first_day + d, {})),
                sum(not f for f in per.get(first_day + d, {}).values()),
            )
            for d in range(span)
        ]
    return table, region


def region_shares(
    table: dict[str, list[tuple[int, int]]], region: dict[str, str]
) -> dict[str, list[float]]:
    """The median clerk's share of misses per region and day (what predicts a clerk's misses)."""
    shares: dict[str, list[float]] = {}
    span = len(next(iter(table.values())))
    for name in set(region.values()):
        clerks = [table[e] for e in table if region[e] == name]
        daily = []
        for d in range(span):
            values = [m / n for n, m in (c[d] for c in clerks) if n >= 20]
            daily.append(statistics.median(values) if values else 0.0)
        shares[name] = daily
    return shares


def cusum_path(days: list[tuple[int, int]], shares: list[float], shift: float) -> list[float]:
    """Page's statistic after each day for a rise of ``shift`` misses a day (Poisson model)."""
    statistic, path = 0.0, []
    for (numbers, misses), share in zip(days, shares, strict=True):
        expected = max(share * numbers, 0.5) if numbers else 0.0
        if expected:
            statistic = max(0.0, statistic + misses * math.log1p(shift / expected) - shift)
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
    args = parser.parse_args(argv)
    table, region = honest_days(args.events, args.truth)
    shares = region_shares(table, region)
    rng = random.Random(args.seed)
    span = len(next(iter(table.values())))
    miss_share = 1.0 - args.density
    print(
        f"{len(table)} honest clerks over {span} days; honest clerks flagged in the month: "
        f"{args.flag_share:.1%} (threshold set per rate)"
    )
    print(
        "| probes/day | days to flag: median | 90th pct | worst | records before flag: median | 90th pct |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for rate in RATES:
        shift = rate * miss_share
        honest_peaks = sorted(
            max(cusum_path(days, shares[region[e]], shift)) for e, days in table.items()
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
                numbers, own = planted[d]
                planted[d] = (numbers + rate, own + misses)
                if cusum_path(planted[: d + 1], shares[region[employee]][: d + 1], shift)[-1] > cut:
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
