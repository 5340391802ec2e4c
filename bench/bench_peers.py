"""What judging the peer rules costs, by the size of the peer group.

Learning an outcome judges the peer rules whose metric moved (a miss of a new number, a
forgiven typo, and every rule at each tenth new number of an employee's day). The first
judgement of a minute in a group adds up its open bucket (three fields per clerk) and
computes the group's statistics, so its cost grows with the group; the others of that minute
read the employee's own fields; bench/perf, whose employees make a few lookups each, rarely
reaches one. This times ``PeerTally.fired`` for the policy's peer rules sharing
a tally, on synthetic tallies of ``--sizes`` clerks (a tenth of their lookups missed, a
twenty-fifth forgiven as typos), the window's closed buckets already remembered as they are
after a group's first judgement of the day: once computing the group's statistics (the first
judgement of a minute, ``peers.BASELINE_SECONDS``) and once reusing them, against adding up
the open bucket alone, the baseline of the same invocation. Run from the repository root:
``python -m bench.bench_peers [--policy config/policy.toml] [--sizes 100,300,667]
[--rounds 200]``.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lookup_proxy.guard.peers import PeerCheck, PeerTally, add_up
from lookup_proxy.policy import PeerRule, load_policy

DAY = 86_400.0


def tally_of(size: int, seed: int) -> list[Any]:
    """One open bucket's flat fields for ``size`` clerks."""
    rng = random.Random(seed)
    flat: list[Any] = []
    for index in range(size):
        lookups = rng.randint(50, 400)
        who = f"E{index:05d}"
        flat += [f"{who}|o", lookups, f"{who}|m", lookups // 10, f"{who}|t", lookups // 25]
    return flat


def best_of(rounds: int, work: Callable[[], object]) -> float:
    """Microseconds a call, the best of five batches of ``rounds`` calls."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(rounds):
            work()
        best = min(best, (time.perf_counter() - started) / rounds)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", type=Path, default=Path("config/policy.toml"))
    parser.add_argument("--sizes", default="100,300,667")
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    rules = [r for r in load_policy(args.policy).rules if isinstance(r, PeerRule)]
    if not rules:
        raise SystemExit(f"{args.policy}: no peer rules to judge")
    checks = [PeerCheck(rule) for rule in rules]
    tally = PeerTally("lp", checks)
    now = 40 * DAY + 3600
    print(f"{len(checks)} peer rules of {args.policy} ({', '.join(r.name for r in rules)})")
    print(
        "| clerks in the group | add up the open bucket | judge every rule, statistics "
        "computed | ratio | the same, statistics reused | ratio |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for size in (int(part) for part in args.sizes.split(",")):
        tallies = [tally_of(size, day) for day in range(tally.buckets)]
        tally.fired(checks, "E00001", "r:bench", now, tallies)  # remembers the closed buckets
        open_only = tallies[-1:]
        parse = best_of(args.rounds, lambda bucket=open_only: add_up(bucket))

        def judge(bucket: list[list[Any]] = open_only, fresh: bool = False) -> object:
            if fresh:
                tally._baselines.clear()  # as the first judgement of a minute finds them
            return tally.fired(checks, "E00001", "r:bench", now, bucket)

        computed = best_of(args.rounds, lambda: judge(fresh=True))
        reused = best_of(args.rounds, judge)
        print(
            f"| {size} | {parse:.0f} µs | {computed:.0f} µs | {computed / parse:.1f} "
            f"| {reused:.0f} µs | {reused / parse:.2f} |"
        )


if __name__ == "__main__":
    main()
