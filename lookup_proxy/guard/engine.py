"""The guard engine: every rule's primitives in one batch, one decision, then learning.

The walk inside the guard is: build one batch (the employee's lock plus each applicable rule's
primitives), run it (one round trip per hash-tag group), judge each rule on its slice, then
write what the decision implies (locks). Outcomes are learnt after the backend answered, off
the terminal's wait. The clock is injected; nothing here knows whether it runs live or in replay.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from lookup_proxy.clock import Clock
from lookup_proxy.durations import format_duration
from lookup_proxy.employee import Employee
from lookup_proxy.errors import Refusal, guard_denied, guard_unavailable, locked_out, rate_limited
from lookup_proxy.guard.primitives import DELETE, GET, SET, GuardStore, Op, StoreUnavailable
from lookup_proxy.guard.rules import (
    BlockCheck,
    Check,
    MissesCheck,
    Quota,
    RateCheck,
    Subject,
    is_typo_of,
    make_check,
)
from lookup_proxy.policy import Policy, RateRule

if TYPE_CHECKING:
    from lookup_proxy.metrics import GuardMetrics

LOCKED = "locked"


@dataclass(frozen=True, slots=True)
class Lookup:
    """One lookup as the guard sees it: who, why, which number (canonical), and its id."""

    request_id: str
    employee: Employee
    reason: str
    number: str


@dataclass(frozen=True, slots=True)
class Hit:
    """A rule that fired for this lookup."""

    rule: str
    kind: str
    action: str
    mode: str
    count: int
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """What the guard decided, with everything the record step and replay need."""

    allowed: bool
    rule: str | None = None
    """The rule that refused, ``locked`` when the employee was already locked out."""
    refusal: Refusal | None = None
    flags: tuple[str, ...] = ()
    """Flag rules and shadow-mode rules that fired (allowed or not)."""
    hits: tuple[Hit, ...] = ()
    locked: tuple[tuple[str, str], ...] = ()
    """(employee, rule) for each lockout this decision made: the requester and, for group
    rules, the other employees who scanned the block."""
    headers: dict[str, str] = field(default_factory=dict)
    """RateLimit headers for the response, allowed or refused."""


@dataclass(frozen=True, slots=True)
class LockInfo:
    """A lockout as stored: which rule, when, until when (None: until unlocked)."""

    employee: str
    rule: str
    at: float
    until: float | None


@dataclass(slots=True)
class _Plan:
    check: Check
    key: str
    start: int


class Guard:
    """Decides lookups under a policy, against a store, on a clock."""

    def __init__(
        self,
        policy: Policy,
        store: GuardStore,
        clock: Clock,
        metrics: GuardMetrics | None = None,
    ) -> None:
        self.policy = policy
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self._prefix = policy.store.key_prefix
        self._lock_ttl = policy.lockout.duration or 0.0
        self._contact = policy.lockout.contact
        self.checks: list[Check] = [make_check(rule) for rule in _all_rules(policy)]
        self._misses = [c for c in self.checks if isinstance(c, MissesCheck)]
        self._applicable: dict[tuple[str, frozenset[str]], list[Check]] = {}

    # -- keys --------------------------------------------------------------------------------

    def _tag(self, scope: str, employee: Employee) -> str | None:
        if scope == "employee":
            return "e:" + quote(employee.id, safe="")
        if scope == "store":
            return "s:" + quote(employee.store, safe="")
        return None if employee.region is None else "r:" + quote(employee.region, safe="")

    def _rule_key(self, check: Check, employee: Employee) -> str | None:
        tag = self._tag(check.rule.scope, employee)
        return None if tag is None else f"{self._prefix}:{{{tag}}}:{check.rule.name}"

    def lock_key(self, employee_id: str) -> str:
        return f"{self._prefix}:{{e:{quote(employee_id, safe='')}}}:lock"

    def _checks_for(self, reason: str, roles: frozenset[str]) -> list[Check]:
        cache_key = (reason, roles)
        checks = self._applicable.get(cache_key)
        if checks is None:
            checks = [c for c in self.checks if _applies(c, reason, roles)]
            if len(self._applicable) < 4096:
                self._applicable[cache_key] = checks
        return checks

    # -- decide ------------------------------------------------------------------------------

    async def decide(self, lookup: Lookup) -> Decision:
        """One decision for ``lookup``; raises a 503 Refusal when the store cannot answer."""
        now = self.clock.now()
        employee = lookup.employee
        subject = Subject(lookup.request_id, employee.id, lookup.number, int(lookup.number), now)
        ops: list[Op] = [(GET, self.lock_key(employee.id), now)]
        plans: list[_Plan] = []
        for check in self._checks_for(lookup.reason, employee.roles):
            key = self._rule_key(check, employee)
            if key is None:
                continue
            plans.append(_Plan(check, key, len(ops)))
            ops.extend(check.ops(key, subject))
        results = await self._run(ops)

        hits: list[Hit] = []
        flags: list[str] = []
        blocking: list[Hit] = []
        group_culprits: dict[str, tuple[str, ...]] = {}
        quotas: list[tuple[RateRule, Quota]] = []
        for plan in plans:
            check = plan.check
            rule = check.rule
            part = results[plan.start : plan.start + check.width]
            if isinstance(check, RateCheck) and rule.mode == "enforce":
                quotas.append((rule, check.quota(part, subject)))  # type: ignore[arg-type]
            finding = check.judge(part, subject)
            if finding is None:
                continue
            if isinstance(check, BlockCheck) and check.group:
                who = await self._run([check.who_op(plan.key, subject)])
                culprits = check.culprits(who[0])
                if rule.mode == "enforce" and rule.action == "lock":
                    group_culprits[rule.name] = culprits
                if employee.id not in culprits:
                    continue  # the unlucky clerk who looked up one number in a scanned block
            hit = Hit(
                rule.name, rule.kind, rule.action, rule.mode, finding.count, finding.retry_after
            )
            hits.append(hit)
            if rule.mode == "shadow" or rule.action == "flag":
                flags.append(rule.name)
            else:
                blocking.append(hit)

        headers = _rate_headers(quotas)
        lock_value = results[0]
        decision: Decision
        if lock_value is not None:
            info = self._parse_lock(employee.id, lock_value)
            decision = Decision(
                False, LOCKED, self._locked_refusal(info), tuple(flags), tuple(hits), (), headers
            )
        elif blocking:
            decision = await self._refuse(employee, blocking, flags, hits, headers, now)
        else:
            decision = Decision(True, None, None, tuple(flags), tuple(hits), (), headers)
        for rule_name, culprits in group_culprits.items():
            already = {locked for locked, _ in decision.locked}
            others = [c for c in culprits if c != employee.id and c not in already]
            if others:
                await self._lock(others, rule_name, now)
                decision = _with_locked(decision, [(other, rule_name) for other in others])
        if self.metrics is not None:
            self.metrics.observe_decision(decision)
        return decision

    async def _refuse(
        self,
        employee: Employee,
        blocking: list[Hit],
        flags: list[str],
        hits: list[Hit],
        headers: dict[str, str],
        now: float,
    ) -> Decision:
        locking = [hit for hit in blocking if hit.action == "lock"]
        if locking:
            first = locking[0]
            info = await self._lock([employee.id], first.rule, now)
            refusal = self._locked_refusal(info)
            return Decision(
                False,
                first.rule,
                refusal,
                tuple(flags),
                tuple(hits),
                ((employee.id, first.rule),),
                headers,
            )
        rate_hits = [hit for hit in blocking if hit.kind == "rate"]
        other_hits = [hit for hit in blocking if hit.kind != "rate"]
        if other_hits:
            first = other_hits[0]
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
                headers,
            )
        slowest = max(rate_hits, key=lambda hit: hit.retry_after or 0.0)
        wait = max(1, math.ceil(slowest.retry_after or 1.0))
        retry_headers = dict(headers)
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

    def _locked_refusal(self, info: LockInfo) -> Refusal:
        if info.until is None:
            when = "until it is reviewed"
        else:
            when = "until " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(info.until))
        detail = (
            f"Your customer lookups are locked {when} because of an unusual pattern of "
            f"lookups. Contact {self._contact} to have it reviewed and unlocked."
        )
        return locked_out(detail, info.until, info.rule)

    # -- locks -------------------------------------------------------------------------------

    async def _lock(self, employees: Sequence[str], rule: str, now: float) -> LockInfo:
        until = now + self._lock_ttl if self._lock_ttl else None
        value = json.dumps({"rule": rule, "at": now, "until": until})
        await self._run([(SET, self.lock_key(e), value, self._lock_ttl, now) for e in employees])
        if self.metrics is not None:
            self.metrics.lockouts.labels(rule=rule).inc(len(employees))
        return LockInfo(employees[0], rule, now, until)

    def _parse_lock(self, employee_id: str, value: str) -> LockInfo:
        try:
            data = json.loads(value)
            return LockInfo(employee_id, str(data["rule"]), float(data["at"]), data.get("until"))
        except (ValueError, KeyError, TypeError):
            return LockInfo(employee_id, "unknown", 0.0, None)

    async def lock_status(self, employee_id: str) -> LockInfo | None:
        """The employee's lockout, if any (admin and CLI)."""
        now = self.clock.now()
        value = (await self._run([(GET, self.lock_key(employee_id), now)]))[0]
        return None if value is None else self._parse_lock(employee_id, value)

    async def lock(self, employee_id: str, rule: str = "manual") -> LockInfo:
        """Lock an employee out by hand (security staff), as the rules would."""
        return await self._lock([employee_id], rule, self.clock.now())

    async def unlock(self, employee_id: str) -> bool:
        """Lift a lockout on every instance at once; True when there was one.

        Unlocking is a reviewed decision, so the employee's own counters are cleared too:
        otherwise the history that caused the lock would lock them again on the next lookup.
        Store- and region-wide counters stay, they belong to the group.
        """
        # quote() leaves no glob characters (*?[]) in the tag, so the pattern is literal.
        pattern = f"{self._prefix}:{{e:{quote(employee_id, safe='')}}}:*"
        keys = [key for key in await self.store.keys(pattern) if key != self.lock_key(employee_id)]
        results = await self._run(
            [(DELETE, self.lock_key(employee_id))] + [(DELETE, key) for key in keys]
        )
        return bool(results[0])

    async def locked_employees(self) -> list[LockInfo]:
        """Every current lockout (admin listing; scans keys, never on the lookup path)."""
        now = self.clock.now()
        found: list[LockInfo] = []
        for key in await self.store.keys(f"{self._prefix}:{{e:*}}:lock"):
            employee = key[key.index("{e:") + 3 : key.index("}")]
            value = (await self._run([(GET, key, now)]))[0]
            if value is not None:
                from urllib.parse import unquote

                found.append(self._parse_lock(unquote(employee), value))
        return found

    # -- learn -------------------------------------------------------------------------------

    async def learn(self, lookup: Lookup, found: bool) -> None:
        """Record the backend's answer for an allowed lookup (misses rules, typo forgiveness)."""
        if not self._misses:
            return
        now = self.clock.now()
        employee = lookup.employee
        subject = Subject(lookup.request_id, employee.id, lookup.number, 0, now)
        ops: list[Op] = []
        keyed: list[tuple[MissesCheck, str]] = []
        for check in self._checks_for(lookup.reason, employee.roles):
            if not isinstance(check, MissesCheck):
                continue
            key = self._rule_key(check, employee)
            if key is None:
                continue
            keyed.append((check, key))
            ops.append(check.outcome_op(key, subject, found))
            if found:
                ops.append(check.recent_misses_op(key, subject))
        if not ops:
            return
        results = await self._run(ops)
        if not found:
            return
        forgive: list[Op] = []
        for index, (_check, key) in enumerate(keyed):
            for miss in results[2 * index + 1]:
                if is_typo_of(miss, lookup.number):
                    forgive.append(("remove", key + ":miss", miss))
        if forgive:
            await self._run(forgive)

    # -- store -------------------------------------------------------------------------------

    async def _run(self, ops: list[Op]) -> list[Any]:
        metrics = self.metrics
        started = time.perf_counter() if metrics is not None else 0.0
        try:
            results = await self.store.execute(ops)
        except StoreUnavailable as exc:
            if metrics is not None:
                metrics.store_errors.labels(store=self.store.kind).inc()
            raise guard_unavailable(
                "Customer lookups are paused for a moment because the safety check is "
                "unavailable. Try again in a few seconds; if it persists, call the help desk."
            ) from exc
        if metrics is not None:
            metrics.store_latency.labels(store=self.store.kind).observe(
                time.perf_counter() - started
            )
        return results


def _applies(check: Check, reason: str, roles: frozenset[str]) -> bool:
    rule = check.rule
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


def _rate_headers(quotas: list[tuple[RateRule, Quota]]) -> dict[str, str]:
    """IETF RateLimit / RateLimit-Policy headers (draft-ietf-httpapi-ratelimit-headers)."""
    if not quotas:
        return {}
    policies = ", ".join(f'"{rule.name}";q={rule.limit};w={int(rule.window)}' for rule, _ in quotas)
    rule, quota = min(quotas, key=lambda item: (item[1].remaining, -item[1].reset))
    state = f'"{rule.name}";r={quota.remaining};t={math.ceil(quota.reset)}'
    return {"RateLimit-Policy": policies, "RateLimit": state}


def _with_locked(decision: Decision, others: Sequence[tuple[str, str]]) -> Decision:
    return Decision(
        decision.allowed,
        decision.rule,
        decision.refusal,
        decision.flags,
        decision.hits,
        (*decision.locked, *others),
        decision.headers,
    )
