"""The embedded store: the guard's primitives in-process, for one instance and for replay.

A window is an insertion-ordered dict of member → score. Scores only grow within a key (the
injected clock is monotonic for replay and a step backwards is clamped), so the oldest member is
always first: trimming is a pop from the front, and the members after a time are a suffix.
Expired keys are swept in amortised O(1): a full sweep runs once as many operations have
happened as there are keys.

Replay runs fifteen to twenty primitives per event through here, so the hot paths are written
for CPython: one dict lookup dispatches a primitive (its tuple unpacked straight into the
handler), work that the common case never needs (the backwards-clock clamp, trimming, walking to
the nth score) is skipped by a cheap test first, and no window is walked member by member in
Python beyond a few steps (a week of misses asked about its last minute is bisected). The
answers are exactly those of the contract in primitives.py; ``tests/test_guard_primitives.py``
holds the Redis store to them.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase
from itertools import islice
from typing import Any

from lookup_proxy.guard.primitives import ADD, COUNT, DELETE, GET, MEMBERS, REMOVE, SET, Op

_FOREVER = float("inf")
_SHORT_WALK = 8
"""Members ``_scored_until`` steps over one by one before it bisects instead."""


class MemoryStore:
    """Guard state in a dict; bounded by windows, caps and ``max_keys``."""

    kind = "memory"

    def __init__(self, max_keys: int = 2_000_000) -> None:
        self._windows: dict[str, dict[str, float]] = {}
        self._values: dict[str, str] = {}
        self._expiry: dict[str, float] = {}
        self._max_keys = max_keys
        self._ops_since_sweep = 0
        self._latest = 0.0
        """The newest time seen; no score in any window is newer (see ``_add``)."""
        self.evicted = 0
        self._handlers: dict[str, Callable[..., Any]] = {
            ADD: self._add,
            COUNT: self._count,
            MEMBERS: self._members,
            REMOVE: self._remove,
            GET: self._get_at,
            SET: self._set_at,
            DELETE: self._delete,
        }

    async def execute(self, ops: Sequence[Op]) -> list[Any]:
        return self.run(ops)

    def run(self, ops: Sequence[Op]) -> list[Any]:
        """Synchronous core, so replay can skip the event loop entirely."""
        handlers = self._handlers
        try:
            results = [handlers[op[0]](*op) for op in ops]
        except KeyError:
            for op in ops:
                if op[0] not in handlers:
                    raise ValueError(f"unknown store primitive {op[0]!r}") from None
            raise
        self._ops_since_sweep += len(ops)
        if self._ops_since_sweep > len(self._expiry) + 1000 or (
            len(self._windows) + len(self._values) > self._max_keys
        ):
            # The second test keeps max_keys a hard budget when nearly every operation makes a
            # new key (a scan across many blocks), which the first alone would let grow.
            self._sweep()
        return results

    # -- windows ---------------------------------------------------------------------------
    # Each handler takes a primitive's whole tuple, opcode first, as its arguments.

    def _add(
        self, _op: str, key: str, now: float, member: str, window: float, cap: int, nth: int
    ) -> list[Any]:
        latest = self._latest
        if now >= latest:
            self._latest = now
        entries = self._windows.get(key)
        if entries is None:
            entries = self._windows[key] = {}
        elif entries:
            cutoff = now - window
            if next(iter(entries.values())) <= cutoff:
                _trim(entries, cutoff)
            if now < latest and entries:
                # Only a clock that stepped back can find a newer score than now (every score
                # is at most ``_latest``); it must not break the time order.
                newest = next(reversed(entries.values()))
                if newest > now:
                    now = newest
        if member in entries:
            del entries[member]
        entries[member] = now
        count = len(entries)
        while count > cap:
            del entries[next(iter(entries))]
            count -= 1
        self._expiry[key] = now + window
        scores = entries.values()
        score = None
        if 0 < nth <= count:
            # Walk from whichever end is nearer: rate logs ask for the nth newest of nth + 1.
            if nth <= count - nth:
                score = next(islice(reversed(scores), nth - 1, None))
            else:
                score = next(islice(scores, count - nth, None))
        return [count, score, next(iter(scores))]

    def _live_window(self, key: str) -> dict[str, float] | None:
        """The key's window unless it has expired (then it is dropped): what reads see."""
        entries = self._windows.get(key)
        if entries is not None and self._expiry.get(key, _FOREVER) <= self._latest:
            self._drop(key)
            return None
        return entries

    def _count(self, _op: str, key: str, since: float) -> int:
        entries = self._windows.get(key)  # _live_window, inlined on the hot path
        if entries is None:
            return 0
        if self._expiry.get(key, _FOREVER) <= self._latest:
            self._drop(key)
            return 0
        for oldest in entries.values():
            if oldest > since:
                return len(entries)  # the common case, answered without a call
            break
        return len(entries) - _scored_until(entries, since)

    def _members(self, _op: str, key: str, since: float) -> list[str]:
        entries = self._windows.get(key)  # _live_window, inlined on the hot path
        if entries is None:
            return []
        if self._expiry.get(key, _FOREVER) <= self._latest:
            self._drop(key)
            return []
        skip = _scored_until(entries, since)
        # Scores are in time order, so the members after ``since`` are a suffix.
        return list(islice(entries, skip, None)) if skip else list(entries)

    def _remove(self, _op: str, key: str, member: str) -> int:
        entries = self._live_window(key)
        return 0 if entries is None or entries.pop(member, None) is None else 1

    # -- values ----------------------------------------------------------------------------

    def _get_at(self, _op: str, key: str, now: float) -> str | None:
        self.observe_time(now)
        return self._get(key)

    def _set_at(self, _op: str, key: str, value: str, ttl: float, now: float) -> int:
        self.observe_time(now)
        return self._set(key, value, ttl)

    def _get(self, key: str) -> str | None:
        if self._expiry.get(key, _FOREVER) <= self._latest:
            self._drop(key)
            return None
        return self._values.get(key)

    def _set(self, key: str, value: str, ttl: float) -> int:
        self._values[key] = value
        if ttl > 0:
            self._expiry[key] = self._latest + ttl
        else:
            self._expiry.pop(key, None)
        return 1

    def _delete(self, _op: str, key: str) -> int:
        existed = key in self._windows or key in self._values
        self._drop(key)
        return 1 if existed else 0

    # -- housekeeping ----------------------------------------------------------------------

    def _drop(self, key: str) -> None:
        self._windows.pop(key, None)
        self._values.pop(key, None)
        self._expiry.pop(key, None)

    def _sweep(self) -> None:
        self._ops_since_sweep = 0
        now = self._latest
        for key in [key for key, when in self._expiry.items() if when <= now]:
            self._drop(key)
        excess = len(self._windows) + len(self._values) - self._max_keys
        if excess > 0:
            # Shed a tenth more than needed, so an over-budget store sorts once per
            # max_keys/10 new keys rather than on every batch.
            excess += self._max_keys // 10
            # Over budget: shed the state closest to expiring anyway; locks (no expiry) stay.
            victims = sorted(self._expiry.items(), key=lambda item: item[1])[:excess]
            for key, _ in victims:
                self._drop(key)
            self.evicted += len(victims)

    def observe_time(self, now: float) -> None:
        """Expiry follows the injected clock, as seen in the primitives' time arguments."""
        if now > self._latest:
            self._latest = now

    def size(self) -> int:
        """Keys held, for tests that prove memory stays bounded."""
        return len(self._windows) + len(self._values)

    async def ping(self) -> None:
        return None

    async def keys(self, pattern: str) -> list[str]:
        live = [key for key in (*self._windows, *self._values) if self._get_alive(key)]
        return sorted(key for key in live if fnmatchcase(key, pattern))

    def _get_alive(self, key: str) -> bool:
        return self._expiry.get(key, _FOREVER) > self._latest

    async def close(self) -> None:
        return None


def _scored_until(entries: dict[str, float], since: float) -> int:
    """How many members are scored at or before ``since``: a prefix, as scores ascend.

    Usually that prefix is empty or short (a window trimmed a moment ago) and a walk from the
    front finds its end; or it is everything (is there a miss in the last minute, among a
    week's misses?), which the newest member tells at once. Otherwise bisection over the
    scores, so that no long window is walked member by member in Python.
    """
    scores = entries.values()
    for oldest in scores:
        if oldest > since:
            return 0
        break
    else:
        return 0
    for newest in reversed(scores):
        if newest <= since:
            return len(entries)
        break
    for stale, score in enumerate(islice(scores, _SHORT_WALK)):
        if score > since:
            return stale
    return bisect_right(list(scores), since)


def _trim(entries: dict[str, float], cutoff: float) -> None:
    """Drop the members scored at or before ``cutoff`` (a prefix, as scores ascend)."""
    stale = _scored_until(entries, cutoff)
    if stale == len(entries):
        entries.clear()  # also gives the dict's table back, holes and all
    elif stale == 1:
        del entries[next(iter(entries))]
    else:
        for member in list(islice(entries, stale)):
            del entries[member]
