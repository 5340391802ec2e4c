"""Rendering the review: HTML through autoescaping Jinja2 templates, and the per-employee CSV."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import jinja2

from lookup_proxy.report.charts import Bar, bar_chart, hour_chart, scatter
from lookup_proxy.report.review import (
    MEASURE_NAMES,
    MEASURES,
    OUTLIER_Z,
    EmployeeMonth,
    Review,
)

PEERS_CHARTED: Final = 25
CASE_STATES: Final = ("open", "acknowledged", "false-positive", "abuse-confirmed", "other")

CSV_COLUMNS: Final = (
    "employee",
    "store",
    "region",
    "peer_group",
    "peers",
    "lookups",
    "allowed",
    "refused",
    "found",
    "not_found",
    "not_found_ratio",
    "distinct_numbers",
    "after_hours",
    "locks",
    "cases",
    "lookups_peer_median",
    "lookups_peer_mad",
    "lookups_z",
    "not_found_ratio_peer_median",
    "not_found_ratio_z",
    "distinct_peer_median",
    "distinct_z",
    "findings",
)


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("lookup_proxy.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["num"] = _number
    environment.filters["pct"] = _percent
    environment.filters["z"] = _z
    return environment


def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _z(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:+.1f}"


def _who(person: EmployeeMonth) -> str:
    return f"{person.employee} · {person.store or 'no store'}"


def _charts(review: Review) -> dict[str, Any]:
    charted = sorted(review.employees, key=lambda p: (not p.outlier, -p.highest_z, -p.lookups))
    charted = sorted(charted[:PEERS_CHARTED], key=lambda p: -p.lookups)
    peers = bar_chart(
        "Lookups per employee (most unusual first), tick = peers' median",
        [
            Bar(
                _who(p),
                p.lookups,
                f"{p.lookups:,}",
                highlight=p.compared["lookups"].outlier,
                marker=p.compared["lookups"].median,
            )
            for p in charted
        ],
        legend="red: far above their peers",
    )
    refusals = bar_chart(
        "Refusals by cause",
        [Bar(cause, n, f"{n:,}") for cause, n in review.refusals.most_common()],
    )
    states = dict.fromkeys(CASE_STATES, 0)
    for case in review.cases:
        key = (case.resolution or "other") if case.status == "resolved" else case.status
        states[key] = states.get(key, 0) + 1
    cases = bar_chart(
        "Cases by state at the end of the month",
        [
            Bar(state, n, f"{n:,}", highlight=state == "abuse-confirmed")
            for state, n in states.items()
        ],
    )
    rules: dict[str, int] = {}
    for lock in review.locks:
        if lock.action == "locked":
            cause = lock.by if lock.by.startswith("rule ") else "by security staff"
            rules[cause] = rules.get(cause, 0) + 1
    locks = bar_chart(
        "Locks by cause",
        [Bar(by, n, f"{n:,}") for by, n in sorted(rules.items(), key=lambda kv: -kv[1])],
    )
    points = [
        (
            float(p.distinct),
            ratio,
            p.employee,
            p.compared["not_found_ratio"].outlier or p.compared["distinct"].outlier,
        )
        for p in review.employees
        if (ratio := p.not_found_ratio) is not None
    ]
    return {
        "peers": peers,
        "refusals": refusals,
        "cases": cases,
        "locks": locks,
        "hours": hour_chart(review.by_hour),
        "scatter": scatter(points, "distinct numbers looked up", "share not found"),
    }


def render_html(review: Review) -> str:
    """The report as one self-contained HTML page (inline CSS and SVG, no script)."""
    template = _environment().get_template("report.html")
    unusual = [
        p
        for p in review.employees
        if p.compared["not_found_ratio"].outlier or p.compared["distinct"].outlier
    ]
    return template.render(
        review=review,
        charts=_charts(review),
        unusual=unusual,
        outlier_z=OUTLIER_Z,
        measure_names=MEASURE_NAMES,
    )


def _cell(value: float | None, digits: int = 3) -> str:
    if value is None or math.isnan(value):
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:.{digits}f}"


def csv_rows(review: Review) -> list[list[str]]:
    rows: list[list[str]] = []
    for p in sorted(review.employees, key=lambda p: p.employee):
        lookups, ratio, distinct = (p.compared[m] for m in MEASURES)
        rows.append(
            [
                p.employee,
                p.store or "",
                p.region or "",
                p.peer_group,
                str(p.peers),
                str(p.lookups),
                str(p.allowed),
                str(p.refused),
                str(p.found),
                str(p.not_found),
                _cell(p.not_found_ratio),
                str(p.distinct),
                str(p.after_hours),
                str(p.locks),
                str(p.cases),
                _cell(lookups.median),
                _cell(lookups.mad),
                _cell(lookups.z, 2),
                _cell(ratio.median),
                _cell(ratio.z, 2),
                _cell(distinct.median),
                _cell(distinct.z, 2),
                ";".join(p.findings),
            ]
        )
    return rows


def write_csv(review: Review, path: Path) -> None:
    """One row per employee reviewed, sorted by employee id."""
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(_safe(row) for row in csv_rows(review))


def _safe(row: Sequence[str]) -> list[str]:
    """Cells a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``) are quoted with
    a leading apostrophe: employee ids and store names come from tokens, not from us."""
    return [
        "'" + c if c[:1] in ("=", "+", "@") or (c[:1] == "-" and not _numeric(c)) else c
        for c in row
    ]


def _numeric(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True
