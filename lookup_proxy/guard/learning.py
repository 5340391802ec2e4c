"""Learning an allowed lookup's outcome, after the terminal has its answer.

The walk's *learn* step: the backend's answer becomes misses (or found numbers) in the misses
rules' logs, a found number that corrects one of the employee's recent misses forgives it
within each rule's bounds (``rules.MissesCheck``), and a number new to the employee
(``known_numbers.py``) grows the typo budgets and the ratios' found numbers and moves the peer
tallies, which judge the peer rules when their metric moved. What learning locks (a peer rule
that locks, an escalation a flag completed) goes through the guard's own lockouts, which it is
handed as callables (as :class:`~lookup_proxy.guard.lockouts.Lockouts` is handed the store);
it reads the same cached plans as the decision (``plans.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from lookup_proxy.clock import Clock
from lookup_proxy.employee import Employee
from lookup_proxy.guard.decision import Lookup
from lookup_proxy.guard.known_numbers import KnownNumbers
from lookup_proxy.guard.lockouts import LockInfo
from lookup_proxy.guard.peers import LOOKUPS, MISSES, OUTCOMES, TYPOS, PeerCheck, PeerTally
from lookup_proxy.guard.plans import Plan, Plans
from lookup_proxy.guard.primitives import Batch
from lookup_proxy.guard.rules import Check, MissesCheck, Subject, is_typo_of


class Learning:
    """Learns outcomes for one guard (see the module docstring)."""

    def __init__(
        self,
        prefix: str,
        numbers_key: bytes,
        clock: Clock,
        plans: Plans,
        checks: Sequence[Check],
        peer_checks: Sequence[PeerCheck],
        escalation_name: str,
        batch: Callable[[], Batch],
        execute: Callable[[Batch], Awaitable[list[Any]]],
        lock: Callable[[Sequence[str], str, float, Sequence[str]], Awaitable[LockInfo]],
        escalate: Callable[[str, Sequence[str], float], Awaitable[tuple[str, ...] | None]],
    ) -> None:
        self._prefix = prefix
        self.clock = clock
        self._plans = plans
        self._batch = batch
        self._execute = execute
        self._lock = lock
        self._escalate = escalate
        self._escalation_name = escalation_name
        self._peer_rules = len(peer_checks)
        self._marks_span = max((peer.rule.bucket for peer in peer_checks), default=0.0)
        self._typo_window = max(
            (c.typo_window for c in checks if isinstance(c, MissesCheck)), default=0.0
        )
        """The window of the employee's recent misses (:meth:`Plans.misses_key`)."""
        self._learns = bool(peer_checks) or any(isinstance(c, MissesCheck) for c in checks)
        self._known = KnownNumbers(prefix, numbers_key)
        self._new_numbers: dict[str, int] = {}
        """Employee id → numbers new to them this guard learnt (REJUDGE_EVERY)."""
        self._lookups: dict[str, int] = {}
        """Employee id → lookups this guard learnt under a ``lookups`` peer rule and has not
        yet added to the tallies (LOOKUPS_EVERY)."""
        self._groups: dict[str, dict[str, float]] = {}
        """Employee id → peer group (tag) → when this guard last counted a number of theirs
        there (:meth:`_elsewhere`)."""

    async def learn(
        self, lookup: Lookup, found: bool, withheld: bool = False
    ) -> tuple[tuple[str, str], ...]:
        """Record the backend's answer for an allowed lookup: misses rules, bounded typo
        forgiveness, and the peer tallies (a peer rule is judged when its metric moves).
        Returns the lockouts this made (employee, rule): a peer rule that locks, or an
        escalation its flag completed; usually none.

        ``withheld``: ``[accounts]`` kept the record from the employee. A withheld record that
        was found (a business line under a reason that may not see it) is no miss, but it
        counts among none of the employee's numbers either, as a number they knew would not:
        it disclosed nothing, and a found number that costs nothing would be padding (every
        business's lines, looked up at will, would dilute the probes' share of misses and grow
        the typo budgets). A withheld miss (a reference's mismatch) counts as any miss."""
        if not self._learns:
            return ()
        employee = lookup.employee
        plan = self._plans.plan(employee, lookup.reason)
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
        counts_new = False  # a typo budget or a ratio counting numbers new to the employee
        for check, index, _ in layout.misses:
            check.add_outcome(batch, keys[index], subject, found, lookup.reason)
            counts_new = counts_new or check.counts_new(found)
        if not found and layout.misses:
            batch.note(plan.misses_key, now, lookup.number, self._typo_window, RECENT_MISSES_CAP)
        seen_at = batch.size()
        knows = (counts_new or bool(peers)) and not (found and withheld)
        if knows:
            self._known.add_sight(batch, employee.id, lookup.number, now)
        results = await self._execute(batch)

        then = self._batch()
        new = knows and KnownNumbers.new(results, seen_at)
        forgave = bool(asked) and await self._forgive(asked, subject, results[0], new, then)
        if new and counts_new:
            for check, index, _ in layout.misses:
                check.add_new_number(then, keys[index], subject, found)
        counts: list[tuple[str, int]] = []
        if new and peers:
            counts.append((OUTCOMES, 1))
            if not found:
                counts.append((MISSES, 1))
        if forgave:
            counts += [(MISSES, -1), (TYPOS, 1)]
        volume = layout.peer_lookups
        flushed = True in volume and self._count_lookup(employee.id)
        judged: list[Judged] = []
        fallbacks: list[tuple[PeerTally, str, tuple[PeerCheck, ...]]] = []
        # Rule → the group where the employee works now, for one whose numbers of the rule's
        # window fell in several groups (_elsewhere).
        roaming: dict[str, tuple[PeerTally, str, PeerCheck]] = {}
        if counts or flushed:
            rejudge = new and self._count_new(employee.id) % REJUDGE_EVERY == 0
            for (tally, applying), tag, counted in zip(peers, plan.peer_tags, volume, strict=True):
                lookups = [(LOOKUPS, LOOKUPS_EVERY)] if flushed and counted else []
                tally.add_counts(then, tag, employee.id, now, counts + lookups)
                moved = tuple(
                    check
                    for check in applying
                    if (
                        flushed
                        if check.volume
                        else rejudge or ((new and not found) if check.field == MISSES else forgave)
                    )
                )
                own = tuple(check for check in moved if not check.fallback)
                elsewhere = not tally.chain and self._elsewhere(employee.id, tag, tally, now)
                if own:
                    judged.append(_ask(then, tally, tag, own, employee.id, now))
                    if elsewhere:
                        roaming.update((check.rule.name, (tally, tag, check)) for check in own)
                if len(own) < len(moved):
                    fallbacks.append((tally, tag, tuple(c for c in moved if c.fallback)))
        after = await self._execute(then)
        fired, decided = _fired(judged, employee.id, now, after)
        # A rule's fallback is judged only where its own group was too small (or absent), or
        # the employee's numbers of its window are split over several groups (a relief clerk):
        # the chain's statistics are what a judgement costs most, and most groups are neither.
        wanted = [
            (tally, tag, needed)
            for tally, tag, checks in fallbacks
            if (
                needed := tuple(
                    c for c in checks if c.rule.name not in decided or c.rule.name in roaming
                )
            )
        ]
        if wanted:
            ask = self._batch()
            chain = [_ask(ask, tally, tag, needs, employee.id, now) for tally, tag, needs in wanted]
            answers = await self._execute(ask)
            extra, _ = _fired(chain, employee.id, now, answers)
            if roaming:
                extra += _whole_window_fired(chain, roaming, employee.id, now, answers)
            named = {check.rule.name for check in fired}
            fired += [check for check in extra if check.rule.name not in named]
        if fired:
            return await self._peer_fired(employee, fired, now)
        return ()

    def _may_correct(
        self, lookup: Lookup, plan: Plan, now: float
    ) -> tuple[tuple[MissesCheck, str], ...]:
        """The misses rules whose recent misses a found number may correct: all of them,
        but those that counted no miss in their window when this lookup was decided, if that
        window reached back past their ``typo_window`` from now.

        Misses are only learnt, and each rule counted its own before this lookup went to the
        backend, so such a rule has none to forgive: on a simulated fortnight of honest work a
        found lookup read 1.5 rules' recent misses of the shipped policy's four, not 3.7. (A miss
        of the same employee learnt while this lookup was at the backend, from another terminal,
        is then not forgiven by it: the strict side.) A rule's walk-ins' misses are not in its
        count: it is asked whenever another rule is (one that counts those misses had some, or
        is asked for its window), or always if none counts them."""
        keys = plan.keys
        layout = plan.layout
        decided = lookup.decided
        if decided is None or decided[0] is not plan:
            # Decided elsewhere (another plan or guard): ask every rule.
            return tuple([(check, keys[index]) for check, index, _ in layout.misses])
        _, then, results = decided
        elapsed = now - then
        counted = [
            results[at] > 0 or check.window < check.typo_window + elapsed
            for check, _, at in layout.misses
        ]
        some = any(counted)
        return tuple(
            [
                (check, keys[index])
                for (check, index, _), own in zip(layout.misses, counted, strict=True)
                if own or (check.walk_in_reasons and (some or check in layout.unwatched_walk_ins))
            ]
        )

    async def _forgive(
        self,
        asked: tuple[tuple[MissesCheck, str], ...],
        subject: Subject,
        recent: list[str],
        new: bool,
        then: Batch,
    ) -> bool:
        """Describe the forgiveness of the misses this found number corrects to ``then``;
        whether any was forgiven. ``recent`` are the employee's own recent misses; ``new``,
        whether the number is new to the employee (else it may be a returning customer's).

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
            adopted = False
            if miss is None and check.walk_in_reasons:
                walk_ins: list[str] = read[start + 1]
                if walk_ins:
                    miss = check.typo_candidate([m for m in walk_ins if m in own], subject)
                    adopted = miss is not None
            budget = start + check.recent_width
            if miss is not None:
                returning = check.returning(read, budget, subject.now, new)
                times = check.forgiveness(read, budget, subject.now, returning)
                if times:
                    check.add_forgive(then, key, subject, miss, times, returning, adopted)
                    forgave = True
                elif adopted:
                    check.add_adopt(then, key, subject, miss)
            start = budget + check.typo_width
        return forgave

    async def _peer_fired(
        self, employee: Employee, fired: list[PeerCheck], now: float
    ) -> tuple[tuple[str, str], ...]:
        """Leave each fired peer rule's mark (reported by the next decisions), lock for one
        that locks, and note the flag-days towards escalation; the lockouts made."""
        marks = self._batch()
        key, span, cap = self._plans.marks_key(employee.id), self._marks_span, self._peer_rules
        for peer in fired:
            marks.note(key, now, peer.rule.name, span, cap)
        await self._execute(marks)
        locking = [
            p.rule.name for p in fired if p.rule.action == "lock" and p.rule.mode == "enforce"
        ]
        if locking:
            await self._lock([employee.id], locking[0], now, ())
            return ((employee.id, locking[0]),)
        enforced = [p.rule.name for p in fired if p.rule.mode == "enforce"]
        if enforced:
            because = await self._escalate(employee.id, enforced, now)
            if because is not None:
                await self._lock([employee.id], self._escalation_name, now, because)
                return ((employee.id, self._escalation_name),)
        return ()

    def _elsewhere(self, employee_id: str, tag: str, tally: PeerTally, now: float) -> bool:
        """Note that the employee's number counted in group ``tag``; whether, within the
        tally's longest window, this guard counted one of theirs in another group of the same
        kind (another store, another region).

        Such an employee (a relief clerk) shows each group a part of their window: the same
        share, but a part's excess weighs less against chance and its count stays under a
        rule's ``limit``, so probing spread over regions went unflagged at two or three times
        the pace probing at home did (red-team ``relief``, 2026-12-07). Their whole window,
        the sum the chain's tally holds, is judged against the group where they work now
        (:func:`_whole_window_fired`) and against the chain.
        Kept in the process: an instance knows the groups of the lookups it learnt, which
        behind a load balancer are a share of every group's."""
        groups = self._groups.get(employee_id)
        if groups is None:
            if len(self._groups) >= NEW_NUMBERS_KEPT:
                self._groups.clear()
            groups = self._groups[employee_id] = {}
        groups[tag] = now
        if len(groups) == 1:
            return False
        kind, since = tag[:2], now - tally.window
        return any(t != tag and t[:2] == kind and at >= since for t, at in groups.items())

    def _count_lookup(self, employee_id: str) -> bool:
        """One more lookup of the employee learnt here; whether it completes LOOKUPS_EVERY of
        them, to be added to the tallies (and the ``lookups`` rules judged) now."""
        counted = self._lookups
        seen = counted.get(employee_id, 0) + 1
        if seen < LOOKUPS_EVERY:
            if len(counted) >= NEW_NUMBERS_KEPT:
                counted.clear()
            counted[employee_id] = seen
            return False
        counted.pop(employee_id, None)
        return True

    def _count_new(self, employee_id: str) -> int:
        """One more number new to the employee learnt here; how many so far."""
        counted = self._new_numbers
        if len(counted) >= NEW_NUMBERS_KEPT:
            counted.clear()
        seen = counted.get(employee_id, 0) + 1
        counted[employee_id] = seen
        return seen


