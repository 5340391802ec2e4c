"""Store-down modes: which guard decides a lookup while Redis cannot be reached.

``refuse`` (the default) answers 503 at once; ``local`` keeps guarding with an embedded store
and stricter limits (``[store] local_limit_share``), because each instance then counts alone.
Either way a circuit breaker stops asking a dead Redis after ``breaker_failures`` consecutive
failures, so no lookup pays its timeout, and one probe every ``retry_interval`` asks whether it
is back. On the way back the lock journal is written into Redis first, so a lock made while
guarding locally holds on every instance. Every change of mode is a log line and a metric.

The local guard starts empty at each outage but for the journal's locks: counts from an earlier
outage may belong to employees unlocked since.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Any

from lookup_proxy.clock import Clock
from lookup_proxy.errors import Refusal, guard_unavailable
from lookup_proxy.guard import Guard, Lookup
from lookup_proxy.guard.decision import Decision
from lookup_proxy.guard.memory import MemoryStore
from lookup_proxy.metrics import ProxyMetrics
from lookup_proxy.policy import Policy
from lookup_proxy.resilience.journal import LockJournal
from lookup_proxy.resilience.recovery import reassert_locks

log = logging.getLogger("lookup_proxy.fallback")

UNAVAILABLE = "guard-unavailable"


def _refusal() -> Refusal:
    return guard_unavailable(
        "Customer lookups are paused for a moment because the safety check is unavailable. "
        "Try again in a few seconds; if it persists, call the help desk."
    )


def local_policy(policy: Policy) -> Policy:
    """``policy`` with every count limit cut to ``local_limit_share`` (at least 1)."""
    share = policy.store.local_limit_share

    def cut(limit: int) -> int:
        return limit if limit == 0 else max(1, math.floor(limit * share))

    rules = []
    for rule in policy.rules:
        update: dict[str, Any] = {"limit": cut(rule.limit)}
        flag_limit = getattr(rule, "flag_limit", None)
        if flag_limit is not None:
            update["flag_limit"] = cut(flag_limit)
        rules.append(rule.model_copy(update=update))
    reasons = {
        code: reason.model_copy(
            update={"limits": {window: cut(n) for window, n in reason.limits.items()}}
        )
        for code, reason in policy.reasons.items()
    }
    return policy.model_copy(update={"rules": tuple(rules), "reasons": reasons})


class Failover:
    """Routes decisions and outcomes to the shared guard, or to the fallback while it is out."""

    def __init__(
        self,
        policy: Policy,
        shared: Guard,
        clock: Clock,
        metrics: ProxyMetrics,
        journal: LockJournal | None,
    ) -> None:
        self.shared = shared
        self.local: Guard | None = None
        self.mode = "shared"
        self._policy = policy
        self._local_policy = (
            local_policy(policy) if policy.store.on_unavailable == "local" else None
        )
        self._clock = clock
        self._metrics = metrics
        self._journal = journal
        self._failures = 0
        self._threshold = policy.store.breaker_failures
        self._interval = policy.store.retry_interval
        self._probe: asyncio.Task[None] | None = None
        self._opening = asyncio.Lock()

    def adopt(self, policy: Policy, shared: Guard) -> None:
        """A reloaded policy: its guard on the shared store, and (mid-outage) a local guard for
        it on the same embedded store, so the outage's counts and locks carry on. The store
        settings themselves only change with a restart (lookup_proxy/reload.py)."""
        self.shared = shared
        self._policy = policy
        self._local_policy = (
            local_policy(policy) if policy.store.on_unavailable == "local" else None
        )
        if self.local is not None and self._local_policy is not None:
            local = Guard(self._local_policy, self.local.store, self._clock, self._metrics.guard)
            local.lockouts.recorder = self._journal
            self.local = local

    async def decide(self, lookup: Lookup, shared: Guard | None = None) -> tuple[Decision, Guard]:
        """The decision and the guard that made it (outcomes must go back to the same one).
        ``shared``: the guard of the policy generation the lookup started under."""
        if self.mode == "shared":
            shared = shared or self.shared
            try:
                decision = await shared.decide(lookup)
            except Refusal as refusal:
                if refusal.cause != UNAVAILABLE:
                    raise
                await self._failed()
                if self.mode == "shared":
                    raise
            else:
                self._failures = 0
                return decision, shared
        local = self.local
        if local is None:
            raise _refusal()
        return await local.decide(lookup), local

    async def learn(
        self, guard: Guard, lookup: Lookup, found: bool, withheld: bool = False
    ) -> tuple[tuple[str, str], ...]:
        """The lockouts learning made (see :meth:`Guard.learn`)."""
        on_shared = guard.store is self.shared.store  # any policy generation's shared guard
        if on_shared and self.mode != "shared":
            return ()  # the shared guard is out; its outcome cannot be stored, nor counted twice
        try:
            return await guard.learn(lookup, found, withheld)
        except Refusal as refusal:
            if on_shared and refusal.cause == UNAVAILABLE:
                await self._failed()
            raise

    async def _failed(self) -> None:
        self._failures += 1
        if self._failures < self._threshold or self.mode != "shared":
            return
        async with self._opening:
            if self.mode != "shared":
                return
            if self._local_policy is not None:
                local = Guard(
                    self._local_policy,
                    MemoryStore(max_keys=self._policy.store.memory_max_keys),
                    self._clock,
                    self._metrics.guard,
                )
                local.lockouts.recorder = self._journal
                await reassert_locks(local, self._journal, self._metrics.store, "outage")
                self.local = local
                self._enter("local")
            else:
                self._enter("refusing")
            self._probe = asyncio.get_running_loop().create_task(self._wait_for_redis())

    def _enter(self, mode: str) -> None:
        previous, self.mode = self.mode, mode
        self._metrics.store.entered(mode)
        if mode == "shared":
            log.warning("guard store is back: lookups guarded by the shared store again")
        else:
            log.warning(
                "guard store unreachable: circuit open",
                extra={"mode": mode, "previous": previous, "retry_every": self._interval},
            )

    async def _wait_for_redis(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.shared.store.ping()
                await reassert_locks(self.shared, self._journal, self._metrics.store, "back")
            except Exception as exc:  # a Refusal, StoreUnavailable or worse: still out
                log.info("guard store still unreachable", extra={"error": type(exc).__name__})
                continue
            self._failures = 0
            self.local = None
            self._enter("shared")
            self._probe = None
            return

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
