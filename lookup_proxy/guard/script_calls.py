"""A batch of primitives as the Redis store's script calls: the arguments, encoded once.

Its own module so that mypyc compiles it (``native.COMPILED_MODULES``): this loop runs for
every primitive a lookup asks for, and interpreted it was about 8 µs of a lookup's proxy CPU
with Redis (``bench/bench_guard_redis.py``). The store itself (``redis_store.py``) stays
interpreted: it is all awaiting, and benches patch it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from importlib.resources import files
from typing import Any, Final

import msgpack

from lookup_proxy.guard.primitives import (
    ADD,
    ADD_MEMBERS,
    APPEND,
    COUNT,
    COUNT_IF,
    DELETE,
    EXPIRY_SLOT_MAX,
    EXPIRY_SLOTS,
    FIELDS,
    GET,
    INCR,
    MARK,
    MARK_SLOT,
    MEMBERS,
    NOTE,
    PICK,
    REMOVE,
    SCORE,
    SET,
    SIGHT,
    TICK,
    Op,
    hash_tag,
)

SCRIPT: Final = (files("lookup_proxy.guard") / "primitives.lua").read_text(encoding="utf-8")
SCRIPT_SHA: Final = hashlib.sha1(SCRIPT.encode("utf-8"), usedforsecurity=False).hexdigest()

ARITY: Final[dict[str, int]] = {
    ADD: 5,
    ADD_MEMBERS: 5,
    NOTE: 4,
    COUNT: 1,
    COUNT_IF: 2,
    MEMBERS: 1,
    GET: 1,
    SET: 3,
    REMOVE: 1,
    DELETE: 0,
    SCORE: 1,
    INCR: 3,
    FIELDS: 0,
    APPEND: 3,
    TICK: 3,
    PICK: 1,
    MARK: 4,
    SIGHT: 4,
}
"""Arguments after the key, per opcode: the script walks its argument array by these counts
(and two more for the window adds, ``WINDOW_ADDS``, one more for a mark, which the store
appends: see ``redis_store.ExpirySlots``, ``STEP_BACK``)."""


def check(ops: Sequence[Op]) -> None:
    """A ValueError for a primitive the script would misread: an unknown opcode, the wrong
    number of arguments, or a log entry holding a newline (a call's appends share one stream
    entry, a line each: primitives.lua). Checked when a batch is asked for, so the error is the
    asking lookup's alone, not its round trip's."""
    for op in ops:
        code: str = op[0]
        arity = ARITY.get(code)
        if arity is None or len(op) != arity + 2:
            raise ValueError(f"unknown store primitive or wrong arguments: {op!r}")
        if code == APPEND and "\n" in op[2]:
            raise ValueError(f"a log entry holds a newline: {op!r}")


WINDOW_ADDS: Final = frozenset({ADD, ADD_MEMBERS, NOTE})
"""The primitives that add to a window, and so refresh its expiry slot."""

WINDOW_READS: Final = frozenset({COUNT, COUNT_IF, MEMBERS})
"""The primitives that read a window after a time (``since``, their first argument)."""


MILLIS_LIMIT: Final = 2**53
"""The largest magnitude a time in milliseconds is sent with (exact in a Lua number; about
285,000 years): "since forever" and "until forever" saturate here."""


def millis(seconds: float) -> int:
    """A time or duration as the script keeps window scores: whole milliseconds (rounded, so
    order is kept). Integral scores are what Redis stores and formats cheaply (primitives.lua);
    the memory store keeps the seconds, and a millisecond is below anything a window tells."""
    if seconds * 1000.0 >= MILLIS_LIMIT:
        return MILLIS_LIMIT
    if seconds * 1000.0 <= -MILLIS_LIMIT:
        return -MILLIS_LIMIT
    return round(seconds * 1000.0)


STEP_BACK: Final = 1.0
"""Seconds an add's ``now`` may trail the latest one this process sent before the script reads
the window's newest score to keep the time order (a clock that stepped back). Batches of one
loop turn carry slightly out-of-order times, which need no read; a sub-second step scores a
member that much early, which no window notices."""


class ScriptCall:
    """The primitives of one hash tag, encoded for one script call."""

    def __init__(self) -> None:
        self.indices: list[int] = []
        """Where each primitive's result goes in the batch's (Cluster splits a batch)."""
        self.keys: list[str] = []
        self.argv: list[Any] = []
        self.payload = b""

    def seal(self) -> None:
        """Encode the arguments once, as one MessagePack array: one argument to pack."""
        if not self.plain():
            packed: bytes = msgpack.packb(self.argv)
            self.payload = packed

    def plain(self) -> bool:
        """A lone ``append`` (a lookup's audit record): a plain ``XADD`` does what the script
        would, without a script call and a second encoding of the record."""
        return len(self.keys) == 1 and self.argv[0] == APPEND

    def command(self) -> tuple[Any, ...]:
        if self.plain():
            _, entry, now, keep = self.argv
            minid = str(math.floor((now - keep) * 1000))
            return ("XADD", self.keys[0], "MINID", "~", minid, "*", "r", entry)
        return ("EVALSHA", SCRIPT_SHA, len(self.keys), *self.keys, self.payload)

    def answer(self, reply: Any) -> list[Any]:
        """The call's results as the script returns them: one per primitive."""
        if self.plain():
            return [reply.decode() if isinstance(reply, bytes) else reply]
        answered: list[Any] = reply
        return answered

    def fallback(self) -> tuple[Any, ...]:
        """``EVAL`` with the script text: runs once when Redis lost the script, and caches it."""
        return ("EVAL", SCRIPT, len(self.keys), *self.keys, self.payload)


def encode(
    ops: Sequence[Op], cluster: bool, remembered: dict[str, int], latest: float
) -> tuple[list[ScriptCall], list[tuple[str, int]], list[int], float]:
    """The script calls for ``ops`` (standalone: one; Cluster: one per hash tag), the expiry
    slots their adds refresh, where the results hold scores, and the latest ``now`` sent.

    One pass, each window add's two flags worked out inline (see ``redis_store.ExpirySlots``):
    fresh (the process's first add of the key in this expiry slot, by ``remembered``) and
    stepped (its ``now`` more than STEP_BACK before the latest sent); a mark's fresh flag
    likewise, by the hour (``MARK_SLOT``)."""
    groups: dict[str, ScriptCall] = {}
    refreshed: list[tuple[str, int]] = []
    scored: list[int] = []
    stepped_before = latest - STEP_BACK
    group = ScriptCall()
    if not cluster:
        groups[""] = group
    for index, op in enumerate(ops):
        code: str = op[0]
        key: str = op[1]
        if cluster:
            # Cluster: one call per hash tag. Standalone: one call for what was sent (whole
            # batches, about CALL_SIZE primitives: see RedisStore._flush), atomic as each was.
            tag = hash_tag(key)
            found = groups.get(tag)
            if found is None:
                found = groups[tag] = ScriptCall()
            group = found
            group.indices.append(index)
        group.keys.append(key)
        argv = group.argv
        argv.append(code)
        if code in WINDOW_ADDS:
            if code != NOTE:
                scored.append(index)
            now: float = op[2]
            # now, member, window, cap[, nth]: the times in milliseconds
            argv.append(millis(now))
            argv.append(op[3])
            argv.append(millis(op[4]))
            argv.extend(op[5:])
            slot = math.floor(now / min(op[4] / EXPIRY_SLOTS, EXPIRY_SLOT_MAX))
            if remembered.get(key) == slot:
                argv.append(0)
            else:
                argv.append(1)
                refreshed.append((key, slot))
            argv.append(1 if now < stepped_before else 0)
            if now > latest:
                latest = now
                stepped_before = now - STEP_BACK
        elif code in WINDOW_READS:
            argv.append(millis(op[2]))
            argv.extend(op[3:])
        elif code == SCORE:
            argv.extend(op[2:])
            scored.append(index)
        elif code == MARK:
            # field, ttl, now, cap. Then fresh: the TTL and the size checked once per
            # process, key and hour. (A sight needs no flag: its key's header says when.)
            argv.extend(op[2:])
            slot = math.floor(op[4] / MARK_SLOT)
            if remembered.get(key) == slot:
                argv.append(0)
            else:
                argv.append(1)
                refreshed.append((key, slot))
        elif code == DELETE:
            argv.extend(op[2:])
            # The key is gone after this, and a note does not notice a new key: the next add
            # or note refreshes it, TTL and all. (A removal never empties a window: the script
            # keeps its last member as a placeholder, see primitives.lua.)
            remembered.pop(key, None)
            if refreshed:
                refreshed = [done for done in refreshed if done[0] != key]
        else:
            argv.extend(op[2:])
    calls = list(groups.values())
    for call in calls:
        call.seal()  # outside any try: unencodable arguments are a bug, not an outage
    return calls, refreshed, scored, latest
