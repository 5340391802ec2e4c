"""The numbers an employee has met: what counts as *new* to them, for every share the policy
judges (the peer rules' shares, a misses rule's ``ratio`` and its typo budget's ``typo_share``).

A peer rule compares misses (or forgiven typos) among the numbers an employee looked up.
Counted among all numbers of the day, that share is diluted by a padder: an insider
who has read the policy looks up customers they already know again, each one more number that
discloses nothing, until their probes' misses are a share chance explains (README: "Why padding
worked"). Counted among the numbers *new to the employee*, padding moves nothing: a miss is a
number nobody has a record of, so it is new to everyone, and the honest source of misses, a
walk-in who is not a customer, is a new face too; a clerk's returning customers raise neither.

"New" is judged over a horizon, not forever: a Bloom filter per employee and generation of
:data:`GENERATION` seconds (:data:`~lookup_proxy.guard.primitives.BIT_SET_BITS` bits,
:data:`HASHES` bits a number), asked in this generation and the one before, so a number stays
known for one to two generations after it was last looked up. Both generations are one key, so
a sight is one command (``sight``); a key per generation asked a second for every number the
first did not know (2026-12-07). A number the filter wrongly
calls known (a false positive: below one in a thousand for the 2,000 numbers of a busy clerk's
eight weeks, one in fifty at 8,000) counts towards neither the misses nor the numbers, which
shifts a share nothing. The filter holds bits, not numbers: nothing in it can be read back.
"""

from __future__ import annotations

import hashlib
import math
from typing import Final

from lookup_proxy.guard.primitives import BIT_SET_BITS, Batch, employee_key

GENERATION: Final = 28 * 86_400.0
"""Seconds of one filter: a number is known for 28 to 56 days after it was last looked up. An
insider who pads with customers met before that needs a list of them kept for months; a longer
horizon costs 8 KiB an employee per 28 days more in the store."""

HASHES: Final = 4
"""Bits a number sets: the false-positive rate is lowest near 4 for the fill of a busy clerk's
generation (2,000 numbers in 65,536 bits)."""

KEPT: Final = 2 * GENERATION + 86_400.0
"""An employee's filter expires this long after its last turn to a new generation: by then it
holds nothing either generation would be asked for."""


def offsets(number: str) -> list[int]:
    """The filter's bits for a canonical number: :data:`HASHES` slices of one digest, each as
    wide as a bit set's offsets (16 bits)."""
    digest = hashlib.blake2b(number.encode(), digest_size=2 * HASHES).digest()
    return [int.from_bytes(digest[2 * i : 2 * i + 2], "big") % BIT_SET_BITS for i in range(HASHES)]


class KnownNumbers:
    """Asks, in one batch, whether a number is new to an employee (and notes it met)."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix

    def add_sight(self, batch: Batch, employee_id: str, number: str, now: float) -> None:
        """One primitive: the number noted in this generation's filter, and whether it was new
        to it and to the previous one. :meth:`new` reads it."""
        generation = math.floor(now / GENERATION)
        batch.sight(self.key(employee_id), offsets(number), generation, KEPT, now)

    @staticmethod
    def new(results: list[object], at: int) -> bool:
        """Whether the number of the sight at ``at`` in ``results`` was new to the employee."""
        return results[at] == 1

    def key(self, employee_id: str) -> str:
        return employee_key(self._prefix, employee_id, "known-numbers")
