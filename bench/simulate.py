"""Generate a month of store-terminal customer lookups with planted insiders, for policy backtests.

A policy can only be judged on traffic whose ground truth is known, and real logs have none: the
2021 abuse was found by a whistle-blower, not by anyone reading logs. So this simulator writes
EVENTS.csv (what `lookup-proxy replay` consumes) plus TRUTH.csv, row-aligned, saying which rows
were malicious, and TRUTH.employees.csv saying who the attackers were and when they started.
EVENTS.roster.csv (employee,roles) is what an HR directory would give replay's --roster.

Honest traffic follows DESIGN.md's picture of a clerk serving a queue, because a policy that
only sees attackers would happily block everyone. Every random choice comes from generators
seeded by (seed, purpose, employee, day), so a run is reproducible bit for bit and changing one
knob (say, attack intensity) leaves the honest traffic untouched.

Usage:
    python bench/simulate.py --seed 1 --employees 300 --days 30 --start 2026-10-01 \\
        --out EVENTS.csv --truth TRUTH.csv [--attackers-per-class 2] [--customer-share 0.14]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

from lookup_proxy.errors import ConfigError
from lookup_proxy.policy import load_policy

# The model lives in the package (lookup_proxy.simulation) so the installed red-team can
# generate honest traffic too; these names are re-exported for the scorer, the tests and
# anyone who imported them from here.
from lookup_proxy.simulation.campaigns import (
    BlockShuffle,
    Campaign,
    Collusion,
    CollusionBlock,
    NumberStream,
    RandomTyping,
    Rotation,
    Scan,
    SessionCampaign,
    ShiftBurst,
    SlowProbe,
    build_campaigns,
)
from lookup_proxy.simulation.contracts import FAMILIES
from lookup_proxy.simulation.customer_book import is_customer
from lookup_proxy.simulation.honest import (
    EVERYDAY_REASONS,
    LAUNCH_REASON_WEIGHTS,
    REASON_WEIGHTS,
    honest_day,
    honest_style,
)
from lookup_proxy.simulation.month import Summary, simulate
from lookup_proxy.simulation.number_space import typo_of
from lookup_proxy.simulation.roster import (
    CorporateAccount,
    Employee,
    SimConfig,
    build_roster,
    corporate_accounts,
)
from lookup_proxy.simulation.workday import (
    HOUR,
    LAST_SECOND,
    SHIFTS,
    Event,
    Segment,
    day_segments,
    session,
    split_count,
    time_in,
)
from lookup_proxy.simulation.world import World

ROOT = Path(__file__).resolve().parent.parent

__all__ = [
    "EVERYDAY_REASONS",
    "HOUR",
    "LAST_SECOND",
    "LAUNCH_REASON_WEIGHTS",
    "REASON_WEIGHTS",
    "SHIFTS",
    "BlockShuffle",
    "Campaign",
    "Collusion",
    "CollusionBlock",
    "CorporateAccount",
    "Employee",
    "Event",
    "NumberStream",
    "RandomTyping",
    "Rotation",
    "Scan",
    "Segment",
    "SessionCampaign",
    "ShiftBurst",
    "SimConfig",
    "SlowProbe",
    "Summary",
    "World",
    "build_campaigns",
    "build_roster",
    "corporate_accounts",
    "day_segments",
    "honest_day",
    "honest_style",
    "is_customer",
    "main",
    "session",
    "simulate",
    "split_count",
    "time_in",
    "typo_of",
]


def report(summary: Summary, cfg: SimConfig) -> str:
    """Summarise a run for the person who started it."""
    roles = Counter(e.role for e in summary.roster)
    stores = len({e.store for e in summary.roster})
    regions = len({e.region for e in summary.roster})
    last = cfg.start + timedelta(days=cfg.days - 1)
    lines = [
        f"{summary.rows} events, {cfg.start} .. {last}, launch day {summary.launch_day}",
        f"{len(summary.roster)} employees in {stores} stores / {regions} regions: "
        + ", ".join(f"{roles[r]} {r}" for r in ("honest", "corporate", "attacker")),
        "rows by actor: "
        + ", ".join(f"{a} {summary.by_actor[a]}" for a in ("honest", "corporate", "attacker")),
        f"{'threat':<22}{'attackers':>10}{'malicious':>11}{'found':>8}",
    ]
    attackers = Counter(e.threat for e in summary.roster if e.role == "attacker")
    for threat in (t for family in cfg.families for t in FAMILIES[family]):
        lines.append(
            f"{threat:<22}{attackers[threat]:>10}{summary.by_threat[threat]:>11}"
            f"{summary.found_by_threat[threat]:>8}"
        )
    return "\n".join(lines)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date like 2026-10-01, got {text!r}") from None


def parse_args(argv: Sequence[str] | None) -> tuple[SimConfig, Path, Path]:
    """Read the command line into a config, refusing values that cannot make a month."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--employees", type=int, default=300)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--start", type=_date, default=date(2026, 10, 1))
    parser.add_argument("--out", type=Path, required=True, help="EVENTS.csv to write")
    parser.add_argument(
        "--truth",
        type=Path,
        required=True,
        help="TRUTH.csv to write (TRUTH.employees.csv goes next to it)",
    )
    parser.add_argument("--attackers-per-class", type=int, default=2)
    parser.add_argument("--customer-share", type=float, default=1 / 7)
    parser.add_argument(
        "--corporate-reps", type=int, default=None, help="default: one per 60 employees, at least 2"
    )
    parser.add_argument("--corporate-accounts", type=int, default=12)
    parser.add_argument(
        "--collusion-groups",
        type=int,
        default=None,
        help="default: 1 if there are attackers, else 0",
    )
    parser.add_argument(
        "--collusion-size",
        type=int,
        default=None,
        help="members per collusion group (default: 3-5)",
    )
    parser.add_argument(
        "--attack-intensity",
        type=float,
        default=1.0,
        help="multiplies every attacker's daily quota",
    )
    parser.add_argument(
        "--attack-start-within",
        type=int,
        default=7,
        help="attacks start within this many days of --start",
    )
    parser.add_argument(
        "--launch-day",
        type=_date,
        default=None,
        help="phone launch day with triple traffic (default: seeded)",
    )
    parser.add_argument(
        "--store-customers", type=int, default=2500, help="regular customers per store"
    )
    parser.add_argument(
        "--families",
        default="classic,informed",
        help="threat families to plant, comma-separated: classic (DESIGN.md's threat model) "
        "and informed (insiders who have read --policy)",
    )
    parser.add_argument(
        "--policy",
        type=Path,
        default=ROOT / "config" / "policy.toml",
        help="the policy informed insiders have read and stay just under (default: shipped)",
    )
    args = parser.parse_args(argv)
    families = tuple(f for f in args.families.split(",") if f)
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown or not families:
        parser.error(f"--families takes {', '.join(FAMILIES)}; got {args.families!r}")
    policy = None
    if "informed" in families:
        try:
            policy = load_policy(args.policy)
        except (ConfigError, OSError) as error:
            parser.error(f"--policy: {error}")
    if args.employees < 1 or args.days < 1:
        parser.error("--employees and --days must be positive")
    if not 0 < args.customer_share < 1:
        parser.error("--customer-share must be between 0 and 1 (exclusive)")
    if args.collusion_size is not None and not 2 <= args.collusion_size <= 8:
        parser.error("--collusion-size must be 2..8")
    for name in ("attackers_per_class", "corporate_accounts", "store_customers"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must not be negative")
    cfg = SimConfig(
        seed=args.seed,
        employees=args.employees,
        days=args.days,
        start=args.start,
        attackers_per_class=args.attackers_per_class,
        customer_share=args.customer_share,
        corporate_reps=args.corporate_reps,
        corporate_accounts=args.corporate_accounts,
        collusion_groups=args.collusion_groups,
        collusion_size=args.collusion_size,
        attack_intensity=args.attack_intensity,
        attack_start_within=args.attack_start_within,
        launch_day=args.launch_day,
        store_customers=args.store_customers,
        families=families,
        policy=policy,
    )
    return cfg, args.out, args.truth


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator from the command line."""
    cfg, events_path, truth_path = parse_args(argv)
    try:
        summary = simulate(cfg, events_path, truth_path)
    except ValueError as error:
        print(f"simulate: {error}", file=sys.stderr)
        return 2
    print(report(summary, cfg), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
