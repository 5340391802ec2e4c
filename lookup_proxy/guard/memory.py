"""The embedded store: the guard's primitives in-process, for one instance and for replay.

A window is an insertion-ordered dict of member → score. Scores only grow within a key (the
injected clock is monotonic for replay and a step backwards is clamped), so the oldest member is
always first: trimming is a pop from the front, and the members after a time are a suffix.
Each window's expiry and its oldest and newest scores are kept beside it, so most reads are
answered by the scores alone.

Everything a window is made of is a dict of strings and floats, which the garbage collector
does not track: a serving proxy on this store holds a window for every employee, block and
day it has seen (hundreds of thousands), and as objects of their own (a ``_Window`` each,
until 2026-12-06) every young collection walked the new ones and every full collection all of
them, pauses that grew with the store (README "Garbage collection").

Windows are spread over ``_SHARDS`` shards by their key's hash, each a window's four dicts
over its keys: a dict that grows (or is rebuilt after many deletions) copies all of its
entries at once, and the four store-wide dicts of a month-sized store did so together, a
pause of the event loop of 10-42 ms at 90,000-250,000 keys (bench/bench_stalls.py,
2026-12-07); a shard's dicts copy a sixty-fourth of that.

Expired keys are swept in amortised O(1): a sweep starts once four times as many operations
have happened as there are keys, and visits a slice of a snapshot of one shard's keys per
batch, shard after shard, so no batch pays for the whole store (a sweep of every key at once
was a pause of 15-113 ms on a month-sized store, and a snapshot of every key 5-13 ms).

Replay runs fifteen to twenty primitives per event through here, so the hot paths are written
for CPython and for mypyc (which compiles this module when a C compiler is present): replay
describes primitives straight to typed handlers (:class:`Immediate`), ``run`` dispatches tuples
by comparing opcodes, work that the common case never needs (the backwards-clock clamp,
trimming, walking to the nth score) is skipped by a cheap test first, and no window is walked
member by member beyond a few steps, except to delete what expired. The
answers are exactly those of the contract in primitives.py; ``tests/test_guard_primitives.py``
holds the Redis store to them.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from fnmatch import fnmatchcase
from itertools import islice
from typing import Any, Final

from lookup_proxy.guard.known_numbers import new_key
from lookup_proxy.guard.primitives import (
    BIT_HEADER_BYTES,
    BIT_SET_BITS,
    BIT_SET_BYTES,
    Batch,
    Op,
    tick_expiry,
    tick_period,
    window_expiry,
)

# The opcodes of primitives.py, as constants this module owns: compiled, a comparison with
# them is a pointer test, not a lookup in another module's globals and a generic compare.
_ADD: Final = "add"
_ADD_MEMBERS: Final = "add_members"
_NOTE: Final = "note"
_COUNT: Final = "count"
_COUNT_IF: Final = "count_if"
_MEMBERS: Final = "members"
_REMOVE: Final = "remove"
_GET: Final = "get"
_SET: Final = "set"
_DELETE: Final = "delete"
_SCORE: Final = "score"
_INCR: Final = "incr"
_FIELDS: Final = "fields"
_APPEND: Final = "append"
_TICK: Final = "tick"
_PICK: Final = "pick"
_MARK: Final = "mark"
_SIGHT: Final = "sight"

_FOREVER: Final = float("inf")
_SHORT_WALK: Final = 8
"""Members ``_scored_until`` steps over from either end before it bisects instead."""
_SWEEP_EVERY: Final = 4
"""A sweep starts once this many operations per key have run since the last began: each sweep
visits every key, so this is how many operations share the cost of a key's visit (memory
stays bounded by ``max_keys`` whatever it is)."""
_SWEEP_SLICE: Final = 256
"""Keys a sweep visits per batch. Visiting them all at once was a pause of the whole event loop
that grew with the store: 15 ms for a simulated month's 215,000 keys when none had expired,
113 ms when 47,000 had (bench/bench_stalls.py), every few tens of thousands of lookups."""
_HOLES_TOLERATED: Final = 32
"""Deleted members a window's dict may keep as holes before ``removed`` rebuilds it."""
_SHARDS: Final = 64
"""Shards the windows are spread over (a power of two: a key's shard is its hash masked)."""
_SHARD_MASK: Final = _SHARDS - 1


