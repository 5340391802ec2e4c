"""Peer baselines: an employee's share of misses (or of forgiven typos) against their peers'.

An insider who has read the policy stays under every fixed threshold, and walk-ins who are not
customers give every honest clerk some misses, so no fixed count separates a prober from a busy
clerk. Honest clerks of one store on the same days look alike, though: their share of numbers
that were not found (or that were forgiven as typos) is close to their peers', and a prober's
is not. A peer rule predicts an employee's count from the peers' median share (one odd peer
moves a median nothing; a launch day that lifts everyone lifts it with them) and fires when the
excess is beyond ``spread`` deviations of chance (binomial for the employee's own number of
lookups) widened by how much the peers really differ (the 1.4826 MAD of their shares, less
what chance alone gives peers with their numbers of lookups), beyond ``limit`` misses, and
beyond ``min_spread`` as a share; with a minimum peer group, each peer with a minimum of
lookups (``min_outcomes``: a share of a few numbers is no baseline). The employee judged has no
such minimum once most of the group has it: an insider who does little honest work
would live under it, probing dozens of numbers a week that no rule compared (2026-12-06); for
few numbers the binomial chance and ``limit`` are what keep an honest clerk's bad day from
standing out. While most of the group is below it too (a window's first days), no one below
it is judged yet. A rule
may also carry fixed floors (``min_count``, ``min_share``): then it is a fixed threshold that
the peers can only lift, and where there are too few peers the floors alone decide.

A rule over ``lookups`` compares a count, not a share: the employee's lookups over the last
closed bucket (yesterday) against the peers' median count that day, beyond ``spread``
deviations (the larger of chance, a count's square root, and the peers' 1.4826 MAD), beyond
``limit`` and beyond ``min_ratio`` times the median; judged at the employee's lookups of the
day after. An insider with a list of real customers misses nothing; a day's work beside a
colleague's is what bounds them. A day still open is no baseline: at noon a clerk who opened
the store has twice the lookups of colleagues whose shift began at eleven (judged so, on the
red-team's month of 40 clerks 18 honest ones were flagged and 10 locked; against the larger
of yesterday's median and today's, still 6 flagged and one locked, on a launch day's morning
and after a day of too few peers). Whole days are alike: a launch day lifts everyone's.

State is one small tally per peer group and bucket (a day): fields ``<employee>|o`` (distinct
numbers with an outcome), ``|m`` (misses not forgiven), ``|t`` (misses forgiven as typos) and
``|l`` (lookups, added ten at a time: ``learning.LOOKUPS_EVERY``). A store's tally holds four
fields per clerk of that store, so peer state is bounded by the roster, and each tally is one
hash-tagged key (``{s:<store>}``), so it lives on one Redis Cluster node like every other group
key. Rules over the same peers and bucket share one tally (:class:`PeerTally`): counted once,
read once for all of them. Rules are judged when an outcome changes the metric (a new miss, a
forgiven typo; ten more lookups) or at every tenth new number of the day, off the terminal's
wait; a rule that fires leaves a mark the next
decision reports as a flag, and counts towards escalation. The group's statistics are computed
by the first judgement of a minute and serve the rest of it (:data:`BASELINE_SECONDS`): judging
against every peer each time grew with the group, about a millisecond for 667 clerks.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any, TypeVar

from lookup_proxy.guard.primitives import Batch
from lookup_proxy.policy import PeerRule

OUTCOMES = "o"
MISSES = "m"
TYPOS = "t"
LOOKUPS = "l"
KINDS = (MISSES, TYPOS, OUTCOMES, LOOKUPS)
"""A clerk's fields in the order of their counts: [misses, typos, outcomes, lookups]."""

CLOSED_CACHED = 16_384
"""Windows' closed-bucket sums remembered (per peer group and day); cleared when full."""

T = TypeVar("T", int, float)

MAD_TO_SIGMA = 1.4826
"""Scales a median absolute deviation to a standard deviation for normally spread data."""


