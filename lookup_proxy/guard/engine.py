"""The guard engine: every rule's primitives in one batch, one decision, then learning.

The walk inside the guard is: build one batch (the employee's lock plus each applicable rule's
primitives), run it (one round trip per hash-tag group), judge each rule on its slice, then
write what the decision implies (locks). Outcomes are learnt after the backend answered, off
the terminal's wait. The clock is injected; nothing here knows whether it runs live or in replay.

Rules are not judged while the employee is locked out: the lookup is refused as ``locked`` and
still counted by every rule (the batch runs whole, so hammering while locked resets nothing),
but it raises no hits and no flags. Only group rules that lock are judged then, for the
other members of the group they lock. In process (replay), an employee locked until unlocked
is counted by the store- and region-wide rules only: their own counters are never read again,
since unlocking wipes them, so a locked attacker's every further attempt need not touch them.

Replay decides a month of a store chain's lookups through here in one run, so the per-lookup
path is kept lean: what depends only on the employee and reason is a cached plan (the keys),
over a layout shared by employees alike (which rules apply, result offsets, the
RateLimit-Policy header), and the in-process store runs each primitive as a rule describes it
(``primitives.Batch``), with no op tuples in between.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from lookup_proxy.clock import Clock
from lookup_proxy.durations import format_duration
from lookup_proxy.employee import Employee
from lookup_proxy.errors import Refusal, guard_denied, guard_unavailable, rate_limited
from lookup_proxy.guard.decision import LOCKED, Decision, Hit, Lookup, RateState
from lookup_proxy.guard.escalation import Escalation
from lookup_proxy.guard.lockouts import LockInfo, Lockouts
from lookup_proxy.guard.memory import Immediate, MemoryStore
from lookup_proxy.guard.peers import MISSES, OUTCOMES, TYPOS, PeerCheck, PeerTally
from lookup_proxy.guard.primitives import Batch, GuardStore, Op, StoreUnavailable, employee_key
from lookup_proxy.guard.rules import (
    BlockCheck,
    Check,
    MissesCheck,
    RateCheck,
    Subject,
    is_typo_of,
    make_check,
)
from lookup_proxy.guard.shared_logs import share_logs
from lookup_proxy.policy import PeerRule, Policy, RateRule

if TYPE_CHECKING:
    from lookup_proxy.metrics import GuardMetrics


class _RulePlan:
    """One applicable rule in a lookup's batch: which of the plan's keys is its own, and where
    its results start. Shared by every employee with the same layout (see :class:`_Layout`)."""

    __slots__ = ("check", "group", "index", "start")

    def __init__(self, check: Check, index: int, start: int, group: BlockCheck | None) -> None:
        self.check = check
        self.index = index
        """Its key's place in :attr:`_Plan.keys`."""
        self.start = start
        self.group = group
        """The check again when it is a group block rule, which asks who scanned the block."""


@dataclass(frozen=True, slots=True)
class _Layout:
    """Which rules guard a lookup and where each finds its results: the same for every
    employee with the same reason, roles and (un)known region, so built once for all of them.

    Only the keys differ between such employees (:class:`_Plan`). A plan used to hold a rule
    plan per rule with its key, some forty objects an employee that every young garbage
    collection walked while a busy proxy met its employees; now it is three."""

    rules: tuple[_RulePlan, ...]
    locking_groups: tuple[_RulePlan, ...]
    """The enforced group rules that lock: the only rules judged while the employee is locked."""
    shared: tuple[_RulePlan, ...]
    """The store- and region-scoped rules, placed in a batch of their own."""
    shared_locking_groups: tuple[_RulePlan, ...]
    """``locking_groups`` placed in that batch."""
    misses: tuple[tuple[MissesCheck, int, int], ...]
    """The misses rules, each with its key's index and where its count of misses is."""
    rates: tuple[tuple[RateCheck, int], ...]
    """The enforced rate rules, which report RateLimit headers, and where their results are."""
    rate_policy: str
    """The RateLimit-Policy header: the same for every lookup under this layout."""
    peers: tuple[tuple[PeerTally, tuple[PeerCheck, ...]], ...]
    """The peer tallies the employee counts into, with the peer rules that apply to them."""
    marks: tuple[PeerCheck, ...]
    """The peer rules that apply, whose marks (see :meth:`Guard._marks_key`) the decision
    reports as flags."""
    marks_at: int
    """Where the marks are in the decision's results (after every rule's primitives)."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """How one employee's lookups for one reason are guarded: the layout, and every key quoted
    and formatted. Built once and cached, because none of it depends on the lookup itself and
    building it was most of what deciding a lookup cost."""

    employee: Employee
    layout: _Layout
    keys: tuple[str, ...]
    """Each rule's key, at its rule plan's ``index``."""
    lock_key: str
    marks_key: str
    peer_tags: tuple[str, ...]
    """The peer group's tag of each of the layout's ``peers``."""
    misses_key: str
    """The employee's own recent misses (:meth:`Guard._misses_key`)."""