class _Shard:
    """The windows whose keys hash here: each window's members, expiry, oldest and newest
    score, and holes, as dicts of strings and numbers (nothing the collector tracks)."""

    __slots__ = ("expiry", "newest", "oldest", "removed", "windows")

    def __init__(self) -> None:
        self.windows: dict[str, dict[str, float]] = {}
        """Each window's members and their scores, oldest first."""
        self.expiry: dict[str, float] = {}
        """When each window expires: ``window`` after its newest member's expiry slot."""
        self.oldest: dict[str, float] = {}
        """The first member's score while there are members: whether to trim, how many
        members are recent, and the oldest score an add reports are then answered without
        stepping into the dict (whose front is where deleted members leave their holes)."""
        self.newest: dict[str, float] = {}
        """At least the newest member's score (the last add's): a read since a time after it
        is answered at once. Asking for the last minute of a week of misses is what the typo
        check does for every found number."""
        self.removed: dict[str, int] = {}
        """Members deleted from a window since its dict was built (see ``_note_removed``)."""


class MemoryStore:
    """Guard state in dicts; bounded by windows, caps and ``max_keys``."""

    kind = "memory"

    def __init__(self, max_keys: int = 2_000_000, numbers_key: bytes | None = None) -> None:
        self.numbers_key = numbers_key if numbers_key is not None else new_key()
        """The secret keying the filters of known numbers (guard/known_numbers.py): by default
        one of this store's own, since nothing outside the process reads its state."""
        self._shards = [_Shard() for _ in range(_SHARDS)]
        self._held_windows = 0
        """Windows in all shards."""
        self._values: dict[str, str] = {}
        self._tallies: dict[str, dict[Any, int]] = {}
        """Tallies by field (``incr``), and ticks by bucket (``tick``: int fields)."""
        self._logs: dict[str, list[tuple[float, str, str]]] = {}
        """Append-only logs: (time, id, entry), oldest first."""
        self._log_serial = 0
        self._bits: dict[str, bytearray] = {}
        """Bit sets (``sight``): the header, then the halves; bit ``o`` of a half is
        ``0x80 >> (o % 8)`` of its byte ``o // 8``, as Redis numbers a string's bits, so the
        two stores hold the same bytes."""
        self._value_expiry: dict[str, float] = {}
        """Values and tallies with a time to live; a value without one is kept until deleted."""
        self._max_keys = max_keys
        self._ops_since_sweep = 0
        self._sweep_part = -1
        """What the sweep under way visits: shard ``n`` (0 to ``_SHARDS - 1``), then the values
        (``_SHARDS``); -1 with no sweep under way."""
        self._sweeping: list[str] = []
        """The keys of that part the sweep still has to visit, from ``_swept`` on (a snapshot:
        each is judged by its expiry when visited, so a key gone or renewed since is left)."""
        self._swept = 0
        self._latest = 0.0
        """The newest time seen; no score in any window is newer (see ``_add``)."""
        self.evicted = 0

    async def execute(self, ops: Sequence[Op]) -> list[Any]:
        return self.run(ops)

    def run(self, ops: Sequence[Op]) -> list[Any]:
        """Synchronous core, so replay can skip the event loop entirely."""
        results: list[Any] = []
        for op in ops:
            kind: str = op[0]
            # The commonest primitives first: this chain is the dispatch.
            if kind == _ADD:
                results.append(self._add(op[1], op[2], op[3], op[4], op[5], op[6]))
            elif kind == _NOTE:
                self._note(op[1], op[2], op[3], op[4], op[5])
                results.append(None)
            elif kind == _COUNT:
                results.append(self._count(op[1], op[2]))
            elif kind == _COUNT_IF:
                results.append(self._count_if(results[-1], op[1], op[2], op[3]))
            elif kind == _MEMBERS:
                results.append(self._members(op[1], op[2]))
            elif kind == _ADD_MEMBERS:
                results.append(self._add_members(op[1], op[2], op[3], op[4], op[5], op[6]))
            elif kind == _GET:
                results.append(self._get(op[1], op[2]))
            elif kind == _REMOVE:
                results.append(self._remove(op[1], op[2]))
            elif kind == _SET:
                results.append(self._set(op[1], op[2], op[3], op[4]))
            elif kind == _DELETE:
                results.append(self._delete(op[1]))
            elif kind == _SCORE:
                results.append(self._score(op[1], op[2]))
            elif kind == _INCR:
                results.append(self._incr(op[1], op[2], op[3], op[4]))
            elif kind == _FIELDS:
                results.append(self._fields(op[1]))
            elif kind == _APPEND:
                results.append(self._append(op[1], op[2], op[3], op[4]))
            elif kind == _TICK:
                results.append(self._tick(op[1], op[2], op[3], op[4]))
            elif kind == _PICK:
                results.append(self._pick(op[1], op[2]))
            elif kind == _MARK:
                results.append(self._mark(op[1], op[2], op[3], op[4], op[5]))
            elif kind == _SIGHT:
                results.append(self._sight(op[1], op[2], op[3], op[4], op[5]))
            else:
                raise ValueError(f"unknown store primitive {kind!r}")
        self.ran(len(ops))
        return results

    def immediate(self) -> Immediate:
        """A batch that runs each primitive on this store as it is described."""
        return Immediate(self)

    def ran(self, operations: int) -> None:
        """Count operations run; sweep expired keys once they outnumber the keys enough, a
        slice of a shard's keys per batch (``_SWEEP_SLICE``)."""
        self._ops_since_sweep += operations
        held = self.size()
        if held > self._max_keys:
            # A hard budget, at once, when nearly every operation makes a new key (a scan
            # across many blocks), which sweeping slice by slice would let grow.
            self._sweep()
        elif self._sweep_part >= 0:
            self._sweep_slice()
        elif self._ops_since_sweep > _SWEEP_EVERY * held + 1000:
            self._ops_since_sweep = 0
            self._sweep_from(0)
            self._sweep_slice()

    def _shard(self, key: str) -> _Shard:
        return self._shards[hash(key) & _SHARD_MASK]

    # -- windows ---------------------------------------------------------------------------

    def _add(
        self, key: str, now: float, member: str, window: float, cap: int, nth: int
    ) -> list[Any]:
        latest = self._latest
        if now >= latest:
            self._latest = now
        shard = self._shard(key)
        entries = shard.windows.get(key)
        if entries is None:
            entries = shard.windows[key] = {}
            self._held_windows += 1
            oldest = _FOREVER
        else:
            oldest = shard.oldest[key]
        front_changed = not entries
        if not front_changed:
            cutoff = now - window
            if oldest <= cutoff:
                entries = _note_removed(shard, key, entries, _trim(entries, cutoff))
                front_changed = True
            if now < latest and entries:
                # Only a clock that stepped back can find a newer score than now (every
                # score is at most ``_latest``); it must not break the time order.
                newest = next(reversed(entries.values()))
                if newest > now:
                    now = newest
        previous = entries.get(member)
        if previous is not None:
            del entries[member]
            if previous <= oldest:
                front_changed = True
            entries = _note_removed(shard, key, entries, 1)
        entries[member] = now
        shard.newest[key] = now
        count = len(entries)
        if count > cap:
            for _ in range(count - cap):
                del entries[next(iter(entries))]
            entries = _note_removed(shard, key, entries, count - cap)
            count = cap
            front_changed = True
        if front_changed:
            oldest = _front_changed(shard, key, entries)
        shard.expiry[key] = window_expiry(now, window)
        score: float | None = None
        if 0 < nth <= count:
            # Walk from whichever end is nearer: rate logs ask for the nth newest of nth + 1.
            if nth <= count - nth:
                score = next(islice(reversed(entries.values()), nth - 1, None))
            else:
                skip = count - nth
                for candidate in entries.values():
                    if skip == 0:
                        score = candidate
                        break
                    skip -= 1
        return [count, score, oldest if nth > 0 else None]

    def _add_members(
        self, key: str, now: float, member: str, window: float, cap: int, nth: int
    ) -> list[Any]:
        # The add trimmed the window to members after ``now - window`` (the clamp of a clock
        # that stepped back only ever scores later), so its entries are the members.
        result = self._add(key, now, member, window, cap, nth)
        result[2] = list(self._shard(key).windows[key])
        return result

    def _note(self, key: str, now: float, member: str, window: float, cap: int) -> None:
        self._add(key, now, member, window, cap, 0)

    def _live(self, shard: _Shard, key: str) -> dict[str, float] | None:
        """The key's window unless it has expired (then it is dropped): what reads see."""
        entries = shard.windows.get(key)
        if entries is not None and shard.expiry[key] <= self._latest:
            self._drop(key)
            return None
        return entries

    def _count(self, key: str, since: float) -> int:
        shard = self._shard(key)
        entries = self._live(shard, key)
        if entries is None:
            return 0
        if shard.oldest[key] > since:
            return len(entries)  # the common case, answered without a call
        if shard.newest[key] <= since:
            return 0
        return len(entries) - _scored_until(entries, since)

    def _count_if(self, previous: Any, key: str, since: float, over: int) -> int | None:
        if not isinstance(previous, int) or previous <= over:
            return None
        return self._count(key, since)

    def _members(self, key: str, since: float) -> list[str]:
        shard = self._shard(key)
        entries = self._live(shard, key)
        if entries is None:
            return []
        if shard.oldest[key] > since:
            return list(entries)
        if shard.newest[key] <= since:
            return []  # the usual answer to "any misses in the last minute?"
        # Scores are in time order, so the members after ``since`` are a suffix.
        return list(islice(entries, _scored_until(entries, since), None))

    def _remove(self, key: str, member: str) -> int:
        shard = self._shard(key)
        entries = self._live(shard, key)
        if entries is None:
            return 0
        score = entries.get(member)
        if score is None:
            return 0
        del entries[member]
        entries = _note_removed(shard, key, entries, 1)
        if score <= shard.oldest[key]:
            _front_changed(shard, key, entries)
        return 1

    def _score(self, key: str, member: str) -> float | None:
        entries = self._live(self._shard(key), key)
        return None if entries is None else entries.get(member)

    # -- values ----------------------------------------------------------------------------

    def _get(self, key: str, now: float) -> str | None:
        if now > self._latest:
            self._latest = now  # values expire on the clock seen in the primitives
        if self._value_expiry.get(key, _FOREVER) <= self._latest:
            self._drop(key)
            return None
        return self._values.get(key)

    def _set(self, key: str, value: str, ttl: float, now: float) -> int:
        if now > self._latest:
            self._latest = now
        self._drop_window(key)
        self._tallies.pop(key, None)
        self._bits.pop(key, None)
        self._values[key] = value
        if ttl > 0:
            self._value_expiry[key] = self._latest + ttl
        else:
            self._value_expiry.pop(key, None)
        return 1

    def _delete(self, key: str) -> int:
        # A key past its expiry is gone, as in Redis, even if no sweep has dropped it yet:
        # what reads would see decides.
        existed = (
            self._live(self._shard(key), key) is not None
            or self._get(key, self._latest) is not None
            or self._live_tally(key) is not None
            or self._live_bits(key) is not None
            or bool(self._logs.get(key))
        )
        self._drop(key)
        return 1 if existed else 0

    # -- tallies ---------------------------------------------------------------------------

    def _live_tally(self, key: str) -> dict[Any, int] | None:
        tally = self._tallies.get(key)
        if tally is not None and self._value_expiry.get(key, _FOREVER) <= self._latest:
            self._drop(key)
            return None
        return tally

    def _incr(self, key: str, field: str, amount: int, ttl: float) -> int:
        tally = self._live_tally(key)
        if tally is None:
            tally = self._new_tally(key)
        value = tally[field] = tally.get(field, 0) + amount
        if value == amount:
            self._value_expiry[key] = self._latest + ttl
        return value

    def _new_tally(self, key: str) -> dict[Any, int]:
        """An empty tally under ``key``, in place of whatever window or value held it."""
        self._drop_window(key)
        self._values.pop(key, None)
        self._bits.pop(key, None)
        tally: dict[Any, int] = {}
        self._tallies[key] = tally
        return tally

    def _mark(self, key: str, field: str, ttl: float, now: float, cap: int) -> int:
        if now > self._latest:
            self._latest = now
        tally = self._live_tally(key)
        if tally is None:
            tally = self._new_tally(key)
            self._value_expiry[key] = self._latest + ttl
        elif len(tally) >= cap:
            tally.clear()  # past the cap the tally starts over; its expiry stays
        if field in tally:
            return 0
        tally[field] = 1
        return 1

    # -- bit sets --------------------------------------------------------------------------

    def _live_bits(self, key: str) -> bytearray | None:
        bits = self._bits.get(key)
        if bits is not None and self._value_expiry.get(key, _FOREVER) <= self._latest:
            self._drop(key)
            return None
        return bits

    def _sight(self, key: str, offsets: list[int], generation: int, ttl: float, now: float) -> int:
        if now > self._latest:
            self._latest = now
        bits = self._live_bits(key)
        if bits is None:
            self._drop(key)
            bits = self._bits[key] = bytearray(BIT_SET_BYTES)
            held = 0
        else:
            held = int.from_bytes(bits[:BIT_HEADER_BYTES], "big")
        half = BIT_SET_BITS // 8
        here = BIT_HEADER_BYTES + (generation & 1) * half
        there = BIT_HEADER_BYTES + ((generation + 1) & 1) * half
        if held < generation:
            # A new key, or its first sight of this generation: what this half held is two or
            # more generations old (and the other half too, unless it holds the one before).
            if held:
                bits[here : here + half] = bytes(half)
                if held < generation - 1:
                    bits[there : there + half] = bytes(half)
            bits[:BIT_HEADER_BYTES] = generation.to_bytes(BIT_HEADER_BYTES, "big")
            self._value_expiry[key] = self._latest + ttl
        new_here = False
        new_there = False
        for offset in offsets:
            byte = offset >> 3
            mask = 0x80 >> (offset & 7)
            if not bits[here + byte] & mask:
                bits[here + byte] |= mask
                new_here = True
            if not bits[there + byte] & mask:
                new_there = True
        return 1 if new_here and new_there else 0

    def _fields(self, key: str) -> list[Any]:
        tally = self._live_tally(key)
        if tally is None:
            return []
        flat: list[Any] = []
        for field, value in tally.items():
            flat.append(field)
            flat.append(value)
        return flat

    def _pick(self, key: str, fields: list[str]) -> list[int | None]:
        tally = self._live_tally(key)
        if tally is None:
            return [None] * len(fields)
        return [tally.get(field) for field in fields]

    def _tick(self, key: str, now: float, width: float, window: float) -> list[int]:
        # Buckets are int fields here (Redis's are their decimal strings, answered as ints):
        # parsing a rate's buckets back on every lookup cost replay a tenth.
        if now > self._latest:
            self._latest = now
        tally = self._live_tally(key)
        if tally is None:
            tally = self._new_tally(key)
        bucket = math.floor(now / width)
        value = tally.get(bucket, 0) + 1
        tally[bucket] = value
        first = math.floor((now - window) / width)
        if value == 1:
            newest: int | None = None
            for other in tally:
                if other != bucket and (newest is None or other > newest):
                    newest = other
            if newest is None or tick_period(newest, width, window) < tick_period(
                bucket, width, window
            ):
                for stale in [b for b in tally if b < first]:
                    del tally[stale]
                self._value_expiry[key] = tick_expiry(bucket, width, window)
        flat: list[int] = []
        for number, count in tally.items():
            if number >= first:
                flat.append(number)
                flat.append(count)
        return flat

    # -- logs ------------------------------------------------------------------------------

    def _append(self, key: str, entry: str, now: float, keep: float) -> str:
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = []
        cutoff = now - keep
        stale = 0
        while stale < len(log) and log[stale][0] < cutoff:
            stale += 1
        if stale:
            del log[:stale]
        self._log_serial += 1
        entry_id = f"{int(now * 1000)}-{self._log_serial}"
        log.append((now, entry_id, entry))
        return entry_id

    def entries(self, key: str) -> list[str]:
        """A log's entries, oldest first (tests and tools; never on the lookup path)."""
        return [entry for _, _, entry in self._logs.get(key, [])]

    # -- housekeeping ----------------------------------------------------------------------

    def _drop(self, key: str) -> None:
        self._drop_window(key)
        self._values.pop(key, None)
        self._tallies.pop(key, None)
        self._bits.pop(key, None)
        self._logs.pop(key, None)
        self._value_expiry.pop(key, None)

    def _drop_window(self, key: str) -> None:
        shard = self._shard(key)
        if shard.windows.pop(key, None) is not None:
            self._held_windows -= 1
            del shard.expiry[key]
            del shard.oldest[key]
            del shard.newest[key]
            shard.removed.pop(key, None)

    def _expiries(self) -> list[tuple[str, float]]:
        """Every key that expires, with when: windows always, values with a time to live."""
        expiries: list[tuple[str, float]] = []
        for shard in self._shards:
            expiries.extend(shard.expiry.items())
        expiries.extend(self._value_expiry.items())
        return expiries

    def _sweep_slice(self) -> None:
        """Drop the expired among the next ``_SWEEP_SLICE`` keys of the sweep under way; past
        the part's last key, take a snapshot of the next part's (a shard's, then the values')."""
        now = self._latest
        keys = self._sweeping
        start = self._swept
        end = min(start + _SWEEP_SLICE, len(keys))
        # A part's keys are its own map's: a shard's windows, or the values (each part of the
        # sweep visits every key of its map, so a key held both ways is seen by both).
        part = self._sweep_part
        values = part == _SHARDS
        expiry = self._value_expiry if values else self._shards[part].expiry
        for position in range(start, end):
            key = keys[position]
            when = expiry.get(key)
            if when is not None and when <= now:
                if values:
                    self._drop(key)
                else:
                    self._drop_window(key)
        if end < len(keys):
            self._swept = end
        else:
            self._sweep_from(self._sweep_part + 1)

    def _sweep_from(self, part: int) -> None:
        """Begin the sweep's ``part``: a snapshot of shard ``part``'s keys, or past the shards
        the values' keys, or past those no sweep under way (-1)."""
        if part < _SHARDS:
            keys = list(self._shards[part].expiry)
        elif part == _SHARDS:
            keys = list(self._value_expiry)
        else:
            part, keys = -1, []
        self._sweep_part = part
        self._sweeping = keys
        self._swept = 0

    def _sweep(self) -> None:
        """Every key at once: only when over ``max_keys``, which then sheds the soonest to
        expire too."""
        self._ops_since_sweep = 0
        self._sweep_from(_SHARDS + 1)  # none under way: this one visits every key
        now = self._latest
        for shard in self._shards:
            for key in [key for key, when in shard.expiry.items() if when <= now]:
                self._drop_window(key)
        for key in [key for key, when in self._value_expiry.items() if when <= now]:
            self._drop(key)
        excess = self.size() - self._max_keys
        if excess > 0:
            # Shed a tenth more than needed, so an over-budget store sorts once per
            # max_keys/10 new keys rather than on every batch.
            excess += self._max_keys // 10
            # Over budget: shed the state closest to expiring anyway; locks (no expiry) stay.
            # Ties go by key, so what is shed does not depend on the shards' order (a key's
            # shard is its hash, which differs between processes).
            expiries = sorted(self._expiries())
            expiries.sort(key=_expiry_of)  # stable: ties stay in the order of their keys
            victims = expiries[:excess]
            for key, _ in victims:
                self._drop(key)
            self.evicted += len(victims)

    def size(self) -> int:
        """Keys held, for tests that prove memory stays bounded."""
        return self._held_windows + len(self._values) + len(self._tallies) + len(self._bits)

    async def ping(self) -> None:
        return None

    async def keys(self, pattern: str) -> list[str]:
        now = self._latest
        live = [key for shard in self._shards for key, when in shard.expiry.items() if when > now]
        live += [key for key in self._values if self._value_expiry.get(key, _FOREVER) > now]
        live += [key for key in self._tallies if self._value_expiry.get(key, _FOREVER) > now]
        live += [key for key in self._bits if self._value_expiry.get(key, _FOREVER) > now]
        live += [key for key, log in self._logs.items() if log]
        return sorted(key for key in live if fnmatchcase(key, pattern))

    async def close(self) -> None:
        return None


