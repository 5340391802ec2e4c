"""The monthly PIPA access review: ``lookup-proxy report --month YYYY-MM``.

::

    archive.py   which archive files hold the month; their records, each once
    review.py    counting and peer comparison (median and MAD) from those records
    charts.py    chart geometry
    render.py    HTML (Jinja2 templates in templates/, autoescaped) and the per-employee CSV
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from lookup_proxy.policy import Policy
from lookup_proxy.report.archive import Month, Reading, month_records
from lookup_proxy.report.errors import EXIT_NOTHING_TO_REVIEW, ReportError
from lookup_proxy.report.render import render_html, write_csv
from lookup_proxy.report.review import Review, compute_review

__all__ = ["Month", "ReportError", "ReportRequest", "Review", "make_report", "review_month"]


@dataclass(frozen=True)
class ReportRequest:
    month: str
    out: Path
    csv: Path | None = None
    store: str | None = None
    region: str | None = None


def review_month(
    policy: Policy,
    base_dir: Path,
    month_text: str,
    *,
    store: str | None = None,
    region: str | None = None,
    now: datetime | None = None,
) -> Review:
    """The computed review of one month of the archive named by ``policy``."""
    month = Month.parse(month_text, policy.hours.utc_offset)
    directory = base_dir / policy.audit.archive
    reading = Reading()
    records = month_records(directory, month, policy.audit.stream_retention, reading)
    review = compute_review(
        records, month, policy.hours, reading, store=store, region=region, now=now
    )
    if review.attempts == 0 and not review.cases and not review.locks:
        where = "" if store is None and region is None else f" for {review.scope}"
        raise ReportError(
            f"no audit records in {month.label}{where} in {directory} "
            f"({len(reading.files)} archive file(s) near that month)",
            EXIT_NOTHING_TO_REVIEW,
        )
    return review


def make_report(policy: Policy, base_dir: Path, request: ReportRequest) -> Review:
    """Compute the month and write the HTML (and CSV); returns the review for a summary."""
    review = review_month(
        policy, base_dir, request.month, store=request.store, region=request.region
    )
    html = render_html(review)
    try:
        request.out.write_text(html, encoding="utf-8")
        if request.csv is not None:
            write_csv(review, request.csv)
    except OSError as exc:
        raise ReportError(
            f"cannot write the report: {exc.strerror or exc}: {exc.filename}"
        ) from None
    return review
