"""Rules that would keep the same log keep one: fewer structures per employee (issue 12).

Every window a lookup adds to costs the store about three commands, and the shipped policy had
several rules keeping the same log under their own names: a distinct rule and a sequential rule
both remember the numbers of the last hour, two ratio rules both remember found numbers (for an
hour and for a week), two typo budgets both remember the numbers looked up (for a week and for
four weeks). A log is shared when what it holds cannot differ between the rules: the same
members, learnt for the same lookups (scope, reasons, exempt and walk-in reasons and roles alike).

- A sequential rule reads the numbers of a distinct rule with the same window, which then keeps
  as many numbers as the sequential rule would have (its cap, if larger).
- Block rules with the same window count in the windows of the one with the fewest digits
  (a chain's 010-XXXX-X blocks hold its 010-XXXX-XX blocks): its add answers the block's
  members, and each finer rule counts those of its own block. It keeps the largest of their
  caps: a finer block's members are crowded out of it only when the coarser block holds more
  than that, by which time the coarser rule fires.
- Misses rules with a ratio share one log of found numbers; misses rules with a relative typo
  budget share one log of numbers looked up. Each rule still counts its own window in it. Logs
  of misses stay per rule: forgiving a typo removes the miss from one rule's log only, under
  that rule's budget.

The shared log is kept under the name of the rule with the longest window (the first such in
the policy; for blocks, of equal windows, the rule with the fewest digits), so what it held
before sharing already covers every shorter window or finer block reading it: an upgrade
loses no counts. Removing or renaming that rule starts the others' counts afresh, as
renaming a rule always did.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from lookup_proxy.guard.rules import BlockCheck, Check, DistinctCheck, MissesCheck, SequentialCheck

Signature = tuple[str, frozenset[str] | None, frozenset[str], frozenset[str], frozenset[str]]

C = TypeVar("C", bound=Check)


def learnt_alike(check: Check) -> Signature:
    """What decides which lookups a rule learns from: two rules alike see the same lookups."""
    rule = check.rule
    reasons = None if rule.reasons is None else frozenset(rule.reasons)
    return (
        rule.scope,
        reasons,
        frozenset(rule.exempt_reasons),
        frozenset(rule.exempt_roles),
        frozenset(getattr(rule, "walk_in_reasons", ())),
    )


def share_logs(checks: Sequence[Check]) -> None:
    """Point the checks that can share a log at one kept by another (see the module)."""
    distincts = [c for c in checks if isinstance(c, DistinctCheck)]
    for sequential in (c for c in checks if isinstance(c, SequentialCheck)):
        for distinct in distincts:
            if distinct.window == sequential.window and learnt_alike(distinct) == learnt_alike(
                sequential
            ):
                sequential.follow(distinct)
                break
    blocks = [c for c in checks if isinstance(c, BlockCheck)]
    for coarsest, alike in _groups(blocks, lambda c: -c.digits, alike=lambda c: c.window):
        for finer in alike:
            if finer is not coarsest:
                finer.nest(coarsest)
    misses = [c for c in checks if isinstance(c, MissesCheck)]
    for keeper, group in _groups([c for c in misses if c.counts_found], lambda c: c.window):
        for check in group:
            check.share_found(keeper)
    for keeper, group in _groups([c for c in misses if c.keeps_numbers], lambda c: c.typo_budget):
        for check in group:
            check.share_numbers(keeper)


def _groups(
    checks: list[C],
    keeps: Callable[[C], float],
    alike: Callable[[C], object] = lambda c: None,
) -> list[tuple[C, list[C]]]:
    """Checks learnt alike (and ``alike`` alike), grouped, each group with its keeper: the
    check ``keeps`` ranks highest, the longest window for a log (the first of equals, as
    ``max`` keeps it)."""
    by_signature: dict[tuple[Signature, object], list[C]] = {}
    for check in checks:
        by_signature.setdefault((learnt_alike(check), alike(check)), []).append(check)
    return [(max(group, key=keeps), group) for group in by_signature.values()]
