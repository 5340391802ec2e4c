"""Vocabulary shared by the traffic simulator and the scorer.

Both tools must agree on file layouts, threat names and what "the same number" means; keeping
those facts here means a change to one contract cannot silently desynchronise the other tool.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import random
from datetime import timedelta, timezone
from pathlib import Path
from typing import Final

from lookup_proxy.replay import DECISION_COLUMNS as REPLAY_DECISION_COLUMNS
from lookup_proxy.replay import EVENT_COLUMNS

KST: Final = timezone(timedelta(hours=9), "KST")

# The replay contract's columns come from the replay tool itself, so the two cannot drift.
EVENT_HEADER: Final = EVENT_COLUMNS
DECISION_COLUMNS: Final = tuple(c for c in REPLAY_DECISION_COLUMNS if c not in EVENT_COLUMNS)
TRUTH_HEADER: Final = ("row", "employee", "actor", "threat")
EMPLOYEE_HEADER: Final = ("employee", "store", "region", "role", "threat", "attack_start")

ACTORS: Final = ("honest", "corporate", "attacker")

REASONS: Final = (
    "NEW_SUBSCRIPTION",
    "CONTRACT_RENEWAL",
    "PLAN_CHANGE",
    "BILLING_INQUIRY",
    "DEVICE_SUPPORT",
    "CORPORATE_ACCOUNT",
)
CORPORATE_REASON: Final = "CORPORATE_ACCOUNT"

# Ordered as DESIGN.md lists them, so reports read in the same order as the threat model.
THREATS: Final = (
    "random_typing",
    "sequential_asc",
    "sequential_desc",
    "strided",
    "block_shuffle",
    "slow_probe",
    "collusion",
    "rotation",
    "shift_burst",
)

# The five spellings DESIGN.md says terminals send; index 0 and 1 are what most clerks type.
NUMBER_STYLES: Final = ("plain", "dashed", "spaced", "intl_dashed", "intl_plain")

# Real Korean 010 numbers start their subscriber part with 2-9; staying inside that range keeps
# attackers' random guesses and honest customers in the same space.
SUBSCRIBER_MIN: Final = 20_000_000
SUBSCRIBER_MAX: Final = 99_999_999


def canonical(number: str) -> str:
    """Reduce any accepted spelling to the 11 digits the backend keys on.

    Raises ValueError so callers that read files can report where the bad value was.
    """
    digits = "".join(ch for ch in number if ch.isdigit())
    if number.lstrip().startswith("+"):
        if not digits.startswith("82"):
            raise ValueError(f"not a Korean number: {number!r}")
        digits = "0" + digits[2:]
    if len(digits) != 11 or not digits.startswith("010"):
        raise ValueError(f"not a 010 mobile number: {number!r}")
    return digits


def format_number(number: str, style: int) -> str:
    """Spell a canonical number the way a terminal might send it (see NUMBER_STYLES)."""
    mid, last = number[3:7], number[7:11]
    if style == 0:
        return number
    if style == 1:
        return f"010-{mid}-{last}"
    if style == 2:
        return f"010 {mid} {last}"
    if style == 3:
        return f"+82 10-{mid}-{last}"
    if style == 4:
        return f"+8210{mid}{last}"
    raise ValueError(f"unknown number style {style}")


def number_of(subscriber: int) -> str:
    """Build the canonical number for an 8-digit subscriber part."""
    return f"010{subscriber:08d}"


def random_subscriber(rng: random.Random) -> int:
    """Draw a subscriber part uniformly from the allocated range."""
    return rng.randint(SUBSCRIBER_MIN, SUBSCRIBER_MAX)


class CustomerBook:
    """Decides which numbers the backend knows, identically for every tool and every run.

    Membership is a keyed hash of the canonical number, so no list of customers has to be
    stored or shared, and an attacker's random guess hits with exactly the configured share.
    Corporate lines are the one exception: a business customer owns a run of consecutive
    numbers, which a hash can never produce, so those ranges are customers unconditionally.
    """

    def __init__(
        self,
        seed: int,
        share: float,
        corporate_ranges: tuple[tuple[int, int], ...] = (),
    ) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"customer share must be within 0..1, got {share}")
        self._key = f"lookup-proxy-sim:{seed}".encode()
        self._threshold = int(share * 2**64)
        ordered = sorted(corporate_ranges)
        self._lows = [low for low, _ in ordered]
        # Highest line reached by any range starting at or before each low: one bisect then
        # answers membership even when ranges overlap.
        self._reach = list(itertools.accumulate((high for _, high in ordered), max))

    def hashed(self, number: str) -> bool:
        """Apply only the keyed-hash rule, for callers that must not see corporate lines."""
        digest = hashlib.blake2b(number.encode(), digest_size=8, key=self._key).digest()
        return int.from_bytes(digest, "big") < self._threshold

    def found(self, number: str) -> bool:
        """Tell whether the backend would return a record for a canonical number."""
        return self.corporate(number) or self.hashed(number)

    def corporate(self, number: str) -> bool:
        """Tell whether a canonical number is one of a business customer's lines."""
        if not self._lows:
            return False
        subscriber = int(number[3:])
        index = bisect.bisect_right(self._lows, subscriber) - 1
        return index >= 0 and subscriber <= self._reach[index]

    def draw(self, rng: random.Random, found: bool) -> str:
        """Draw a random number the backend does (or does not) know, by rejection sampling.

        This is the simulator's hot loop (about seven tries per customer at the default share),
        hence the inlined arithmetic.
        """
        key, threshold, span = self._key, self._threshold, SUBSCRIBER_MAX - SUBSCRIBER_MIN + 1
        blake2b, from_bytes, uniform = hashlib.blake2b, int.from_bytes, rng.random
        while True:
            number = f"010{SUBSCRIBER_MIN + int(uniform() * span):08d}"
            digest = blake2b(number.encode(), digest_size=8, key=key).digest()
            hit = from_bytes(digest, "big") < threshold
            if not hit and self._lows:
                hit = self.corporate(number)
            if hit == found:
                return number


def is_customer(number: str, seed: int, share: float) -> bool:
    """Tell whether a number (any accepted spelling) is a customer by the keyed-hash rule.

    Corporate lines are not covered: they depend on the simulated roster, see CustomerBook.
    """
    return CustomerBook(seed, share).hashed(canonical(number))


def roster_path_for(events: Path) -> Path:
    """The employee roster (employee,roles) written next to EVENTS.csv, for replay --roster."""
    return events.with_suffix(".roster.csv")


def employees_path_for(truth: Path) -> Path:
    """Place the per-employee truth next to the per-row truth so one path names both."""
    return truth.with_suffix(".employees.csv")
