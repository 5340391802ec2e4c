"""The synthetic customer base: stable membership, the configured share, plausible records."""

from __future__ import annotations

import datetime as dt
import random
import re

import pytest

from lookup_proxy.customers import CustomerBase

HANGUL_NAME = re.compile(r"^[가-힣]{3}$")


def _numbers(count: int) -> list[str]:
    rng = random.Random(5)
    return [f"010{rng.randrange(10**8):08d}" for _ in range(count)]


def test_membership_and_records_are_the_same_in_every_instance() -> None:
    """Two bases with one seed agree on every number, so demos and runs are reproducible."""
    first, second = CustomerBase(seed=11), CustomerBase(seed=11)
    for number in _numbers(2000):
        assert first.is_customer(number) == second.is_customer(number)
        assert first.record(number) == second.record(number)


def test_membership_is_pinned_across_releases() -> None:
    """The default base's customers never change, or saved demo scripts would stop finding them."""
    assert CustomerBase().find_customers(3) == ["01020000007", "01020000008", "01020000024"]


def test_different_seeds_give_different_customer_bases() -> None:
    """The seed selects an independent base rather than shifting the same one."""
    numbers = _numbers(5000)
    seven = {n for n in numbers if CustomerBase(seed=7).is_customer(n)}
    eight = {n for n in numbers if CustomerBase(seed=8).is_customer(n)}
    overlap = len(seven & eight) / len(seven)
    assert 0.08 < overlap < 0.22  # independent draws overlap by about the share itself


@pytest.mark.parametrize("share", [1 / 7, 0.5, 0.02])
def test_share_of_customers_matches_within_tolerance(share: float) -> None:
    """About ``share`` of 100,000 numbers are customers (within five standard deviations)."""
    base = CustomerBase(share=share)
    count = 100_000
    hits = sum(base.is_customer(f"010{n:08d}") for n in range(30_000_000, 30_000_000 + count))
    sigma = (count * share * (1 - share)) ** 0.5
    assert abs(hits - count * share) < 5 * sigma


def test_extreme_shares_mean_nobody_or_everybody() -> None:
    """Share 0 and 1 are exact, and asking for impossible numbers fails instead of hanging."""
    assert not any(CustomerBase(share=0.0).is_customer(n) for n in _numbers(1000))
    assert all(CustomerBase(share=1.0).is_customer(n) for n in _numbers(1000))
    with pytest.raises(ValueError, match="no number qualifies"):
        CustomerBase(share=0.0).find_customers(1)
    with pytest.raises(ValueError, match="no number qualifies"):
        CustomerBase(share=1.0).sample_non_customers(1, random.Random(1))
    with pytest.raises(ValueError, match="between 0 and 1"):
        CustomerBase(share=1.5)


def test_non_customers_have_no_record() -> None:
    """A number nobody holds is "not found", like a walk-in from another carrier."""
    base = CustomerBase()
    for number in base.find_non_customers(50):
        assert not base.is_customer(number)
        assert base.record(number) is None


def test_records_have_realistic_consistent_fields() -> None:
    """Every record carries the contract details the 2021 fraud relied on, self-consistently."""
    base = CustomerBase()
    benefits = set()
    for number in base.find_customers(300):
        record = base.record(number)
        assert record is not None
        assert record["number"] == number
        assert HANGUL_NAME.match(record["name"]), record["name"]
        assert record["plan"].startswith(("5G ", "LTE "))
        assert 20_000 <= record["monthly_fee_krw"] <= 110_000
        start = dt.date.fromisoformat(record["contract_start"])
        end = dt.date.fromisoformat(record["contract_end"])
        since = dt.date.fromisoformat(record["customer_since"])
        assert since <= start < end
        assert 729 <= (end - start).days <= 731  # a two-year contract
        assert record["benefit"] in {"gift_voucher", "fee_discount"}
        assert record["device"]
        benefits.add(record["benefit"])
    assert benefits == {"gift_voucher", "fee_discount"}


def test_fee_discount_customers_pay_less_than_list_price_on_the_same_plan() -> None:
    """The monthly fee is what is billed, so the discount a fraudster looks for is visible."""
    base = CustomerBase()
    fees: dict[tuple[str, str], set[int]] = {}
    for number in base.find_customers(2000):
        record = base.record(number)
        assert record is not None
        fees.setdefault((record["plan"], record["benefit"]), set()).add(record["monthly_fee_krw"])
    for (plan, benefit), values in fees.items():
        assert len(values) == 1
        if benefit == "fee_discount" and (plan, "gift_voucher") in fees:
            assert values.pop() == fees[(plan, "gift_voucher")].copy().pop() * 3 // 4


def test_find_customers_scans_upward_from_start() -> None:
    """Found numbers are ascending, start at or after ``start`` and keep its length."""
    base = CustomerBase()
    found = base.find_customers(20, start="0111000000")
    assert found == sorted(found)
    assert all(len(n) == 10 and n >= "0111000000" and base.is_customer(n) for n in found)
    with pytest.raises(ValueError, match="canonical number"):
        base.find_customers(1, start="010-1234-5678")


def test_sampling_is_reproducible_from_the_rng() -> None:
    """Sampling with equal rng seeds gives the same distinct numbers of the requested kind."""
    base = CustomerBase()
    first = base.sample_customers(40, random.Random(3))
    assert first == base.sample_customers(40, random.Random(3))
    assert len(set(first)) == 40
    assert all(n.startswith("010") and len(n) == 11 and base.is_customer(n) for n in first)
    strangers = base.sample_non_customers(40, random.Random(3), prefix="019")
    assert all(n.startswith("019") and not base.is_customer(n) for n in strangers)
