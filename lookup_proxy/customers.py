"""A synthetic customer base that answers for every possible number without storing any.

Demos, the traffic simulator and end-to-end tests need a backend where roughly one random number
in seven is a customer (what made random typing pay off in 2021) and where the same number is a
customer, with the same contract, on every run and every machine. Membership and every field are
therefore derived from a keyed BLAKE2b of the number: no table, no state, no clock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from dataclasses import dataclass
from typing import Literal, NotRequired, TypedDict

__all__ = ["Account", "Business", "CustomerBase", "CustomerRecord"]

Benefit = Literal["gift_voucher", "fee_discount"]


class Account(TypedDict):
    """The business customer a line belongs to: the reference its rep looks it up under."""

    reference: str
    name: str


class CustomerRecord(TypedDict):
    """What the store terminal shows: enough to recognise the contract, which is the danger."""

    number: str
    name: str
    plan: str
    monthly_fee_krw: int
    contract_start: str
    contract_end: str
    benefit: Benefit
    device: str
    customer_since: str
    account: NotRequired[Account]
    """Only on a business customer's lines."""


@dataclass(frozen=True)
class Business:
    """A business customer: ``size`` consecutive lines from ``first`` (canonical numbers)."""

    first: str
    size: int
    reference: str
    name: str

    def line(self, index: int) -> str:
        """The canonical number of the business's ``index``-th line."""
        if not 0 <= index < self.size:
            raise IndexError(f"{self.reference} has {self.size} lines, not {index + 1}")
        return str(int(self.first) + index).zfill(len(self.first))

    def holds(self, canonical: str) -> bool:
        """Whether ``canonical`` is one of the business's lines."""
        if len(canonical) != len(self.first) or not canonical.isdigit():
            return False
        return 0 <= int(canonical) - int(self.first) < self.size


_BUSINESS_NAMES = ("한빛물산", "동해건설", "새봄식품", "태성물류", "미래정밀", "청운상사")


# Weighted roughly like the real distribution, so demo screens look plausible.
_SURNAMES = (
    ("김", 21),
    ("이", 15),
    ("박", 8),
    ("최", 5),
    ("정", 4),
    ("강", 2),
    ("조", 2),
    ("윤", 2),
    ("장", 2),
    ("임", 2),
    ("한", 1),
    ("오", 1),
    ("서", 1),
    ("신", 1),
    ("권", 1),
    ("황", 1),
    ("안", 1),
    ("송", 1),
    ("류", 1),
    ("홍", 1),
)
_SURNAME_CHOICES = tuple(name for name, _ in _SURNAMES)
_SURNAME_WEIGHTS = tuple(weight for _, weight in _SURNAMES)
_GIVEN_SYLLABLES = (
    "민", "서", "지", "현", "준", "우", "예", "은", "도", "윤", "하", "수", "영", "진", "성",
    "연", "주", "혜", "원", "태", "재", "승", "유", "경", "동", "희", "소", "아", "나", "호",
)  # fmt: skip

# (plan name, list price in KRW per month)
_PLANS = (
    ("5G 프리미어 플러스", 105_000),
    ("5G 프리미어", 95_000),
    ("5G 스탠다드", 75_000),
    ("5G 슬림", 55_000),
    ("5G 라이트", 47_000),
    ("LTE 무제한", 69_000),
    ("LTE 베이직", 33_000),
    ("LTE 시니어", 29_000),
    ("LTE 청소년", 35_000),
)
_DEVICES = (
    "Galaxy S24 Ultra",
    "Galaxy S24",
    "Galaxy S23",
    "Galaxy Z Flip5",
    "Galaxy Z Fold5",
    "Galaxy A54",
    "Galaxy A34",
    "iPhone 15 Pro",
    "iPhone 15",
    "iPhone 14",
    "iPhone 13 mini",
    "iPhone SE (3rd generation)",
)
# The "optional agreement" discount chosen instead of the device subsidy or gift voucher.
_FEE_DISCOUNT = 0.25
_CONTRACT_MONTHS = 24
_EPOCH = dt.date(2003, 1, 1)  # earliest customer_since
_CONTRACTS_FROM = dt.date(2022, 1, 1)  # contracts start between this day and two years later
_CONTRACT_SPAN_DAYS = 730


def _add_months(day: dt.date, months: int) -> dt.date:
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    # Clamp 31 Jan + 1 month to the last day of February, as billing systems do.
    for candidate in (day.day, 30, 29, 28):
        try:
            return dt.date(year, month, candidate)
        except ValueError:
            continue
    raise AssertionError("unreachable: every month has 28 days")


