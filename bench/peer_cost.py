"""What a peer policy costs honest clerks who do not look like their region's: relief clerks
and regions of quiet stores, each made so in turn in an honest month, no probes.

A relief clerk's numbers fall in several regions, and peer rules judge their whole window
against the region they work in now; a region of quiet stores (few clerks past a comparison's
``min_outcomes``) is judged against the chain (README: "Rules", ``peer``). This replays a
red-team month (``lookup_proxy.redteam``: a simulated chain, or ``--events`` with
``--roster``) once as it is, then:

- ``--regions N`` (default 2): once per clerk, with that clerk's working days rotated over N
  regions (home, then a store drawn in each of the others, in turn, as the red-team's
  ``relief`` insider, but with no probes);
- ``--quiet-region KEEP`` instead: once per region, with everyone there keeping only KEEP of
  their visits (whole visits, as the red-team's ``quiet region`` insider's colleagues),

and prints who is flagged or locked so who was not in the month as it is.

The simulator's regions all have the same share of walk-ins who are not customers, so this
measures chance and regulars, not regions that really differ (a tourist area): replay your
own traffic (``--events``) for that.

Usage:
    python bench/peer_cost.py [--config config/policy.toml] [--seed 1]
        [--regions 2 | --quiet-region 0.25] [--events EVENTS.csv --roster ROSTER.csv]
        [--employees 40] [--days 30]
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
    parser.add_argument("--quiet-region", type=float)
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
    book = CustomerBook(args.seed, 0.14)
    with tempfile.TemporaryDirectory() as work:
        arena = Arena(policy, baseline, Path(work))
        home = arena.honest()
        noticed = {e for e, info in home.employees.items() if info.flags or info.locked_at}
        clerks = baseline.clerks()
        regions = sorted({s.region for s in baseline.staff.values()})
        print(
            f"{len(clerks)} clerks, {len(regions)} regions; as it is, {len(noticed)} flagged"
            f" or locked: {', '.join(sorted(noticed)) or '-'}"
        )
        if args.quiet_region is not None:
            cases = [
                (f"region {region}", next(c for c in clerks if c.region == region), region)
                for region in regions
                if any(c.region == region for c in clerks)
            ]
        else:
            cases = [(clerk.employee, clerk, None) for clerk in clerks]
        flagged = locked = judged = 0
        for name, clerk, region in cases:
            stage = Stage(baseline, [clerk], book, random.Random(f"{args.seed}/{name}"))
            if region is None:
                summary = arena.honest(stage, regions=args.regions)
                whom = [clerk.employee]
            else:
                summary = arena.honest(stage, region_work=args.quiet_region)
                whom = [c.employee for c in clerks if c.region == region]
            for employee in whom:
                info = summary.employees.get(employee)
                judged += 1
                if info is None or employee in noticed:
                    continue
                if info.locked_at:
                    locked += 1
                    print(f"  {name}: {employee} locked by {info.locked_by} at {info.locked_at}")
                elif info.flags:
                    flagged += 1
                    rules = ", ".join(f"{rule} {n}" for rule, n in sorted(info.flags.items()))
                    print(f"  {name}: {employee} flagged from {info.first_flag_at}: {rules}")
        how = (
            f"in quiet regions (each keeping {args.quiet_region:g} of its visits)"
            if args.quiet_region is not None
            else f"as relief clerks over {args.regions} regions"
        )
        print(f"{how}: {judged} clerk-months, {flagged} more flagged, {locked} locked")


if __name__ == "__main__":
    main()
