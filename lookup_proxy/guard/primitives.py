"""The store primitives the guard's policy is written against.

A decision is a short *batch* of primitives run in order against one store. Every store
executes a batch with the same meaning: the memory store in-process, the Redis store as one
small Lua interpreter per hash-tag group (one round trip, atomic per group). The policy itself
never runs inside a store, so there is exactly one copy of it.

All state is a *window*: members with a time score, trimmed to the window on every add and
capped to a size, so memory stays bounded however hard someone hammers. Plus plain values
(locks) with an optional time to live.

Primitives (tuples, so a batch costs nothing to build on the replay hot path):

``("add", key, now, member, window, cap, nth)``
    Drop members scored at or before ``now - window``; add or re-score ``member`` at ``now``;
    keep only the newest ``cap``; expire the key after ``window``. Returns
    ``[count, nth_score, oldest_score]``: ``nth_score`` is the ``nth`` newest member's score
    when ``0 < nth <= count``, else ``None`` (for Retry-After and RateLimit headers).
``("count", key, since)``   members scored after ``since``.
``("members", key, since)`` those members, oldest first.
``("remove", key, member)`` 1 if it was there, else 0.
``("get", key, now)``       the value or ``None``.
``("set", key, value, ttl, now)``  set a value; ``ttl`` seconds or 0 for no expiry. Returns 1.

``now`` rides along on value primitives only so the memory store can expire them on the
injected clock; Redis expires on its own clock (the same wall time in live use).
``("delete", key)``         1 if something was deleted, else 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

Op = tuple[Any, ...]

ADD = "add"
COUNT = "count"
MEMBERS = "members"
REMOVE = "remove"
GET = "get"
SET = "set"
DELETE = "delete"


class StoreUnavailable(Exception):
    """The store cannot answer now; the guard refuses rather than letting a lookup through."""


class GuardStore(Protocol):
    """What the guard needs from a store: run a batch, report health, list and close."""

    kind: str

    async def execute(self, ops: Sequence[Op]) -> list[Any]:
        """Results of ``ops`` in order; raises StoreUnavailable when it cannot."""
        ...

    async def ping(self) -> None:
        """Raises StoreUnavailable when the store is unreachable (used by /readyz)."""
        ...

    async def keys(self, pattern: str) -> list[str]:
        """Keys matching a glob pattern (admin listing only, never on the lookup path)."""
        ...

    async def close(self) -> None: ...


def hash_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes: the first ``{...}``, as Redis defines it."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key
