"""The red-team's answer for a security officer: per strategy, what it got and what stopped it.

Records are customers' records an insider obtained: probes that were allowed and whose number
was a customer (each customer once). Group strategies are reported per insider: the most any
one member obtained. Days are counted from the first probe to the first flag or refusal, and
to the lock (Korean calendar days; 0 = the same day).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lookup_proxy.redteam.baseline import Baseline
from lookup_proxy.redteam.search import StrategyResult, Trial
from lookup_proxy.redteam.strategies import Strategy
from lookup_proxy.redteam.trial import Outcome
from lookup_proxy.simulation.contracts import KST


@dataclass
class Row:
    """One strategy's line of the report."""

    strategy: Strategy
    name: str
    insiders: int
    best: Trial
    """The most records over the period, locked later or not."""
    unlocked: Trial | None
    """The most records while no insider was ever locked."""
    redraws: list[Outcome]
    """``unlocked`` again with other numbers and times (luck: see ``Search.redraw``)."""
    before_flag: Trial
    """The most records obtained before the first flag or refusal."""
    binding_rule: str
    days_to_flag: int | None
    days_to_lock: int | None
    trials: int


def _days(baseline: Baseline, outcome: Outcome, when: float | None) -> int | None:
    if when is None or outcome.first_probe is None:
        return None
    return baseline.day_of(when) - baseline.day_of(outcome.first_probe)


def summarise(baseline: Baseline, result: StrategyResult) -> Row | None:
    """Reduce a strategy's trials to its row; None when it could not run (no such insider)."""
    trials = result.trials
    if not trials:
        return None
    best = max(trials, key=lambda t: (t.outcome.best_insider, -t.intensity))
    unlocked = result.best_unlocked()
    before_flag = max(trials, key=lambda t: (t.outcome.best_insider_before_flag, -t.intensity))
    shown = unlocked or best
    # What binds is what locks just above the best unlocked set: the smallest locked
    # intensity of the same knobs; failing a lock, whatever flagged or refused the best set.
    locked_above = [
        t
        for t in trials
        if t.outcome.locked and t.knobs == shown.knobs and t.intensity > shown.intensity
    ]
    if locked_above:
        binding = min(locked_above, key=lambda t: t.intensity).outcome.locked_by
    elif shown.outcome.locked:
        binding = shown.outcome.locked_by
    else:
        binding = shown.outcome.flag_rule
    return Row(
        strategy=result.strategy,
        name=result.strategy.name,
        insiders=len(shown.insiders),
        best=best,
        unlocked=unlocked,
        redraws=list(result.redraws),
        before_flag=before_flag,
        binding_rule=binding,
        days_to_flag=_days(baseline, shown.outcome, shown.outcome.first_flag),
        days_to_lock=_days(baseline, best.outcome, best.outcome.locked_at),
        trials=len(trials),
    )


def _cell(days: int | None) -> str:
    return "-" if days is None else str(days)


def _redraws(row: Row) -> str:
    """The other draws' records, each marked when an insider was locked in it."""
    if not row.redraws:
        return "-"
    return ", ".join(f"{o.best_insider}{' (locked)' if o.locked else ''}" for o in row.redraws)


def draws_mean(row: Row) -> float | None:
    """Records per insider over every draw of the never-locked parameters."""
    if row.unlocked is None:
        return None
    draws = [row.unlocked.outcome, *row.redraws]
    return sum(o.best_insider for o in draws) / len(draws)


def best_never_locked(row: Row) -> int:
    """The most records one insider got in any never-locked trial of the row's best
    parameters: the search's own, or another draw's. A luckier draw is a trial like any
    other, and the headline must not be smaller than what a trial found."""
    if row.unlocked is None:
        return 0
    draws = [o.best_insider for o in row.redraws if not o.locked]
    return max([row.unlocked.outcome.best_insider, *draws])


