"""``lookup-proxy red-team``: the policy's worst case, measured by an adaptive adversary.

A policy file is no secret, so the insider who matters has read it. The red-team plays that
insider against the same guard engine as replay: a family of evasion strategies (``strategies``)
each searched over its intensity and knobs (``search``), every trial a month of honest work
(``baseline``) with the probes mixed in and replayed (``trial``), and the report (``report``) says
per strategy how many customer records one insider gets without being locked, before the first
flag, how soon they are flagged and locked, and which rule binds.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lookup_proxy.policy import Policy
from lookup_proxy.redteam.baseline import Baseline, from_events, simulated, simulated_config
from lookup_proxy.redteam.report import Row, as_json, render, summarise
from lookup_proxy.redteam.search import Search, StrategyResult
from lookup_proxy.redteam.strategies import Strategy, strategies_for
from lookup_proxy.redteam.trial import Arena
from lookup_proxy.simulation.customer_book import CustomerBook

__all__ = ["Options", "RedTeam", "red_team"]


@dataclass(frozen=True)
class Options:
    """What ``lookup-proxy red-team`` was asked for."""

    policy_path: str
    events: Path | None = None
    roster: Path | None = None
    days: int = 30
    density: float = 0.14
    seed: int = 1
    employees: int = 40
    regulars: int = 400
    """Each simulated store's pool of regular customers: the fewer, the more of a clerk's
    lookups are customers they already know (tenure), which every share of numbers new to
    them feels."""
    steps: int = 5
    """Trials for a strategy's default knobs, at most (other combinations: half as many)."""
    draws: int = 3
    """Each strategy's best never-locked trial is run this many times in all, with other
    numbers (``Search.redraw``)."""
    precision: float = 0.1
    """Bisection stops when the edge is known within this fraction (0: exactly)."""
    only: tuple[str, ...] = ()
    """Run only the strategies whose name starts with one of these (empty: all)."""


@dataclass
class RedTeam:
    """The outcome: rows for the table, every strategy's trials, and the JSON report."""

    rows: list[Row]
    results: list[StrategyResult]
    report: dict[str, Any]
    text: str


def _baseline(policy: Policy, options: Options) -> Baseline:
    if options.events is not None:
        return from_events(policy, options.events, options.roster)
    return simulated(
        policy,
        simulated_config(options.seed, options.employees, options.days, options.regulars),
    )


def red_team(policy: Policy, options: Options, strategies: list[Strategy] | None = None) -> RedTeam:
    """Search every strategy against ``policy`` and report."""
    if not 0.0 < options.density < 1.0:
        raise ValueError(f"--density must be between 0 and 1, got {options.density}")
    if options.days < 1 or options.employees < 8 or options.steps < 1 or options.draws < 1:
        raise ValueError("--days, --steps and --draws must be positive and --employees at least 8")
    if options.regulars < 1:
        raise ValueError(f"--regulars must be at least 1, got {options.regulars}")
    started = time.perf_counter()
    baseline = _baseline(policy, options)
    family = strategies if strategies is not None else strategies_for(policy)
    if options.only:
        family = [s for s in family if s.name.startswith(options.only)]
    book = CustomerBook(options.seed, options.density, baseline.business_ranges())
    results: list[StrategyResult] = []
    with tempfile.TemporaryDirectory(prefix="lookup-proxy-red-team-") as scratch:
        arena = Arena(policy, baseline, Path(scratch))
        honest = arena.honest()
        locked = sorted(e for e, s in honest.employees.items() if s.locked_at)
        flagged = sorted(e for e, s in honest.employees.items() if s.flags and not s.locked_at)
        search = Search(
            arena, book, options.seed, options.steps, options.precision, frozenset(locked)
        )
        for strategy in family:
            results.append(search.run(strategy))
        for combined in search.combine(results):
            results.append(search.run(combined))
        for result in results:  # after combining: the combination picks on the search alone
            search.redraw(result, options.draws)
    rows = [row for result in results if (row := summarise(baseline, result)) is not None]
    meta: dict[str, Any] = {
        "policy": options.policy_path,
        "days": baseline.days,
        "employees": len(baseline.staff),
        "stores": len({s.store for s in baseline.staff.values()}),
        "regions": len({s.region for s in baseline.staff.values()}),
        "baseline_events": len(baseline.rows),
        "baseline": str(options.events) if options.events else "simulated",
        "regulars": None if options.events else options.regulars,
        "density": options.density,
        "seed": options.seed,
        "trials": arena.trials,
        "honest_locked": locked,
        "honest_flagged": flagged,
        "honest_withheld": sum(honest.withheld.values()),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return RedTeam(rows, results, as_json(baseline, rows, results, meta), render(rows, meta))
