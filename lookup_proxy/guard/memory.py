"""The embedded store: the guard's primitives in-process, for one instance and for replay.

A window is an insertion-ordered dict of member → score. Scores only grow within a key (the
injected clock is monotonic for replay and a step backwards is clamped), so the oldest member is
always first and trimming is a pop from the front. Expired keys are swept in amortised O(1):
a full sweep runs once as many operations have happened as there are keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any

from lookup_proxy.guard.primitives import ADD, COUNT, DELETE, GET, MEMBERS, REMOVE, SET, Op

_FOREVER = float("inf")


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
        self.evicted = 0

    async def execute(self, ops: Sequence[Op]) -> list[Any]:
        return self.run(ops)

    def run(self, ops: Sequence[Op]) -> list[Any]:
        """Synchronous core, so replay can skip the event loop entirely."""
        results: list[Any] = []
        append = results.append
        for op in ops:
            code = op[0]
            if code == ADD:
                append(self._add(op[1], op[2], op[3], op[4], op[5], op[6]))
            elif code == COUNT:
                append(self._count(op[1], op[2]))
            elif code == MEMBERS:
                append(self._members(op[1], op[2]))
            elif code == GET:
                self.observe_time(op[2])
                append(self._get(op[1]))
            elif code == SET:
                self.observe_time(op[4])
                append(self._set(op[1], op[2], op[3]))
            elif code == REMOVE:
                window = self._live_window(op[1])
                append(0 if window is None or window.pop(op[2], None) is None else 1)
            elif code == DELETE:
                existed = op[1] in self._windows or op[1] in self._values
                self._drop(op[1])
                append(1 if existed else 0)
            else:
                raise ValueError(f"unknown store primitive {code!r}")
        self._ops_since_sweep += len(ops)
        if self._ops_since_sweep > len(self._expiry) + 1000 or (
            len(self._windows) + len(self._values) > self._max_keys
        ):
            # The second test keeps max_keys a hard budget when nearly every operation makes a
            # new key (a scan across many blocks), which the first alone would let grow.
            self._sweep()
        return results

    # -- windows ---------------------------------------------------------------------------

    def _add(
        self, key: str, now: float, member: str, window: float, cap: int, nth: int
    ) -> list[Any]:
        if now > self._latest:
            self._latest = now
        entries = self._windows.get(key)
        if entries is None:
            entries = self._windows[key] = {}
        else:
            cutoff = now - window
            while entries:
                oldest = next(iter(entries))
                if entries[oldest] > cutoff:
                    break
                del entries[oldest]
        if entries:
            newest = next(reversed(entries.values()))
            if newest > now:
                now = newest  # a clock step backwards must not break the time order
        entries.pop(member, None)
        entries[member] = now
        while len(entries) > cap:
            del entries[next(iter(entries))]
        self._expiry[key] = now + window
        count = len(entries)
        score = None
        if 0 < nth <= count:
            for position, value in enumerate(reversed(entries.values()), start=1):
                if position == nth:
                    score = value
                    break
        return [count, score, next(iter(entries.values()))]

    def _live_window(self, key: str) -> dict[str, float] | None:
        entries = self._windows.get(key)
        if entries is not None and self._expiry.get(key, _FOREVER) <= self._latest:
            self._drop(key)
            return None
        return entries

    def _count(self, key: str, since: float) -> int:
        entries = self._live_window(key)
        if not entries:
            return 0
        count = len(entries)
        for score in entries.values():
            if score > since:
                break
            count -= 1
        return count

    def _members(self, key: str, since: float) -> list[str]:
        entries = self._live_window(key)
        if not entries:
            return []
        return [member for member, score in entries.items() if score > since]

    # -- values ----------------------------------------------------------------------------

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
