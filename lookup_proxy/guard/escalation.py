"""Escalation: flags that keep coming back become a lock.

A flag-only rule is a leniency an insider who has read the policy can live with: flagged every
day, refused never. So every flag (of an enforced flag rule, or of a peer baseline) is noted
once per rule and local day in the employee's escalation window, ``rule@YYYY-MM-DD``; more
than ``limit`` such flag-days within ``window`` lock the employee out, and the lock names the
flag-days behind it for whoever reviews it. ``min_rules`` asks for flags of several rules: one
noisy rule flagging an honest clerk for a few days running is a case to review, not a lock;
``one_rule_limit`` still locks when one rule flags day after day, past what chance gives
(``one_rule_limits`` sets it per rule or evidence: chance repeats some signals more than others).
Rules that name one ``evidence`` are one witness: their flag-days are all noted (the lock shows
each rule), but judged as one flag-day per day and one rule towards ``min_rules``, so a second
test of the same misses against the same peers cannot turn one noisy signal into two.
Counting days, not lookups, keeps one bad afternoon
from counting as a hundred signals, and noting a flag-day once per instance keeps flagged
employees from paying a second round trip on every lookup.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence

from lookup_proxy.guard.primitives import Batch, employee_key
from lookup_proxy.policy import Escalation as EscalationPolicy

NOTED_CACHED = 65_536
"""Flag-days this instance remembers having noted; the memory starts over when full."""


class Escalation:
    """Notes flag-days and says when they amount to a lock."""

    def __init__(
        self,
        policy: EscalationPolicy,
        prefix: str,
        utc_offset: int,
        witnesses: Mapping[str, str] | None = None,
    ) -> None:
        """``witnesses``: each rule's witness (``Policy.witnesses``); a rule not in it is its
        own."""
        self.enabled = policy.enabled
        self.name = policy.name
        self.window = policy.window
        self.limit = policy.limit
        self.min_rules = policy.min_rules
        self.one_rule_limit = policy.one_rule_limit
        self.one_rule_limits = dict(policy.one_rule_limits)
        self._prefix = prefix
        self._offset = utc_offset
        self._noted: set[tuple[str, str]] = set()
        self._witness: dict[str, str] = dict(witnesses or {})
        days = math.ceil(policy.window / 86_400) + 1
        self._cap = max(1, len(self._witness)) * days + self.limit + 8
        """Flag-days kept: one per rule per local day the window touches, so that judging sees
        every day of a witness however many of its rules flag each day."""

    def key(self, employee_id: str) -> str:
        return employee_key(self._prefix, employee_id, self.name)

    def flag_days(self, employee_id: str, rules: Sequence[str], now: float) -> list[str]:
        """The ``rule@day`` entries of these flags that this instance has not noted yet."""
        if not self.enabled or not rules:
            return []
        day = time.strftime("%Y-%m-%d", time.gmtime(now + self._offset))
        fresh = []
        for rule in rules:
            entry = f"{rule}@{day}"
            if (employee_id, entry) not in self._noted:
                fresh.append(entry)
        return fresh

    def add_note(self, batch: Batch, employee_id: str, entries: Sequence[str], now: float) -> None:
        """Note flag-days, then ask for every flag-day of the window (the last result)."""
        key = self.key(employee_id)
        cap = self._cap + len(entries)
        for entry in entries:
            batch.note(key, now, entry, self.window, cap)
        batch.members(key, now - self.window)

    def noted(self, employee_id: str, entries: Sequence[str]) -> None:
        if len(self._noted) >= NOTED_CACHED:
            self._noted.clear()
        for entry in entries:
            self._noted.add((employee_id, entry))

    def judge(self, flag_days: list[str]) -> tuple[str, ...] | None:
        """The flag-days behind a lock: more than ``limit`` of at least ``min_rules``
        different rules, or more than ``one_rule_limit`` of one rule (rules of one evidence
        judged as one)."""
        if len(flag_days) <= self.limit:
            return None
        witness = self._witness
        witnessed: dict[str, set[str]] = {}
        for entry in flag_days:
            rule, _, day = entry.rpartition("@")
            witnessed.setdefault(witness.get(rule, rule), set()).add(day)
        if sum(len(days) for days in witnessed.values()) <= self.limit:
            return None
        if len(witnessed) >= self.min_rules:
            return tuple(flag_days)
        limits, default = self.one_rule_limits, self.one_rule_limit
        for name, days in witnessed.items():
            alone = limits.get(name, default)
            if alone is not None and len(days) > alone:
                return tuple(flag_days)
        return None
