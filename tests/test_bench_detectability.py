"""The detectability bound: honest clerks set the threshold, planted probers are found by it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import detectability  # noqa: E402
import simulate  # noqa: E402


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("detectability")
    events, truth = work / "events.csv", work / "truth.csv"
    argv = ["--seed", "5", "--employees", "60", "--days", "14", "--families", "classic"]
    assert simulate.main([*argv, "--out", str(events), "--truth", str(truth)]) == 0
    return events, truth


def test_honest_days_leave_out_attackers_and_forgive_retyped_typos(
    month: tuple[Path, Path],
) -> None:
    """Only honest clerks make the baseline, and their typos retyped at once are not misses:
    honest clerks' misses are then walk-ins, about one number in eleven."""
    events, truth = month
    table, region = detectability.honest_days(events, truth)
    attackers = {
        line.split(",")[1] for line in truth.read_text().splitlines()[1:] if line.split(",")[3]
    }
    assert table and not attackers & set(table)
    assert set(table) <= set(region)
    numbers = sum(day[0] for days in table.values() for day in days)
    misses = sum(day[1] for days in table.values() for day in days)
    typos = sum(day[2] for days in table.values() for day in days)
    assert 0.05 < misses / numbers < 0.12
    # The simulator's clerks mistype 4 % of what they type and retype at once.
    assert 0.025 < typos / numbers < 0.06


def test_faster_probers_are_flagged_sooner(
    month: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The table's median days to flag never grows with the probing rate, and ten probes a
    day are flagged within a few days while one a day is not."""
    events, truth = month
    assert detectability.main(["--events", str(events), "--truth", str(truth)]) == 0
    rows = re.findall(r"^\| (\d+) \| (\d+) \|", capsys.readouterr().out, re.MULTILINE)
    medians = {int(rate): int(days) for rate, days in rows}
    assert set(medians) == set(detectability.RATES)
    ordered = [medians[rate] for rate in sorted(medians)]
    assert ordered == sorted(ordered, reverse=True)
    assert medians[10] <= 3 < medians[1]


def test_typo_farmers_are_measured_on_forgiven_typos(
    month: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """With --metric typos the probes are dressed as typos: the same shape of answer, the
    faster farmer flagged sooner."""
    events, truth = month
    argv = ["--events", str(events), "--truth", str(truth), "--metric", "typos"]
    assert detectability.main(argv) == 0
    out = capsys.readouterr().out
    assert "metric: typos" in out
    rows = re.findall(r"^\| (\d+) \| (\d+) \|", out, re.MULTILINE)
    medians = {int(rate): int(days) for rate, days in rows}
    assert medians[10] <= 3 < medians[1]
