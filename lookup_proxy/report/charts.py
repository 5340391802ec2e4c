"""Chart geometry for the report: numbers in, coordinates out; the templates draw the SVG.

Keeping the arithmetic here (typed, testable) and the markup in Jinja (autoescaped) means no
label, employee id or note is ever pasted into markup by string building.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

LABEL_WIDTH: Final = 190
BAR_AREA: Final = 420
ROW: Final = 22


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    text: str
    """The value as the label shows it (``"12"``, ``"31 %"``)."""
    highlight: bool = False
    marker: float | None = None
    """A reference value drawn as a tick across the bar (the peers' median)."""


@dataclass(frozen=True)
class BarRow:
    y: float
    label: str
    text: str
    width: float
    marker_x: float | None
    highlight: bool
    text_x: float
    """Where the value is written: after the bar and after the marker."""


@dataclass(frozen=True)
class BarChart:
    title: str
    width: int
    height: int
    label_width: int
    rows: tuple[BarRow, ...]
    legend: str | None


def bar_chart(title: str, bars: Sequence[Bar], legend: str | None = None) -> BarChart:
    """Horizontal bars, one row each, the value written after the bar."""
    top = max([b.value for b in bars] + [b.marker or 0 for b in bars] + [1])
    rows = []
    for i, bar in enumerate(bars):
        width = max(bar.value / top * BAR_AREA, 1 if bar.value else 0)
        marker_x = None if bar.marker is None else LABEL_WIDTH + bar.marker / top * BAR_AREA
        rows.append(
            BarRow(
                y=8 + i * ROW,
                label=bar.label,
                text=bar.text,
                width=width,
                marker_x=marker_x,
                highlight=bar.highlight,
                text_x=max(LABEL_WIDTH + width, marker_x or 0) + 6,
            )
        )
    return BarChart(
        title, LABEL_WIDTH + BAR_AREA + 70, 16 + len(bars) * ROW, LABEL_WIDTH, tuple(rows), legend
    )


@dataclass(frozen=True)
class Column:
    x: float
    label: str
    inside_y: float
    inside_h: float
    after_y: float
    after_h: float
    title: str
    after: int
    """After-hours lookups in this hour, written above the column when any."""


@dataclass(frozen=True)
class HourChart:
    width: int
    height: int
    base: float
    columns: tuple[Column, ...]
    top: int


HOUR_PLOT: Final = 160


def hour_chart(by_hour: Sequence[tuple[int, int]]) -> HourChart:
    """Lookups by local hour of day, stacked: in opening hours below, after hours on top."""
    top = max([inside + after for inside, after in by_hour] + [1])
    scale = HOUR_PLOT / top
    base = 20.0 + HOUR_PLOT
    columns = []
    for hour, (inside, after) in enumerate(by_hour):
        # A few late lookups beside thousands in the day are still what the reviewer looks for.
        inside_h, after_h = inside * scale, max(after * scale, 3.0 if after else 0.0)
        columns.append(
            Column(
                x=40 + hour * 26,
                label=f"{hour:02d}",
                inside_y=base - inside_h,
                inside_h=inside_h,
                after_y=base - inside_h - after_h,
                after_h=after_h,
                title=f"{hour:02d}h: {inside} in opening hours, {after} after hours",
                after=after,
            )
        )
    return HourChart(40 + 24 * 26 + 10, int(base) + 24, base, tuple(columns), top)


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str
    highlight: bool
    title: str


@dataclass(frozen=True)
class Scatter:
    width: int
    height: int
    left: float
    bottom: float
    right: float
    top: float
    points: tuple[Point, ...]
    x_max: int
    x_label: str
    y_label: str


def scatter(
    points: Sequence[tuple[float, float, str, bool]], x_label: str, y_label: str
) -> Scatter:
    """Employees as dots: distinct numbers across, not-found ratio (0..1) up."""
    left, right, top, bottom = 50.0, 610.0, 15.0, 235.0
    x_max = max([int(x) for x, _, _, _ in points] + [1])
    placed = tuple(
        Point(
            x=left + x / x_max * (right - left),
            y=bottom - y * (bottom - top),
            label=label,
            highlight=highlight,
            title=f"{label}: {int(x)} distinct numbers, {y:.0%} not found",
        )
        for x, y, label, highlight in points
    )
    return Scatter(640, 270, left, bottom, right, top, placed, x_max, x_label, y_label)
