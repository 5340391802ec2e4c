"""Whom honest clerks retype: retypes by kind, and returning retypes as a budget counts them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import retypes  # noqa: E402
import simulate  # noqa: E402

DAY = 86_400.0
ALICE = "E1"
EXEMPT = frozenset({"NEW_SUBSCRIPTION"})


def _retype(at: float, customer: str, reason: str = "BILLING_INQUIRY") -> list[retypes.Lookup]:
    """A miss one digit away from ``customer``, then the customer five seconds later."""
    variant = customer[:-1] + str((int(customer[-1]) + 1) % 10)
    return [(at, variant, False, reason), (at + 5, customer, True, reason)]


def test_retypes_are_sorted_by_when_the_customer_was_first_met() -> None:
    """New, met in the visit, earlier that day and on an earlier day; and only the last two,
    and a customer first met under the exempt reason, are returning as a budget counts them."""
    old, morning, visit, walk_in = "01012340000", "01012341000", "01012342000", "01012343000"
    lookups = [
        (0.0, old, True, "BILLING_INQUIRY"),
        (DAY + 3_600, morning, True, "PLAN_CHANGE"),
        (DAY + 4_000, walk_in, True, "NEW_SUBSCRIPTION"),
        (DAY + 20_000, visit, True, "BILLING_INQUIRY"),
        *_retype(DAY + 20_600, visit),
        *_retype(DAY + 21_000, "01012344000"),
        *_retype(DAY + 22_000, morning),
        *_retype(DAY + 23_000, old),
        *_retype(DAY + 23_500, walk_in),
    ]
    found = retypes.classify({ALICE: sorted(lookups)}, EXEMPT, 1800.0)
    assert dict(found.kinds) == {
        "new": 1,
        "met in the visit": 1,
        "met earlier that day": 2,
        "met on an earlier day": 1,
    }
    assert found.returning[ALICE] == [DAY + 22_005, DAY + 23_005, DAY + 23_505]
    assert found.most_in(retypes.WEEK) == {3: 1}


def test_a_clerk_s_most_returning_retypes_in_a_week_slide_with_the_week() -> None:
    """Two returning retypes on day 1 and two on day 9: never more than two in 7 days."""
    customers = [f"0101234{index}000" for index in range(4)]
    lookups = [(float(i), c, True, "BILLING_INQUIRY") for i, c in enumerate(customers)]
    for index, customer in enumerate(customers):
        lookups += _retype((1 if index < 2 else 9) * DAY + index * 100, customer)
    found = retypes.classify({ALICE: sorted(lookups)}, EXEMPT, 1800.0)
    assert found.most_in(retypes.WEEK) == {2: 1}
    assert found.most_in(float("inf")) == {4: 1}


def test_the_command_reads_a_simulated_month(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a simulated fortnight honest retypes are mostly of customers new to the clerk, then
    of those met earlier in the visit; the command prints every kind and both maxima."""
    events, truth = tmp_path / "events.csv", tmp_path / "truth.csv"
    argv = ["--seed", "5", "--employees", "40", "--days", "14", "--families", "classic"]
    assert simulate.main([*argv, "--out", str(events), "--truth", str(truth)]) == 0
    kinds = retypes.classify(retypes.honest_lookups(events, truth), EXEMPT, 1800.0).kinds
    assert kinds["new"] > kinds["met in the visit"] > kinds["met on an earlier day"] > 0
    capsys.readouterr()
    assert retypes.main(["--events", str(events), "--truth", str(truth)]) == 0
    out = capsys.readouterr().out
    assert all(f"  {kind:22} {kinds[kind]:7,}" in out for kind in retypes.KINDS)
    assert "returning retypes in 7 days" in out and "returning retypes in the month" in out
