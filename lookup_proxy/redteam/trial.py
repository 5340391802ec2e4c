"""One trial: a month of honest work with one plan of probes mixed in, through replay.

The probes go through ``lookup_proxy.replay.Replayer`` — the guard engine of the live proxy on
the memory store with the event's time as the clock — as rows of an EVENTS.csv beside the honest
rows, and the outcome is read back from its DECISIONS.csv and its summary (which has every
lockout): nothing here decides anything, so the red-team can never disagree with a backtest of
the same traffic.
"""

from __future__ import annotations

import csv
import heapq
import io
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from lookup_proxy.accounts import WITHHELD
from lookup_proxy.policy import Policy
from lookup_proxy.redteam.baseline import Baseline, Staff
from lookup_proxy.redteam.probes import Probe, Stage
from lookup_proxy.replay import ACCOUNT_EVENT_COLUMNS, Replayer, Summary, parse_timestamp
from lookup_proxy.simulation.contracts import KST

VISIT_GAP = 120.0
"""Seconds between two of an employee's lookups that start a new visit (:meth:`Arena._thinned`):
a typo and its retype, a family's numbers, a visit's repeat lookups stay together."""


@dataclass
class Outcome:
    """What one plan got the insiders, and when the guard noticed."""

    probes: int = 0
    records: dict[str, int] = field(default_factory=dict)
    """Per insider: distinct customers' records obtained by probes that were allowed."""
    records_before_flag: dict[str, int] = field(default_factory=dict)
    first_probe: float | None = None
    first_flag: float | None = None
    """The first refusal or flag of any insider's lookup from the first probe on."""
    flag_rule: str = ""
    locked_at: float | None = None
    locked_by: str = ""
    denied: int = 0
    denied_by: dict[str, int] = field(default_factory=dict)

    @property
    def locked(self) -> bool:
        """Whether any insider was locked out during the period."""
        return self.locked_at is not None

    @property
    def best_insider(self) -> int:
        """The most records any one insider obtained."""
        return max(self.records.values(), default=0)

    @property
    def best_insider_before_flag(self) -> int:
        """The most records any one insider obtained before the first flag or refusal."""
        return max(self.records_before_flag.values(), default=0)

    @property
    def total(self) -> int:
        """Records obtained by all insiders together."""
        return sum(self.records.values())


def _line(fields: tuple[str, ...]) -> str:
    """One CSV line (no line ending), quoted only where a field needs it."""
    if not any("," in f or '"' in f or "\n" in f or "\r" in f for f in fields):
        return ",".join(fields)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(fields)
    return buffer.getvalue()


def _stamp(when: float) -> str:
    return datetime.fromtimestamp(round(when), KST).isoformat()


