"""One class per rule kind: which primitives it needs for a lookup, and how it judges them.

A check never talks to a store. It describes its primitives to the lookup's batch and reads its
own slice of the results, so the same code decides in the live proxy (Redis), in the embedded store
and in replay. Counting semantics shared by every kind: the lookup being decided is counted
(denied lookups are attempts too), and a rule fires when the count *exceeds* its ``limit``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lookup_proxy.guard.primitives import Batch
from lookup_proxy.policy import (
    BlockRule,
    DistinctRule,
    Hours,
    HoursRule,
    MissesRule,
    RateRule,
    SequentialRule,
)

DAY = 86_400

NUMBERS_CAP = 4096
"""Numbers remembered per employee for a relative forgiveness budget (a busy week's worth)."""

OUTCOME_KEYS_CACHED = 65_536
"""Rule keys whose outcome keys a misses check remembers; the cache starts over when full."""
VALUES_CACHED = 65_536
"""Numbers whose integer value a sequential check remembers; likewise."""


class Subject:
    """What a check needs to know about the lookup being decided.

    A plain class with slots, not a named tuple or a frozen dataclass: one is built for every
    lookup, mypyc compiles a plain class (a named tuple's constructor stays interpreted), and a
    frozen dataclass costs about three times as much to build in pure Python.
    """

    __slots__ = ("employee", "now", "number", "request_id", "store", "value")

    def __init__(
        self, request_id: str, employee: str, store: str, number: str, value: int, now: float
    ):
        self.request_id = request_id
        self.employee = employee
        self.store = store
        self.number = number
        self.value = value
        self.now = now


class Finding:
    """A rule that fired: how far over, and when trying again could succeed.

    A plain class for the reason given at :class:`Subject` (a frozen dataclass's constructor
    stays interpreted under mypyc).
    """

    __slots__ = ("count", "early", "retry_after")

    def __init__(self, count: int, retry_after: float | None = None, early: bool = False) -> None:
        self.count = count
        self.retry_after = retry_after
        self.early = early
        """Over the rule's ``flag_limit`` but not its ``limit``: a flag, whatever the action."""


class Quota:
    """A rate rule's state for the RateLimit headers of an allowed or refused response.

    A plain class for the reason given at :class:`Subject`: one is built per rate rule per lookup.
    """

    __slots__ = ("remaining", "reset")

    def __init__(self, remaining: int, reset: float) -> None:
        self.remaining = remaining
        self.reset = reset


class Check:
    """Base of the five kinds; ``width`` is how many primitives ``add_ops`` contributes."""

    width = 1
    leader: Check | None = None
    """The check whose primitive this one judges instead of its own (``width`` 0): a
    sequential rule judging a distinct rule's numbers, a finer block rule counting its block in
    a coarser one's members (``shared_logs.py``)."""

    def __init__(
        self, rule: RateRule | DistinctRule | SequentialRule | BlockRule | MissesRule | HoursRule
    ):
        self.rule = rule
        self.window = rule.window
        self.limit = rule.limit
        self.log_name = rule.name
        """The name its key is made of: its own, unless it reads another rule's log
        (``shared_logs.py``)."""

    def add_ops(self, batch: Batch, key: str, subject: Subject) -> None:
        """Describe this check's ``width`` primitives to the lookup's batch."""
        raise NotImplementedError

    def judge(self, results: list[Any], start: int, subject: Subject) -> Finding | None:
        """Judge this check's results, ``results[start:start + width]``."""
        raise NotImplementedError

    def _retry(self, score: float | None, now: float) -> float | None:
        return None if score is None else max(score + self.window - now, 0.0)


class RateCheck(Check):
    """Attempts in the window: an exact log capped at limit+1 entries per scope, or, with a
    ``resolution``, counters in buckets of that width (``tick``: fewer store commands, a window
    up to one bucket longer, Retry-After to the end of a bucket).

    Both answer alike: the count with this attempt, when the ``limit``-th newest attempt leaves
    the window (Retry-After), and when the oldest does (RateLimit-Reset). A bucket stands for
    its attempts as if all were made at its end, so the times are never too early.
    """

    def __init__(self, rule: RateRule) -> None:
        super().__init__(rule)
        self.resolution = rule.resolution or 0.0
        if self.resolution:
            # A hash of buckets under its own key: the exact log's key holds a sorted set, and
            # Redis refuses a hash command on it (WRONGTYPE), which would refuse every lookup
            # after a policy gains a resolution until the old log expired.
            self.log_name = f"{rule.name}:ticks"

    def add_ops(self, batch: Batch, key: str, subject: Subject) -> None:
        if self.resolution:
            batch.tick(key, subject.now, self.resolution, self.window)
        else:
            batch.add(key, subject.now, subject.request_id, self.window, self.limit + 1, self.limit)

    def _read(self, result: Any) -> tuple[int, float | None, float | None]:
        """(count, the ``limit``-th newest attempt's time, the oldest's) from either form; the
        buckets are sorted only when the ``limit``-th newest is asked for (at the limit)."""
        if not self.resolution:
            count, nth_score, oldest = result
            return count, nth_score, oldest
        width = self.resolution
        buckets: list[int] = result[::2]
        counts: list[int] = result[1::2]
        count = sum(counts)
        if not buckets:
            return 0, None, None
        nth: float | None = None
        if 0 < self.limit <= count:
            seen = 0
            for bucket, ticks in sorted(zip(buckets, counts, strict=True), reverse=True):
                seen += ticks
                if seen >= self.limit:
                    nth = (bucket + 1) * width
                    break
        return count, nth, (min(buckets) + 1) * width

    def judge(self, results: list[Any], start: int, subject: Subject) -> Finding | None:
        count, nth_score, _ = self._read(results[start])
        if count > self.limit:
            return Finding(count, self._retry(nth_score, subject.now))
        return None

    def quota(self, results: list[Any], start: int, now: float) -> Quota:
        count, nth_score, oldest = self._read(results[start])
        remaining = max(self.limit - count, 0)
        anchor = nth_score if remaining == 0 else oldest
        reset = max(anchor + self.window - now, 0.0) if anchor is not None else 0.0
        return Quota(remaining, reset)


class DistinctCheck(Check):
    """Distinct numbers in the window: looking the same customer up again is free."""

    def __init__(self, rule: DistinctRule) -> None:
        super().__init__(rule)
        self.cap = rule.limit + 1
        """Numbers kept: one over the limit, or more for a sequential rule reading this log."""
        self.listed = False
        """A sequential rule judges this one's numbers: the add answers them too."""

    def add_ops(self, batch: Batch, key: str, subject: Subject) -> None:
        if self.listed:
            batch.add_members(key, subject.now, subject.number, self.window, self.cap, self.limit)
        else:
            batch.add(key, subject.now, subject.number, self.window, self.cap, self.limit)

    def judge(self, results: list[Any], start: int, subject: Subject) -> Finding | None:
        count, nth_score, _ = results[start]
        if count > self.limit:
            return Finding(count, self._retry(nth_score, subject.now))
        return None


class SequentialCheck(Check):
    """Numbers within ``distance`` of another number looked up in the window.

    Fires only when the number being looked up is itself part of such a cluster, so a clerk
    whose earlier typos sat close together is not refused an unrelated customer. When a
    distinct rule keeps the same numbers (``shared_logs.py``), it asks the store for nothing and
    judges the numbers that rule's add answers.
    """

    def __init__(self, rule: SequentialRule) -> None:
        super().__init__(rule)
        self.distance = rule.distance
        self.cap = max(4 * (rule.limit + 1), 64)
        self._values: dict[str, int] = {}

    def follow(self, distinct: DistinctCheck) -> None:
        """Judge ``distinct``'s numbers (its log keeps at least as many as this would): its
        add answers them, and this check asks for nothing (``leader``)."""
        self.log_name = distinct.log_name
        self.leader = distinct
        self.width = 0
        distinct.cap = max(distinct.cap, self.cap)
        distinct.listed = True

    def add_ops(self, batch: Batch, key: str, subject: Subject) -> None:
        if self.leader is None:
            batch.add_members(key, subject.now, subject.number, self.window, self.cap, 0)

    def judge(self, results: list[Any], start: int, subject: Subject) -> Finding | None:
        """``results[start]`` is an ``add_members`` answer: this check's, or its leader's."""
        numbers: list[str] = results[start][2]
        if len(numbers) <= self.limit:
            return None
        distance = self.distance
        current = subject.value
        # An hour's numbers come back on every lookup, as the same string objects: their values
        # are remembered (a bounded cache) rather than parsed again each time.
        value_of = self._values
        if len(value_of) >= VALUES_CACHED:
            value_of.clear()
        values: list[int] = []
        close = False
        for number in numbers:
            value = value_of.get(number)
            if value is None:
                value = value_of[number] = int(number)
            values.append(value)
            if value != current and -distance <= value - current <= distance:
                close = True
        # Is the current number close to another? Answered before sorting anything: this runs
        # for nearly every lookup, and for an honest clerk the answer is nearly always no.
        if not close:
            return None
        values.sort()
        clustered = 0
        for index, value in enumerate(values):
            if (index > 0 and value - values[index - 1] <= distance) or (
                index + 1 < len(values) and values[index + 1] - value <= distance
            ):
                clustered += 1
        if clustered > self.limit:
            return Finding(clustered)
        return None


class BlockCheck(Check):
    """Distinct numbers sharing a leading-digit block, in any order.

    With a store, region or chain scope this is the colluding-group rule: the block's window
    holds ``number|employee`` pairs, so the count is of distinct numbers per employee who looked
    them up (a number two members both looked up counts twice: sharing numbers gains a group
    nothing), and the same window says who looked up what, so that only employees with at least
    ``member_min`` numbers of the block are held responsible. One window per block and lookup:
    it used to be three (the block's numbers, the employees seen in it and, per employee, their
    numbers), a third of the store's work for every lookup of the shipped policy. Reading the
    pairs back is paid only when the rule fires.
    """

    def __init__(self, rule: BlockRule) -> None:
        super().__init__(rule)
        self.digits = rule.block_digits
        self.key_digits = rule.block_digits
        """The digits its windows are keyed by: its own, or its leader's (a coarser block)."""
        self.member_min = rule.member_min
        self.group = rule.scope != "employee"
        self.cap = 8 * (rule.limit + 1) if self.group else rule.limit + 1
        """Members kept: for a group, pairs enough to name the members of a scan while it
        fires (the count needs only one over the limit)."""
        self.listed = False
        """A finer block rule counts in this one's windows: the add answers their members."""

    def nest(self, coarser: BlockCheck) -> None:
        """Count in ``coarser``'s windows (a block of fewer digits, holding this one's) the
        members of this rule's block, rather than keep windows of its own (``shared_logs.py``)."""
        self.leader = coarser
        self.width = 0
        self.log_name = coarser.log_name
        self.key_digits = coarser.digits
        coarser.listed = True
        coarser.cap = max(coarser.cap, self.cap)

    def block_key(self, key: str, subject: Subject) -> str:
        return f"{key}:{subject.number[: self.key_digits]}"

    def add_ops(self, batch: Batch, key: str, subject: Subject) -> None:
        if self.leader is not None:
            return
        member = f"{subject.number}|{subject.employee}" if self.group else subject.number
        if self.listed:
            block = self.block_key(key, subject)
            batch.add_members(block, subject.now, member, self.window, self.cap, 0)
        else:
            batch.add(self.block_key(key, subject), subject.now, member, self.window, self.cap, 0)

    def judge(self, results: list[Any], start: int, subject: Subject) -> Finding | None:
        """``results[start]`` is this rule's add, or its leader's ``add_members``: then the
        count is of the members in this rule's block."""
        if self.leader is None:
            count: int = results[start][0]
        else:
            count = len(self._mine(results[start][2], subject))
        if count > self.limit:
            return Finding(count)
        return None

    def _mine(self, members: Sequence[str], subject: Subject) -> list[str]:
        """The members of the subject's block, from a window of it or of a coarser block."""
        if self.leader is None:
            return list(members)
        block = subject.number[: self.digits]
        return [member for member in members if member.startswith(block)]

    def add_who(self, batch: Batch, key: str, subject: Subject) -> None:
        """Ask who looked up which numbers of the subject's block (once the rule fired)."""
        batch.members(self.block_key(key, subject), subject.now - self.window)

    def culprits(self, pairs: Sequence[str], subject: Subject) -> tuple[str, ...]:
        """Employees with at least ``member_min`` numbers among the block's pairs, sorted.
        (A member without an employee, left by a version that kept numbers alone, names no
        one.)"""
        numbers: dict[str, int] = {}
        for pair in self._mine(pairs, subject):
            _, bar, employee = pair.partition("|")
            if bar:
                numbers[employee] = numbers.get(employee, 0) + 1
        member_min = self.member_min
        return tuple(sorted(e for e, count in numbers.items() if count >= member_min))


class HoursCheck(Check):
    """Lookups outside the store's opening hours, counted like a rate while the store is shut.

    With ``limit = 0`` (every lookup while the store is shut fires) nothing needs counting: the
    check asks the store for nothing and judges the clock alone. Otherwise, inside opening hours
    it asks for nothing that can fire (a count of members newer than now, always 0), so a
    plan's slots stay fixed whatever the time of day.
    """

    def __init__(self, rule: HoursRule, hours: Hours) -> None:
        super().__init__(rule)
        self.offset = hours.utc_offset
        self.default = (hours.open, hours.close)
        self.stores = {store: (h.open, h.close) for store, h in hours.stores.items()}
        self.width = 0 if rule.limit == 0 else 1

    def outside(self, subject: Subject) -> bool:
        second = (subject.now + self.offset) % DAY
        opens, closes = self.stores.get(subject.store, self.default)
        return not opens <= second < closes

    def add_ops(self, batch: Batch, key: str, subject: Subject) -> None:
        if self.width == 0:
            return
        if self.outside(subject):
            batch.add(key, subject.now, subject.request_id, self.window, self.limit + 1, 0)
        else:
            batch.count(key, subject.now)

    def judge(self, results: list[Any], start: int, subject: Subject) -> Finding | None:
        if self.width == 0:
            return Finding(1) if self.outside(subject) else None
        result = results[start]
        if isinstance(result, int) or result[0] <= self.limit:
            return None
        return Finding(result[0])


class MissesCheck(Check):
    """Not-found outcomes in the window, as a count and as a share of all outcomes.

    The guard learns outcomes after the backend answers; a miss that is followed within
    ``typo_window`` by a found number one digit (or one adjacent swap) away is forgiven as a typo.
    Repeat lookups of one number are one outcome, so a clerk retrying a walk-in is not a prober.
    Found outcomes matter only to the share: a rule without a ``ratio`` neither keeps nor
    reads them (a week of an honest clerk's found numbers is the largest window there is).
    The share counts only found numbers new to the employee (``known_numbers.py``): customers
    they already know, looked up again, would dilute a prober's misses (padding).

    Forgiveness is a leniency, and an insider who has read the policy farms it: probe a number
    one digit away from a customer they know, then look the customer up "again". So it is
    bounded: one found lookup forgives at most one miss; a found number forgives once per
    ``typo_budget`` (a retype is of a customer met for the first time, not of one the employee
    keeps returning to); and at most ``typo_limit`` misses are forgiven per ``typo_budget`` or,
    with a ``typo_share``, ``typo_floor`` plus that share of the numbers new to the employee
    that they looked up in it, if fewer (customers they knew, looked up again, would let
    padding grow it): a clerk who makes few typos of their own cannot spend a busy clerk's budget
    on probes. With a ``typo_returning_limit``, a retype must also look like one: at most that
    many misses per ``typo_budget`` are forgiven by *returning* customers, met before the visit
    (the first meeting dated by a log of numbers new to the employee: found ones with a
    ``ratio``, else those a ``typo_share`` counts), where a farmer finds the customers whose
    numbers they know; the honest clerk mistypes mostly customers met for the first time at
    the counter.
    Two more windows per rule remember the forgiven misses and the numbers that forgave (a third
    the forgivenesses by returning customers).

    Misses under a ``walk_in_reasons`` reason go to a window of their own, kept for
    ``typo_window`` and never counted: a walk-in who is not a customer yet. A found number that
    corrects one adopts it (:meth:`add_adopt`): forgiven within the same budgets as any typo,
    counted as a miss past them. Exempting the reason instead left its corrected misses to the
    rules of every reason, whose budgets are a day's: a farm of typos under the exempt reason.
    """

    cap = 4096

    def __init__(self, rule: MissesRule) -> None:
        super().__init__(rule)
        self.ratio = rule.ratio
        self.typo_window = rule.typo_window
        self.typo_limit = rule.typo_limit
        self.typo_budget = rule.typo_budget
        self.typo_repeat = rule.typo_repeat
        self.typo_share = rule.typo_share
        self.typo_floor = rule.typo_floor
        self.returning_limit = rule.typo_returning_limit or 0
        self.typo_visit = rule.typo_visit
        self.bounds_returning = rule.typo_returning_limit is not None
        self.walk_in_reasons = frozenset(rule.walk_in_reasons)
        self.keeps_numbers = rule.typo_share > 0 or (self.bounds_returning and rule.ratio == 0)
        """Whether the rule keeps a log of the numbers new to the employee: what a
        ``typo_share`` counts, and what dates a returning customer's first meeting, unless the
        rule has a ``ratio``, whose log of found numbers new to the employee dates it as well
        (a retype is of a found number) at no cost."""
        self._numbers_at = 1 + rule.typo_repeat
        """Where ``add_budget_reads``' answers hold the numbers' count (with a ``typo_share``),
        after the forgiven count and the forgivers' scores; next the returning customer's first
        meeting, then the returning customers' count (with a returning budget)."""
        self._first_met_at = self._numbers_at + (1 if rule.typo_share > 0 else 0)
        self.typo_width = self._first_met_at + (2 if self.bounds_returning else 0)
        """Primitives ``add_budget_reads`` contributes."""
        self.recent_width = 2 if rule.walk_in_reasons else 1
        """Primitives ``add_recent_misses`` contributes."""
        self.flag_limit = rule.flag_limit
        self.counts_found = rule.ratio > 0
        self.found_over = (
            rule.limit if rule.flag_limit is None else min(rule.limit, rule.flag_limit)
        )
        """Misses past which the share is judged (and the found numbers counted)."""
        self.width = 2 if self.counts_found else 1
        # The logs of found numbers and of numbers looked up hold nothing a rule changes (no
        # forgiveness removes from them), so rules counting them alike share one of each, kept
        # by the rule with the longest window (``shared_logs.py``). Alone, a rule keeps its own.
        self.found_name = rule.name
        self.found_window = rule.window
        self.writes_found = self.counts_found
        self.numbers_name = rule.name
        self.numbers_window = rule.typo_budget
        self.writes_numbers = self.keeps_numbers
        self._outcome_keys: dict[str, tuple[str, str, str, str, str, str, str]] = {}

    def share_found(self, keeper: MissesCheck) -> None:
        """Count found numbers in ``keeper``'s log (written by ``keeper`` alone)."""
        self.found_name = keeper.rule.name
        self.found_window = keeper.window
        self.writes_found = self is keeper

    def share_numbers(self, keeper: MissesCheck) -> None:
        """Count numbers looked up in ``keeper``'s log (written by ``keeper`` alone)."""
        self.numbers_name = keeper.rule.name
        self.numbers_window = keeper.typo_budget
        self.writes_numbers = self is keeper

    def outcome_keys(self, key: str) -> tuple[str, str, str, str, str, str, str]:
        """The ``:miss``, ``:found``, ``:forgiven``, ``:forgivers``, ``:numbers``,
        ``:returning`` and ``:walkin`` windows for the rule's key (``:found`` and ``:numbers``
        under the name of the rule keeping the shared log).

        Built once per key and remembered (a bounded cache): every lookup reads them and learns
        into one, and handing the store the same string objects spares hashing them again.
        """
        keys = self._outcome_keys.get(key)
        if keys is None:
            if len(self._outcome_keys) >= OUTCOME_KEYS_CACHED:
                self._outcome_keys.clear()
            scope = key[: len(key) - len(self.log_name)]
            keys = self._outcome_keys[key] = (
                key + ":miss",
                scope + self.found_name + ":found",
                key + ":forgiven",
                key + ":forgivers",
                scope + self.numbers_name + ":numbers",
                key + ":returning",
                key + ":walkin",
            )
        return keys

    def add_ops(self, batch: Batch, key: str, subject: Subject) -> None:
        since = subject.now - self.window
        miss, found = self.outcome_keys(key)[:2]
        batch.count(miss, since)
        if self.counts_found:
            # The share matters only past a limit: the found numbers are counted only then.
            batch.count_if(found, since, self.found_over)

    def judge(self, results: list[Any], start: int, subject: Subject) -> Finding | None:
        misses = results[start]
        flag_limit = self.flag_limit
        if misses <= self.limit and (flag_limit is None or misses <= flag_limit):
            return None
        if self.counts_found and misses < self.ratio * (misses + results[start + 1]):
            return None
        return Finding(misses, None, misses <= self.limit)

    def add_outcome(
        self, batch: Batch, key: str, subject: Subject, found: bool, reason: str
    ) -> None:
        """Learn a miss of the subject's number (found numbers: :meth:`add_new_number`); under
        a walk-in reason, only as a miss a retype may yet correct."""
        if not found:
            misses, *_, walk_ins = self.outcome_keys(key)
            if reason in self.walk_in_reasons:
                batch.note(walk_ins, subject.now, subject.number, self.typo_window, self.cap)
            else:
                batch.note(misses, subject.now, subject.number, self.window, self.cap)

    def counts_new(self, found: bool) -> bool:
        """Whether :meth:`add_new_number` would count this outcome, or a forgiveness by it
        would ask whether it is a returning customer's (so whether learning must ask if the
        number is new to the employee)."""
        return self.writes_numbers or (found and (self.writes_found or self.bounds_returning))

    def add_new_number(self, batch: Batch, key: str, subject: Subject, found: bool) -> None:
        """Count a number new to the employee (``known_numbers.py``) towards a budget of
        forgiveness relative to their numbers and, found, towards a ratio's found numbers: only
        new ones, so customers they already know, looked up again, grow neither the budget nor
        the found share (padding). Each shared log only by the rule keeping it. A walk-in's
        number is one the clerk typed too (what the budget is relative to), as is a cover
        reason's miss."""
        keys = self.outcome_keys(key)
        if self.writes_numbers:
            batch.note(keys[4], subject.now, subject.number, self.numbers_window, NUMBERS_CAP)
        if found and self.writes_found:
            batch.note(keys[1], subject.now, subject.number, self.found_window, self.cap)

    def add_recent_misses(self, batch: Batch, key: str, subject: Subject) -> None:
        """Ask for the misses a found number could be the corrected typo of (with walk-in
        reasons, next the walk-ins' misses it could correct: :attr:`recent_width`)."""
        misses, *_, walk_ins = self.outcome_keys(key)
        since = subject.now - self.typo_window
        batch.members(misses, since)
        if self.walk_in_reasons:
            batch.members(walk_ins, since)

    def typo_candidate(self, recent: list[str], subject: Subject) -> str | None:
        """The newest of the recent misses that the found number is a typo of."""
        number = subject.number
        for miss in reversed(recent):
            if is_typo_of(miss, number):
                return miss
        return None

    def add_budget_reads(self, batch: Batch, key: str, subject: Subject) -> None:
        """Ask what a forgiveness still depends on (``typo_width`` primitives): how many were
        forgiven lately, and how often this number forgave one. Asked only when the found
        number is a typo's correction, a few lookups in a hundred. With a returning limit, also
        when the number was first met (its time in the log of new numbers) and how many
        returning customers forgave lately."""
        _, found, forgiven, forgivers, numbers, returning, _ = self.outcome_keys(key)
        since = subject.now - self.typo_budget
        batch.count(forgiven, since)
        for time in range(1, self.typo_repeat + 1):
            batch.score(forgivers, f"{subject.number}#{time}")
        if self.typo_share > 0:
            batch.count(numbers, since)
        if self.bounds_returning:
            batch.score(found if self.counts_found else numbers, subject.number)
            batch.count(returning, since)

    def returning(self, results: list[Any], start: int, now: float, new: bool) -> bool:
        """Whether the found number is a returning customer's, met before this visit: not new
        to the employee (``known_numbers.py``), and first met longer than ``typo_visit`` ago,
        or not in the log of their new (found) numbers at all (met before its window, or only
        under reasons the rule does not count: the strict side)."""
        if new or not self.bounds_returning:
            return False
        first_met = results[start + self._first_met_at]
        return first_met is None or first_met < now - self.typo_visit

    def forgiveness(self, results: list[Any], start: int, now: float, returning: bool) -> int:
        """How many times the number will have forgiven, with this one (0: no forgiveness,
        because the number forgave ``typo_repeat`` times lately, the budget is spent, or, for
        a ``returning`` customer, the budget of returning customers is).

        A forgiveness older than ``typo_budget`` is free again, whether or not an add has
        trimmed it from the window yet: a ``score`` read does not look at the time."""
        budget = float(self.typo_limit)
        if self.typo_share > 0:
            numbers = results[start + self._numbers_at]
            budget = min(budget, self.typo_floor + self.typo_share * numbers)
        if results[start] >= budget:
            return 0
        if returning and results[start + self._first_met_at + 1] >= self.returning_limit:
            return 0
        since = now - self.typo_budget
        for offset in range(self.typo_repeat):
            forgave = results[start + 1 + offset]
            if forgave is None or forgave <= since:
                return offset + 1
        return 0

    def add_forgive(
        self,
        batch: Batch,
        key: str,
        subject: Subject,
        miss: str,
        times: int,
        returning: bool,
        adopted: bool = False,
    ) -> None:
        """Forgive ``miss`` (three primitives, four by a ``returning`` customer): it leaves the
        misses (a walk-in's miss the number corrects, ``adopted``: the walk-ins' misses), and
        both it and the number that forgave it (its ``times``-th forgiveness) are remembered
        for ``typo_budget``, and so is a returning customer's forgiveness."""
        misses, _, forgiven, forgivers, _, returned, walk_ins = self.outcome_keys(key)
        batch.remove(walk_ins if adopted else misses, miss)
        cap = self.typo_limit + 1
        batch.note(forgiven, subject.now, miss, self.typo_budget, cap)
        member = f"{subject.number}#{times}"
        batch.note(forgivers, subject.now, member, self.typo_budget, cap * self.typo_repeat)
        if returning:
            batch.note(returned, subject.now, miss, self.typo_budget, cap)

    def add_adopt(self, batch: Batch, key: str, subject: Subject, miss: str) -> None:
        """Count a walk-in reason's ``miss`` that a found number corrected but the typo budgets
        would not forgive: no walk-in, and no forgiven typo either, so an unexplained miss."""
        misses, *_, walk_ins = self.outcome_keys(key)
        batch.remove(walk_ins, miss)
        batch.note(misses, subject.now, miss, self.window, self.cap)


def is_typo_of(miss: str, found: str) -> bool:
    """One digit replaced, or two adjacent digits swapped: what a hurried retype fixes."""
    if len(miss) != len(found) or miss == found:
        return False
    differences = [index for index, (a, b) in enumerate(zip(miss, found, strict=True)) if a != b]
    if len(differences) == 1:
        return True
    if len(differences) == 2:
        first, second = differences
        return second == first + 1 and miss[first] == found[second] and miss[second] == found[first]
    return False


def make_check(
    rule: RateRule | DistinctRule | SequentialRule | BlockRule | MissesRule | HoursRule,
    hours: Hours,
) -> Check:
    """The check for a configured rule (peer rules are not checks: see ``peers.py``)."""
    if isinstance(rule, HoursRule):
        return HoursCheck(rule, hours)
    if isinstance(rule, RateRule):
        return RateCheck(rule)
    if isinstance(rule, DistinctRule):
        return DistinctCheck(rule)
    if isinstance(rule, SequentialRule):
        return SequentialCheck(rule)
    if isinstance(rule, BlockRule):
        return BlockCheck(rule)
    return MissesCheck(rule)