PLAN_CACHE_SIZE = 8192
"""Plans kept (employee × reason); the cache starts over when full, which bounds its memory
(a few kB per plan) whatever the number of employees."""


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
        by_tally: dict[tuple[str, float], list[PeerCheck]] = {}
        for peer in self.peer_checks:
            by_tally.setdefault((peer.rule.peers, peer.rule.bucket), []).append(peer)
        self.peer_tallies = [PeerTally(self._prefix, checks) for checks in by_tally.values()]
        self._marks_span = max((peer.rule.bucket for peer in self.peer_checks), default=0.0)
        self._typo_window = max(
            (c.typo_window for c in self.checks if isinstance(c, MissesCheck)), default=0.0
        )
        """The window of the employee's recent misses (:meth:`_misses_key`)."""
        self._learns = bool(self.peer_checks) or any(
            isinstance(c, MissesCheck) for c in self.checks
        )
        self.escalation = Escalation(
            policy.escalation, self._prefix, policy.hours.utc_offset, policy.witnesses()
        )
        self.audit_log: str | None = None
        """The store's log for audit records, when the guard writes each lookup's record in
        its decision's batch (the Redis store: see lookup_proxy/audit/trail.py)."""
        self.audit_keep = 0.0
        self._plans: dict[str, dict[str, _Plan]] = {}
        """Employee id → reason → plan."""
        self._layouts: dict[tuple[str, frozenset[str], bool], _Layout] = {}
        """(Reason, roles, region unknown) → layout: a handful, whatever the employees."""
        self._plan_count = 0
        self._new_numbers: dict[str, int] = {}
        """Employee id → numbers new that day this guard learnt for them (REJUDGE_EVERY)."""
        self.lockouts = Lockouts(
            self._prefix,
            policy.lockout.duration,
            self._contact,
            self._keys,
            self._batch,
            self._execute,
        )

    # -- keys --------------------------------------------------------------------------------

    def _tag(self, scope: str, employee: Employee) -> str | None:
        if scope == "employee":
            return "e:" + quote(employee.id, safe="")
        if scope == "store":
            return "s:" + quote(employee.store, safe="")
        if scope == "chain":
            return "c"
        return None if employee.region is None else "r:" + quote(employee.region, safe="")

    def _rule_key(self, check: Check, employee: Employee) -> str | None:
        tag = self._tag(check.rule.scope, employee)
        return None if tag is None else f"{self._prefix}:{{{tag}}}:{check.log_name}"

    def _plan(self, employee: Employee, reason: str) -> _Plan:
        """The cached plan for this employee and reason (see :class:`_Plan`).

        Looked up by id and reason, whose hashes strings keep, then checked against the
        employee's store, region and roles (the same object, in replay), which the plan
        depends on too: a token with another store gets its own plan.
        """
        by_reason = self._plans.get(employee.id)
        if by_reason is None:
            by_reason = self._plans[employee.id] = {}
        plan = by_reason.get(reason)
        if plan is not None and (plan.employee is employee or plan.employee == employee):
            return plan
        if self._plan_count >= PLAN_CACHE_SIZE:
            self._plans.clear()
            self._layouts.clear()  # roles come from tokens: bounded with the plans
            self._plan_count = 0
            by_reason = self._plans[employee.id] = {}
        plan = by_reason[reason] = self._build_plan(employee, reason)
        self._plan_count += 1
        return plan

    def _build_plan(self, employee: Employee, reason: str) -> _Plan:
        layout_key = (reason, employee.roles, employee.region is None)
        layout = self._layouts.get(layout_key)
        if layout is None:
            layout = self._layouts[layout_key] = self._build_layout(employee, reason)
        keys: list[str] = []
        for rule_plan in layout.rules:
            key = self._rule_key(rule_plan.check, employee)
            assert key is not None, "a layout holds only rules with a key for its employees"
            keys.append(key)
        tags: list[str] = []
        for tally, _ in layout.peers:
            tag = self._tag(tally.peers, employee)
            assert tag is not None, "a layout holds only tallies with a tag for its employees"
            tags.append(tag)
        return _Plan(
            employee,
            layout,
            tuple(keys),
            self.lockouts.key(employee.id),
            self._marks_key(employee.id),
            tuple(tags),
            self._misses_key(employee.id),
        )

    def _build_layout(self, employee: Employee, reason: str) -> _Layout:
        """The layout of every employee with this employee's roles and (un)known region."""
        rules: list[_RulePlan] = []
        rates: list[tuple[RateCheck, int]] = []
        start = 1  # after the employee's lock
        for check in self.checks:
            if not _applies(check.rule, reason, employee.roles):
                continue
            if self._tag(check.rule.scope, employee) is None:
                continue  # a region rule for an employee with no known region
            if isinstance(check, RateCheck) and check.rule.mode == "enforce":
                rates.append((check, start))
            group = check if isinstance(check, BlockCheck) and check.group else None
            rules.append(_RulePlan(check, len(rules), start, group))
            start += check.width
        rules = _led(rules)
        rate_policy = ", ".join(
            f'"{rate.rule.name}";q={rate.rule.limit};w={int(rate.rule.window)}' for rate, _ in rates
        )
        locking_groups = tuple(p for p in rules if p.group is not None and _locks(p.check))
        shared: list[_RulePlan] = []
        start = 0
        for p in rules:
            if p.check.rule.scope != "employee":
                shared.append(_RulePlan(p.check, p.index, start, p.group))
                start += p.check.width
        shared = _led(shared)
        shared_locking = tuple(p for p in shared if p.group is not None and _locks(p.check))
        peers: list[tuple[PeerTally, tuple[PeerCheck, ...]]] = []
        marks: list[PeerCheck] = []
        for tally in self.peer_tallies:
            if self._tag(tally.peers, employee) is None:
                continue
            applying = tuple(c for c in tally.checks if _applies(c.rule, reason, employee.roles))
            if not applying:
                continue
            peers.append((tally, applying))
            marks.extend(applying)
        return _Layout(
            tuple(rules),
            locking_groups,
            tuple(shared),
            shared_locking,
            tuple((p.check, p.index, p.start) for p in rules if isinstance(p.check, MissesCheck)),
            tuple(rates),
            rate_policy,
            tuple(peers),
            tuple(marks),
            1 + sum(p.check.width for p in rules),
        )

    def _misses_key(self, employee_id: str) -> str:
        """Every miss the employee made in the longest ``typo_window``, whichever rules count
        it and whether or not one forgave it: a found number reads this one window, and only
        when it corrects one of these does it read each rule's own misses (``_forgive``).

        The name holds a colon, which rule names cannot, so no rule's key can be it."""
        return employee_key(self._prefix, employee_id, "misses:recent")

    def _marks_key(self, employee_id: str) -> str:
        """The peer rules that fired for the employee lately: one window, one primitive per
        decision however many peer rules there are; a mark lasts the longest peer bucket."""
        return employee_key(self._prefix, employee_id, "peer-flags")

    # -- decide ------------------------------------------------------------------------------

    async def decide(self, lookup: Lookup) -> Decision:
        """One decision for ``lookup``; raises a 503 Refusal when the store cannot answer."""
        now = self.clock.now()
        employee = lookup.employee
        plan = self._plan(employee, lookup.reason)
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
                if _locks(check):
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
        locking_groups: tuple[_RulePlan, ...],
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

    async def learn(self, lookup: Lookup, found: bool) -> tuple[tuple[str, str], ...]:
        """Record the backend's answer for an allowed lookup: misses rules, bounded typo
        forgiveness, and the peer tallies (a peer rule is judged when its metric moves).
        Returns the lockouts this made (employee, rule): a peer rule that locks, or an
        escalation its flag completed; usually none."""
        if not self._learns:
            return ()
        employee = lookup.employee
        plan = self._plan(employee, lookup.reason)
        layout, keys = plan.layout, plan.keys
        peers = layout.peers
        if not layout.misses and not peers:
            return ()
        now = self.clock.now()
        subject = Subject(lookup.request_id, employee.id, employee.store, lookup.number, 0, now)
        batch = self._batch()
        asked = self._may_correct(lookup, plan, now) if found else ()
        if asked:  # first, at index 0, whatever primitives learning the outcome takes
            batch.members(plan.misses_key, now - self._typo_window)
        for check, index, _ in layout.misses:
            check.add_outcome(batch, keys[index], subject, found)
        if not found and layout.misses:
            batch.note(plan.misses_key, now, lookup.number, self._typo_window, RECENT_MISSES_CAP)
        seen_at = batch.size()
        if peers:
            seen = self._seen_key(employee.id)
            batch.score(seen, lookup.number)
            batch.note(seen, now, lookup.number, SEEN_WINDOW, SEEN_CAP)
        results = await self._execute(batch)

        then = self._batch()
        forgave = bool(asked) and await self._forgive(asked, subject, results[0], then)
        # Seen today: a score within the day (a store may still hold older ones: primitives.py).
        seen_score: float | None = results[seen_at] if peers else None
        new = bool(peers) and (seen_score is None or seen_score <= now - SEEN_WINDOW)
        counts: list[tuple[str, int]] = []
        if new:
            counts.append((OUTCOMES, 1))
            if not found:
                counts.append((MISSES, 1))
        if forgave:
            counts += [(MISSES, -1), (TYPOS, 1)]
        judged: list[tuple[PeerTally, str, tuple[PeerCheck, ...], int, int, bool]] = []
        if counts:
            rejudge = new and self._count_new(employee.id) % REJUDGE_EVERY == 0
            for (tally, applying), tag in zip(peers, plan.peer_tags, strict=True):
                tally.add_counts(then, tag, employee.id, now, counts)
                moved = tuple(
                    check
                    for check in applying
                    if rejudge or ((new and not found) if check.field == MISSES else forgave)
                )
                if moved:
                    start = then.size()
                    own_only = tally.add_own_reads(then, tag, now, moved, employee.id)
                    width = 1 if own_only else tally.add_reads(then, tag, now, moved)
                    judged.append((tally, tag, moved, start, width, own_only))
        after = await self._execute(then)
        fired = [
            check
            for tally, tag, checks, start, width, own_only in judged
            for check, verdict in zip(
                checks,
                tally.fired(checks, employee.id, tag, now, after[start : start + width], own_only),
                strict=True,
            )
            if verdict is not None
        ]
        if fired:
            return await self._peer_fired(employee, fired, now)
        return ()

    def _may_correct(
        self, lookup: Lookup, plan: _Plan, now: float
    ) -> tuple[tuple[MissesCheck, str], ...]:
        """The misses rules whose recent misses a found number may correct: all of them,
        but those that counted no miss in their window when this lookup was decided, if that
        window reached back past their ``typo_window`` from now.

        Misses are only learnt, and each rule counted its own before this lookup went to the
        backend, so such a rule has none to forgive: on a simulated fortnight of honest work a
        found lookup read 1.5 rules' recent misses of the shipped policy's four, not 3.7. (A miss
        of the same employee learnt while this lookup was at the backend, from another terminal,
        is then not forgiven by it: the strict side.)"""
        keys = plan.keys
        decided = lookup.decided
        if decided is None or decided[0] is not plan:
            # Decided elsewhere (another plan or guard): ask every rule.
            return tuple([(check, keys[index]) for check, index, _ in plan.layout.misses])
        _, then, results = decided
        return tuple(
            [
                (check, keys[index])
                for check, index, at in plan.layout.misses
                if results[at] > 0 or check.window < check.typo_window + (now - then)
            ]
        )

    async def _forgive(
        self,
        asked: tuple[tuple[MissesCheck, str], ...],
        subject: Subject,
        recent: list[str],
        then: Batch,
    ) -> bool:
        """Describe the forgiveness of the misses this found number corrects to ``then``;
        whether any was forgiven. ``recent`` are the employee's own recent misses.

        Only a number that corrects one of them reads, for each rule asked, its own recent
        misses and what a forgiveness depends on (a second round trip for a few lookups in a
        hundred, off the terminal's wait). Reading every rule's recent misses for every found
        number was a quarter of the lookups' ``ZRANGEBYSCORE`` commands. A rule that counts a
        group's misses (``scope``) forgives only a miss of the employee who corrects it: a
        retype corrects one's own typo, and colleagues farming each other's typos get nothing.
        """
        number = subject.number
        own = [miss for miss in recent if is_typo_of(miss, number)]
        if not own:
            return False
        reads = self._batch()
        for check, key in asked:
            check.add_recent_misses(reads, key, subject)
            check.add_budget_reads(reads, key, subject)
        read = await self._execute(reads)
        forgave = False
        start = 0
        for check, key in asked:
            kept: list[str] = read[start]
            miss = check.typo_candidate([m for m in kept if m in own], subject) if kept else None
            if miss is not None:
                times = check.forgiveness(read, start + 1, subject.now)
                if times:
                    check.add_forgive(then, key, subject, miss, times)
                    forgave = True
            start += 1 + check.typo_width
        return forgave

    async def _peer_fired(
        self, employee: Employee, fired: list[PeerCheck], now: float
    ) -> tuple[tuple[str, str], ...]:
        """Leave each fired peer rule's mark (reported by the next decisions), lock for one
        that locks, and note the flag-days towards escalation; the lockouts made."""
        marks = self._batch()
        key, span, cap = self._marks_key(employee.id), self._marks_span, len(self.peer_checks)
        for peer in fired:
            marks.note(key, now, peer.rule.name, span, cap)
        await self._execute(marks)
        locking = [
            p.rule.name for p in fired if p.rule.action == "lock" and p.rule.mode == "enforce"
        ]
        if locking:
            await self._lock([employee.id], locking[0], now)
            return ((employee.id, locking[0]),)
        enforced = [p.rule.name for p in fired if p.rule.mode == "enforce"]
        if enforced:
            because = await self._escalate(employee.id, enforced, now)
            if because is not None:
                await self._lock([employee.id], self.escalation.name, now, because)
                return ((employee.id, self.escalation.name),)
        return ()

    def _count_new(self, employee_id: str) -> int:
        """One more number new that day learnt for the employee here; how many so far."""
        counted = self._new_numbers
        if len(counted) >= NEW_NUMBERS_KEPT:
            counted.clear()
        seen = counted.get(employee_id, 0) + 1
        counted[employee_id] = seen
        return seen

    def _seen_key(self, employee_id: str) -> str:
        """The numbers the employee looked up in the current peer bucket (distinct outcomes)."""
        return employee_key(self._prefix, employee_id, "peer-seen")

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