class PeerCheck:
    """One peer rule: how it judges an employee against the tallies of its window.

    A rule with a ``fallback`` has two checks: the rule's own over its ``peers``, and one over
    the chain (``fallback`` true). Learning counts every number in both tallies and judges the
    chain's only where the rule's own group was too small to decide (``short``) or absent, or
    where the employee's numbers of the window fell in several groups (a relief clerk:
    ``learning.Learning._elsewhere``), whose sum the chain's tally holds: then that sum is
    judged against the chain and against the group where they work now.
    """

    def __init__(self, rule: PeerRule, fallback: bool = False) -> None:
        self.rule = rule
        self.fallback = fallback
        self.peers = "chain" if fallback else rule.peers
        """The peer group this check's tally is kept over."""
        self.short = False
        """Whether the last judgement found the group too small to be a baseline: fewer than
        ``min_peers`` other members with ``min_outcomes`` numbers in the window (a small region,
        or a region of quiet stores whose clerks never get there: both are judged against the
        chain). In a window's first days every group is short so, and the chain too: it then
        judges no one below ``min_outcomes`` while most of the chain is below it (``_young``).
        Learning reads it right after :meth:`PeerTally.fired` returns (judgements run one at a
        time, with no wait between)."""
        self.volume = rule.metric == "lookups"
        """A count compared with the peers' counts (``lookups``), not a share."""
        self.field = {"typos": TYPOS, "lookups": LOOKUPS}.get(rule.metric, MISSES)
        """The tally field whose change moves the metric: forgiving a typo moves misses and
        typos but never their sum (``all-misses``), which moves with new misses alone."""
        self.index = {"typos": 1, "lookups": 3}.get(rule.metric, 0)
        self.both = rule.metric == "all-misses"
        self.buckets = max(1, math.ceil(rule.window / rule.bucket))
        self.cusum = rule.test == "cusum"
        self.floored = rule.min_count > 0 or rule.min_share > 0

    def value(self, counts: list[int]) -> int:
        """The metric in one clerk's ``[misses, typos, outcomes, lookups]``."""
        return counts[0] + counts[1] if self.both else counts[self.index]

    def judge_days(self, employee: str, days: Sequence[dict[str, list[int]]]) -> int | None:
        """Page's test (CUSUM) over the window's buckets, oldest first, the last one open.

        A window's sum dilutes a prober who started mid-window with the honest days before;
        the sequential test forgets what does not point to a rise (it never drops below zero)
        and adds up what does, so a prober stands out as soon as their excess since they
        started is unlikely for an honest clerk, whenever that was. Each day's evidence is the
        log-likelihood ratio of the day's count under "the peers' median share predicts it"
        against "that plus ``rate``" (Poisson). The open bucket counts for the part of a day
        its lookups so far make of the employee's usual day. Fires (the statistic, floored)
        when it passes ``threshold``.
        """
        rule = self.rule
        floor = rule.min_outcomes
        usual = _median([day[employee][2] for day in days[:-1] if day.get(employee)] or [0.0])
        statistic = 0.0
        for position, day in enumerate(days):
            own = day.get(employee)
            if own is None or own[2] <= 0:
                continue
            shares = [
                self.value(counts) / counts[2]
                for who, counts in day.items()
                if who != employee and counts[2] >= floor
            ]
            if len(shares) < rule.min_peers:
                continue
            expected = max(_median(shares) * own[2], 0.5)
            rise = rule.rate
            if position == len(days) - 1 and usual > 0:
                rise *= min(1.0, own[2] / usual)
            statistic = max(0.0, statistic + self.value(own) * math.log1p(rise / expected) - rise)
        if statistic > rule.threshold:
            return math.floor(statistic)
        return None

    def judge(self, employee: str, tallies: Sequence[list[Any]]) -> int | None:
        """The employee's excess (metric count beyond what the peers' median share predicts)
        when their share stands out from the peers', else None; ``tallies`` as ``fields``
        answers them, one per bucket of the window, the open one last."""
        return self.judge_window(employee, add_up(tallies[:-1]), add_up(tallies[-1:]))

    def judge_totals(self, employee: str, totals: dict[str, list[int]]) -> int | None:
        """:meth:`judge` on tallies already added up (employee → [misses, typos, outcomes])."""
        return self.judge_window(employee, totals, {})

    def judge_window(
        self, employee: str, closed: dict[str, list[int]], current: dict[str, list[int]]
    ) -> int | None:
        """:meth:`judge_totals` on the window's closed buckets and its open one, added up
        per employee as they are read, without building their sum (a region's clerks, for
        every rule judged: most of what learning an outcome cost)."""
        if self.volume:
            return self._judge_volume(employee, closed, current)
        floor = self.rule.min_outcomes
        own = _own_in(employee, closed, current)
        self.short = False
        if own is None or own[2] <= 0:
            return None
        peers: list[tuple[float, int]] = []
        members = 0  # every other member with numbers, qualifying or not
        for who, counts in closed.items():
            if who == employee:
                continue
            lookups, metric = counts[2], self.value(counts)
            extra = current.get(who)
            if extra is not None:
                lookups += extra[2]
                metric += self.value(extra)
            members += 1
            if lookups >= floor:
                peers.append((metric / lookups, lookups))
        for who, counts in current.items():
            if who != employee and who not in closed:
                members += 1
                if counts[2] >= floor:
                    peers.append((self.value(counts) / counts[2], counts[2]))
        self.short = len(peers) < self.rule.min_peers
        if self._young(own[2], len(peers), members):
            return None
        if self.short:
            return self._floors_alone(own)
        shares = sorted([share for share, _ in peers])
        return self._against_peers(own, shares, sorted([n for _, n in peers]))

    def _against_peers(self, own: list[int], shares: list[float], sizes: list[int]) -> int | None:
        """The verdict on ``own`` against the peers' shares and their numbers of lookups,
        both sorted."""
        median = max(_median_of_sorted(shares), 1.0 / self.rule.min_outcomes)
        spread = MAD_TO_SIGMA * _deviation_median(shares, median)
        return self._verdict(own, median, spread, self._noise(median, sizes))

    def own_of(self, closed: list[int] | None, open_: list[int]) -> list[int]:
        """The employee's counts a verdict judges: the window's (closed buckets and the open
        one), or for ``lookups`` the closed bucket's alone (yesterday's)."""
        if self.volume:
            return closed if closed is not None else [0, 0, 0, 0]
        return _plus(closed, open_)

    def _judge_volume(
        self, employee: str, closed: dict[str, list[int]], current: dict[str, list[int]]
    ) -> int | None:
        del current  # a day still open is no baseline (the module's docstring)
        own = closed.get(employee)
        self.short = False
        if own is None or own[3] < self.rule.min_outcomes:
            return None  # under the peers' floor: under any median of theirs
        statistics = self._volume_statistics(employee, closed)
        self.short = statistics is None
        if statistics is None:
            return self._floors_alone(own)
        median, spread = statistics
        return self._volume_verdict(own[3], median, spread)

    def _volume_statistics(
        self, employee: str | None, closed: dict[str, list[int]]
    ) -> tuple[float, float] | None:
        """The peers' median lookups over the closed bucket (each peer past
        ``min_outcomes``, ``employee`` left out) with their 1.4826 MAD; None with fewer than
        ``min_peers`` of them."""
        floor = self.rule.min_outcomes
        counts = [c[3] for who, c in closed.items() if who != employee and c[3] >= floor]
        if len(counts) < self.rule.min_peers:
            return None
        ordered = sorted([float(count) for count in counts])
        median = _median_of_sorted(ordered)
        return median, MAD_TO_SIGMA * _deviation_median(ordered, median)

    def _noise(self, median: float, sizes: list[int]) -> float:
        """What chance alone gives the peers' shares (binomial for their numbers): the median
        of ``median * (1 - median) / n`` over the peers' sorted ``sizes``. Dividing one number
        by each size keeps their order (reversed), so the middle sizes give the middle values,
        the very ones sorting the quotients would (a sort of the group's quotients for every
        rule was a fifth of what a minute's statistics cost a chain of 2,000 clerks)."""
        chance = median * (1.0 - median)
        middle = len(sizes) // 2
        if len(sizes) % 2:
            return chance / sizes[middle]
        return (chance / sizes[middle - 1] + chance / sizes[middle]) / 2

    def _young(self, own: int, qualifying: int, members: int) -> bool:
        """Whether an employee with ``own`` numbers goes unjudged because the window is young:
        they are below ``min_outcomes`` while fewer than half of the group's ``members`` are
        past it (a window's first days; later, a quiet employee is judged however few)."""
        return own < self.rule.min_outcomes and 2 * qualifying < members

    def _verdict(self, own: list[int], median: float, spread: float, noise: float) -> int | None:
        # What the peers' median share predicts for this employee's numbers, and how far an
        # honest count strays from it: chance (binomial, for the employee's own number of
        # lookups) plus however much the peers really differ. The peers' spread (1.4826 MAD of
        # their shares) holds their own chance too, large for a peer with few lookups, so what
        # chance alone would give them (``noise``) is taken out before it widens the test.
        metric, outcomes = self.value(own), own[2]
        expected = median * outcomes
        chance = median * (1.0 - median) * outcomes
        differ = max(0.0, spread * spread - noise) * outcomes * outcomes
        deviation = math.sqrt(chance + differ)
        excess = metric - expected
        if (
            excess > self.rule.limit
            and excess > self.rule.spread * deviation
            and metric / outcomes > median + self.rule.min_spread
            and self._past_floors(metric, outcomes)
        ):
            return math.floor(excess)
        return None

    def _volume_verdict(self, count: int, median: float, spread: float) -> int | None:
        # A count strays from the peers' median by chance (Poisson: its square root) and by
        # however much the peers really differ (their 1.4826 MAD, which holds that chance too):
        # the larger of the two.
        rule = self.rule
        excess = count - median
        if (
            excess > rule.limit
            and excess > rule.spread * max(math.sqrt(median), spread)
            and count >= rule.min_ratio * median
            and count > rule.min_count
        ):
            return math.floor(excess)
        return None

    def _past_floors(self, metric: int, outcomes: int) -> bool:
        return metric > self.rule.min_count and metric >= self.rule.min_share * outcomes

    def _floors_alone(self, own: list[int]) -> int | None:
        # Too few peers to compare with: a rule with fixed floors still holds them (the peers
        # only ever lift a fixed threshold, they never take it away); one without, says nothing.
        if not self.floored:
            return None
        metric = self.value(own)
        if self._past_floors(metric, own[3] if self.volume else own[2]):
            return metric - self.rule.min_count
        return None

    def baseline(
        self,
        closed: dict[str, list[int]],
        current: dict[str, list[int]],
        newest: int,
        now: float,
    ) -> Baseline:
        """The group's statistics over every member with enough lookups (the employee judged
        next included: :meth:`judge_against` takes their share out of the median; for
        ``lookups`` the median of every peer, whoever is judged)."""
        if self.volume:
            members = len(closed) + sum(1 for who in current if who not in closed)
            found = self._volume_statistics(None, closed)
            median, spread = found if found is not None else (0.0, 0.0)
            return Baseline(newest, now, [], {}, [], spread, 0.0, members, found is None, median)
        floor = self.rule.min_outcomes
        share_of: dict[str, float] = {}
        lookups_of: list[int] = []
        for part, other in ((closed, current), (current, None)):
            for who, counts in part.items():
                if other is None and who in closed:
                    continue
                lookups, metric = counts[2], self.value(counts)
                extra = None if other is None else other.get(who)
                if extra is not None:
                    lookups += extra[2]
                    metric += self.value(extra)
                if lookups >= floor:
                    share_of[who] = metric / lookups
                    lookups_of.append(lookups)
        shares = sorted(share_of.values())
        lookups_of.sort()
        median = max(_median_of_sorted(shares), 1.0 / floor) if shares else 1.0 / floor
        spread = MAD_TO_SIGMA * _deviation_median(shares, median) if shares else 0.0
        noise = self._noise(median, lookups_of) if shares else 0.0
        members = len(closed) + sum(1 for who in current if who not in closed)
        return Baseline(
            newest, now, shares, share_of, lookups_of, spread, noise, members, False, 0.0
        )

    def judge_fresh(
        self,
        employee: str,
        closed: dict[str, list[int]],
        current: dict[str, list[int]],
        baseline: Baseline,
    ) -> int | None:
        """:meth:`judge_window`'s verdict (and ``short``) from the statistics :meth:`baseline`
        has just computed from the same ``closed`` and ``current``, without walking the group
        again: the peers are the baseline's qualifying members but the employee, so their
        median, spread and chance are taken from its lists with the employee's share and
        lookups left out. Judging the window walked every clerk of the group a second time, as
        much as the statistics did (for a chain of 2,000 clerks, 4.1 ms of the 7.8 that a
        minute's first judgement of the shipped policy's seven rules cost)."""
        if self.volume:
            return self.judge_window(employee, closed, current)
        own = _own_in(employee, closed, current)
        self.short = False
        if own is None or own[2] <= 0:
            return None
        shares = baseline.shares
        sizes = baseline.sizes
        mine = baseline.share_of.get(employee)
        if mine is not None:
            shares = _without(shares, mine)
            sizes = _without(sizes, own[2])
        members = baseline.members - 1  # the employee has numbers: ``own``
        self.short = len(shares) < self.rule.min_peers
        if self._young(own[2], len(shares), members):
            return None
        if self.short:
            return self._floors_alone(own)
        return self._against_peers(own, shares, sizes)

    def judge_against(self, own: list[int] | None, employee: str, baseline: Baseline) -> int | None:
        """:meth:`judge_window` with the group's statistics from ``baseline`` and the
        employee's own counts as they are now: the median leaves the employee's share out, as
        judging the window does; the spread and chance are the group's, the employee in it."""
        floor = self.rule.min_outcomes
        self.short = False
        if self.volume:
            if own is None or own[3] < floor:
                return None
            self.short = baseline.short
            if baseline.short:
                return self._floors_alone(own)
            return self._volume_verdict(own[3], baseline.median, baseline.spread)
        if own is None or own[2] <= 0:
            return None
        mine = baseline.share_of.get(employee)
        shares = baseline.shares
        self.short = len(shares) - (mine is not None) < self.rule.min_peers
        if self._young(own[2], len(shares), baseline.members):
            return None
        if self.short:
            return self._floors_alone(own)
        median = max(_median_without(shares, mine), 1.0 / floor)
        return self._verdict(own, median, baseline.spread, baseline.noise)


