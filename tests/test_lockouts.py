"""Lockout values: what is stored, and what is read back, from this version and older ones."""

from __future__ import annotations

import json

from lookup_proxy.clock import ManualClock
from lookup_proxy.guard.engine import Guard
from lookup_proxy.guard.lockouts import LockInfo
from lookup_proxy.guard.memory import MemoryStore
from lookup_proxy.policy import parse_policy
from tests.harness import GUARD_HEAD, GUARD_REASONS

T = 1_790_000_000.0


def guard() -> Guard:
    return Guard(parse_policy(GUARD_HEAD + GUARD_REASONS), MemoryStore(), ManualClock(T))


async def test_a_lock_written_with_its_reasons_reads_back_whole() -> None:
    """An escalation lock keeps the flag-days behind it; status reads them back."""
    g = guard()
    written = await g.lockouts.write(["alice"], "escalation", T, ["a@2026-09-21", "b@2026-09-22"])
    until = T + 8 * 3600  # the default lockout.duration
    assert written == LockInfo("alice", "escalation", T, until, ("a@2026-09-21", "b@2026-09-22"))
    assert await g.lock_status("alice") == written


def test_a_lock_stored_by_an_earlier_version_reads_with_no_reasons() -> None:
    """Values without ``because`` (every lock before escalation) still parse."""
    value = json.dumps({"rule": "random-typing", "at": T, "until": None})
    assert guard().lockouts.parse("bob", value) == LockInfo("bob", "random-typing", T, None)


def test_an_unreadable_lock_still_locks() -> None:
    """A value that is not ours reads as a lock by an unknown rule: never as no lock."""
    assert guard().lockouts.parse("bob", "garbage").rule == "unknown"


async def test_unlocked_lists_only_those_without_a_lock() -> None:
    """Group rules lock culprits once: those already locked are left as they are."""
    g = guard()
    await g.lock("alice")
    assert await g.lockouts.unlocked(["alice", "bob"], T) == ["bob"]
