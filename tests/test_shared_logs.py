"""Rules keeping the same log share one, and decide exactly as if each kept its own.

The equivalence is checked on every store (memory, Redis, Cluster) over a fortnight of two
clerks' lookups that make every shared rule fire: walk-ins, typos retyped (forgiven against
relative budgets), short sequential runs. One guard shares logs from the start, one never does,
and one starts without and is replaced midway by one that shares (an upgrade), on one store
under three key prefixes.
"""

from __future__ import annotations

import random

from lookup_proxy.clock import ManualClock
from lookup_proxy.employee import Employee
from lookup_proxy.guard.decision import Decision
from lookup_proxy.guard.engine import Guard
from lookup_proxy.guard.known_numbers import key_id
from lookup_proxy.guard.memory import MemoryStore
from lookup_proxy.guard.primitives import GuardStore
from lookup_proxy.guard.rules import BlockCheck, DistinctCheck, MissesCheck, SequentialCheck
from lookup_proxy.policy import load_policy
from tests.test_guard_conformance import ALICE, BOB, Desk, make_policy, number

SHARING = """
[[rules]]
name = "distinct-hour"
kind = "distinct"
window = "1h"
limit = 30

[[rules]]
name = "sequential"
kind = "sequential"
window = "1h"
distance = 20
limit = 3
action = "flag"

[[rules]]
name = "random-typing"
kind = "misses"
window = "1h"
limit = 4
ratio = 0.3
typo_window = "60s"
typo_limit = 3
typo_budget = "1d"
action = "flag"

[[rules]]
name = "weekly-misses"
kind = "misses"
window = "7d"
limit = 400
flag_limit = 60
typo_window = "60s"
typo_limit = 30
typo_share = 0.05
typo_floor = 1
typo_budget = "7d"
action = "flag"
exempt_reasons = ["NEW_SUBSCRIPTION"]

[[rules]]
name = "monthly-misses"
kind = "misses"
window = "28d"
limit = 600
flag_limit = 100
typo_window = "60s"
typo_limit = 100
typo_share = 0.05
typo_floor = 2
typo_budget = "28d"
action = "flag"
exempt_reasons = ["NEW_SUBSCRIPTION"]

[[rules]]
name = "slow-probe"
kind = "misses"
window = "7d"
limit = 8
ratio = 0.3
action = "flag"

[[rules]]
name = "block-coarse"
kind = "block"
window = "1d"
block_digits = 8
limit = 4
action = "flag"

[[rules]]
name = "block-fine"
kind = "block"
window = "1d"
block_digits = 9
limit = 3
action = "flag"

[[rules]]
name = "store-block"
kind = "block"
scope = "store"
window = "7d"
block_digits = 8
limit = 8
member_min = 2
action = "flag"

[[rules]]
name = "store-block-fine"
kind = "block"
scope = "store"
window = "7d"
block_digits = 9
limit = 4
member_min = 2
action = "flag"

# Flags only: escalation notes flag-days once per guard instance, so a guard replaced midway
# (the upgrade below) would judge its flag-days again, with or without shared logs.
[escalation]
enabled = false
"""

DAY = 86_400


def _guard(desk: Desk, shared: bool) -> Guard:
    return Guard(desk.guard.policy, desk.guard.store, desk.clock, desk.metrics, shared)


def _day(rng: random.Random, day: int) -> list[tuple[float, Employee, str, str, bool]]:
    """One day of lookups (seconds, clerk, number, reason, found), in time order."""
    events: list[tuple[float, Employee, str, str, bool]] = []
    for clerk in (ALICE, BOB):
        at = day * DAY + rng.randrange(3600)
        for _ in range(36):
            at += rng.randrange(60, 900)
            roll = rng.random()
            customer = number(rng.randrange(10**6), base=1010000000 + rng.randrange(90) * 10**6)
            if roll < 0.12:  # a walk-in who is not a customer
                events.append((at, clerk, customer, "NEW_SUBSCRIPTION", False))
            elif roll < 0.22:  # a miss under a billing question
                events.append((at, clerk, customer, "BILLING_INQUIRY", False))
            elif roll < 0.40:  # a typo, retyped
                typo = customer[:-1] + str((int(customer[-1]) + 1) % 10)
                events.append((at, clerk, typo, "BILLING_INQUIRY", False))
                at += rng.randrange(5, 50)
                events.append((at, clerk, customer, "BILLING_INQUIRY", True))
            elif roll < 0.43:  # a short run of neighbouring numbers
                for step in range(5):
                    events.append(
                        (at + step * 30, clerk, number(step * 3), "BILLING_INQUIRY", False)
                    )
                at += 150
            else:
                events.append((at, clerk, customer, "BILLING_INQUIRY", True))
    return sorted(events, key=lambda event: event[0])


def _seen(decision: Decision) -> tuple[bool, str | None, tuple[str, ...]]:
    return decision.allowed, decision.rule, decision.flags


async def test_shared_logs_decide_as_separate_logs_from_the_start_and_after_an_upgrade(
    store: GuardStore,
) -> None:
    """Three guards on one store (never sharing, sharing, sharing from day 7) agree on every
    decision of a fortnight in which every rule that shares a log fires."""
    never = Desk(make_policy(SHARING, tail='[store]\nkey_prefix = "never"\n'), store)
    never.guard = _guard(never, shared=False)
    always = Desk(make_policy(SHARING, tail='[store]\nkey_prefix = "always"\n'), store)
    upgraded = Desk(make_policy(SHARING, tail='[store]\nkey_prefix = "upgraded"\n'), store)
    upgraded.guard = _guard(upgraded, shared=False)
    rng = random.Random(12)
    fired: set[str] = set()
    for day in range(14):
        if day == 7:
            upgraded.guard = _guard(upgraded, shared=True)
        for at, clerk, looked_up, reason, found in _day(rng, day):
            seen = []
            for desk in (never, always, upgraded):
                desk.at(at)
                seen.append(_seen(await desk.look(clerk, looked_up, reason, found=found)))
            assert seen[0] == seen[1] == seen[2], (day, at, clerk.id, looked_up, seen)
            fired.update(seen[0][2])
    assert fired >= {
        *("sequential", "random-typing", "weekly-misses", "monthly-misses", "slow-probe"),
        *("block-coarse", "block-fine", "store-block", "store-block-fine"),
    }


