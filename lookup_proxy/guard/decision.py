"""What the guard decided about one lookup, and the values that travel with it.

Kept apart from the engine because everything after the guard reads these values (forward,
record, metrics, replay, the admin API) while only the engine makes them: they are the guard's
answer, not its workings. All are plain slotted classes, built for every lookup (see
:class:`Lookup`); treat them as immutable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from lookup_proxy.employee import Employee
from lookup_proxy.errors import Refusal, locked_out
from lookup_proxy.guard.lockouts import LockInfo
from lookup_proxy.guard.rules import Quota, RateCheck

LOCKED = "locked"
"""The rule a refusal names when the employee was already locked out."""


# Lookup and Decision are plain classes with slots rather than named tuples or frozen
# dataclasses: one of each is built for every lookup, mypyc compiles a plain class (a named
# tuple's constructor stays interpreted), and a frozen dataclass costs about three times as much
# to build in pure Python. Treat them as immutable.


class Lookup:
    """One lookup as the guard sees it: who, why, which number (canonical), and its id."""

    __slots__ = ("audit", "decided", "employee", "number", "reason", "request_id")

    def __init__(
        self,
        request_id: str,
        employee: Employee,
        reason: str,
        number: str,
        audit: str | None = None,
    ) -> None:
        self.request_id = request_id
        self.employee = employee
        self.reason = reason
        self.number = number
        self.audit = audit
        """The lookup's audit record (JSON), for a guard that writes it with its decision."""
        self.decided: tuple[object, float, list[Any]] | None = None
        """What deciding it saw that learning its outcome can use: the plan it was decided
        under, when, and the decision's results, which hold each misses rule's count then
        (see ``Guard.learn``)."""


class Hit:
    """A rule that fired for this lookup (a plain class, as :class:`Lookup`)."""

    __slots__ = ("action", "count", "kind", "mode", "retry_after", "rule")

    def __init__(
        self,
        rule: str,
        kind: str,
        action: str,
        mode: str,
        count: int,
        retry_after: float | None = None,
    ) -> None:
        self.rule = rule
        self.kind = kind
        self.action = action
        self.mode = mode
        self.count = count
        self.retry_after = retry_after

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"Hit({fields})"


class Decision:
    """What the guard decided, with everything the record step and replay need.

    ``allowed``; ``rule``: the rule that refused, ``locked`` when the employee was already
    locked out; ``refusal``: the problem answered when refused; ``flags``: flag rules and
    shadow-mode rules that fired (allowed or not); ``hits``: every rule that fired;
    ``locked``: (employee, rule) for each lockout this decision made, the requester and, for
    group rules, the other employees who scanned the block; ``headers``: RateLimit headers for
    the response, allowed or refused.
    """

    __slots__ = (
        "_headers",
        "_lockout",
        "_rate",
        "_refusal",
        "allowed",
        "flags",
        "hits",
        "locked",
        "rule",
    )

    def __init__(
        self,
        allowed: bool,
        rule: str | None,
        refusal: Refusal | None,
        flags: tuple[str, ...],
        hits: tuple[Hit, ...],
        locked: tuple[tuple[str, str], ...],
        headers: dict[str, str] | None,
        rate: RateState | None = None,
        lockout: tuple[LockInfo, str] | None = None,
    ) -> None:
        self.allowed = allowed
        self.rule = rule
        self._refusal = refusal
        self._lockout = lockout
        """For a lookup refused because the employee is locked out: the lockout and the
        refusal's detail, from which ``refusal`` is made when read (replay never reads it)."""
        self.flags = flags
        self.hits = hits
        self.locked = locked
        self._headers = headers
        self._rate = rate

    @property
    def refusal(self) -> Refusal | None:
        """The problem answered when refused."""
        refusal = self._refusal
        if refusal is None and self._lockout is not None:
            info, detail = self._lockout
            refusal = self._refusal = locked_out(detail, info.until, info.rule)
        return refusal

    @property
    def headers(self) -> dict[str, str]:
        """RateLimit headers for the response, allowed or refused; made on first reading."""
        headers = self._headers
        if headers is None:
            headers = self._headers = {} if self._rate is None else self._rate.headers()
        return headers

    def also_locking(self, locked: Sequence[tuple[str, str]]) -> Decision:
        """The same decision, reporting more lockouts."""
        return Decision(
            self.allowed,
            self.rule,
            self._refusal,
            self.flags,
            self.hits,
            (*self.locked, *locked),
            self._headers,
            self._rate,
            self._lockout,
        )

    def __repr__(self) -> str:
        names = ("allowed", "rule", "refusal", "flags", "hits", "locked", "headers")
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"Decision({fields})"


class RateState:
    """What a decision's RateLimit headers are made from, kept so that they are only made
    when read: the live proxy reads them for every response, replay never."""

    __slots__ = ("now", "policy", "rates", "results")

    def __init__(
        self,
        rates: tuple[tuple[RateCheck, int], ...],
        policy: str,
        results: list[Any],
        now: float,
    ) -> None:
        self.rates = rates
        """The enforced rate rules and where their results are."""
        self.policy = policy
        """The RateLimit-Policy header."""
        self.results = results
        self.now = now

    def headers(self) -> dict[str, str]:
        # RateLimit reports the enforced rate rule with the fewest lookups left (the latest
        # reset among equals; the first of equals in policy order).
        tight: Quota | None = None
        tight_rule = ""
        for rate, start in self.rates:
            quota = rate.quota(self.results, start, self.now)
            if tight is None or _tighter(quota, tight):
                tight, tight_rule = quota, rate.rule.name
        return _rate_headers(self.policy, tight_rule, tight)


def _tighter(quota: Quota, than: Quota) -> bool:
    return (quota.remaining, -quota.reset) < (than.remaining, -than.reset)


def _rate_headers(policies: str, rule: str, quota: Quota | None) -> dict[str, str]:
    """IETF RateLimit / RateLimit-Policy headers (draft-ietf-httpapi-ratelimit-headers)."""
    if quota is None:
        return {}
    state = f'"{rule}";r={quota.remaining};t={math.ceil(quota.reset)}'
    return {"RateLimit-Policy": policies, "RateLimit": state}
