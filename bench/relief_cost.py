"""What a peer policy costs honest relief clerks: each clerk of a month in turn works as one.

A relief clerk's numbers fall in several regions, and peer rules judge their whole window
against the region they work in now (README: "Rules", ``peer``). This replays a red-team
month (``lookup_proxy.redteam``: a simulated chain, or ``--events`` with ``--roster``) once
honestly, then once per clerk with that clerk's working days rotated over ``--regions``
regions (home, then a store drawn in each of the others, in turn, as the red-team's
``relief`` insider, but with no probes), and prints who is flagged or locked as a relief clerk
who was not at home.

The simulator's regions all have the same share of walk-ins who are not customers, so this
measures chance and regulars, not regions that really differ (a tourist area): replay your
own traffic (``--events``) for that.

Usage:
    python bench/relief_cost.py [--config config/policy.toml] [--seed 1] [--regions 2]
        [--events EVENTS.csv --roster ROSTER.csv] [--employees 40] [--days 30]
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

from lookup_proxy.policy import load_policy
from lookup_proxy.redteam.baseline import from_events, simulated, simulated_config
from lookup_proxy.redteam.probes import Stage
from lookup_proxy.redteam.trial import Arena
from lookup_proxy.simulation.customer_book import CustomerBook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("config/policy.toml"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--regions", type=int, default=2)
    parser.add_argument("--events", type=Path)
    parser.add_argument("--roster", type=Path)
    parser.add_argument("--employees", type=int, default=40)
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args()
    policy = load_policy(args.config)
    if args.events is not None:
        baseline = from_events(policy, args.events, args.roster)
    else:
        baseline = simulated(policy, simulated_config(args.seed, args.employees, args.days))
    with tempfile.TemporaryDirectory() as work:
        arena = Arena(policy, baseline, Path(work))
        home = arena.honest()
        noticed = {e for e, info in home.employees.items() if info.flags or info.locked_at}
        clerks = baseline.clerks()
        print(
            f"{len(clerks)} clerks, {len({s.region for s in baseline.staff.values()})} regions;"
            f" at home {len(noticed)} flagged or locked: {', '.join(sorted(noticed)) or '-'}"
        )
        flagged = locked = tried = 0
        for clerk in clerks:
            rng = random.Random(f"{args.seed}/{clerk.employee}")
            stage = Stage(baseline, [clerk], CustomerBook(args.seed, 0.14), rng)
            summary = arena.honest(stage, args.regions)
            info = summary.employees.get(clerk.employee)
            tried += 1
            if info is None or clerk.employee in noticed:
                continue
            if info.locked_at:
                locked += 1
                print(f"  {clerk.employee} locked by {info.locked_by} at {info.locked_at}")
            elif info.flags:
                flagged += 1
                rules = ", ".join(f"{rule} {n}" for rule, n in sorted(info.flags.items()))
                print(f"  {clerk.employee} flagged from {info.first_flag_at}: {rules}")
        print(
            f"as relief clerks over {args.regions} regions: {tried} clerks,"
            f" {flagged} more flagged, {locked} locked"
        )


if __name__ == "__main__":
    main()