BASELINE_SECONDS = 60.0
"""How long a peer group's statistics serve judgements before they are computed again: a
judgement that computes them reads every clerk of the group (about 1 ms for 667), one that
reuses them reads the employee's own counts. A minute is nothing to baselines of days."""


class Baseline:
    """A peer group's statistics for one rule, as of ``at`` (bucket ``newest``)."""

    __slots__ = (
        "at",
        "median",
        "members",
        "newest",
        "noise",
        "share_of",
        "shares",
        "short",
        "sizes",
        "spread",
    )

    def __init__(
        self,
        newest: int,
        at: float,
        shares: list[float],
        share_of: dict[str, float],
        sizes: list[int],
        spread: float,
        noise: float,
        members: int,
        short: bool,
        median: float,
    ) -> None:
        self.newest = newest
        self.at = at
        self.shares = shares
        """Every qualifying member's share, sorted."""
        self.share_of = share_of
        self.sizes = sizes
        """Every qualifying member's numbers (lookups with an outcome), sorted."""
        self.spread = spread
        self.noise = noise
        self.members = members
        """Members with any number in the window, qualifying or not: with ``shares``, whether
        the group is young (most of it below ``min_outcomes``: a window's first days, or a
        region of quiet stores, where no one below it is judged; :meth:`PeerCheck._young`)."""
        self.short = short
        """``lookups`` only: too few peers today and the bucket before to be a baseline."""
        self.median = median
        """``lookups`` only: the median count the employee's is judged against (the closed
        bucket's; every peer in it, the employee judged too)."""

    def serves(self, newest: int, now: float) -> bool:
        """Still the statistics of bucket ``newest`` at ``now``."""
        return self.newest == newest and self.at <= now < self.at + BASELINE_SECONDS


