"""The store primitives the guard's policy is written against.

A decision is a short *batch* of primitives run in order against one store. Every store
executes a batch with the same meaning: the memory store in-process, the Redis store as one
small Lua interpreter per hash-tag group (one round trip, atomic per group). The policy itself
never runs inside a store, so there is exactly one copy of it.

All state is a *window*: members with a time score, trimmed to the window as members are added
and capped to a size, so memory stays bounded however hard someone hammers. Times are kept to
the millisecond (the Redis store keeps whole milliseconds, ``script_calls.millis``; the memory
store whatever it is given): the policy never tells apart times closer than that. Plus plain
values (locks) with an optional time to live.

Primitives are tuples (``Op``), the form a batch takes to travel to a store. Rules do not build
them: they describe their primitives to a :class:`Batch`, which collects the tuples for the live
stores; the memory store's own batch runs each primitive as it is described (replay: no tuple
built, taken apart and thrown away, fifteen times an event). The primitives:

``("add", key, now, member, window, cap, nth)``
    Add or re-score ``member`` at ``now``; count the members after ``now - window`` and keep
    only the newest ``cap`` of them. Members at or before ``now - window`` are dropped, on this
    add (the memory store) or with each proxy process's first add of the expiry slot and any
    add to an otherwise empty window (Redis: see ``redis_store.ExpirySlots``); no count or
    member list includes them either way. The key expires ``window`` after the end of the
    newest member's *expiry slot* (see :func:`window_expiry`: at most an eighth of the window or
    an hour later than ``window`` after the add). A clock that stepped back scores the add at
    the window's newest member, so time order holds (Redis: a step of more than a second within
    one process, ``script_calls.STEP_BACK``; processes' clocks are not compared). Returns
    ``[count, nth_score, oldest_score]``: ``nth_score`` is the ``nth`` newest member's score
    when ``0 < nth <= count``, else ``None`` (for Retry-After and RateLimit headers);
    ``oldest_score`` only for ``nth > 0`` (rate logs), else ``None``: most adds only count,
    and reading the oldest member was one Redis command in seven of every lookup's.
``("add_members", key, now, member, window, cap, nth)``  the same add, answering
    ``[count, nth_score, members]``: the window's members after the add, oldest first, in place
    of the oldest score. A sequential rule judges the numbers a distinct rule counts, a finer
    block rule counts its block among a coarser one's members: an add and then a read of the
    same window were four Redis commands (add, count, oldest, members), this is two.
``("note", key, now, member, window, cap)``  an add whose count nobody reads (the outcome logs
    learnt after the answer, forgiveness, marks): returns ``None``. Members past the window and
    past the newest ``cap`` go as with ``add`` in the memory store; Redis drops them only with
    each proxy process's first note of the key's expiry slot (its TTL refresh), so a window
    holds at most ``cap`` plus one slot's notes, and a Redis command (the count) is saved on
    every other note. A note to a key another process deleted within the slot leaves it
    without a TTL until this process notes it again in a later slot
    (``redis_store.ExpirySlots``): a key nobody writes again keeps that member.
``("count", key, since)``   members scored after ``since``.
``("count_if", key, since, over)``  the same count, but only when the result of the primitive
    just before it (a count, in the same batch) is above ``over``; else ``None``. A misses rule
    needs its found numbers only once its misses pass a limit: the found count, two Redis
    commands in every lookup's decision, is then read only when it can matter, in the same
    round trip.
``("members", key, since)`` those members, oldest first.
``("remove", key, member)`` 1 if it was there, else 0. A window the removal empties still
    exists until it expires (``delete`` answers 1 for it, ``keys`` lists it): Redis keeps the
    last member as a placeholder scored ``-inf`` that no read sees, so the key keeps its TTL.
``("get", key, now)``       the value or ``None``.
``("set", key, value, ttl, now)``  set a value; ``ttl`` seconds or 0 for no expiry. Returns 1.

``now`` rides along on value primitives only so the memory store can expire them on the
injected clock; Redis expires on its own clock (the same wall time in live use).
``("delete", key)``         1 if something was deleted, else 0.
``("score", key, member)``  the member's score in a window, or ``None``: "was this number
    looked up before?" without changing anything.

Tallies are the third kind of state: small hashes of integer fields (peer baselines keep one per
store and day, an employee's counts in fields of it). ``ttl`` is in seconds and is set when an
increment starts a field from zero (its new value is the amount added), so a tally lives at
least one ``ttl`` past the first change of each of its fields: a peer tally, one key per bucket
of time, changes only during its bucket, and setting the TTL on every increment was half of
the peer tallies' Redis commands.

``("incr", key, field, amount, ttl)``  add ``amount`` to a field (missing: 0); the new value.
``("fields", key)``                  every field and value as one flat list
    ``[field, value, field, value, ...]`` (empty when the key does not exist).
``("pick", key, fields)``            those fields' values (a list of field names), each an integer
    or ``None``: one employee's counts in a peer tally without reading every clerk's.
``("mark", key, field, ttl, now, cap)`` set a field to 1 unless the tally has it: 1 when it
    was not there, else 0. "Is this the first time in this bucket?" in one Redis command
    (``HSETNX``), where a window's score and then a note were two: a mark is for one bucket of
    time, its key named by the bucket, and its fields never expire on their own. The key
    expires ``ttl`` seconds after the mark that made it (Redis: ``PEXPIRE ... NX`` with each
    proxy process's first mark of the key in each hour, ``MARK_SLOT``; a key another process
    deleted within the hour is then without a TTL until this process marks it in a later
    hour). Past ``cap`` fields the tally starts over (every field new again): the memory store
    at the cap, Redis with the process's first mark of the hour, so a tally holds at most
    ``cap`` plus an hour's marks.
``("tick", key, now, width, window)`` a counter in time buckets, for rate rules at a coarse
    resolution: add one to bucket ``floor(now / width)`` and return every bucket from
    ``floor((now - window) / width)`` on as one flat list ``[bucket, count, ...]`` (integers,
    in no particular order). Buckets before that are dropped with the first tick of each
    *tick period* (half a window, :func:`tick_expiry`), when the key's time to live is set to
    :func:`tick_expiry`: two Redis commands a tick, against four or five for an add to a
    rate log, and a key holds at most one and a half windows of buckets.

Bit sets are the fifth: a Bloom filter of the numbers an employee has met
(``known_numbers.py``), a fixed number of bits a key however many numbers it holds, and no
number in it, only bits.

``("sight", key, offsets, generation, ttl, now)`` a bit set of two generations in one key:
    set the bits at ``offsets`` (integers below :data:`BIT_SET_BITS`) in ``generation``'s half
    and answer 1 when the number is new to it (one of its bits was clear) and to the generation
    before (one of its bits clear in the other half), else 0. The key holds the generation it
    was last turned to (a 32-bit header, then the even generations' half, then the odd ones'):
    its first sight of a newer generation clears the half that generation reuses (and the other
    too, when it is older than the generation before) and sets the key's time to live to ``ttl``
    seconds, as its first sight at all does. One ``BITFIELD`` a sight; a turn, once per
    employee and generation, three commands more. A sight of a generation older than the key's
    (a process a moment behind a turn) sets its bits in the half of the generation before.

Logs are the sixth: append-only records (the audit trail), so that a lookup's record is written
in the same round trip as its decision and no lookup is forwarded without one.

``("append", key, entry, now, keep)``  append ``entry`` (a string without a newline); drop
    entries older than ``keep`` seconds (approximately: Redis trims whole stream nodes). Returns
    the entry's id. Redis keeps a call's appends to one log as one stream entry, newline-joined
    (one XADD a call: ``audit.export.records_of`` splits them), and answers each with its id.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import quote

Op = tuple[Any, ...]

ADD = "add"
ADD_MEMBERS = "add_members"
NOTE = "note"
COUNT = "count"
COUNT_IF = "count_if"
MEMBERS = "members"
REMOVE = "remove"
GET = "get"
SET = "set"
DELETE = "delete"
SCORE = "score"
INCR = "incr"
FIELDS = "fields"
APPEND = "append"
TICK = "tick"
PICK = "pick"
MARK = "mark"
SIGHT = "sight"

BIT_SET_BITS = 2**16
"""Bits of one generation of a bit set (``sight``): offsets are below this; 8 KiB."""
BIT_HEADER_BYTES = 4
"""A bit set's header: the generation it was last turned to (32 bits, big-endian)."""
BIT_SET_BYTES = BIT_HEADER_BYTES + 2 * (BIT_SET_BITS // 8)
"""A whole bit set: the header and two generations' halves."""

MARK_SLOT = 3600.0
"""How often (seconds) a process checks a marked tally's TTL and size: once per key and hour."""


EXPIRY_SLOTS = 8
"""Expiry slots per window: a window key's time to live is set once per slot, not per add."""
EXPIRY_SLOT_MAX = 3600.0
"""The longest expiry slot (seconds), so a month-long window outlives its last add by at most an
hour more."""


def window_expiry(score: float, window: float) -> float:
    """When a window whose newest member is scored ``score`` expires: ``window`` after the end of
    that score's slot (slots of ``window / 8``, at most an hour, counted from the epoch).

    Expiring exactly ``window`` after the last add cost Redis a ``PEXPIRE`` on every add, a
    fifth of a lookup's commands; with slots an add in the slot of the window's newest member
    changes nothing and leaves the TTL alone (``primitives.lua``). What it costs: an idle key
    holds its memory up to one slot longer. Reads that count or list members look inside the
    window, so they answer as before; a ``score`` read (is the member there?) can see a member
    older than the window until a store drops it (the memory store on the next add, Redis with
    the next slot's first add) and in an idle key's extra slot, so a caller compares the score
    with the window itself. The memory store expires on the same slots.
    """
    if window <= 0:
        return score + window
    slot = min(window / EXPIRY_SLOTS, EXPIRY_SLOT_MAX)
    return (math.floor(score / slot) + 1) * slot + window


def tick_period(bucket: int, width: float, window: float) -> int:
    """The tick period a bucket falls in: half-windows counted from the epoch."""
    return math.floor(bucket * width / (window / 2))


def tick_expiry(bucket: int, width: float, window: float) -> float:
    """When a tally of ticks whose newest bucket is ``bucket`` expires: ``window`` after the end
    of that bucket's tick period, when every bucket of the period has left the window.

    Half a window, not an eighth as for windows: a clerk at one lookup a minute would start a
    new eighth of a five-minute window nearly every lookup, and each start costs Redis two
    commands (drop the old buckets, set the time to live)."""
    period_end = (tick_period(bucket, width, window) + 1) * (window / 2)
    return max(period_end, (bucket + 1) * width) + window


class StoreUnavailable(Exception):
    """The store cannot answer now; the guard refuses rather than letting a lookup through."""


class GuardStore(Protocol):
    """What the guard needs from a store: run a batch, report health, list and close."""

    kind: str
    numbers_key: bytes
    """The secret keying the employees' filters of known numbers (guard/known_numbers.py): the
    same in every process sharing the store."""

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


class Batch:
    """Primitives described one call each, collected as ``ops`` to be run as one batch.

    ``executed`` is None for a batch still to be sent; a store that runs primitives as they are
    described (the memory store's :class:`~lookup_proxy.guard.memory.Immediate`) answers the
    results instead, so the engine needs no second copy of any rule for the in-process case.
    """

    __slots__ = ("ops",)

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def add(self, key: str, now: float, member: str, window: float, cap: int, nth: int) -> None:
        self.ops.append((ADD, key, now, member, window, cap, nth))

    def add_members(
        self, key: str, now: float, member: str, window: float, cap: int, nth: int
    ) -> None:
        self.ops.append((ADD_MEMBERS, key, now, member, window, cap, nth))

    def note(self, key: str, now: float, member: str, window: float, cap: int) -> None:
        self.ops.append((NOTE, key, now, member, window, cap))

    def count(self, key: str, since: float) -> None:
        self.ops.append((COUNT, key, since))

    def count_if(self, key: str, since: float, over: int) -> None:
        """Count only if the previous primitive's result is above ``over`` (see the module)."""
        self.ops.append((COUNT_IF, key, since, over))

    def members(self, key: str, since: float) -> None:
        self.ops.append((MEMBERS, key, since))

    def remove(self, key: str, member: str) -> None:
        self.ops.append((REMOVE, key, member))

    def get(self, key: str, now: float) -> None:
        self.ops.append((GET, key, now))

    def set(self, key: str, value: str, ttl: float, now: float) -> None:
        self.ops.append((SET, key, value, ttl, now))

    def delete(self, key: str) -> None:
        self.ops.append((DELETE, key))

    def score(self, key: str, member: str) -> None:
        self.ops.append((SCORE, key, member))

    def incr(self, key: str, field: str, amount: int, ttl: float) -> None:
        self.ops.append((INCR, key, field, amount, ttl))

    def fields(self, key: str) -> None:
        self.ops.append((FIELDS, key))

    def append(self, key: str, entry: str, now: float, keep: float) -> None:
        self.ops.append((APPEND, key, entry, now, keep))

    def tick(self, key: str, now: float, width: float, window: float) -> None:
        self.ops.append((TICK, key, now, width, window))

    def pick(self, key: str, fields: list[str]) -> None:
        self.ops.append((PICK, key, fields))

    def mark(self, key: str, field: str, ttl: float, now: float, cap: int) -> None:
        self.ops.append((MARK, key, field, ttl, now, cap))

    def sight(self, key: str, offsets: list[int], generation: int, ttl: float, now: float) -> None:
        self.ops.append((SIGHT, key, offsets, generation, ttl, now))

    def size(self) -> int:
        """Primitives described so far: where the next one's result will be."""
        return len(self.ops)

    def executed(self) -> list[Any] | None:
        """The results, when the primitives already ran; None when ``ops`` must be sent."""
        return None


def employee_key(prefix: str, employee_id: str, name: str) -> str:
    """One of an employee's own keys. They all share the ``{e:<employee>}`` hash tag, so a
    lookup's employee-scoped primitives run as one group (one script call, one Cluster node);
    quoting leaves no glob characters, so ``name = "*"`` is a literal pattern for them all."""
    return f"{prefix}:{{e:{quote(employee_id, safe='')}}}:{name}"


def hash_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes: the first ``{...}``, as Redis defines it."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key
