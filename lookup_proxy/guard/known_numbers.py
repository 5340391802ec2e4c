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

**Keyed, because the insider has read the code.** A number the filter wrongly calls known is
never counted, so an insider who could compute the filter's bits would choose such numbers: with
the hash in the code and nothing secret in it, they could work out, from the numbers they had
looked up themselves, which of the 80 million others their filter takes for known, and look those
up under the walk-in reason with no share of misses ever moving (2026-12-07: about 750 such
numbers from three weeks of a busy clerk's work, 103 records in the next fifteen working days,
never flagged; ``bench/known_collisions.py``). So the bits come from a keyed BLAKE2b whose key
is a secret of the store (``numbers_key``): from the environment for Redis, which every instance
shares (``[store] known_numbers_key_env``), and made at random for a memory store, whose state
dies with its process. Without the key the insider's chosen numbers are as good as any. A key's
filters are kept under a name carrying its fingerprint (:func:`key_id`), so a new key starts
empty filters instead of reading another key's bits as its own.
"""

from __future__ import annotations

import hashlib
import math
import secrets
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


KEY_BYTES: Final = 32
"""Bytes of a filter key (BLAKE2b takes up to 64)."""

SECRET_MIN: Final = 32
"""Characters a key given in the environment must have at least (``lookup-proxy audit keygen``
prints 64)."""


def new_key() -> bytes:
    """A key nobody else has: a memory store's, whose filters live and die in one process."""
    return secrets.token_bytes(KEY_BYTES)


def key_from_secret(secret: str) -> bytes:
    """The filter key for a secret from the environment (any text, the same in every instance
    that shares the store)."""
    return hashlib.blake2b(secret.encode(), digest_size=KEY_BYTES, person=b"lp-known-key").digest()


def key_id(key: bytes) -> str:
    """A fingerprint of ``key`` for the filters' key names: 32 bits, which say nothing of it."""
    return hashlib.blake2b(key, digest_size=4, person=b"lp-known-id").hexdigest()


def offsets(number: str, key: bytes) -> list[int]:
    """The filter's bits for a canonical number under ``key``: :data:`HASHES` slices of one
    keyed digest, each as wide as a bit set's offsets (16 bits)."""
    digest = hashlib.blake2b(number.encode(), digest_size=2 * HASHES, key=key).digest()
    return [int.from_bytes(digest[2 * i : 2 * i + 2], "big") % BIT_SET_BITS for i in range(HASHES)]


class KnownNumbers:
    """Asks, in one batch, whether a number is new to an employee (and notes it met)."""

    def __init__(self, prefix: str, key: bytes) -> None:
        self._prefix = prefix
        self._key = key
        self._name = f"known-numbers:{key_id(key)}"

    def add_sight(self, batch: Batch, employee_id: str, number: str, now: float) -> None:
        """One primitive: the number noted in this generation's filter, and whether it was new
        to it and to the previous one. :meth:`new` reads it."""
        generation = math.floor(now / GENERATION)
        batch.sight(self.key(employee_id), offsets(number, self._key), generation, KEPT, now)

    @staticmethod
    def new(results: list[object], at: int) -> bool:
        """Whether the number of the sight at ``at`` in ``results`` was new to the employee."""
        return results[at] == 1

    def key(self, employee_id: str) -> str:
        return employee_key(self._prefix, employee_id, self._name)
