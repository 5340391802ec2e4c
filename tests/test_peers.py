"""Peer baselines judged on tallies: the statistics, apart from any store."""

from __future__ import annotations

import random
from typing import Any

from lookup_proxy.guard.peers import (
    BASELINE_SECONDS,
    PeerCheck,
    PeerTally,
    _deviation_median,
    _median,
    _median_without,
)
from lookup_proxy.guard.primitives import Batch
from lookup_proxy.policy import PeerRule


def rule(**overrides: Any) -> PeerRule:
    settings: dict[str, Any] = {
        "name": "peer-misses",
        "kind": "peer",
        "window": "7d",
        "min_peers": 3,
        "min_outcomes": 50,
        "spread": 4.0,
        "min_spread": 0.02,
        "limit": 3,
    }
    settings.update(overrides)
    return PeerRule.model_validate(settings)


def tally_of(counts: dict[str, tuple[int, int, int]]) -> list[Any]:
    """One bucket's flat fields from employee → (outcomes, misses, typos)."""
    flat: list[Any] = []
    for who, (outcomes, misses, typos) in counts.items():
        flat += [f"{who}|o", outcomes, f"{who}|m", misses, f"{who}|t", typos]
    return flat


PEERS = {"p1": (200, 20, 8), "p2": (180, 17, 7), "p3": (220, 23, 9), "p4": (150, 14, 6)}


def add_up_all(counts: dict[str, tuple[int, int, int]]) -> dict[str, list[int]]:
    """employee → (outcomes, misses, typos) as a window's sums: [misses, typos, outcomes,
    lookups] (no lookups)."""
    return {who: [m, t, o, 0] for who, (o, m, t) in counts.items()}


def test_an_employee_like_the_peers_is_not_judged_above_them() -> None:
    """A share of misses inside chance of the peers' median fires nothing."""
    check = PeerCheck(rule())
    assert check.judge("me", [tally_of({**PEERS, "me": (200, 24, 8)})]) is None


def test_a_share_of_misses_far_above_the_peers_fires_with_the_excess() -> None:
    """Fifty misses where the peers' share predicts about twenty: the excess is reported."""
    check = PeerCheck(rule())
    excess = check.judge("me", [tally_of({**PEERS, "me": (200, 50, 8)})])
    assert excess is not None
    assert 28 <= excess <= 31