class Arena:
    """Runs plans against one policy and one baseline, in a scratch directory."""

    def __init__(self, policy: Policy, baseline: Baseline, workdir: Path) -> None:
        self.policy = policy
        self.baseline = baseline
        self.workdir = workdir
        self.roles = baseline.roles()
        self._honest = [(when, _line(row)) for when, row in baseline.rows]
        self._employees = [row[1] for _, row in baseline.rows]
        self._header = ",".join(ACCOUNT_EVENT_COLUMNS) + "\n"
        self._events = workdir / "events.csv"
        self._decisions = workdir / "decisions.csv"
        self.trials = 0

    def run(
        self,
        stage: Stage,
        probes: list[Probe],
        own_work: float = 1.0,
        regions: int = 1,
        region_work: float = 1.0,
    ) -> Outcome:
        """Replay the baseline with ``probes`` mixed in; read what happened to the insiders.

        One replayer takes the month a day at a time (its store and clock carry over), so a
        trial whose every insider is locked until unlocked stops there: nothing after it can
        change what they obtained or when they were noticed. ``own_work`` below 1 keeps that
        share of the insiders' own honest visits (:meth:`_thinned`), the rest left out: an
        insider who does little honest work. ``regions`` above 1 rotates each insider's
        working days, honest work and probes, over that many regions (:meth:`_relief`): a
        relief clerk. ``region_work`` below 1 keeps that share of the honest visits of
        everyone else in the insiders' regions: a region of quiet stores. Where :meth:`thin`
        already decided that for the plan (``stage.left_out``), those rows are left out.
        """
        self.trials += 1
        probes = sorted(probes, key=lambda p: p.at)
        insiders = {s.employee: s for s in stage.insiders}
        moved = self._relief(stage, regions)
        attack = [(round(p.at), _line(self._fields(stage, p, moved))) for p in probes]
        honest = self._moved(moved) if moved else self._honest
        dropped = (
            stage.left_out
            if stage.left_out is not None
            else self._thinned(stage, insiders, own_work, region_work)
        )
        # Honest rows first at an equal second: the attack never jumps the queue.
        merged = heapq.merge(
            ((when, 0, i, text) for i, (when, text) in enumerate(honest) if i not in dropped),
            ((when, 1, i, text) for i, (when, text) in enumerate(attack)),
        )
        outcome = Outcome(probes=sum(p.counts for p in probes))
        outcome.records = dict.fromkeys(insiders, 0)
        outcome.records_before_flag = dict.fromkeys(insiders, 0)
        seen: dict[str, set[str]] = {e: set() for e in insiders}
        locked: set[str] = set()
        replayer = Replayer(self.policy, self.roles, self.baseline.assignments)
        for _, rows in itertools.groupby(merged, key=lambda r: self.baseline.day_of(r[0])):
            kinds = self._write_day(rows, insiders)
            summary = replayer.run(self._events, self._decisions)
            self._read(kinds, probes, stage, outcome, seen)
            for employee in insiders:
                if employee not in locked:
                    lock = self._lock(summary, employee)
                    if lock is not None:
                        locked.add(employee)
                        if outcome.locked_at is None or lock[0] < outcome.locked_at:
                            outcome.locked_at, outcome.locked_by = lock
            if self.locks_for_good and len(locked) == len(insiders):
                break
        return outcome

    def thin(self, stage: Stage, own_work: float, region_work: float) -> None:
        """Decide before the plan which honest visits the trial leaves out (``stage.left_out``),
        so that a plan drawing on the customers the insiders met knows only those they still
        meet; :meth:`run` then leaves out the same rows."""
        insiders = {s.employee: s for s in stage.insiders}
        stage.left_out = frozenset(self._thinned(stage, insiders, own_work, region_work))

    def _thinned(
        self, stage: Stage, insiders: Mapping[str, Staff], own_work: float, region_work: float
    ) -> set[int]:
        """The honest rows left out (by index) so that ``insiders`` keep ``own_work`` of their
        visits and everyone else in their regions ``region_work`` (drawn from ``stage.rng``).

        Whole visits go (an employee's lookups less than :data:`VISIT_GAP` apart), not single
        rows: a typo without its retype would be a miss nobody explains, and a quiet clerk made
        so would look like a clumsy one (the first version dropped rows one by one)."""
        quiet = {s.region for s in stage.insiders} if region_work < 1.0 else set()
        if own_work >= 1.0 and not quiet:
            return set()
        staff = self.baseline.staff
        last: dict[str, tuple[float, bool]] = {}
        dropped: set[int] = set()
        for index, (when, row) in enumerate(self.baseline.rows):
            who = row[1]
            if who in insiders:
                keep = own_work
            elif staff[who].region in quiet:
                keep = region_work
            else:
                continue
            if keep >= 1.0:
                continue
            previous = last.get(who)
            if previous is None or when - previous[0] > VISIT_GAP:
                drop = stage.rng.random() >= keep
            else:
                drop = previous[1]
            last[who] = (when, drop)
            if drop:
                dropped.add(index)
        return dropped

    def honest(
        self, stage: Stage | None = None, regions: int = 1, region_work: float = 1.0
    ) -> Summary:
        """The honest month alone, no probes, replayed whole: whom the policy locks or flags
        for honest work. A policy that locks honest staff can look strong against probes
        (its insiders are locked whatever they do), so the report says so first. With a
        ``stage``, its insiders work as relief clerks do under :meth:`run` (``regions`` above
        1), or everyone in their regions, them included, keeps ``region_work`` of their
        visits (quiet stores): honestly, what the policy costs such clerks."""
        moved = self._relief(stage, regions) if stage is not None else {}
        dropped = self._thinned(stage, {}, 1.0, region_work) if stage is not None else set()
        with self._events.open("w", encoding="utf-8", newline="") as sink:
            sink.write(self._header)
            rows = self._moved(moved) if moved else self._honest
            for index, (_, text) in enumerate(rows):
                if index not in dropped:
                    sink.write(text + "\n")
        return Replayer(self.policy, self.roles, self.baseline.assignments).run(
            self._events, self._decisions
        )

    @staticmethod
    def _lock(summary: Summary, employee: str) -> tuple[float, str] | None:
        """When and by which rule the employee was locked, if they were: the replay summary
        has every lockout, those made while deciding and those made while learning an
        outcome (a peer rule, an escalation)."""
        info = summary.employees.get(employee)
        if info is not None and info.locked_at is not None:
            return parse_timestamp(info.locked_at), info.locked_by or ""
        return None

    @property
    def locks_for_good(self) -> bool:
        """Whether a lock lasts until security staff lift it (none do during a trial)."""
        return self.policy.lockout.duration is None

    def _relief(self, stage: Stage, regions: int) -> dict[tuple[str, int], tuple[str, str]]:
        """(insider, day) → (store, region) for each working day an insider spends away from
        home: their days in turn at home and in ``regions - 1`` other regions (drawn from
        ``stage.rng``, a store drawn in each). Empty for 1."""
        if regions <= 1:
            return {}
        stores: dict[str, set[str]] = {}
        for staff in self.baseline.staff.values():
            stores.setdefault(staff.region, set()).add(staff.store)
        moved: dict[tuple[str, int], tuple[str, str]] = {}
        for insider in stage.insiders:
            others = sorted(region for region in stores if region != insider.region)
            away = stage.rng.sample(others, min(regions - 1, len(others)))
            places = [None, *((stage.rng.choice(sorted(stores[r])), r) for r in away)]
            for index, (day, _) in enumerate(stage.days(insider)):
                place = places[index % len(places)]
                if place is not None:
                    moved[(insider.employee, day)] = place
        return moved

    def _moved(self, moved: dict[tuple[str, int], tuple[str, str]]) -> list[tuple[float, str]]:
        """The honest rows with the insiders' own on their days away under that store and
        region."""
        rows = list(self._honest)
        day_of = self.baseline.day_of
        away = {employee for employee, _ in moved}
        for index, (when, row) in enumerate(self.baseline.rows):
            if row[1] not in away:
                continue
            place = moved.get((row[1], day_of(when)))
            if place is not None:
                rows[index] = (when, _line((row[0], row[1], *place, *row[4:])))
        return rows

    def _fields(
        self, stage: Stage, probe: Probe, moved: dict[tuple[str, int], tuple[str, str]]
    ) -> tuple[str, ...]:
        staff = next(s for s in stage.insiders if s.employee == probe.insider)
        store, region = moved.get((staff.employee, self.baseline.day_of(probe.at))) or (
            staff.store,
            staff.region,
        )
        return (
            _stamp(probe.at),
            staff.employee,
            store,
            region,
            probe.typed,
            probe.reason,
            probe.reference,
            "true" if stage.found(probe) else "false",
            stage.account(probe),
        )

    def _write_day(
        self, rows: Iterator[tuple[float, int, int, str]], insiders: dict[str, Staff]
    ) -> list[int]:
        """Write one day's EVENTS.csv; per row: -1 others' work, -2 an insider's, else a probe."""
        kinds: list[int] = []
        with self._events.open("w", encoding="utf-8", newline="") as sink:
            sink.write(self._header)
            for _, source, index, text in rows:
                sink.write(text + "\n")
                if source == 1:
                    kinds.append(index)
                else:
                    kinds.append(-2 if self._employees[index] in insiders else -1)
        return kinds

    def _read(
        self,
        kinds: list[int],
        probes: list[Probe],
        stage: Stage,
        outcome: Outcome,
        seen: dict[str, set[str]],
    ) -> None:
        with self._decisions.open(encoding="utf-8") as decisions:
            next(decisions)  # header
            for kind, line in zip(kinds, decisions, strict=True):
                if kind == -1:
                    continue
                if kind == -2 and outcome.first_probe is None:
                    continue  # honest work before the attack began
                head, decision, rule, flags = line.rstrip("\n").rsplit(",", 3)
                when = parse_timestamp(head.split(",", 1)[0])
                if kind >= 0 and outcome.first_probe is None:
                    outcome.first_probe = when
                denied = decision == "deny"
                if kind == -2 and rule in WITHHELD and not flags:
                    continue  # their own customer's business line, withheld: no suspicion
                if denied:
                    outcome.denied += 1
                    outcome.denied_by[rule] = outcome.denied_by.get(rule, 0) + 1
                if (denied or flags) and outcome.first_flag is None:
                    outcome.first_flag = when
                    outcome.flag_rule = rule if denied else flags.split(";")[0]
                if kind < 0 or denied:
                    continue
                probe = probes[kind]  # allowed: a record where found (replay withholds by account)
                if probe.counts and stage.found(probe) and probe.number not in seen[probe.insider]:
                    seen[probe.insider].add(probe.number)
                    outcome.records[probe.insider] += 1
                    if outcome.first_flag is None:
                        outcome.records_before_flag[probe.insider] += 1
