"""The plan cache (guard/plans.py): what one more employee costs the proxy to keep.

A busy proxy meets thousands of employees; each gets a cached plan per reason. Everything a
plan holds that does not depend on the employee (which rules apply, where their results are)
is one layout shared by every employee with the same reason, roles and (un)known region, so a
new employee adds a handful of objects for the garbage collector to walk, not one per rule.
Decisions through plans are covered by the conformance suite (tests/test_guard_conformance.py).
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from lookup_proxy.clock import ManualClock
from lookup_proxy.employee import Employee
from lookup_proxy.guard.engine import Guard
from lookup_proxy.guard.memory import MemoryStore
from lookup_proxy.policy import load_policy, parse_policy

ALICE = Employee("alice", "gangnam", "seoul", frozenset({"clerk"}))
BOB = Employee("bob", "haeundae", "busan", frozenset({"clerk"}))
NOMAD = Employee("nomad", "gangnam", None, frozenset({"clerk"}))


def shipped() -> Guard:
    return Guard(load_policy("config/policy.toml"), MemoryStore(), ManualClock(0))


def test_employees_alike_share_one_layout_with_keys_of_their_own() -> None:
    guard = shipped()
    alice = guard.plans.plan(ALICE, "BILLING_INQUIRY")
    bob = guard.plans.plan(BOB, "BILLING_INQUIRY")
    assert alice.layout is bob.layout
    names = [rule.check.rule.name for rule in alice.layout.rules]
    assert "region-block" in names and "chain-block" in names
    at = {name: index for index, name in enumerate(names)}
    assert alice.keys[at["burst"]] == "lp:{e:alice}:burst:ticks"
    assert bob.keys[at["burst"]] == "lp:{e:bob}:burst:ticks"
    assert alice.keys[at["region-block"]] == "lp:{r:seoul}:region-block"
    assert bob.keys[at["region-block"]] == "lp:{r:busan}:region-block"
    # The region's tally, and the chain's that the peer rules fall back on (``fallback``).
    assert alice.peer_tags == ("r:seoul", "c") and bob.peer_tags == ("r:busan", "c")


def test_another_reason_or_an_unknown_region_is_another_layout() -> None:
    guard = shipped()
    billing = guard.plans.plan(ALICE, "BILLING_INQUIRY").layout
    corporate = guard.plans.plan(ALICE, "CORPORATE_ACCOUNT").layout
    assert corporate is not billing
    assert "sequential-scan" not in [rule.check.rule.name for rule in corporate.rules]
    nomad = guard.plans.plan(NOMAD, "BILLING_INQUIRY")
    assert nomad.layout is not billing
    assert "region-block" not in [rule.check.rule.name for rule in nomad.layout.rules]
    # No region: no region tally; the peer rules judge against the chain (their fallback),
    # and each is marked once.
    assert nomad.peer_tags == ("c",)
    [(chain, checks)] = nomad.layout.peers
    assert chain.peers == "chain" and all(check.fallback for check in checks)
    assert sorted(c.rule.name for c in nomad.layout.marks) == sorted(c.rule.name for c in checks)
    assert len(nomad.keys) == len(nomad.layout.rules)


def test_a_walk_in_rule_is_asked_alone_only_where_no_other_rule_counts_the_reason_s_misses() -> (
    None
):
    """The shipped unexplained-misses rules count NEW_SUBSCRIPTION's lookups but for its
    walk-ins; random-typing counts those misses, so learning asks the walk-in
    rules with them (``Learning._may_correct``). Without such rules, a walk-in rule is asked
    about every found number."""
    guard = shipped()
    walk_in = guard.plans.plan(ALICE, "NEW_SUBSCRIPTION").layout
    names = [check.rule.name for check, _, _ in walk_in.misses]
    assert {"unexplained-misses", "unexplained-misses-month", "random-typing"} <= set(names)
    assert walk_in.unwatched_walk_ins == ()
    text = Path("config/policy.toml").read_text(encoding="utf-8")
    alone = text.replace(
        'name = "random-typing"', 'name = "random-typing"\nreasons = ["PLAN_CHANGE"]'
    )
    guard = Guard(parse_policy(alone), MemoryStore(), ManualClock(0))
    layout = guard.plans.plan(ALICE, "BILLING_INQUIRY").layout
    assert sorted(c.rule.name for c in layout.unwatched_walk_ins) == [
        "unexplained-misses",
        "unexplained-misses-month",
    ]


def test_a_new_employee_s_plan_adds_three_objects_for_the_collector() -> None:
    """The plan, its keys and its peer tags; the layout and the employee are not its own."""
    guard = shipped()
    guard.plans.plan(ALICE, "BILLING_INQUIRY")
    plan = guard.plans.plan(BOB, "BILLING_INQUIRY")
    shared = _reachable(plan.layout) | _reachable(BOB)
    own = [o for o in _reachable(plan) - shared if gc.is_tracked(_objects[o])]
    assert len(own) <= 3, [type(_objects[o]).__name__ for o in own]


_objects: dict[int, Any] = {}


def _reachable(root: Any) -> set[int]:
    """Ids of the objects reachable from ``root`` (through what the collector sees), modules
    and types left out."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type) or type(obj).__name__ == "module":
            continue
        seen.add(id(obj))
        _objects[id(obj)] = obj
        stack.extend(gc.get_referents(obj))
    return seen