def headline(rows: list[Row]) -> Row | None:
    """The strategy that got one insider the most records without ever being locked, in the
    search or in another draw of its parameters (of the rows that compete for it: not an
    insider with a list of real customers, ``Strategy.in_headline``)."""
    candidates = [r for r in rows if r.unlocked is not None and r.strategy.in_headline]
    if not candidates:
        return None
    return max(candidates, key=best_never_locked)


def _regulars(meta: dict[str, Any]) -> str:
    regulars = meta.get("regulars")
    return "" if regulars is None else f" ({regulars:,} regulars a store)"


def _honest_line(meta: dict[str, Any]) -> str:
    """What the policy does to the honest month alone: a low headline means little if the
    policy gets it by locking honest staff, whom no insider is chosen among."""
    locked, flagged = meta["honest_locked"], meta["honest_flagged"]
    text = (
        f"The honest month alone (no probes): {len(locked)} of {meta['employees']} employees "
        f"locked, {len(flagged)} more flagged"
    )
    if locked:
        text += f" (locked: {', '.join(locked)}; no insider is chosen among them)"
    withheld = meta.get("honest_withheld")
    if withheld:
        text += (
            f"; {withheld:,} honest lookups withheld for their business account "
            "([accounts]: refused live, learned as found)"
        )
    return text + "."


