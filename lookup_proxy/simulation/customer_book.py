"""Which numbers the simulated backend knows: a keyed hash, identical for every tool and run.

The simulator, the scorer and the red-team must agree on whether a number is a customer
without storing or shipping a list of customers; a keyed hash of the canonical number at a
configured share does that, and gives a random guess exactly that chance of a hit.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import random

from lookup_proxy.simulation.number_space import SUBSCRIBER_MAX, SUBSCRIBER_MIN, canonical


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