class Immediate(Batch):
    """The memory store's batch: each primitive runs as it is described, its result kept.

    The same handlers as :meth:`MemoryStore.run`, minus the op tuples: replay describes and
    runs fifteen primitives an event, and building, dispatching and dropping a tuple for each
    was a tenth of what an event cost.
    """

    __slots__ = ("results", "store")

    def __init__(self, store: MemoryStore) -> None:
        # Batch.__init__ is not called: ``ops`` stays unset, as nothing is collected to be sent
        # (``executed`` answers instead), and one list fewer is made per batch.
        self.store = store
        self.results: list[Any] = []

    def add(self, key: str, now: float, member: str, window: float, cap: int, nth: int) -> None:
        self.results.append(self.store._add(key, now, member, window, cap, nth))

    def add_members(
        self, key: str, now: float, member: str, window: float, cap: int, nth: int
    ) -> None:
        self.results.append(self.store._add_members(key, now, member, window, cap, nth))

    def note(self, key: str, now: float, member: str, window: float, cap: int) -> None:
        self.store._note(key, now, member, window, cap)
        self.results.append(None)

    def count(self, key: str, since: float) -> None:
        self.results.append(self.store._count(key, since))

    def count_if(self, key: str, since: float, over: int) -> None:
        results = self.results
        results.append(self.store._count_if(results[-1], key, since, over))

    def members(self, key: str, since: float) -> None:
        self.results.append(self.store._members(key, since))

    def remove(self, key: str, member: str) -> None:
        self.results.append(self.store._remove(key, member))

    def get(self, key: str, now: float) -> None:
        self.results.append(self.store._get(key, now))

    def set(self, key: str, value: str, ttl: float, now: float) -> None:
        self.results.append(self.store._set(key, value, ttl, now))

    def delete(self, key: str) -> None:
        self.results.append(self.store._delete(key))

    def score(self, key: str, member: str) -> None:
        self.results.append(self.store._score(key, member))

    def incr(self, key: str, field: str, amount: int, ttl: float) -> None:
        self.results.append(self.store._incr(key, field, amount, ttl))

    def fields(self, key: str) -> None:
        self.results.append(self.store._fields(key))

    def append(self, key: str, entry: str, now: float, keep: float) -> None:
        self.results.append(self.store._append(key, entry, now, keep))

    def tick(self, key: str, now: float, width: float, window: float) -> None:
        self.results.append(self.store._tick(key, now, width, window))

    def pick(self, key: str, fields: list[str]) -> None:
        self.results.append(self.store._pick(key, fields))

    def mark(self, key: str, field: str, ttl: float, now: float, cap: int) -> None:
        self.results.append(self.store._mark(key, field, ttl, now, cap))

    def sight(self, key: str, offsets: list[int], generation: int, ttl: float, now: float) -> None:
        self.results.append(self.store._sight(key, offsets, generation, ttl, now))

    def size(self) -> int:
        return len(self.results)

    def executed(self) -> list[Any]:
        results = self.results
        self.store.ran(len(results))
        return results