async def test_rules_sharing_a_log_keep_one_key(store: GuardStore) -> None:
    """The sequential rule keeps no numbers of its own, nor the finer block rule windows of its
    own (two numbers of two of its blocks, one of the coarser rule's); only the longest
    window's rule keeps found numbers and numbers looked up. (``misses:recent`` is the
    employee's recent misses, which every misses rule screens typos with: guard/engine.py;
    ``known-numbers:<the store key's id>`` the numbers they met, of which only new ones grow a
    typo budget.)"""
    desk = Desk(make_policy(SHARING), store)
    desk.at(0)
    await desk.look(ALICE, number(1), found=False)
    desk.at(20)
    await desk.look(ALICE, number(500), found=True)
    keys = sorted(key.removeprefix("lp:{e:alice}:") for key in await store.keys("lp:{e:alice}:*"))
    assert keys == [
        "block-coarse:01012340",
        "distinct-hour",
        f"known-numbers:{key_id(store.numbers_key)}",
        "misses:recent",
        "monthly-misses:miss",
        "monthly-misses:numbers",
        "random-typing:miss",
        "slow-probe:found",
        "slow-probe:miss",
        "weekly-misses:miss",
    ]


def test_the_shipped_policy_shares_the_logs_its_rules_keep_alike() -> None:
    guard = Guard(load_policy("config/policy.toml"), MemoryStore(), ManualClock(0))
    by_name = {check.rule.name: check for check in guard.checks}
    sequential = by_name["sequential-scan"]
    assert isinstance(sequential, SequentialCheck)
    distinct = by_name["distinct-hour"]
    assert sequential.log_name == "distinct-hour"
    # The sequential rule asks for nothing: the distinct rule's add answers its numbers.
    assert sequential.width == 0 and sequential.leader is distinct
    assert isinstance(distinct, DistinctCheck) and distinct.cap == 81 and distinct.listed
    # The chain's hundred-number blocks are counted in its thousand-number blocks' windows;
    # the region's and the employee's own blocks differ in scope and window.
    blocks = {n: c for n, c in by_name.items() if isinstance(c, BlockCheck)}
    assert {n: (c.leader and c.leader.rule.name, c.listed) for n, c in blocks.items()} == {
        "block-scan": (None, False),
        "region-block": (None, False),
        "chain-block": (None, True),
        "chain-block-hundred": ("chain-block", False),
    }
    assert blocks["chain-block"].cap == 248 and blocks["chain-block-hundred"].width == 0
    found = {n: c for n, c in by_name.items() if isinstance(c, MissesCheck) and c.counts_found}
    # The one ratio rule keeps its own log of found numbers (slow-probe, which shared it, is
    # a peer rule since 2026-12-06).
    assert {n: (c.found_name, c.writes_found) for n, c in found.items()} == {
        "random-typing": ("random-typing", True),
    }
    budgets = {n: c for n, c in by_name.items() if isinstance(c, MissesCheck) and c.typo_share}
    assert {n: (c.numbers_name, c.writes_numbers) for n, c in budgets.items()} == {
        "unexplained-misses": ("unexplained-misses-month", False),
        "unexplained-misses-month": ("unexplained-misses-month", True),
    }


def test_rules_learning_from_different_lookups_keep_their_own_logs() -> None:
    """A different exemption or window is a different log."""
    policy = make_policy(
        SHARING.replace('window = "1h"\ndistance', 'window = "2h"\ndistance').replace(
            "limit = 8\nratio = 0.3",
            'limit = 8\nratio = 0.3\nexempt_reasons = ["NEW_SUBSCRIPTION"]',
        )
    )
    guard = Guard(policy, MemoryStore(), ManualClock(0))
    by_name = {check.rule.name: check for check in guard.checks}
    sequential = by_name["sequential"]
    assert isinstance(sequential, SequentialCheck) and sequential.log_name == "sequential"
    for name in ("random-typing", "slow-probe"):
        check = by_name[name]
        assert isinstance(check, MissesCheck)
        assert (check.found_name, check.writes_found) == (name, True)


def test_a_walk_in_reason_is_a_different_log_of_numbers() -> None:
    """Two typo budgets alike but for a walk-in reason (neither exempts a reason) keep their
    own logs of numbers: the logs' keys differ with the rules' walk-in reasons (each rule's
    own log, and the shared ones, are grouped by them)."""
    policy = make_policy(
        SHARING.replace(
            'typo_budget = "28d"\naction = "flag"\nexempt_reasons = ["NEW_SUBSCRIPTION"]',
            'typo_budget = "28d"\naction = "flag"\nwalk_in_reasons = ["NEW_SUBSCRIPTION"]',
        ).replace(
            'typo_budget = "7d"\naction = "flag"\nexempt_reasons = ["NEW_SUBSCRIPTION"]',
            'typo_budget = "7d"\naction = "flag"',
        )
    )
    guard = Guard(policy, MemoryStore(), ManualClock(0))
    by_name = {check.rule.name: check for check in guard.checks}
    for name in ("weekly-misses", "monthly-misses"):
        check = by_name[name]
        assert isinstance(check, MissesCheck)
        assert (check.numbers_name, check.writes_numbers) == (name, True)
