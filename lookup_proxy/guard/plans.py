"""The plan cache: how an employee's lookups for a reason are guarded, built once.

Which rules apply to a lookup, where each finds its results in the batch and which keys it
reads depend only on the employee (their store, region and roles) and the reason, not on the
lookup: a :class:`Plan` holds the keys, over a :class:`Layout` shared by every employee alike
(which rules apply, result offsets, the RateLimit-Policy header). Building them was most of
what deciding a lookup cost; the decision (``engine.py``) and learning (``learning.py``) both
walk the same plan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from lookup_proxy.employee import Employee
from lookup_proxy.guard.peers import PeerCheck, PeerTally
from lookup_proxy.guard.primitives import employee_key
from lookup_proxy.guard.rules import BlockCheck, Check, MissesCheck, RateCheck


class RulePlan:
    """One applicable rule in a lookup's batch: which of the plan's keys is its own, and where
    its results start. Shared by every employee with the same layout (see :class:`Layout`)."""

    __slots__ = ("check", "group", "index", "start")

    def __init__(self, check: Check, index: int, start: int, group: BlockCheck | None) -> None:
        self.check = check
        self.index = index
        """Its key's place in :attr:`Plan.keys`."""
        self.start = start
        self.group = group
        """The check again when it is a group block rule, which asks who scanned the block."""


@dataclass(frozen=True, slots=True)
class Layout:
    """Which rules guard a lookup and where each finds its results: the same for every
    employee with the same reason, roles and (un)known region, so built once for all of them.

    Only the keys differ between such employees (:class:`Plan`). A plan used to hold a rule
    plan per rule with its key, some forty objects an employee that every young garbage
    collection walked while a busy proxy met its employees; now it is three."""

    rules: tuple[RulePlan, ...]
    locking_groups: tuple[RulePlan, ...]
    """The enforced group rules that lock: the only rules judged while the employee is locked."""
    shared: tuple[RulePlan, ...]
    """The store- and region-scoped rules, placed in a batch of their own."""
    shared_locking_groups: tuple[RulePlan, ...]
    """``locking_groups`` placed in that batch."""
    misses: tuple[tuple[MissesCheck, int, int], ...]
    """The misses rules, each with its key's index and where its count of misses is."""
    unwatched_walk_ins: tuple[MissesCheck, ...]
    """The misses rules with walk-in reasons that no other misses rule here counts the misses
    of: learning asks them about every found number (``learning.Learning._may_correct``); the
    others only when a rule that counts those misses had some."""
    rates: tuple[tuple[RateCheck, int], ...]
    """The enforced rate rules, which report RateLimit headers, and where their results are."""
    rate_policy: str
    """The RateLimit-Policy header: the same for every lookup under this layout."""
    peers: tuple[tuple[PeerTally, tuple[PeerCheck, ...]], ...]
    """The peer tallies the employee counts into, with the peer rules that apply to them."""
    marks: tuple[PeerCheck, ...]
    """The peer rules that apply, whose marks (see :meth:`Plans.marks_key`) the decision
    reports as flags."""
    marks_at: int
    """Where the marks are in the decision's results (after every rule's primitives)."""
    peer_lookups: tuple[bool, ...]
    """For each of ``peers``, whether a ``lookups`` rule applies there: learning counts the
    employee's lookups into those tallies (``learning.LOOKUPS_EVERY``)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """How one employee's lookups for one reason are guarded: the layout, and every key quoted
    and formatted. Built once and cached, because none of it depends on the lookup itself and
    building it was most of what deciding a lookup cost."""

    employee: Employee
    layout: Layout
    keys: tuple[str, ...]
    """Each rule's key, at its rule plan's ``index``."""
    lock_key: str
    marks_key: str
    peer_tags: tuple[str, ...]
    """The peer group's tag of each of the layout's ``peers``."""
    misses_key: str
    """The employee's own recent misses (:meth:`Plans.misses_key`)."""


PLAN_CACHE_SIZE = 8192
"""Plans kept (employee × reason); the cache starts over when full, which bounds its memory
(a few kB per plan) whatever the number of employees."""