class CustomerBase:
    """Membership and records of a synthetic customer base, a pure function of (seed, number).

    ``share`` is the fraction of all possible numbers that are customers; the default, one in
    seven, makes random typing find a record every few tries, as it did in 2021.
    """

    def __init__(self, seed: int = 7, share: float = 1 / 7) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share must be between 0 and 1, not {share!r}")
        self.seed = seed
        self.share = share
        key = b"lookup-proxy/customers/" + seed.to_bytes(16, "big", signed=True)
        # Keying once and copying per number skips the key block's compression on every call.
        self._membership = hashlib.blake2b(key=key, digest_size=8, person=b"member")
        self._details = hashlib.blake2b(key=key, digest_size=16, person=b"record")
        self._threshold = round(share * 2**64)
        rng = random.Random(f"{seed}/businesses")
        self.businesses = tuple(
            Business(
                f"010{rng.randrange(30_000_000, 99_000_000):08d}",
                rng.randint(20, 200),
                f"CORP-{rng.randrange(1_000_000):06d}",
                name,
            )
            for name in _BUSINESS_NAMES
        )
        """Business customers, each owning a run of consecutive lines (all customers), whose
        records name the account's reference (``account``); a handful, far from the numbers
        the demo scans from (010-2000-0000 up)."""

    def business_of(self, canonical: str) -> Business | None:
        """The business whose line ``canonical`` is, if any."""
        return next((b for b in self.businesses if b.holds(canonical)), None)

    def is_customer(self, canonical: str) -> bool:
        """Whether the number (in canonical form) belongs to a customer; stable across runs."""
        digest = self._membership.copy()
        digest.update(canonical.encode("ascii"))
        return int.from_bytes(digest.digest(), "big") < self._threshold

    def record(self, canonical: str) -> CustomerRecord | None:
        """The customer's record, or None when nobody holds the number."""
        business = self.business_of(canonical)
        if business is None and not self.is_customer(canonical):
            return None
        digest = self._details.copy()
        digest.update(canonical.encode("ascii"))
        rng = random.Random(int.from_bytes(digest.digest(), "big"))

        surname = rng.choices(_SURNAME_CHOICES, _SURNAME_WEIGHTS)[0]
        name = surname + rng.choice(_GIVEN_SYLLABLES) + rng.choice(_GIVEN_SYLLABLES)
        plan, list_price = rng.choice(_PLANS)
        benefit: Benefit = "fee_discount" if rng.random() < 0.55 else "gift_voucher"
        fee = list_price if benefit == "gift_voucher" else round(list_price * (1 - _FEE_DISCOUNT))
        start = _CONTRACTS_FROM + dt.timedelta(days=rng.randrange(_CONTRACT_SPAN_DAYS))
        since = _EPOCH + dt.timedelta(days=rng.randrange((start - _EPOCH).days + 1))
        record: CustomerRecord = {
            "number": canonical,
            "name": name,
            "plan": plan,
            "monthly_fee_krw": fee,
            "contract_start": start.isoformat(),
            "contract_end": _add_months(start, _CONTRACT_MONTHS).isoformat(),
            "benefit": benefit,
            "device": rng.choice(_DEVICES),
            "customer_since": since.isoformat(),
        }
        if business is not None:
            record["account"] = {"reference": business.reference, "name": business.name}
        return record

    def find_customers(self, count: int, start: str = "01020000000") -> list[str]:
        """The first ``count`` customer numbers at or after ``start``, in ascending order.

        Demos use this to know in advance which numbers will be found; the scan keeps the
        number's length, so ``start`` picks both the prefix and the 10- or 11-digit form.
        """
        return self._scan(count, start, want=True)

    def find_non_customers(self, count: int, start: str = "01020000000") -> list[str]:
        """The first ``count`` numbers at or after ``start`` that nobody holds (walk-ins)."""
        return self._scan(count, start, want=False)

    def sample_customers(self, count: int, rng: random.Random, prefix: str = "010") -> list[str]:
        """``count`` distinct random 11-digit customer numbers under ``prefix``, drawn from rng."""
        return self._sample(count, rng, prefix, want=True)

    def sample_non_customers(
        self, count: int, rng: random.Random, prefix: str = "010"
    ) -> list[str]:
        """``count`` distinct random 11-digit numbers under ``prefix`` that nobody holds."""
        return self._sample(count, rng, prefix, want=False)

    def _check_possible(self, count: int, *, want: bool) -> None:
        # Without this, asking for customers of an empty base would loop forever.
        if count > 0 and self.share == (0.0 if want else 1.0):
            raise ValueError(f"no number qualifies with share={self.share}")

    def _scan(self, count: int, start: str, *, want: bool) -> list[str]:
        if not (start.isascii() and start.isdigit() and start.startswith("0")):
            raise ValueError(f"start must be a canonical number such as 01020000000, not {start!r}")
        self._check_possible(count, want=want)
        width, value, end = len(start), int(start), 10 ** (len(start) - 1)
        found: list[str] = []
        while len(found) < count:
            if value >= end:
                raise ValueError(f"ran out of numbers after {start} before finding {count}")
            number = str(value).zfill(width)
            if self.is_customer(number) == want:
                found.append(number)
            value += 1
        return found

    def _sample(self, count: int, rng: random.Random, prefix: str, *, want: bool) -> list[str]:
        self._check_possible(count, want=want)
        free = 11 - len(prefix)
        found: dict[str, None] = {}  # insertion-ordered set: the draw order is part of the seed
        while len(found) < count:
            number = prefix + str(rng.randrange(10**free)).zfill(free)
            if number not in found and self.is_customer(number) == want:
                found[number] = None
        return list(found)
