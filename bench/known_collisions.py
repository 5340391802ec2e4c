"""Numbers the filter takes for known: what an insider gets by choosing them, with and without
the filter's key.

Every share of misses counts only numbers new to the employee, asked of a Bloom filter of the
numbers they met (``guard/known_numbers.py``), and a number the filter wrongly calls known is
counted nowhere. An insider who keeps the numbers they looked up, and can compute the filter's
bits, hashes the whole number space offline and keeps the numbers whose bits their own filter
already has; then probes those under the walk-in reason. This bench plays that insider on a
simulated chain: the first ``--history`` days are honest work, then the insider (the clerk with
the most numbers, or the median one) probes the numbers their previous generation's filter
takes for known, at each ``--rates`` a working day, until the generation turns. Two insiders:
one who computes the bits as the code does without its secret (the live proxy: the store's key
is a secret), and one who has the key (what an unkeyed filter, before 2026-12-07, gave anyone
who read the code; replay's key is fixed, so here that insider knows it). Each plan is replayed
(``redteam.trial.Arena``: the guard engine, memory store, event-time clock).

``python -m bench.known_collisions [--seed 1] [--rates 10,30,60] [--insider busiest]``: a scan
of the 80 million numbers takes a few minutes in Python; an attacker's C does it in well under
a minute.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lookup_proxy.guard.known_numbers import GENERATION, HASHES, offsets
from lookup_proxy.numbers import normalise_number
from lookup_proxy.policy import load_policy
from lookup_proxy.redteam.baseline import simulated, simulated_config
from lookup_proxy.redteam.probes import Probe, Stage
from lookup_proxy.redteam.trial import Arena
from lookup_proxy.replay import REPLAY_NUMBERS_KEY
from lookup_proxy.simulation.customer_book import CustomerBook
from lookup_proxy.simulation.number_space import SUBSCRIBER_MAX, SUBSCRIBER_MIN, number_of

DAY = 86_400.0
Bits = Callable[[str], list[int]]


def public_bits(number: str) -> list[int]:
    """The bits as the code computes them without the store's key (the hash unkeyed)."""
    digest = hashlib.blake2b(number.encode(), digest_size=2 * HASHES).digest()
    return [int.from_bytes(digest[2 * i : 2 * i + 2], "big") for i in range(HASHES)]


def keyed_bits(number: str) -> list[int]:
    """The bits as the guard under test computes them (replay's key)."""
    return offsets(number, REPLAY_NUMBERS_KEY)


def chosen(met: set[str], typed: set[str], bits: Bits) -> list[str]:
    """Every number never typed whose bits, as ``bits`` gives them, the filter of ``met`` has."""
    have = {bit for number in met for bit in bits(number)}
    return [
        number
        for subscriber in range(SUBSCRIBER_MIN, SUBSCRIBER_MAX + 1)
        if (number := number_of(subscriber)) not in typed and set(bits(number)) <= have
    ]


def since(first: float, when: float | None) -> str:
    """Days from the first probe, or ``-`` for never."""
    return "-" if when is None else f"{(when - first) / DAY:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/policy.toml")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--employees", type=int, default=40)
    parser.add_argument("--history", type=int, default=30, help="honest days before probing")
    parser.add_argument("--rates", default="10,30,60", help="probes a working day")
    parser.add_argument("--insider", choices=("busiest", "median"), default="busiest")
    args = parser.parse_args()
    policy = load_policy(args.config)
    days = args.history + 30
    baseline = simulated(policy, simulated_config(args.seed, args.employees, days))
    book = CustomerBook(args.seed, 0.14, baseline.business_ranges())
    numbers: dict[str, list[tuple[float, str]]] = {}
    for when, row in baseline.rows:
        numbers.setdefault(row[1], []).append((when, normalise_number(row[4], policy.numbers)))
    clerks = sorted(
        (len({n for _, n in numbers[s.employee]}), s.employee) for s in baseline.clerks()
    )
    employee = clerks[-1][1] if args.insider == "busiest" else clerks[len(clerks) // 2][1]
    start = baseline.midnight(args.history)
    generation = math.floor(start / GENERATION)
    turn = (generation + 1) * GENERATION
    met = {n for when, n in numbers[employee] if math.floor(when / GENERATION) == generation - 1}
    typed = {n for _, n in numbers[employee]}
    print(
        f"seed {args.seed}, {args.insider} clerk {employee}: {len(met)} numbers in the filter's "
        f"previous generation; probing from day {args.history} to the generation's turn "
        f"(day {(turn - baseline.midnight(0)) / DAY:.1f})"
    )
    print("| insider | numbers chosen (customers) | probes a working day | probes | records | "
          "first flagged (day) | locked (day) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="known-collisions-") as scratch:
        arena = Arena(policy, baseline, Path(scratch))
        for label, bits in (("without the key", public_bits), ("with the key", keyed_bits)):
            began = time.perf_counter()
            pool = chosen(met, typed, bits)
            random.Random(args.seed).shuffle(pool)
            scanned = time.perf_counter() - began
            found = sum(book.found(n) for n in pool)
            for rate in (float(r) for r in args.rates.split(",")):
                stage = Stage(baseline, [baseline.staff[employee]], book, random.Random(rate))
                moments = sorted(
                    at for _, day, at in stage.moments(rate) if day >= args.history and at < turn
                )
                left = list(pool)
                probes = [
                    Probe(at, employee, left.pop(), "NEW_SUBSCRIPTION") for at in moments if left
                ]
                outcome = arena.run(stage, probes)
                first = outcome.first_probe or 0.0
                print(
                    f"| {label} | {len(pool)} ({found}) | {rate:g} | {len(probes)} | "
                    f"{outcome.records[employee]} | {since(first, outcome.first_flag)} | "
                    f"{since(first, outcome.locked_at)} |",
                    flush=True,
                )
            print(f"(choosing took {scanned:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
