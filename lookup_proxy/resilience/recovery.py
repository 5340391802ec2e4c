"""Writing locks back into a store that may have lost them, and saying so.

Called by the Redis store before any lookup is decided after it noticed a restart, an emptied
database or the first contact, by the fallback when Redis is back after an outage, and at
start-up for the memory store (whose state a proxy restart always loses).
"""

from __future__ import annotations

import logging

from lookup_proxy.guard import Guard
from lookup_proxy.metrics import StoreHealthMetrics
from lookup_proxy.resilience.journal import LockJournal

log = logging.getLogger("lookup_proxy.recovery")

LOST = frozenset({"empty", "flushed"})
"""What a store found that means its counters are gone (the locks come back from the journal)."""


async def reassert_locks(
    guard: Guard, journal: LockJournal | None, metrics: StoreHealthMetrics, found: str
) -> int:
    """Write the journal's current locks into ``guard``'s store; returns how many."""
    metrics.recoveries.labels(found=found).inc()
    if journal is None:
        if found in LOST:
            log.error(
                "guard store lost its state and no lock journal is configured: every lockout "
                "is lifted and counting starts over (set [store] lock_journal)",
                extra={"found": found, "store": guard.store.kind},
            )
        return 0
    now = guard.clock.now()
    locks = journal.current(now)
    restored = await guard.lockouts.restore(locks, now) if locks else 0
    metrics.locks_restored.inc(restored)
    level = logging.WARNING if found in LOST else logging.INFO
    log.log(
        level,
        "locks re-asserted from the lock journal",
        extra={
            "found": found,
            "store": guard.store.kind,
            "locks": restored,
            "unreadable_lines": journal.unreadable,
        },
    )
    return restored