class Plans:
    """The cached plans of a guard's policy: employee × reason → :class:`Plan`."""

    def __init__(
        self,
        prefix: str,
        checks: list[Check],
        peer_tallies: list[PeerTally],
        lock_key: Callable[[str], str],
    ) -> None:
        self._prefix = prefix
        self._checks = checks
        self._peer_tallies = peer_tallies
        self._lock_key = lock_key
        self._plans: dict[str, dict[str, Plan]] = {}
        """Employee id → reason → plan."""
        self._layouts: dict[tuple[str, frozenset[str], bool], Layout] = {}
        """(Reason, roles, region unknown) → layout: a handful, whatever the employees."""
        self._plan_count = 0

    def tag(self, scope: str, employee: Employee) -> str | None:
        if scope == "employee":
            return "e:" + quote(employee.id, safe="")
        if scope == "store":
            return "s:" + quote(employee.store, safe="")
        if scope == "chain":
            return "c"
        return None if employee.region is None else "r:" + quote(employee.region, safe="")

    def rule_key(self, check: Check, employee: Employee) -> str | None:
        tag = self.tag(check.rule.scope, employee)
        return None if tag is None else f"{self._prefix}:{{{tag}}}:{check.log_name}"

    def plan(self, employee: Employee, reason: str) -> Plan:
        """The cached plan for this employee and reason (see :class:`Plan`).

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

    def _build_plan(self, employee: Employee, reason: str) -> Plan:
        layout_key = (reason, employee.roles, employee.region is None)
        layout = self._layouts.get(layout_key)
        if layout is None:
            layout = self._layouts[layout_key] = self._build_layout(employee, reason)
        keys: list[str] = []
        for rule_plan in layout.rules:
            key = self.rule_key(rule_plan.check, employee)
            assert key is not None, "a layout holds only rules with a key for its employees"
            keys.append(key)
        tags: list[str] = []
        for tally, _ in layout.peers:
            tag = self.tag(tally.peers, employee)
            assert tag is not None, "a layout holds only tallies with a tag for its employees"
            tags.append(tag)
        return Plan(
            employee,
            layout,
            tuple(keys),
            self._lock_key(employee.id),
            self.marks_key(employee.id),
            tuple(tags),
            self.misses_key(employee.id),
        )

    def _build_layout(self, employee: Employee, reason: str) -> Layout:
        """The layout of every employee with this employee's roles and (un)known region."""
        rules: list[RulePlan] = []
        rates: list[tuple[RateCheck, int]] = []
        start = 1  # after the employee's lock
        for check in self._checks:
            if not _applies(check.rule, reason, employee.roles):
                continue
            if self.tag(check.rule.scope, employee) is None:
                continue  # a region rule for an employee with no known region
            if isinstance(check, RateCheck) and check.rule.mode == "enforce":
                rates.append((check, start))
            group = check if isinstance(check, BlockCheck) and check.group else None
            rules.append(RulePlan(check, len(rules), start, group))
            start += check.width
        rules = _led(rules)
        rate_policy = ", ".join(
            f'"{rate.rule.name}";q={rate.rule.limit};w={int(rate.rule.window)}' for rate, _ in rates
        )
        locking_groups = tuple(p for p in rules if p.group is not None and locks(p.check))
        shared: list[RulePlan] = []
        start = 0
        for p in rules:
            if p.check.rule.scope != "employee":
                shared.append(RulePlan(p.check, p.index, start, p.group))
                start += p.check.width
        shared = _led(shared)
        shared_locking = tuple(p for p in shared if p.group is not None and locks(p.check))
        peers: list[tuple[PeerTally, tuple[PeerCheck, ...]]] = []
        marks: list[PeerCheck] = []
        for tally in self._peer_tallies:
            if self.tag(tally.peers, employee) is None:
                continue
            applying = tuple(c for c in tally.checks if _applies(c.rule, reason, employee.roles))
            if not applying:
                continue
            peers.append((tally, applying))
            marks.extend(applying)
        marks = list({check.rule.name: check for check in marks}.values())  # a mark a rule
        misses = [p.check for p in rules if isinstance(p.check, MissesCheck)]
        return Layout(
            tuple(rules),
            locking_groups,
            tuple(shared),
            shared_locking,
            tuple((p.check, p.index, p.start) for p in rules if isinstance(p.check, MissesCheck)),
            tuple(
                check
                for check in misses
                if check.walk_in_reasons
                and not any(
                    _counts_misses_of(other, check.walk_in_reasons, employee.roles)
                    for other in misses
                )
            ),
            tuple(rates),
            rate_policy,
            tuple(peers),
            tuple(marks),
            1 + sum(p.check.width for p in rules),
            tuple(any(check.volume for check in applying) for _, applying in peers),
        )

    def misses_key(self, employee_id: str) -> str:
        """Every miss the employee made in the longest ``typo_window``, whichever rules count
        it and whether or not one forgave it: a found number reads this one window, and only
        when it corrects one of these does it read each rule's own misses
        (``learning.Learning._forgive``).

        No rule's key can be it: rule names hold no colon, and what a rule's keys add after
        one is ``miss``, ``found``, ``forgiven``, ``forgivers``, ``numbers``, ``returning``,
        ``walkin``, ``ticks`` or a block's digits."""
        return employee_key(self._prefix, employee_id, "misses:recent")

    def marks_key(self, employee_id: str) -> str:
        """The peer rules that fired for the employee lately: one window, one primitive per
        decision however many peer rules there are; a mark lasts the longest peer bucket."""
        return employee_key(self._prefix, employee_id, "peer-flags")


def _led(plans: list[RulePlan]) -> list[RulePlan]:
    """The plans, each check that judges its leader's primitive pointed at where that is.

    A leader learns from the same lookups as its follower (``shared_logs.learnt_alike``), so it
    applies wherever the follower does and sits in the same batch."""
    starts = {id(p.check): p.start for p in plans}
    led: list[RulePlan] = []
    for p in plans:
        leader = p.check.leader
        if leader is not None:
            p = RulePlan(p.check, p.index, starts[id(leader)], p.group)
        led.append(p)
    return led


def _counts_misses_of(check: MissesCheck, reasons: frozenset[str], roles: frozenset[str]) -> bool:
    """Whether the check counts every miss of the employee's under these reasons as a miss."""
    return all(
        _applies(check.rule, reason, roles) and reason not in check.walk_in_reasons
        for reason in reasons
    )


def _applies(rule: Any, reason: str, roles: frozenset[str]) -> bool:
    if rule.reasons is not None and reason not in rule.reasons:
        return False
    if reason in rule.exempt_reasons:
        return False
    return not (rule.exempt_roles and roles.intersection(rule.exempt_roles))


def locks(check: Check) -> bool:
    """Whether the check's rule locks employees out when it fires (an enforced ``lock``)."""
    return check.rule.mode == "enforce" and check.rule.action == "lock"