def test_buckets_are_summed_over_the_window() -> None:
    """The same counts split over two days judge as they do in one."""
    check = PeerCheck(rule())
    half = {who: (o // 2, m // 2, t // 2) for who, (o, m, t) in PEERS.items()}
    one_day = tally_of({**half, "me": (100, 25, 4)})
    assert check.judge("me", [one_day, one_day]) == check.judge(
        "me", [tally_of({**PEERS, "me": (200, 50, 8)})]
    )


def test_everyone_lifted_together_lifts_no_one() -> None:
    """A launch day doubling every clerk's misses moves the median, not the verdict."""
    check = PeerCheck(rule())
    launch = {who: (o, 2 * m, t) for who, (o, m, t) in PEERS.items()}
    assert check.judge("me", [tally_of({**launch, "me": (200, 44, 8)})]) is None


def test_peers_under_min_outcomes_do_not_count() -> None:
    """A peer with fewer numbers than min_outcomes is no baseline: two of three peers under
    it leave too few peers, and nothing is judged."""
    check = PeerCheck(rule(min_outcomes=100))
    quiet = {"p1": (200, 20, 8), "p2": (90, 9, 3), "p3": (80, 8, 3)}
    assert check.judge("me", [tally_of({**quiet, "me": (200, 60, 8)})]) is None


def test_an_employee_under_min_outcomes_is_judged_all_the_same() -> None:
    """An insider who does little honest work of their own: 40 misses in 45 numbers, under
    min_outcomes, where the peers' share predicts about 4. Exempting them (as min_outcomes
    did until 2026-12-06) let such an insider probe dozens of numbers a week unjudged (the
    peers here are past it: the window is not young). A quiet honest clerk with their share
    of misses (2 in 20), or one more walk-in than that, is not flagged: for few numbers,
    chance and ``limit`` decide."""
    check = PeerCheck(rule(min_outcomes=100))
    excess = check.judge("me", [tally_of({**PEERS, "me": (45, 40, 0)})])
    assert excess is not None and 35 <= excess <= 36
    assert check.judge("me", [tally_of({**PEERS, "me": (20, 2, 1)})]) is None
    assert check.judge("me", [tally_of({**PEERS, "me": (20, 4, 1)})]) is None
    assert check.judge("me", [tally_of({**PEERS, "me": (0, 0, 0)})]) is None
    baseline = check.baseline(add_up_all(PEERS), {}, 0, 0.0)
    assert check.judge_against([40, 0, 45], "me", baseline) == excess
    assert check.judge_against([2, 1, 20], "me", baseline) is None


def test_below_min_outcomes_no_one_is_judged_while_the_window_is_young() -> None:
    """The employee judged needs no min_outcomes once most of the group has it; in a
    window's first days, when most members have fewer numbers, an employee below it is not
    judged yet (two honest clerks of an unseen month were flagged on days 3 and 4 with 50 and
    73 numbers before this), even where a few busy peers already qualify."""
    check = PeerCheck(rule(min_outcomes=100, min_peers=3))
    busy = {f"b{i}": (200, 20, 8) for i in range(3)}
    young = {**busy, **{f"y{i}": (40, 4, 1) for i in range(4)}}
    grown = {**busy, **{f"y{i}": (150, 15, 6) for i in range(4)}}
    me = (45, 40, 0)
    assert check.judge("me", [tally_of({**young, "me": me})]) is None
    assert check.judge("me", [tally_of({**grown, "me": me})]) is not None
    assert check.judge("me", [tally_of({**young, "me": (200, 150, 0)})]) is not None
    for group, judged in ((young, False), (grown, True)):
        baseline = check.baseline(add_up_all({**group, "me": me}), {}, 0, 0.0)
        assert (check.judge_against([40, 0, 45], "me", baseline) is not None) is judged


def test_a_group_is_short_without_min_peers_peers_past_min_outcomes() -> None:
    """``short`` (a rule with a fallback then asks the chain): fewer than ``min_peers`` other
    members with ``min_outcomes`` numbers in the window. Four colleagues none of whom has
    reached it (a region of quiet stores, or any group in a window's first days, when the
    chain is as young and judges no one below it) are short, as two busy ones are; a group
    with peers enough is not. The same from a minute's baseline."""
    check = PeerCheck(rule(min_outcomes=100, min_peers=3))
    quiet = {f"p{i}": (40, 4, 1) for i in range(4)}
    small = {f"p{i}": (400, 40, 10) for i in range(2)}
    for group, short in ((quiet, True), (small, True), (PEERS, False)):
        verdict = check.judge("me", [tally_of({**group, "me": (45, 40, 0)})])
        assert check.short is short
        assert (verdict is None) is (group is not PEERS)
        baseline = check.baseline(add_up_all({**group, "me": (45, 40, 0)}), {}, 0, 0.0)
        check.judge_against([40, 0, 45], "me", baseline)
        assert check.short is short


def test_peers_who_differ_widen_what_counts_as_chance() -> None:
    """Peers spread from 5 % to 25 % misses: a 22 % clerk is one of them, not an outlier."""
    check = PeerCheck(rule())
    varied = {"p1": (200, 10, 0), "p2": (200, 30, 0), "p3": (200, 50, 0), "p4": (200, 20, 0)}
    assert check.judge("me", [tally_of({**varied, "me": (200, 44, 0)})]) is None


def test_the_typos_metric_reads_forgiven_typos() -> None:
    """``metric = "typos"`` judges the share of forgiven typos, not of misses."""
    check = PeerCheck(rule(metric="typos"))
    assert check.judge("me", [tally_of({**PEERS, "me": (200, 20, 40)})]) is not None
    assert check.judge("me", [tally_of({**PEERS, "me": (200, 60, 8)})]) is None


def test_the_all_misses_metric_reads_misses_and_forgiven_typos_together() -> None:
    """``metric = "all-misses"`` judges every number not found, forgiven or not: a clerk a
    little above the peers in misses and a little above them in typos, inside chance for
    each alone, stands out in their sum (an insider spending both budgets at once)."""
    me = tally_of({**PEERS, "me": (200, 35, 17)})
    assert PeerCheck(rule()).judge("me", [me]) is None
    assert PeerCheck(rule(metric="typos")).judge("me", [me]) is None
    check = PeerCheck(rule(metric="all-misses"))
    excess = check.judge("me", [me])
    assert excess is not None and excess >= 20
    # How the sum splits between misses and typos moves nothing.
    for split in ((200, 52, 0), (200, 0, 52)):
        assert check.judge("me", [tally_of({**PEERS, "me": split})]) == excess


def lookups_of(counts: dict[str, int]) -> list[Any]:
    """One bucket's flat fields from employee → lookups (nothing else counted)."""
    flat: list[Any] = []
    for who, lookups in counts.items():
        flat += [f"{who}|l", lookups]
    return flat


def volume(**overrides: Any) -> PeerRule:
    """A ``lookups`` rule over today (the open bucket) and yesterday."""
    settings: dict[str, Any] = {"metric": "lookups", "window": "2d", "min_outcomes": 20}
    return rule(**{"spread": 5.0, **settings, **overrides})


BUSY = {f"p{i}": lookups for i, lookups in enumerate((60, 55, 70, 65, 50, 62, 58, 66, 71, 49))}
"""Ten clerks' lookups of a day: median 61, 1.4826 MAD about 8."""


def day(counts: dict[str, int]) -> list[list[Any]]:
    """A whole day's lookups (the closed bucket) and an open one with nothing yet."""
    return [lookups_of(counts), []]


def test_the_lookups_metric_compares_a_day_s_count_with_the_peers_counts() -> None:
    """``metric = "lookups"``: a clerk with four times the peers' lookups yesterday stands out
    by the excess over their median (misses play no part: a list of real customers misses
    nothing); twice the median passes where ``min_ratio`` asks for two and a half, and a busy
    clerk one and a half times, however small the spread, passes where the deviations are not
    met."""
    check = PeerCheck(volume(min_ratio=2.5))
    assert check.judge("me", day({**BUSY, "me": 244})) == 244 - 61
    assert check.judge("me", day({**BUSY, "me": 122})) is None  # 2x: under min_ratio
    lenient = PeerCheck(volume())
    assert lenient.judge("me", day({**BUSY, "me": 122})) == 122 - 61
    assert lenient.judge("me", day({**BUSY, "me": 92})) is None  # within 5 deviations
    # The peers' spread widens chance: clerks of 30 to 120 lookups make 150 one of them.
    varied = {f"p{i}": n for i, n in enumerate((30, 45, 60, 61, 75, 90, 120, 35, 100, 50))}
    assert lenient.judge("me", day({**varied, "me": 150})) is None
    # Peers below min_outcomes are no baseline: with too few past it, the rule is silent.
    quiet = {f"p{i}": 10 for i in range(10)} | {"p10": 60}
    assert lenient.judge("me", day({**quiet, "me": 300})) is None


def test_a_lookups_rule_judges_the_last_whole_day_not_the_one_still_open() -> None:
    """At noon a clerk who opened the store has twice the lookups of colleagues whose shift
    began at eleven: a day still open is no baseline, so the open bucket is not judged, however
    far ahead the clerk is in it; the whole day before is, against the peers' whole day (a
    launch day lifts everyone's)."""
    check = PeerCheck(volume(min_ratio=2.5))
    late_starters = lookups_of({**{who: 25 for who in BUSY}, "me": 250})
    assert check.judge("me", [lookups_of({**BUSY, "me": 61}), late_starters]) is None
    assert check.judge("me", [lookups_of({**BUSY, "me": 250}), []]) == 250 - 61
    launch = {who: 3 * n for who, n in BUSY.items()}
    assert check.judge("me", [lookups_of({**launch, "me": 250}), []]) is None


def test_a_lookups_rule_is_not_moved_by_misses_and_a_misses_rule_not_by_lookups() -> None:
    """The two kinds of count are apart: a clerk whose share of misses is the peers' but
    whose lookups are four times theirs is a lookups rule's, not a misses rule's; and the
    other way round."""
    shares = {who: (100, 10, 0) for who in BUSY}
    many = tally_of({**shares, "me": (100, 10, 0)}) + lookups_of({**BUSY, "me": 250})
    assert PeerCheck(volume()).judge("me", [many, []]) is not None
    assert PeerCheck(rule(min_outcomes=20)).judge("me", [many, []]) is None
    missing = tally_of({**shares, "me": (100, 60, 0)}) + lookups_of({**BUSY, "me": 61})
    assert PeerCheck(volume()).judge("me", [missing, []]) is None
    assert PeerCheck(rule(min_outcomes=20)).judge("me", [missing, []]) is not None


def test_fixed_floors_hold_beside_the_peers() -> None:
    """A rule with floors fires only past them, however far above the peers: 50 misses of
    200 numbers (25 %, far above the peers' 10 %) are below a floor of 60 misses, and below a
    floor of 30 % as a share; past both it fires as a plain peer rule does."""
    counts = tally_of({**PEERS, "me": (200, 50, 8)})
    assert PeerCheck(rule(min_count=60)).judge("me", [counts]) is None
    assert PeerCheck(rule(min_share=0.3)).judge("me", [counts]) is None
    plain = PeerCheck(rule()).judge("me", [counts])
    assert plain is not None
    assert PeerCheck(rule(min_count=40, min_share=0.2)).judge("me", [counts]) == plain


def test_peers_above_a_floor_lift_it_and_too_few_peers_leave_the_floor_alone() -> None:
    """Where every clerk of the group is above a fixed share (stores of few regulars: most new
    numbers are walk-ins), one like them is not flagged for being above it; with too few peers
    to compare with, the floors decide alone (a floor is never taken away)."""
    floored = PeerCheck(rule(min_count=20, min_share=0.15))
    walk_ins = {"p1": (200, 40, 0), "p2": (180, 38, 0), "p3": (220, 42, 0), "p4": (150, 31, 0)}
    assert floored.judge("me", [tally_of({**walk_ins, "me": (200, 44, 0)})]) is None
    alone = {"p1": (200, 40, 0), "me": (200, 44, 0)}
    assert floored.judge("me", [tally_of(alone)]) == 44 - 20
    assert PeerCheck(rule()).judge("me", [tally_of(alone)]) is None
    assert PeerCheck(rule(min_count=50, min_share=0.15)).judge("me", [tally_of(alone)]) is None


def test_rules_over_the_same_peers_share_one_tally_read_for_the_longest_window() -> None:
    """Reads cover the longest window's buckets, oldest first, under the group's hash tag;
    once a window's closed buckets are added up, a judgement reads only the current one."""
    week, three_days = PeerCheck(rule(window="7d")), PeerCheck(rule(window="3d"))
    tally = PeerTally("lp", [three_days, week])
    now = 10 * 86_400.0 + 5
    batch = Batch()
    assert tally.add_reads(batch, "s:gangnam", now, [three_days, week]) == 7
    assert [op[1] for op in batch.ops] == [
        f"lp:{{s:gangnam}}:peers:86400:{d}" for d in range(4, 11)
    ]
    day = tally_of({**PEERS})
    buckets = [day] * 7
    assert tally.totals(week, "s:gangnam", now, buckets)["p1"] == [140, 56, 1400, 0]
    assert tally.totals(three_days, "s:gangnam", now, buckets)["p1"] == [60, 24, 600, 0]

    again = Batch()
    assert tally.add_reads(again, "s:gangnam", now, [three_days, week]) == 1
    assert [op[1] for op in again.ops] == ["lp:{s:gangnam}:peers:86400:10"]
    today = tally_of({"p1": (1, 1, 0)})
    assert tally.totals(week, "s:gangnam", now, [today])["p1"] == [121, 48, 1201, 0]
    # A new day: the bucket that has just closed and the open one; the week's sums move on.
    tomorrow = Batch()
    assert tally.add_reads(tomorrow, "s:gangnam", now + 86_400, [three_days, week]) == 2
    assert [op[1] for op in tomorrow.ops] == [f"lp:{{s:gangnam}}:peers:86400:{d}" for d in (10, 11)]
    closing = tally_of({**PEERS, "p9": (5, 1, 0)})
    moved = tally.totals(week, "s:gangnam", now + 86_400, [closing, today])
    afresh = PeerTally("lp", [three_days, week]).totals(
        week, "s:gangnam", now + 86_400, [day] * 5 + [closing, today]
    )
    assert moved == afresh and moved["p9"] == [1, 0, 5, 0]


class Days:
    """A group's tally buckets over many days, as a store keeps them: bucket → flat fields."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.buckets: dict[int, list[Any]] = {}

    def fill(self, bucket: int) -> None:
        """A day of some of 30 clerks (who comes and goes), a typo forgiven across midnight
        now and then (a miss taken back in the next bucket: a negative count)."""
        flat: list[Any] = []
        for n in range(30):
            if self.rng.random() < 0.3:
                continue
            who = f"c{n}"
            if self.rng.random() < 0.05:
                flat += [f"{who}|m", -1, f"{who}|t", 1]
                continue
            outcomes = self.rng.randint(1, 200)
            flat += [f"{who}|o", outcomes, f"{who}|m", self.rng.randint(0, outcomes // 5)]
            if self.rng.random() < 0.5:
                flat += [f"{who}|t", self.rng.randint(0, 3), f"{who}|l", 10 * outcomes]
        self.buckets[bucket] = flat

    def read(self, batch: Batch) -> list[list[Any]]:
        """What a store answers for the ``fields`` a batch asked for."""
        return [self.buckets.get(int(op[1].rsplit(":", 1)[1]), []) for op in batch.ops]


def test_sums_moved_on_bucket_by_bucket_are_the_sums_added_up_afresh() -> None:
    """Judged every day, some days skipped, a tally reads the bucket that has just closed and
    the open one (more after a day without a judgement), and every window's sums and every
    cusum rule's days are what a tally reading each whole window finds."""
    checks = [
        PeerCheck(rule(name="two", window="2d")),
        PeerCheck(rule(name="four", window="4d")),
        PeerCheck(rule(name="week", window="7d")),
        PeerCheck(rule(name="month", window="28d")),
        cusum(name="daily", window="7d"),
    ]
    tally = PeerTally("lp", checks)
    store = Days(seed=5)
    widths: list[int] = []
    for day in range(100, 190):
        now = day * 86_400.0 + 3_600
        store.fill(day)
        if day % 9 == 4:
            continue  # nobody of the group judged that day
        batch = Batch()
        widths.append(tally.add_reads(batch, "r:a", now, checks))
        reads = store.read(batch)
        afresh = PeerTally("lp", checks)
        whole = Batch()
        assert afresh.add_reads(whole, "r:a", now, checks) == 28
        whole_reads = store.read(whole)
        for check in checks:
            if check.cusum:
                assert tally.days(check, "r:a", now, reads) == afresh.days(
                    check, "r:a", now, whole_reads
                ), (day, check.rule.name)
            else:
                assert tally.totals(check, "r:a", now, reads) == afresh.totals(
                    check, "r:a", now, whole_reads
                ), (day, check.rule.name)
        # A second judgement the same day reads the open bucket alone.
        assert tally.add_reads(Batch(), "r:a", now, checks) == 1
    assert widths[0] == 28  # the first judgement reads the longest window
    assert widths.count(2) > 60 and max(widths[1:]) == 3  # the day after a day skipped: 3
    # What the tally keeps is bounded by its longest window, however many days go by.
    assert len(tally._days["r:a"]) <= 28
    assert all(len(kept) <= 2 for kept in tally._closed.values())


def test_a_bucket_read_again_after_a_late_write_is_added_up_not_subtracted() -> None:
    """Sums move on by subtracting the bucket that left the window as it was remembered. If
    that bucket was forgotten (the memory full) and read again after an instance whose clock
    was behind wrote to it, it may name a clerk the sums never counted: the window's days are
    added up instead, never a clerk's counts taken below what was counted (nor a crash)."""
    week = PeerCheck(rule(window="7d"))
    tally = PeerTally("lp", [week])
    store = Days(seed=9)
    for day in range(90, 101):
        store.fill(day)
    first = Batch()
    tally.add_reads(first, "r:a", 100 * 86_400.0, [week])
    tally.totals(week, "r:a", 100 * 86_400.0, store.read(first))
    # Bucket 94 leaves the week tomorrow; as read again after a late write it names a clerk
    # the sums never saw (what a forgotten, re-read bucket can hold).
    store.buckets[94] = [*store.buckets[94], "late|o", 2]
    tally._days["r:a"][94] = PeerTally("lp", [week])._day("r:a", 94, 95, [store.buckets[94], []])
    store.fill(101)
    tomorrow = Batch()
    tally.add_reads(tomorrow, "r:a", 101 * 86_400.0, [week])
    moved = tally.totals(week, "r:a", 101 * 86_400.0, store.read(tomorrow))
    whole = Batch()
    afresh = PeerTally("lp", [week])
    afresh.add_reads(whole, "r:a", 101 * 86_400.0, [week])
    assert moved == afresh.totals(week, "r:a", 101 * 86_400.0, store.read(whole))
    assert "late" not in moved


def cusum(**overrides: Any) -> PeerCheck:
    settings: dict[str, Any] = {"test": "cusum", "rate": 3.0, "threshold": 8.0, "min_outcomes": 20}
    settings.update(overrides)
    return PeerCheck(rule(**settings))


def week(own: list[tuple[int, int]]) -> list[dict[str, list[int]]]:
    """Days of peers like PEERS / 10 (a tenth of a miss share each), with the employee's
    (outcomes, misses) per day; the last day is the open one."""
    days = []
    for outcomes, misses in own:
        day = {who: [m // 10 * 1 + 2, 0, o // 10 + 20] for who, (o, m, _) in PEERS.items()}
        day["me"] = [misses, 0, outcomes]
        days.append(day)
    return days


def test_the_sequential_test_flags_a_rise_that_started_mid_window() -> None:
    """Five honest days, then four days with about four misses a day more than the peers'
    share predicts: Page's test passes its threshold; a window's sum would still hold the
    honest days against it."""
    honest = [(40, 4)] * 5
    assert cusum().judge_days("me", week([*honest, (40, 4)])) is None
    # The peers' median share is 0.0905, so 44 lookups predict 3.98 misses; a day of eleven
    # is log(1 + 3 / 3.98) x 11 - 3 = 3.19 nats of evidence, four such days 12.8.
    fired = cusum().judge_days("me", week([*honest, *[(44, 11)] * 4]))
    assert fired == 12
    # Two misses a day above chance is less than the rise looked for: no evidence piles up.
    assert cusum().judge_days("me", week([*honest, *[(44, 6)] * 4])) is None


def test_the_sequential_test_forgets_days_that_point_the_other_way() -> None:
    """An honest day with few misses takes the statistic down to zero, never below: a clerk's
    quiet week is no credit for probing later, and a rise is judged from where it began."""
    quiet = [(40, 0)] * 6
    rise = [(44, 11)] * 4
    assert cusum().judge_days("me", week([*quiet, *rise])) == cusum().judge_days("me", week(rise))


def test_the_open_day_counts_for_the_part_of_a_usual_day_it_has_seen() -> None:
    """Three days of rise leave 9.6 nats. Ten lookups into the next day (a quarter of the
    clerk's usual 44) with one miss are a quarter-day's evidence: -0.15, the statistic stays
    at 9; the same miss at the end of a 40-lookup day is a quiet day (-2.2, down to 7)."""
    rise = [(44, 11)] * 3
    assert cusum(threshold=0.001).judge_days("me", week(rise)) == 9
    assert cusum(threshold=0.001).judge_days("me", week([*rise, (10, 1)])) == 9
    assert cusum(threshold=0.001).judge_days("me", week([*rise, (40, 1)])) == 7


def test_the_sequential_test_needs_peers_each_day() -> None:
    """A day with fewer than min_peers peers above min_outcomes carries no evidence."""
    rise = week([(44, 9)] * 5)
    for day in rise:
        for who in list(day):
            if who != "me":
                day[who][2] = 5  # under min_outcomes
    assert cusum(threshold=0.1).judge_days("me", rise) is None


def test_a_cusum_rule_reads_each_closed_day_once() -> None:
    """The tally remembers closed days one by one for day-by-day rules: the second judgement
    the same day reads only the open bucket, and the days it judges are the ones first read."""
    check = cusum(window="4d")
    tally = PeerTally("lp", [check])
    now = 10 * 86_400.0 + 5
    batch = Batch()
    assert tally.add_reads(batch, "r:seoul", now, [check]) == 4
    first = [tally_of({**PEERS, "me": (200, 20 + d, 0)}) for d in range(4)]
    days = tally.days(check, "r:seoul", now, first)
    assert [day["me"][0] for day in days] == [20, 21, 22, 23]
    again = Batch()
    assert tally.add_reads(again, "r:seoul", now, [check]) == 1
    today = tally_of({"me": (210, 30, 0)})
    assert [day["me"][0] for day in tally.days(check, "r:seoul", now, [today])] == [20, 21, 22, 30]


def test_judging_the_open_bucket_apart_from_the_closed_ones_judges_their_sum() -> None:
    """``judge_window`` reads the closed buckets and the open one apart (no summed copy of a
    region): on random peer groups, where some clerks have only closed or only open counts,
    it gives every verdict that judging the sum gives, for each metric."""
    rng = random.Random(20261204)
    verdicts = set()
    for trial in range(400):
        closed: dict[str, list[int]] = {}
        current: dict[str, list[int]] = {}
        for who in (f"c{i}" for i in range(rng.randint(2, 14))):
            share = rng.choice((0.05, 0.1, 0.12, 0.3))
            for part in rng.sample((closed, current), rng.randint(1, 2)):
                lookups = rng.randint(0, 300)
                part[who] = [
                    int(lookups * share),
                    int(lookups * share / 3),
                    lookups,
                    lookups + rng.randint(0, lookups + 5),
                ]
        employee = rng.choice([*closed, *current])
        summed = {who: list(counts) for who, counts in closed.items()}
        for who, counts in current.items():
            mine = summed.setdefault(who, [0, 0, 0, 0])
            for slot in range(4):
                mine[slot] += counts[slot]
        for metric in ("misses", "typos", "all-misses"):  # lookups: the open bucket alone
            check = PeerCheck(rule(metric=metric, limit=trial % 4))
            verdict = check.judge_window(employee, closed, current)
            assert verdict == check.judge_totals(employee, summed), (trial, metric)
            verdicts.add(verdict is None)
    assert verdicts == {True, False}  # both kinds of verdict were compared


def test_a_group_s_statistics_serve_a_minute_and_the_employee_s_own_counts_are_read_fresh() -> None:
    """The first judgement of a minute computes the group's statistics; judgements within the
    minute reuse them with the employee's counts as they are then; a minute later, or in a new
    bucket, they are computed again."""
    check = PeerCheck(rule(window="1d", min_peers=3, min_outcomes=50))
    tally = PeerTally("lp", [check])
    now = 10 * 86_400.0 + 3600
    calm = {"p1": (200, 20, 0), "p2": (180, 18, 0), "p3": (220, 22, 0), "me": (200, 20, 0)}
    assert tally.fired([check], "me", "s:a", now, [tally_of(calm)]) == [None]
    # Within the minute every peer's share triples, and so does the employee's: judged
    # against the statistics of a few seconds ago, the employee stands out.
    busy = {"p1": (200, 60, 0), "p2": (180, 54, 0), "p3": (220, 66, 0), "me": (200, 60, 0)}
    [verdict] = tally.fired([check], "me", "s:a", now + 30, [tally_of(busy)])
    assert verdict is not None and verdict > 30
    # A minute on (or the next day's bucket) the statistics are the group's of now again.
    assert tally.fired([check], "me", "s:a", now + BASELINE_SECONDS, [tally_of(busy)]) == [None]
    tally.fired([check], "me", "s:a", now + 86_400, [tally_of(calm)])
    assert tally.fired([check], "me", "s:a", now + 86_430, [tally_of(calm)]) == [None]


def test_reused_statistics_judge_as_the_window_does_on_the_data_they_came_from() -> None:
    """Right after they were computed, reused statistics give the employee the verdict that
    judging the whole window gives: the median leaves the employee out (their spread is the
    group's with them in it, which moves no verdict here)."""
    rng = random.Random(7)
    agree = fired = 0
    for trial in range(300):
        counts = {f"c{i}": (n := rng.randint(60, 400), int(n * 0.1), 0) for i in range(12)}
        outcomes = rng.randint(60, 400)
        share = rng.choice((0.1, 0.12, 0.2, 0.3))
        counts["me"] = (outcomes, int(outcomes * share), 0)
        check = PeerCheck(rule(window="1d", limit=2))
        tally = PeerTally("lp", [check])
        now = 10 * 86_400.0 + trial
        # Someone else's judgement computes the statistics (and judges no one: no counts).
        assert tally.fired([check], "other", "s:a", now, [tally_of(counts)]) == [None]
        [reused] = tally.fired([check], "me", "s:a", now, [tally_of(counts)])
        [window] = PeerTally("lp", [check]).fired([check], "me", "s:a", now, [tally_of(counts)])
        agree += reused == window
        fired += window is not None
    assert agree == 300 and 0 < fired < 300


def test_a_fresh_baseline_judges_as_the_window_does_exactly() -> None:
    """The first judgement of a minute judges from the statistics it has just computed rather
    than walking the group again: the same verdict, and the same ``short``, whoever is judged
    (a peer, a clerk below ``min_outcomes``, one with numbers only today or only before, one
    with none), in groups big and too small, for every metric."""
    rng = random.Random(11)
    outcomes: dict[tuple[bool, bool], int] = {}
    for trial in range(2000):
        metric = rng.choice(("misses", "typos", "all-misses"))
        check = PeerCheck(
            rule(
                metric=metric,
                min_peers=rng.choice((2, 3, 8)),
                min_outcomes=rng.choice((5, 20, 50)),
                limit=rng.choice((0, 2)),
                spread=rng.uniform(0.5, 3.0),
                min_spread=0.0,
                **rng.choice(({}, {"min_count": 5}, {"min_share": 0.1})),
            )
        )
        closed: dict[str, list[int]] = {}
        current: dict[str, list[int]] = {}
        for n in range(rng.randint(0, 14)):
            share = rng.choice((0.05, 0.1, 0.1, 0.3))
            for part in (closed, current):
                if rng.random() < 0.7:
                    looked = rng.randint(1, rng.choice((12, 120)))
                    missed = int(looked * share * rng.uniform(0.5, 1.5))
                    part[f"c{n}"] = [missed, rng.randint(0, 3), looked, 0]
        employee = rng.choice([*closed, *current, "nobody"])
        tally = PeerTally("lp", [check])
        baseline = check.baseline(closed, current, 5, 100.0 + trial)
        fresh = check.judge_fresh(employee, closed, current, baseline)
        fresh_short = check.short
        window = check.judge_window(employee, closed, current)
        assert (fresh, fresh_short) == (window, check.short), (trial, employee)
        outcomes[(window is None, check.short)] = outcomes.get((window is None, check.short), 0) + 1
        # As the tally judges it, the first judgement of its minute.
        flat = [tally_of_counts(closed), tally_of_counts(current)]
        assert tally.fired([check], employee, "s:a", 86_400.0 * 6, flat) == [window], trial
    assert len(outcomes) >= 3  # fired, not fired, and short groups were all compared


def tally_of_counts(counts: dict[str, list[int]]) -> list[Any]:
    """One bucket's flat fields from employee → [misses, typos, outcomes, lookups]."""
    flat: list[Any] = []
    for who, (misses, typos, outcomes, _) in counts.items():
        flat += [f"{who}|m", misses, f"{who}|t", typos, f"{who}|o", outcomes]
    return flat


def test_the_median_without_one_value_is_the_median_of_the_rest() -> None:
    rng = random.Random(3)
    for size in range(2, 40):
        values = sorted(rng.choice((0.1, 0.2, 0.25, 0.3, 0.5)) for _ in range(size))
        left_out = rng.choice(values)
        rest = list(values)
        rest.remove(left_out)
        assert _median_without(values, left_out) == _median(rest)
        assert _median_without(values, None) == _median(values)


def test_the_deviations_median_is_the_one_sorting_them_gives() -> None:
    """``_deviation_median`` merges the walks down and up from the centre instead of sorting
    the deviations: the very same float, for groups odd and even, with ties, with the centre
    inside, outside and on a value (a rule's median is at least ``1 / min_outcomes``)."""
    rng = random.Random(5)
    for trial in range(3000):
        values = [
            rng.choice((rng.random(), rng.choice((0.0, 0.1, 0.25)), rng.randint(0, 9) / 9))
            for _ in range(rng.randint(1, 40))
        ]
        ordered = sorted(values)
        centre = rng.choice((_median(values), rng.uniform(-0.2, 1.2), rng.choice(values)))
        expected = _median([abs(value - centre) for value in values])
        assert _deviation_median(ordered, centre) == expected, (trial, ordered, centre)


def test_chance_from_the_sorted_sizes_is_the_median_of_the_quotients() -> None:
    """What chance gives the peers' shares, from their sorted numbers of lookups: the same
    float as the median of every quotient, whatever the sign of ``median * (1 - median)``."""
    rng = random.Random(6)
    check = PeerCheck(rule())
    for trial in range(3000):
        sizes = sorted(rng.choice((rng.randint(1, 400), 50, 60)) for _ in range(rng.randint(1, 30)))
        median = rng.choice((0.0, 1.0, rng.random(), 1.0 + rng.random(), 1 / 7))
        expected = _median([median * (1.0 - median) / n for n in sizes])
        assert check._noise(median, sizes) == expected, (trial, sizes, median)
