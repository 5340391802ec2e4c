"""The guard engine: every rule's primitives in one batch, one decision, then learning.

The walk inside the guard is: build one batch (the employee's lock plus each applicable rule's
primitives), run it (one round trip per hash-tag group), judge each rule on its slice, then
write what the decision implies (locks). Outcomes are learnt after the backend answered, off
the terminal's wait (``learning.py``). The clock is injected; nothing here knows whether it
runs live or in replay. Around the decision: the plan cache (``plans.py``), the decision's
values (``decision.py``), lockouts (``lockouts.py``) and escalation (``escalation.py``).

Rules are not judged while the employee is locked out: the lookup is refused as ``locked`` and
still counted by every rule (the batch runs whole, so hammering while locked resets nothing),
but it raises no hits and no flags. Only group rules that lock are judged then, for the
other members of the group they lock. In process (replay), an employee locked until unlocked
is counted by the store- and region-wide rules only: their own counters are never read again,
since unlocking wipes them, so a locked attacker's every further attempt need not touch them.

Replay decides a month of a store chain's lookups through here in one run, so the per-lookup
path is kept lean: what depends only on the employee and reason is a cached plan
(``plans.py``), and the in-process store runs each primitive as a rule describes it
(``primitives.Batch``), with no op tuples in between.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lookup_proxy.clock import Clock
from lookup_proxy.durations import format_duration
from lookup_proxy.employee import Employee
from lookup_proxy.errors import Refusal, guard_denied, guard_unavailable, rate_limited
from lookup_proxy.guard.decision import LOCKED, Decision, Hit, Lookup, RateState
from lookup_proxy.guard.escalation import Escalation
from lookup_proxy.guard.learning import Learning
from lookup_proxy.guard.lockouts import LockInfo, Lockouts
from lookup_proxy.guard.memory import Immediate, MemoryStore
from lookup_proxy.guard.peers import PeerCheck, PeerTally
from lookup_proxy.guard.plans import Plans, RulePlan, locks
from lookup_proxy.guard.primitives import Batch, GuardStore, Op, StoreUnavailable
from lookup_proxy.guard.rules import BlockCheck, Check, Subject, make_check
from lookup_proxy.guard.shared_logs import share_logs
from lookup_proxy.policy import PeerRule, Policy, RateRule

if TYPE_CHECKING:
    from lookup_proxy.metrics import GuardMetrics


class Guard:
    """Decides lookups under a policy, against a store, on a clock."""

    def __init__(
        self,
        policy: Policy,
        store: GuardStore,
        clock: Clock,
        metrics: GuardMetrics | None = None,
        shared_logs: bool = True,
    ) -> None:
        self.policy = policy
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self._store_timer: Any = (
            None if metrics is None else metrics.store_latency.labels(store.kind)
        )
        """The store's latency series, looked up once: every batch is timed into it."""
        self._prefix = policy.store.key_prefix
        self._contact = policy.lockout.contact
        self._in_process: MemoryStore | None = (
            store if isinstance(store, MemoryStore) and metrics is None else None
        )
        """The in-process store, whose batches run each primitive as it is described when no
        store latency is measured (replay): no op tuples, and no coroutine in between."""
        self.checks: list[Check] = [
            make_check(rule, policy.hours)
            for rule in _all_rules(policy)
            if not isinstance(rule, PeerRule)
        ]
        if shared_logs:  # off only to compare against rules keeping their own logs
            share_logs(self.checks)
        self.peer_checks = [PeerCheck(rule) for rule in policy.rules if isinstance(rule, PeerRule)]
        fallbacks = [PeerCheck(p.rule, fallback=True) for p in self.peer_checks if p.rule.fallback]
        by_tally: dict[tuple[str, float], list[PeerCheck]] = {}
        for peer in [*self.peer_checks, *fallbacks]:
            by_tally.setdefault((peer.peers, peer.rule.bucket), []).append(peer)
        self.peer_tallies = [PeerTally(self._prefix, checks) for checks in by_tally.values()]
        self._marks_span = max((peer.rule.bucket for peer in self.peer_checks), default=0.0)
        self.escalation = Escalation(
            policy.escalation, self._prefix, policy.hours.utc_offset, policy.witnesses()
        )
        self.audit_log: str | None = None
        """The store's log for audit records, when the guard writes each lookup's record in
        its decision's batch (the Redis store: see lookup_proxy/audit/trail.py)."""
        self.audit_keep = 0.0
        self.lockouts = Lockouts(
            self._prefix,
            policy.lockout.duration,
            self._contact,
            self._keys,
            self._batch,
            self._execute,
        )
        self.plans = Plans(self._prefix, self.checks, self.peer_tallies, self.lockouts.key)
        self.learning = Learning(
            self._prefix,
            store.numbers_key,
            clock,
            self.plans,
            self.checks,
            self.peer_checks,
            self.escalation.name,
            self._batch,
            self._execute,
            self._lock,
            self._escalate,
        )

    # -- decide ------------------------------------------------------------------------------

    async def decide(self, lookup: Lookup) -> Decision:
        """One decision for ``lookup``; raises a 503 Refusal when the store cannot answer."""
        now = self.clock.now()
        employee = lookup.employee
        plan = self.plans.plan(employee, lookup.reason)
        layout, keys = plan.layout, plan.keys
        subject = Subject(
            lookup.request_id,
            employee.id,
            employee.store,
            lookup.number,
            int(lookup.number),
            now,
        )
        batch = self._batch()
        batch.get(plan.lock_key, now)
        if isinstance(batch, Immediate):
            # In process (replay), where asking first costs no round trip: an employee locked
            # until unlocked never has their own counters read again (unlocking wipes them), so
            # only the store- and region-wide rules need this lookup. Decisions are the same as
            # with the one batch that live stores always run.
            lock_value = batch.results[0]
            if (
                lock_value is not None
                and self.lockouts.view(employee.id, lock_value)[0].until is None
            ):
                shared = self._batch()
                for rule_plan in layout.shared:
                    rule_plan.check.add_ops(shared, keys[rule_plan.index], subject)
                return await self._decide_locked(
                    layout.shared_locking_groups,
                    keys,
                    employee,
                    subject,
                    await self._execute(shared),
                    lock_value,
                )
        for rule_plan in layout.rules:
            rule_plan.check.add_ops(batch, keys[rule_plan.index], subject)
        if layout.marks:
            batch.members(plan.marks_key, now - self._marks_span)
        audit = lookup.audit
        if audit is not None and self.audit_log is not None:
            # Last, so no rule's results move: the record rides the decision's round trip, and
            # a batch that fails (no decision) writes no record of a lookup never forwarded.
            batch.append(self.audit_log, audit, now, self.audit_keep)
        results = await self._execute(batch)
        lock_value = results[0]
        if lock_value is not None:
            return await self._decide_locked(
                layout.locking_groups, keys, employee, subject, results, lock_value
            )
        if layout.misses:
            lookup.decided = (plan, now, results)  # read by learn, for a found number only

        hits: list[Hit] = []
        flags: list[str] = []
        blocking: list[Hit] = []
        group_culprits: dict[str, tuple[str, ...]] = {}
        for rule_plan in layout.rules:
            check = rule_plan.check
            finding = check.judge(results, rule_plan.start, subject)
            if finding is None:
                continue
            rule = check.rule
            group = rule_plan.group
            if group is not None:
                culprits = await self._culprits(group, keys[rule_plan.index], subject)
                if locks(check):
                    group_culprits[rule.name] = culprits
                if employee.id not in culprits:
                    continue  # the unlucky clerk who looked up one number in a scanned block
            action = "flag" if finding.early else rule.action
            hit = Hit(rule.name, rule.kind, action, rule.mode, finding.count, finding.retry_after)
            hits.append(hit)
            if rule.mode == "shadow" or action == "flag":
                flags.append(rule.name)
            else:
                blocking.append(hit)

        escalating = [hit.rule for hit in hits if hit.action == "flag" and hit.mode == "enforce"]
        marked: list[str] = results[layout.marks_at] if layout.marks else []
        for peer in layout.marks:
            if peer.rule.name in marked:
                peer_rule = peer.rule
                hits.append(Hit(peer_rule.name, "peer", peer_rule.action, peer_rule.mode, 1))
                flags.append(peer_rule.name)
                if peer_rule.mode == "enforce":
                    escalating.append(peer_rule.name)
        rate = RateState(layout.rates, layout.rate_policy, results, now)
        because = await self._escalate(employee.id, escalating, now) if escalating else None
        if because is not None:
            hit = Hit(self.escalation.name, "escalation", "lock", "enforce", len(because))
            hits.append(hit)
            info = await self._lock([employee.id], hit.rule, now, because)
            decision = Decision(
                False,
                hit.rule,
                self.lockouts.refusal(info),
                tuple(flags),
                tuple(hits),
                ((employee.id, hit.rule),),
                None,
                rate,
            )
        elif blocking:
            decision = await self._refuse(employee, blocking, flags, hits, rate, now)
        else:
            decision = Decision(True, None, None, tuple(flags), tuple(hits), (), None, rate)
        decision = await self._lock_others(decision, employee, group_culprits, now)
        if self.metrics is not None:
            self.metrics.observe_decision(decision)
        return decision

    async def _decide_locked(
        self,
        locking_groups: tuple[RulePlan, ...],
        keys: tuple[str, ...],
        employee: Employee,
        subject: Subject,
        results: list[Any],
        lock_value: str,
    ) -> Decision:
        """A locked-out employee's lookup: refused, and counted in every rule whose counts can
        still matter (the batch ran), but not judged: it raises no hits and no flags.

        Only group rules that lock are judged, for what they do to others: a locked colluder
        still scanning the group's block exposes the rest of the group, as before the lock.
        Skipping the rest is what keeps an employee hammering while locked cheap to decide.
        """
        decision = Decision(
            False, LOCKED, None, (), (), (), {}, None, self.lockouts.view(employee.id, lock_value)
        )
        group_culprits: dict[str, tuple[str, ...]] = {}
        for rule_plan in locking_groups:
            group = rule_plan.group
            if group is None or group.judge(results, rule_plan.start, subject) is None:
                continue
            group_culprits[group.rule.name] = await self._culprits(
                group, keys[rule_plan.index], subject
            )
        if group_culprits:
            decision = await self._lock_others(decision, employee, group_culprits, subject.now)
        if self.metrics is not None:
            self.metrics.observe_decision(decision)
        return decision

    async def _culprits(self, group: BlockCheck, key: str, subject: Subject) -> tuple[str, ...]:
        """Who a fired group rule holds responsible: the block's pairs, read back."""
        who = self._batch()
        group.add_who(who, key, subject)
        return group.culprits((await self._execute(who))[0], subject)

    async def _lock_others(
        self,
        decision: Decision,
        employee: Employee,
        group_culprits: dict[str, tuple[str, ...]],
        now: float,
    ) -> Decision:
        """Lock every culprit of a fired group rule besides the requester (decided above).

        Culprits already locked out stay as they were: a scanned block keeps firing its group
        rule on every lookup in it, and locking them again would count the same lockout over and
        over and move its time to the latest attempt.
        """
        for rule_name, culprits in group_culprits.items():
            already = {locked for locked, _ in decision.locked}
            others = [c for c in culprits if c != employee.id and c not in already]
            others = await self.lockouts.unlocked(others, now)
            if others:
                await self._lock(others, rule_name, now)
                locked = [(other, rule_name) for other in others]
                decision = decision.also_locking(locked)
        return decision

    async def _refuse(
        self,
        employee: Employee,
        blocking: list[Hit],
        flags: list[str],
        hits: list[Hit],
        rate: RateState,
        now: float,
    ) -> Decision:
        locking = [hit for hit in blocking if hit.action == "lock"]
        if locking:
            first = locking[0]
            info = await self._lock([employee.id], first.rule, now)
            refusal = self.lockouts.refusal(info)
            return Decision(
                False,
                first.rule,
                refusal,
                tuple(flags),
                tuple(hits),
                ((employee.id, first.rule),),
                None,
                rate,
            )
        rate_hits = [hit for hit in blocking if hit.kind == "rate"]
        other_hits = [hit for hit in blocking if hit.kind != "rate"]
        if other_hits:
            first = other_hits[0]
            if first.kind == "hours":
                detail = (
                    "Customer lookups are possible only while the store is open. If a customer "
                    f"needs help now, ask {self._contact}."
                )
            else:
                detail = (
                    "This lookup was refused because the pattern of recent lookups looks like a "
                    "search through customer numbers. If you are serving a customer, ask "
                    f"{self._contact} to review it."
                )
            return Decision(
                False,
                first.rule,
                guard_denied(detail, first.rule),
                tuple(flags),
                tuple(hits),
                (),
                None,
                rate,
            )
        slowest = max(rate_hits, key=lambda hit: hit.retry_after or 0.0)
        wait = max(1, math.ceil(slowest.retry_after or 1.0))
        retry_headers = dict(rate.headers())
        retry_headers["Retry-After"] = str(wait)
        detail = (
            f"Too many lookups in a short time. Wait {format_duration(wait)} and try again; "
            "each lookup needs a customer in front of you."
        )
        return Decision(
            False,
            slowest.rule,
            rate_limited(detail, retry_headers, slowest.rule),
            tuple(flags),
            tuple(hits),
            (),
            retry_headers,
        )

    # -- locks -------------------------------------------------------------------------------

    async def _lock(
        self, employees: Sequence[str], rule: str, now: float, because: Sequence[str] = ()
    ) -> LockInfo:
        info = await self.lockouts.write(employees, rule, now, because)
        if self.metrics is not None:
            self.metrics.lockouts.labels(rule=rule).inc(len(employees))
        return info

    async def lock_status(self, employee_id: str) -> LockInfo | None:
        """The employee's lockout, if any (admin and CLI)."""
        return await self.lockouts.status(employee_id, self.clock.now())

    async def lock(self, employee_id: str, rule: str = "manual") -> LockInfo:
        """Lock an employee out by hand (security staff), as the rules would."""
        return await self._lock([employee_id], rule, self.clock.now())

    async def unlock(self, employee_id: str) -> bool:
        """Lift a lockout (and the employee's own counters): see :meth:`Lockouts.lift`."""
        return await self.lockouts.lift(employee_id, self.clock.now())

    async def locked_employees(self) -> list[LockInfo]:
        """Every current lockout (admin listing; scans keys, never on the lookup path)."""
        return await self.lockouts.every(self.clock.now())

    # -- learn -------------------------------------------------------------------------------

    async def learn(
        self, lookup: Lookup, found: bool, withheld: bool = False
    ) -> tuple[tuple[str, str], ...]:
        """Record the backend's answer for an allowed lookup (``learning.py``; ``withheld``: a
        record ``[accounts]`` kept from the employee); the lockouts this made (employee, rule):
        a peer rule that locks, or an escalation its flag completed; usually none."""
        return await self.learning.learn(lookup, found, withheld)

    async def _escalate(
        self, employee_id: str, rules: Sequence[str], now: float
    ) -> tuple[str, ...] | None:
        """Note these flags' flag-days; the flag-days behind a lock when they amount to one."""
        escalation = self.escalation
        entries = escalation.flag_days(employee_id, rules, now)
        if not entries:
            return None
        batch = self._batch()
        escalation.add_note(batch, employee_id, entries, now)
        days: list[str] = (await self._execute(batch))[-1]
        escalation.noted(employee_id, entries)
        return escalation.judge(days)

    # -- store -------------------------------------------------------------------------------

    def _batch(self) -> Batch:
        """A batch for the store: in process, one that runs each primitive as described."""
        store = self._in_process
        return Batch() if store is None else store.immediate()

    async def _execute(self, batch: Batch) -> list[Any]:
        """The batch's results; an empty batch costs no round trip."""
        results = batch.executed()
        if results is not None:
            return results
        return await self._run(batch.ops) if batch.ops else []

    async def _run(self, ops: list[Op]) -> list[Any]:
        timer = self._store_timer
        started = time.perf_counter() if timer is not None else 0.0
        try:
            results = await self.store.execute(ops)
        except StoreUnavailable as exc:
            raise self._unavailable() from exc
        if timer is not None:
            timer.observe(time.perf_counter() - started)
        return results

    async def _keys(self, pattern: str) -> list[str]:
        """Key listing (admin only) refused the same way as a batch when the store is out."""
        try:
            return await self.store.keys(pattern)
        except StoreUnavailable as exc:
            raise self._unavailable() from exc

    def _unavailable(self) -> Refusal:
        if self.metrics is not None:
            self.metrics.store_errors.labels(store=self.store.kind).inc()
        return guard_unavailable(
            "Customer lookups are paused for a moment because the safety check is "
            "unavailable. Try again in a few seconds; if it persists, call the help desk."
        )


def _all_rules(policy: Policy) -> list[Any]:
    """The configured rules plus the per-reason limits of the reason catalogue."""
    rules: list[Any] = list(policy.rules)
    for code, reason in policy.reasons.items():
        for window, limit in reason.limits.items():
            rules.append(
                RateRule.model_validate(
                    {
                        "name": f"reason-{code.lower()}-{window}",
                        "kind": "rate",
                        "window": window,
                        "limit": limit,
                        "reasons": (code,),
                        "description": f"per-reason limit for {code}",
                    }
                )
            )
    return rules