REJUDGE_EVERY = 10
"""Peer rules are judged when their metric moves, and also at every tenth number new that day
that this guard learns for the employee: an employee's misses may all come before they have
looked up enough numbers to be judged (``min_outcomes``), and a rule judged only on misses
would then wait for the next one. Counted in the process (several instances each judge at
their own tenth): the count of the store's window of numbers seen cost a ``ZCOUNT`` a
lookup, one command in 25."""

NEW_NUMBERS_KEPT = 65_536
"""Employees whose new numbers a guard counts; past it the counts start again (a rule is then
judged up to ten numbers later than it would have been, never not at all)."""

SEEN_WINDOW = 86_400.0
"""A number counts once a day towards an employee's peer tallies, whatever their buckets."""

SEEN_CAP = 4096
"""Numbers remembered per employee and peer bucket (a clerk's day is a few hundred)."""

RECENT_MISSES_CAP = 4096
"""Misses remembered per employee for the longest ``typo_window`` (a minute: a handful; a
script typing as fast as the rate rules let it, a few dozen)."""


def _led(plans: list[_RulePlan]) -> list[_RulePlan]:
    """The plans, each check that judges its leader's primitive pointed at where that is.

    A leader learns from the same lookups as its follower (``shared_logs.learnt_alike``), so it
    applies wherever the follower does and sits in the same batch."""
    starts = {id(p.check): p.start for p in plans}
    led: list[_RulePlan] = []
    for p in plans:
        leader = p.check.leader
        if leader is not None:
            p = _RulePlan(p.check, p.index, starts[id(leader)], p.group)
        led.append(p)
    return led


def _applies(rule: Any, reason: str, roles: frozenset[str]) -> bool:
    if rule.reasons is not None and reason not in rule.reasons:
        return False
    if reason in rule.exempt_reasons:
        return False
    return not (rule.exempt_roles and roles.intersection(rule.exempt_roles))


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


def _locks(check: Check) -> bool:
    """Whether the check's rule locks employees out when it fires (an enforced ``lock``)."""
    return check.rule.mode == "enforce" and check.rule.action == "lock"
