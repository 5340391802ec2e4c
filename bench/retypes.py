"""Whom honest clerks retype: the data behind a misses rule's ``typo_returning_limit``.

A typo farmer who has read the policy probes a neighbour of a customer's number and retypes
the customer, and the customers whose numbers they know are the ones they met on earlier days.
An honest clerk mistypes the customer at the counter: mostly someone met for the first time,
or met minutes before in the same visit. This script reads a month of lookups and their truth
(``bench/simulate.py`` or real EVENTS.csv), finds every honest retype (a miss followed within
60 s by a found number one digit or one adjacent swap away, as the guard forgives them) and
prints:

- how many retypes were of a customer new to the clerk, first met earlier in the visit (within
  ``--visit``), earlier that day, or on an earlier day;
- per clerk, the most *returning* retypes in any 7 days and in the month, as a rule with a
  returning budget counts them: retypes under a reason the rule counts (``--exempt`` names the
  ones it does not), of a customer not new to the clerk whose first lookup was under a counted
  reason more than ``--visit`` before, or under an exempt reason only (the rule's log of new
  numbers does not have them: the strict side). Set the weekly budget above what honest clerks
  reach.

Usage:
    python bench/retypes.py --events out/evaluate/events-1.csv \\
        --truth out/evaluate/truth-1.csv [--exempt NEW_SUBSCRIPTION] [--visit 1800]
"""

from __future__ import annotations

import argparse
import bisect
import csv
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from lookup_proxy.guard.rules import is_typo_of
from lookup_proxy.simulation.number_space import canonical

TYPO_SECONDS = 60
WEEK = 7 * 86_400
KINDS = ("new", "met in the visit", "met earlier that day", "met on an earlier day")


@dataclass
class Retypes:
    """Honest retypes of a month: counts by kind, and each clerk's returning retypes' times."""

    kinds: Counter[str] = field(default_factory=Counter)
    returning: dict[str, list[float]] = field(default_factory=dict)

    def most_in(self, span: float) -> Counter[int]:
        """Clerks by the most returning retypes they made within any ``span`` seconds."""
        most: Counter[int] = Counter()
        for times in self.returning.values():
            most[
                max(
                    (bisect.bisect_right(times, t + span) - i for i, t in enumerate(times)),
                    default=0,
                )
            ] += 1
        return most


Lookup = tuple[float, str, bool, str]
"""When, the canonical number, found, the reason."""


def honest_lookups(events: Path, truth: Path) -> dict[str, list[Lookup]]:
    """Per honest clerk (``actor`` honest, no threat, in the truth's rows), their lookups in
    time order."""
    honest_rows: set[int] = set()
    with truth.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["actor"] == "honest" and not row["threat"]:
                honest_rows.add(int(row["row"]))
    clerks: dict[str, list[Lookup]] = defaultdict(list)
    with events.open(newline="") as handle:
        for index, row in enumerate(csv.DictReader(handle), 1):
            if index in honest_rows:
                at = datetime.fromisoformat(row["timestamp"]).timestamp()
                number = canonical(row["number"])
                clerks[row["employee"]].append((at, number, row["found"] == "true", row["reason"]))
    for lookups in clerks.values():
        lookups.sort()
    return clerks


def classify(clerks: dict[str, list[Lookup]], exempt: frozenset[str], visit: float) -> Retypes:
    """Every honest retype by kind, and each clerk's returning retypes (see the module)."""
    retypes = Retypes()
    for clerk, lookups in clerks.items():
        first: dict[str, float] = {}
        dated: dict[str, float] = {}
        """First lookups the rule's log of new numbers holds: those under a counted reason."""
        recent: list[tuple[float, str]] = []
        returning: list[float] = []
        for at, number, found, reason in lookups:
            recent = [(t, miss) for t, miss in recent if at - t <= TYPO_SECONDS]
            if not found:
                recent.append((at, number))
            elif any(is_typo_of(miss, number) for _, miss in recent):
                met = first.get(number)
                if met is None:
                    retypes.kinds[KINDS[0]] += 1
                elif at - met <= visit:
                    retypes.kinds[KINDS[1]] += 1
                elif _day(at) == _day(met):
                    retypes.kinds[KINDS[2]] += 1
                else:
                    retypes.kinds[KINDS[3]] += 1
                if met is not None and reason not in exempt:
                    since = dated.get(number)
                    if since is None or at - since > visit:
                        returning.append(at)
            if number not in first:
                first[number] = at
                if reason not in exempt:
                    dated[number] = at
        retypes.returning[clerk] = returning
    return retypes


def _day(at: float) -> int:
    return int(at // 86_400)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=Path, required=True)
    parser.add_argument("--truth", type=Path, required=True)
    parser.add_argument("--exempt", nargs="*", default=["NEW_SUBSCRIPTION"])
    parser.add_argument("--visit", type=float, default=1800.0, help="seconds (typo_visit)")
    args = parser.parse_args(argv)
    retypes = classify(honest_lookups(args.events, args.truth), frozenset(args.exempt), args.visit)
    total = sum(retypes.kinds.values())
    print(f"{len(retypes.returning)} honest clerks, {total} retypes")
    for kind in KINDS:
        print(f"  {kind:22} {retypes.kinds[kind]:7,}")
    for label, span in (("7 days", WEEK), ("the month", float("inf"))):
        most = sorted(retypes.most_in(span).items())
        print(f"returning retypes in {label}, most per clerk: clerks")
        print("  " + ", ".join(f"{count}: {clerks}" for count, clerks in most))
    return 0


if __name__ == "__main__":
    sys.exit(main())