Judged = tuple[PeerTally, str, tuple[PeerCheck, ...], int, int, bool]
"""A tally asked for judging: (tally, tag, checks, first result, results, own fields only)."""


def _ask(
    batch: Batch,
    tally: PeerTally,
    tag: str,
    checks: tuple[PeerCheck, ...],
    employee_id: str,
    now: float,
) -> Judged:
    """Ask ``batch`` for what judging ``checks`` over ``tally`` needs."""
    start = batch.size()
    own_only = tally.add_own_reads(batch, tag, now, checks, employee_id)
    width = 1 if own_only else tally.add_reads(batch, tag, now, checks)
    return (tally, tag, checks, start, width, own_only)


def _fired(
    judged: list[Judged], employee_id: str, now: float, after: list[Any]
) -> tuple[list[PeerCheck], set[str]]:
    """The checks that fired, and the rules whose group was big enough to decide (a rule
    with a fallback is judged against the chain only where it was not: its group was too
    small, or it had none, an employee of no known region)."""
    fired: list[PeerCheck] = []
    decided: set[str] = set()
    for tally, tag, checks, start, width, own_only in judged:
        answers = after[start : start + width]
        verdicts = tally.fired(checks, employee_id, tag, now, answers, own_only)
        for check, verdict in zip(checks, verdicts, strict=True):
            if not check.short:
                decided.add(check.rule.name)
            if verdict is not None:
                fired.append(check)
    return fired, decided