def render(rows: list[Row], meta: dict[str, Any]) -> str:
    """The markdown-ish table printed on stdout, then the headline."""
    lines = [
        f"Red-team of {meta['policy']}: {meta['days']} days, {meta['employees']} employees in "
        f"{meta['stores']} stores / {meta['regions']} regions, {meta['baseline_events']:,} honest "
        f"lookups{_regulars(meta)}, customer density {meta['density']:g}, seed {meta['seed']}; "
        f"{meta['trials']} trials in {meta['seconds']:.0f} s",
        _honest_line(meta),
        "",
        "| strategy | insiders | never locked: probes per working day, knobs | "
        "records, never locked | same, other draws | records, locked later or not | "
        "records before first flag | days to flag | days to lock | binding rule | trials |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for row in rows:
        if row.unlocked is not None:
            params = row.strategy.describe(row.unlocked.intensity, row.unlocked.knobs)
            never = str(row.unlocked.outcome.best_insider)
        else:
            params, never = "locked at every intensity tried", "0"
        best = row.strategy.describe(row.best.intensity, row.best.knobs)
        lines.append(
            f"| {row.name} | {row.insiders} | {params} | {never} | {_redraws(row)} | "
            f"{row.best.outcome.best_insider} (at {best}) | "
            f"{row.before_flag.outcome.best_insider_before_flag} | {_cell(row.days_to_flag)} | "
            f"{_cell(row.days_to_lock)} | {row.binding_rule or '-'} | {row.trials} |"
        )
    top = headline(rows)
    lines.append("")
    if not any(row.strategy.in_headline for row in rows):
        lines.append("Headline: none (no strategy that competes for it was run).")
    elif top is None or top.unlocked is None:
        lines.append("Headline: no strategy obtained a record without being locked.")
    else:
        most = best_never_locked(top)
        drawn = " (in another draw of them)" if most > top.unlocked.outcome.best_insider else ""
        lines.append(
            f"Headline: {top.name} — {most} records for one insider "
            f"in {meta['days']} days without ever being locked "
            f"({top.strategy.describe(top.unlocked.intensity, top.unlocked.knobs)}){drawn}; "
            f"binding rule: {top.binding_rule or 'none'}."
        )
        if top.redraws:
            locked = sum(o.locked for o in top.redraws)
            lines.append(
                f"The same parameters with other numbers ({len(top.redraws)} more draws): "
                f"{_redraws(top)}; {draws_mean(top):.1f} records on average over all "
                f"{len(top.redraws) + 1}, locked in {locked} of them."
            )
    for row in rows:
        if not row.strategy.in_headline:
            lines.append(_beyond_line(row, meta))
    return "\n".join(lines)


def _beyond_line(row: Row, meta: dict[str, Any]) -> str:
    """A row outside the headline (a list of real customers in hand): what it got, apart."""
    if row.unlocked is None:
        got = "locked at every intensity tried"
    else:
        how = row.strategy.describe(row.unlocked.intensity, row.unlocked.knobs)
        got = (
            f"{best_never_locked(row)} records for one insider in {meta['days']} days without "
            f"ever being locked ({how})"
        )
    return (
        f"Beyond the headline, {row.name} (no lookup pattern finds one looked up at an honest "
        f"pace): {got}; binding rule: {row.binding_rule or 'none'}."
    )


def _moment(when: float | None) -> str | None:
    return None if when is None else datetime.fromtimestamp(round(when), KST).isoformat()


def _trial_json(baseline: Baseline, trial: Trial) -> dict[str, Any]:
    outcome = trial.outcome
    first_probe = outcome.first_probe
    return {
        "intensity": trial.intensity,
        "knobs": trial.knobs,
        "insiders": trial.insiders,
        "probes": outcome.probes,
        "records": outcome.records,
        "records_per_insider": outcome.best_insider,
        "records_total": outcome.total,
        "records_before_flag": outcome.best_insider_before_flag,
        "first_probe": _moment(first_probe),
        "first_probe_day": None if first_probe is None else baseline.day_of(first_probe),
        "first_flag": _moment(outcome.first_flag),
        "locked": outcome.locked,
        "locked_at": _moment(outcome.locked_at),
        "locked_by": outcome.locked_by or None,
        "days_to_flag": _days(baseline, outcome, outcome.first_flag),
        "days_to_lock": _days(baseline, outcome, outcome.locked_at),
        "flag_rule": outcome.flag_rule or None,
        "denied": outcome.denied,
        "denied_by_rule": outcome.denied_by,
    }


def as_json(
    baseline: Baseline, rows: list[Row], results: list[StrategyResult], meta: dict[str, Any]
) -> dict[str, Any]:
    """The machine-readable report (``--json``)."""
    by_name = {r.strategy.name: r for r in results}
    strategies = []
    for row in rows:
        result = by_name[row.name]
        strategies.append(
            {
                "strategy": row.name,
                "in_headline": row.strategy.in_headline,
                "insiders": row.insiders,
                "records_never_locked": row.unlocked.outcome.best_insider if row.unlocked else 0,
                "never_locked": _trial_json(baseline, row.unlocked) if row.unlocked else None,
                "records_never_locked_mean_of_draws": draws_mean(row),
                "other_draws": [
                    _trial_json(
                        baseline,
                        Trial(row.unlocked.intensity, row.unlocked.knobs, row.unlocked.insiders, o),
                    )
                    for o in row.redraws
                ]
                if row.unlocked
                else [],
                "records_best": row.best.outcome.best_insider,
                "best": _trial_json(baseline, row.best),
                "records_before_flag": row.before_flag.outcome.best_insider_before_flag,
                "days_to_flag": row.days_to_flag,
                "days_to_lock": row.days_to_lock,
                "binding_rule": row.binding_rule or None,
                "edges": [
                    {"knobs": knobs, "edge": ok, "first_locked": locked}
                    for knobs, ok, locked in result.edges
                ],
                "trials": [_trial_json(baseline, t) for t in result.trials],
            }
        )
    top = headline(rows)
    return {
        **meta,
        "headline": {
            "strategy": top.name,
            "records_per_insider": best_never_locked(top),
            "records_in_the_search": top.unlocked.outcome.best_insider,
            "records_mean_of_draws": draws_mean(top),
            "intensity": top.unlocked.intensity,
            "knobs": top.unlocked.knobs,
            "binding_rule": top.binding_rule or None,
        }
        if top is not None and top.unlocked is not None
        else None,
        "strategies": strategies,
    }