def _front_changed(shard: _Shard, key: str, entries: dict[str, float]) -> float:
    """Read the oldest score again after members left the front, or were re-scored."""
    oldest = _FOREVER
    for first in entries.values():
        oldest = first
        break
    shard.oldest[key] = oldest
    return oldest


def _note_removed(
    shard: _Shard, key: str, entries: dict[str, float], count: int
) -> dict[str, float]:
    """Count deletions, rebuilding the dict once they are many; returns the entries.

    A dict keeps a deleted entry's slot as a hole until it next resizes, and a window deletes
    from its front, so every walk from the front (to the oldest member, to trim) steps over
    the holes: hundreds, in a busy week-long window, which made those walks a tenth of a
    replay. Rebuilding once the deletions pass a quarter of the members keeps the holes few,
    for an amortised copy of four members per deletion.
    """
    removed = shard.removed.get(key, 0) + count
    if removed > _HOLES_TOLERATED and 4 * removed > len(entries):
        entries = shard.windows[key] = dict(entries)
        removed = 0
    shard.removed[key] = removed
    return entries


def _expiry_of(item: tuple[str, float]) -> float:
    return item[1]


def _scored_until(entries: dict[str, float], since: float) -> int:
    """How many members are scored at or before ``since``: a prefix, as scores ascend.

    Callers have ruled out none and all (by the window's oldest and newest scores). Usually
    the prefix is short (a window trimmed a moment ago) or the rest is (the last minute of a
    day's lookups), and a few steps from the front or from the back find the boundary;
    otherwise bisection over the scores, so that no long window is walked member by member.
    """
    for stale, score in enumerate(entries.values()):
        if score > since:
            return stale
        if stale == _SHORT_WALK:
            break
    else:
        return len(entries)
    for recent, score in enumerate(reversed(entries.values())):
        if score <= since:
            return len(entries) - recent
        if recent == _SHORT_WALK:
            break
    return bisect_right(list(entries.values()), since)


def _trim(entries: dict[str, float], cutoff: float) -> int:
    """Drop the members scored at or before ``cutoff`` (a prefix, as scores ascend); how many.

    Each stale member is deleted on its own, so finding them by walking costs no more.
    """
    stale: list[str] = []
    for member, score in entries.items():
        if score > cutoff:
            break
        stale.append(member)
    else:
        entries.clear()  # also gives the dict's table back, holes and all
        return 0
    for member in stale:
        del entries[member]
    return len(stale)