def _whole_window_fired(
    chain: list[Judged],
    roaming: dict[str, tuple[PeerTally, str, PeerCheck]],
    employee_id: str,
    now: float,
    answers: list[Any],
) -> list[PeerCheck]:
    """The rules whose group, where the employee works now, finds out their whole window: the
    numbers of every group they worked in (the sum the chain's tally holds) against the
    group's statistics, as if they had worked there all along.

    The chain's own verdict is not enough: its median and spread mix regions of unlike
    walk-ins, and a relief clerk probing over two regions of the unseen red-team month of
    seed 3 got 19 records judged against it, where probing at home got 12 (2026-12-07)."""
    fired: list[PeerCheck] = []
    for tally, tag, checks, start, width, own_only in chain:
        reads = answers[start : start + width]
        for check in checks:
            here = roaming.get(check.rule.name)
            if here is None:
                continue
            whole = tally.own_window(check, employee_id, tag, now, reads, own_only)
            if whole is None:
                continue
            group, group_tag, group_check = here
            if group.judge_with(group_check, employee_id, group_tag, now, whole) is not None:
                fired.append(group_check)
    return fired


REJUDGE_EVERY = 10
"""Peer rules are judged when their metric moves, and also at every tenth number new to the
employee that this guard learns: an employee's misses may all come before enough of their
peers have looked up enough numbers to count (``min_peers``, ``min_outcomes``), or before the
floors a rule sets, and a rule judged only on misses would then wait for the next one.
Counted in the process (several instances each judge at their own tenth): the count of the
store's window of numbers seen cost a ``ZCOUNT`` a lookup, one command in 25."""

LOOKUPS_EVERY = 10
"""An employee's lookups are added to the peer tallies ten at a time, counted in the process
meanwhile: a ``HINCRBY`` for every lookup in every tally would be two more commands a lookup
(the region's tally and the chain's), one in eleven; ten at a time it is one in a hundred and
ten. What that costs: up to nine lookups an employee per instance are lost when it stops or
when the counts' memory is full (NEW_NUMBERS_KEPT), and up to nine of a day's last go into the
next day's bucket; a daily rule's ratio of a clerk's sixty or more does not feel either."""

NEW_NUMBERS_KEPT = 65_536
"""Employees whose new numbers a guard counts; past it the counts start again (a rule is then
judged up to ten numbers later than it would have been, never not at all)."""

RECENT_MISSES_CAP = 4096
"""Misses remembered per employee for the longest ``typo_window`` (a minute: a handful; a
script typing as fast as the rate rules let it, a few dozen)."""