class PeerTally:
    """The tallies of every peer rule over one kind of peer group and one bucket length."""

    def __init__(self, prefix: str, checks: Sequence[PeerCheck]) -> None:
        first = checks[0].rule
        self.peers = checks[0].peers
        self.bucket = first.bucket
        self.checks = tuple(checks)
        self.buckets = max(check.buckets for check in checks)
        """Buckets read for a judgement: the longest window's."""
        self.window = max(check.rule.window for check in checks)
        """The longest window of its rules (seconds)."""
        self.chain = self.peers == "chain"
        self.ttl = self.window + self.bucket
        self.prefix = prefix
        self.length = int(self.bucket)
        self._closed: dict[tuple[str, int], dict[int, dict[str, list[int]]]] = {}
        """(tag, a window's buckets) → current bucket → that window's closed buckets added
        up: today's, and yesterday's while a late learn may still ask for it."""
        self._days: dict[str, dict[int, dict[str, list[int]]]] = {}
        """tag → closed bucket → its counts, the longest window's worth: what a window's sums
        are made of, and what the day-by-day (cusum) rules judge."""
        self._baselines: dict[tuple[str, str], Baseline] = {}
        """(tag, rule name) → the group's statistics (:data:`BASELINE_SECONDS`)."""

    def tally_key(self, tag: str, bucket: int) -> str:
        return f"{self.prefix}:{{{tag}}}:peers:{self.length}:{bucket}"

    def bucket_of(self, now: float) -> int:
        return int(now // self.bucket)

    def add_counts(
        self, batch: Batch, tag: str, employee: str, now: float, counts: Sequence[tuple[str, int]]
    ) -> None:
        """Add to the employee's fields of the current bucket."""
        key = self.tally_key(tag, self.bucket_of(now))
        for field, amount in counts:
            batch.incr(key, f"{employee}|{field}", amount, self.ttl)

    def add_reads(self, batch: Batch, tag: str, now: float, checks: Sequence[PeerCheck]) -> int:
        """Ask for what judging ``checks`` needs; how many primitives that took (the buckets
        read, the current one last).

        Only the current bucket changes (every count goes to it), so the sums of the closed
        buckets of each window are remembered once read, on every instance alike: a judgement
        then reads one bucket where it read a window's worth (28 for a four-week rule). Closed
        buckets are remembered one by one too, so the first judgement of a new bucket reads
        the one that has just closed and the current one, and each window's sums move on by
        a bucket (:meth:`closed`): reading and adding up a whole window there was a pause of
        20-33 ms every day for a chain of 2,000 clerks (bench/bench_stalls.py, 2026-12-07).
        """
        newest = self.bucket_of(now)
        reach = max(self._reach(check, tag, newest) for check in checks)
        for bucket in range(newest - reach + 1, newest + 1):
            batch.fields(self.tally_key(tag, bucket))
        return reach

    def add_own_reads(
        self, batch: Batch, tag: str, now: float, checks: Sequence[PeerCheck], employee: str
    ) -> bool:
        """Ask for the employee's own fields of the open bucket alone, when that is all judging
        ``checks`` needs: every one has the group's statistics for now and its window's closed
        sums. False (nothing asked) when a whole read is needed (:meth:`add_reads`)."""
        newest = self.bucket_of(now)
        for check in checks:
            baseline = self._baselines.get((tag, check.rule.name))
            if (
                check.cusum
                or baseline is None
                or not baseline.serves(newest, now)
                or not self._remembered(check, tag, newest)
            ):
                return False
        # Today's lookups are nobody's verdict (a ``lookups`` rule judges the closed bucket).
        batch.pick(self.tally_key(tag, newest), [f"{employee}|{kind}" for kind in KINDS[:3]])
        return True

    def _remembered(self, check: PeerCheck, tag: str, newest: int) -> bool:
        """Whether ``check`` is judged on the current bucket alone: its window's sums are
        made (for cusum, every closed day is remembered)."""
        if check.cusum:
            return self._reach(check, tag, newest) == 1
        return self._sums(check, tag, newest) is not None

    def _reach(self, check: PeerCheck, tag: str, newest: int) -> int:
        """How many buckets, the current one included, a judgement of ``check`` must read: 1
        with its window's closed sums remembered (or, for cusum, every closed day); 2 where
        yesterday's sums can move on by the bucket that has just closed; else back to the
        oldest closed bucket of the window not remembered."""
        if not check.cusum:
            if self._sums(check, tag, newest) is not None:
                return 1
            if self._moves_on(check, tag, newest):
                return 1 if newest - 1 in self._days.get(tag, {}) else 2
        days = self._days.get(tag, {})
        for bucket in range(newest - check.buckets + 1, newest):
            if bucket not in days:
                return newest - bucket + 1
        return 1

    def _sums(self, check: PeerCheck, tag: str, newest: int) -> dict[str, list[int]] | None:
        """``check``'s window's closed sums for current bucket ``newest``, if remembered."""
        kept = self._closed.get((tag, check.buckets))
        return None if kept is None else kept.get(newest)

    def _moves_on(self, check: PeerCheck, tag: str, newest: int) -> bool:
        """Whether the window's sums for ``newest`` are best made from the previous bucket's:
        remembered, with the bucket that has left the window, in a window long enough that
        moving on (a copy, an add and a subtraction) is cheaper than adding up its days."""
        return (
            check.buckets > MOVE_ON_FROM
            and self._sums(check, tag, newest - 1) is not None
            and newest - check.buckets in self._days.get(tag, {})
        )

    def fired(
        self,
        checks: Sequence[PeerCheck],
        employee: str,
        tag: str,
        now: float,
        tallies: Sequence[list[Any]],
        own_only: bool = False,
    ) -> list[int | None]:
        """Each check's verdict from what :meth:`add_reads` asked for them (the open bucket is
        added up once for them all), or, with ``own_only``, from the employee's own fields that
        :meth:`add_own_reads` asked for."""
        newest = self.bucket_of(now)
        if own_only:
            return self._fired_own(checks, employee, tag, newest, tallies[0])
        current: dict[str, list[int]] | None = None
        mine: list[int] | None = None
        verdicts: list[int | None] = []
        for check in checks:
            if check.cusum:
                check.short = False  # a day short of peers is no evidence; no fallback
                if current is None:
                    current = add_up(tallies[-1:])
                verdicts.append(
                    check.judge_days(employee, self.days(check, tag, now, tallies, current))
                )
                continue
            closed = self.closed(check, tag, now, tallies)
            key = (tag, check.rule.name)
            baseline = self._baselines.get(key)
            if baseline is not None and baseline.serves(newest, now):
                if mine is None:
                    mine = own_counts(tallies[-1], employee)
                own = check.own_of(closed.get(employee), mine)
                verdicts.append(check.judge_against(own, employee, baseline))
                continue
            if current is None:
                current = add_up(tallies[-1:])
            if len(self._baselines) >= CLOSED_CACHED:
                self._baselines.clear()
            baseline = self._baselines[key] = check.baseline(closed, current, newest, now)
            verdicts.append(check.judge_fresh(employee, closed, current, baseline))
        return verdicts

    def _fired_own(
        self,
        checks: Sequence[PeerCheck],
        employee: str,
        tag: str,
        newest: int,
        picked: list[int | None],
    ) -> list[int | None]:
        """Verdicts from the employee's own fields and the statistics :meth:`add_own_reads`
        saw. Another judgement may have replaced them meanwhile (newer ones of the same bucket
        serve as well); a rule whose statistics or closed sums have gone is not judged this
        time (the next judgement reads the whole bucket)."""
        mine = _picked(picked)
        verdicts: list[int | None] = []
        for check in checks:
            baseline = self._baselines.get((tag, check.rule.name))
            closed = self._sums(check, tag, newest)
            if baseline is None or baseline.newest != newest or closed is None:
                check.short = False  # not judged this time: nothing to fall back for
                verdicts.append(None)
                continue
            verdicts.append(
                check.judge_against(check.own_of(closed.get(employee), mine), employee, baseline)
            )
        return verdicts

    def own_window(
        self,
        check: PeerCheck,
        employee: str,
        tag: str,
        now: float,
        tallies: Sequence[list[Any]],
        own_only: bool,
    ) -> list[int] | None:
        """The employee's [misses, typos, outcomes, lookups] over ``check``'s window, from what
        :meth:`add_own_reads` (``own_only``) or :meth:`add_reads` asked for, once
        :meth:`fired` has judged them (None when the closed sums it used have gone since)."""
        if own_only:
            closed = self._sums(check, tag, self.bucket_of(now))
            if closed is None:
                return None
            return check.own_of(closed.get(employee), _picked(tallies[0]))
        closed = self.closed(check, tag, now, tallies)
        return check.own_of(closed.get(employee), own_counts(tallies[-1], employee))

    def judge_with(
        self, check: PeerCheck, employee: str, tag: str, now: float, own: list[int]
    ) -> int | None:
        """``check``'s verdict on counts ``own`` of the employee against the group's
        statistics of this bucket as :meth:`fired` last computed them (None without any)."""
        baseline = self._baselines.get((tag, check.rule.name))
        if baseline is None or baseline.newest != self.bucket_of(now):
            return None
        return check.judge_against(own, employee, baseline)

    def days(
        self,
        check: PeerCheck,
        tag: str,
        now: float,
        tallies: Sequence[list[Any]],
        current: dict[str, list[int]] | None = None,
    ) -> list[dict[str, list[int]]]:
        """``check``'s window bucket by bucket (oldest first, the open one last); closed
        buckets are remembered (:meth:`_day`)."""
        newest = self.bucket_of(now)
        first = newest - check.buckets + 1
        days = [self._day(tag, bucket, newest, tallies) for bucket in range(first, newest)]
        days.append(add_up(tallies[-1:]) if current is None else current)
        return days

    def _day(
        self, tag: str, bucket: int, newest: int, tallies: Sequence[list[Any]]
    ) -> dict[str, list[int]]:
        """Closed bucket ``bucket``'s counts, remembered or from ``tallies`` (buckets up to
        ``newest``, the current one last), then remembered; the longest window's worth are
        kept. A bucket neither remembered nor read is empty: forgotten since it was asked for
        (the memory was full, or a judgement of a bucket since closed ran in between), it is
        no evidence."""
        days = self._days.get(tag)
        if days is None:
            if len(self._days) >= CLOSED_CACHED:
                self._days.clear()
            days = self._days[tag] = {}
        day = days.get(bucket)
        if day is not None:
            return day
        position = bucket - newest + len(tallies) - 1
        if position < 0 or bucket >= newest:
            return {}
        day = add_up(tallies[position : position + 1])
        days[bucket] = day
        oldest = newest - self.buckets
        for stale in [b for b in days if b < oldest]:
            del days[stale]
        return day

    def totals(
        self, check: PeerCheck, tag: str, now: float, tallies: Sequence[list[Any]]
    ) -> dict[str, list[int]]:
        """``check``'s window added up, closed buckets and the open one (judging reads the two
        apart: :meth:`PeerCheck.judge_window`)."""
        closed = self.closed(check, tag, now, tallies)
        return add_up(tallies[-1:], {who: list(counts) for who, counts in closed.items()})

    def closed(
        self, check: PeerCheck, tag: str, now: float, tallies: Sequence[list[Any]]
    ) -> dict[str, list[int]]:
        """``check``'s window's closed buckets added up, from what :meth:`add_reads` asked
        for or remembered from an earlier read (they no longer change): the previous bucket's
        sums moved on by one (the bucket that has just closed in, the oldest out), or the
        window's days added up."""
        newest = self.bucket_of(now)
        closed = self._sums(check, tag, newest)
        if closed is not None:
            return closed
        first = newest - check.buckets + 1
        before = self._sums(check, tag, newest - 1) if self._moves_on(check, tag, newest) else None
        if before is not None:
            closed = _moved_on(
                before,
                self._day(tag, newest - 1, newest, tallies),
                self._day(tag, first - 1, newest, tallies),
            )
        if closed is None:
            closed = {}
            for bucket in range(first, newest):
                _add_into(closed, self._day(tag, bucket, newest, tallies))
        kept = self._closed.get((tag, check.buckets))
        if kept is None:
            if len(self._closed) >= CLOSED_CACHED:
                self._closed.clear()
            kept = self._closed[(tag, check.buckets)] = {}
        kept[newest] = closed
        for stale in [b for b in kept if b < newest - 1]:
            del kept[stale]
        return closed


MOVE_ON_FROM = 3
"""Closed buckets a window must have for its sums to be moved on from the previous bucket's
rather than added up from its days."""


def _moved_on(
    before: dict[str, list[int]], closing: dict[str, list[int]], gone: dict[str, list[int]]
) -> dict[str, list[int]] | None:
    """A window's sums a bucket on: ``before`` plus the bucket just closed, less the one that
    left the window; None if ``gone`` names a clerk ``before`` never counted. That can only
    be a bucket read again since (forgotten when the memory was full, then read by a rule
    over a longer window) and written to after its first read (an instance whose clock was
    behind): the window's days are added up instead."""
    closed = {who: list(counts) for who, counts in before.items()}
    _add_into(closed, closing)
    for who, counts in gone.items():
        total = closed.get(who)
        if total is None:
            return None
        total[0] -= counts[0]
        total[1] -= counts[1]
        total[2] -= counts[2]
        total[3] -= counts[3]
        if total[0] == 0 and total[1] == 0 and total[2] == 0 and total[3] == 0:
            del closed[who]  # in none of the window's buckets: as add_up has them
    return closed


def _add_into(totals: dict[str, list[int]], day: dict[str, list[int]]) -> None:
    """Add one bucket's per-employee counts into ``totals``."""
    for who, counts in day.items():
        total = totals.get(who)
        if total is None:
            totals[who] = list(counts)
        else:
            total[0] += counts[0]
            total[1] += counts[1]
            total[2] += counts[2]
            total[3] += counts[3]


FIELDS_CACHED = 65_536
"""Tally field names remembered with what they name (a clerk's three fields of each day)."""

_FIELD_NAMES: dict[str, tuple[str, int]] = {}
"""Field → (employee, position in [misses, typos, outcomes, lookups]); -1 for a field of no
metric."""

_POSITION = {MISSES: 0, TYPOS: 1, OUTCOMES: 2, LOOKUPS: 3}


def add_up(
    tallies: Sequence[list[Any]], totals: dict[str, list[int]] | None = None
) -> dict[str, list[int]]:
    """Tallies' fields added up per employee: [misses, typos, outcomes, lookups]."""
    if totals is None:
        totals = {}
    names = _FIELD_NAMES
    for flat in tallies:
        for position in range(0, len(flat), 2):
            field = str(flat[position])
            named = names.get(field)
            if named is None:
                who, _, kind = field.rpartition("|")
                named = (who, _POSITION.get(kind, -1))
                if len(names) >= FIELDS_CACHED:
                    names.clear()
                names[field] = named
            who, slot = named
            if slot < 0:
                continue
            counts = totals.get(who)
            if counts is None:
                counts = totals[who] = [0, 0, 0, 0]
            counts[slot] += int(flat[position + 1])
    return totals


def own_counts(flat: list[Any], employee: str) -> list[int]:
    """One employee's [misses, typos, outcomes, lookups] in one bucket's fields, without adding
    up the others'."""
    counts = [0, 0, 0, 0]
    wanted = {f"{employee}|{kind}": slot for slot, kind in enumerate(KINDS)}
    for position in range(0, len(flat), 2):
        slot = wanted.get(str(flat[position]))
        if slot is not None:
            counts[slot] += int(flat[position + 1])
    return counts


def _picked(values: list[Any]) -> list[int]:
    """An employee's counts from the fields :meth:`PeerTally.add_own_reads` picked (all but
    lookups: 0)."""
    return [value or 0 for value in values] + [0] * (len(KINDS) - len(values))


def _own_in(
    employee: str, closed: dict[str, list[int]], current: dict[str, list[int]]
) -> list[int] | None:
    """The employee's counts over a window's closed buckets and its open one (None: none)."""
    own = closed.get(employee)
    extra = current.get(employee)
    if own is None:
        return extra
    if extra is None:
        return own
    return _plus(own, extra)


def _plus(closed: list[int] | None, open_: list[int]) -> list[int]:
    """An employee's window: their closed buckets' counts (if any) plus the open bucket's."""
    if closed is None:
        return open_
    return [c + o for c, o in zip(closed, open_, strict=True)]


def _median_without(ordered: list[float], value: float | None) -> float:
    """The median of sorted ``ordered`` with one occurrence of ``value`` left out (None: none)."""
    if value is None:
        return _median_of_sorted(ordered)
    skip = bisect_left(ordered, value)
    size = len(ordered) - 1
    if size <= 0:
        return 0.0

    def at(rank: int) -> float:
        return ordered[rank if rank < skip else rank + 1]

    middle = size // 2
    if size % 2:
        return at(middle)
    return (at(middle - 1) + at(middle)) / 2


def _without(ordered: list[T], value: T) -> list[T]:
    """Sorted ``ordered`` with one occurrence of ``value`` (which it holds) left out."""
    skip = bisect_left(ordered, value)
    return ordered[:skip] + ordered[skip + 1 :]


def _median(values: list[float]) -> float:
    return _median_of_sorted(sorted(values))


def _median_of_sorted(ordered: list[float]) -> float:
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def _deviation_median(ordered: list[float], center: float) -> float:
    """The median of ``abs(x - center)`` over sorted ``ordered``, without sorting them: the
    deviations of the values below ``center`` grow walking down from it, those of the rest
    walking up, so merging the two walks yields them in order, and only up to the middle
    ones. The same values a sort would give: ``abs(x - center)`` is ``center - x`` exactly
    below it."""
    size = len(ordered)
    middle = size // 2
    down = bisect_left(ordered, center) - 1
    up = down + 1
    previous = current = 0.0
    for _ in range(middle + 1):
        if up >= size or (down >= 0 and center - ordered[down] <= ordered[up] - center):
            value = center - ordered[down]
            down -= 1
        else:
            value = ordered[up] - center
            up += 1
        previous, current = current, value
    if size % 2:
        return current
    return (previous + current) / 2
