"""``lookup-proxy replay``: what would this policy have done to past traffic?

Every event goes through the same steps as a live lookup that reached the proxy — justify,
target, guard, learn — with the memory store and a clock set to the event's time, so a backtest
shares every line of policy code with production. Rows the live proxy would have refused before
the guard (unknown reason, malformed number) are refused here too, with that cause as ``rule``.
Rows that cannot be replayed at all (unreadable time, unsorted input, a bad ``found``) fail the
run with every such line listed: a backtest that quietly skipped rows would flatter the policy.
"""

from __future__ import annotations

import csv
import gc
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, TextIO, TypeVar

from lookup_proxy.accounts import LEARNED_AS_FOUND
from lookup_proxy.clock import ManualClock
from lookup_proxy.employee import Employee
from lookup_proxy.errors import LookupProxyError, Refusal
from lookup_proxy.guard.decision import Decision, Lookup
from lookup_proxy.guard.engine import Guard
from lookup_proxy.guard.memory import MemoryStore
from lookup_proxy.justify import ReasonCatalogue
from lookup_proxy.native import compiled_modules
from lookup_proxy.numbers import normalise_number
from lookup_proxy.policy import Policy

EVENT_COLUMNS = (
    "timestamp",
    "employee",
    "store",
    "region",
    "number",
    "reason",
    "reference",
    "found",
)
ACCOUNT_COLUMN = "account"
"""An optional ninth column: the business account a found record names (what the live proxy
reads at the policy's ``[accounts] field``; empty for a consumer's line, a miss, or a backend
that names none). With it, replay withholds what the live proxy would (403 ``business-line``
or ``reference-mismatch``, lookup_proxy/accounts.py); without it every found record is shown,
as before ``[accounts]``."""
ACCOUNT_EVENT_COLUMNS = (*EVENT_COLUMNS, ACCOUNT_COLUMN)
DECISION_COLUMNS = (*EVENT_COLUMNS, "decision", "rule", "flags")
"""DECISIONS.csv's columns for EVENTS.csv without ``account``; with it, ``account`` comes
before ``decision`` (the input's columns, then the decision's)."""
DECIDED_COLUMNS = ("decision", "rule", "flags")
MAX_LISTED_ERRORS = 50
UNBOUNDED_KEYS = sys.maxsize
"""The replay store's key budget: none (see ``Replayer.__init__``)."""

REPLAY_NUMBERS_KEY: Final = b"lookup-proxy replay: the same filters every run"
"""The known-numbers key of a replay (guard/known_numbers.py): fixed, so a backtest decides
the same every time it is run (a filter's rare false positives fall on the same numbers). It
need not be secret: nobody types into a replay; the live proxy's key is."""
MAX_REMEMBERED_REASONS = 65_536
"""Justified (roles, reason, reference) answers kept per run; the cache starts over when full."""

T = TypeVar("T")


def run_now(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (the memory store never does) without a loop.

    Replay decides millions of events; skipping the event loop's scheduling per event is most
    of what makes it fast, and the guard code stays the live proxy's async code.
    """
    try:
        coroutine.send(None)
    except StopIteration as finished:
        return finished.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("the replay store suspended; replay needs the memory store")


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that cannot be replayed, by line number in EVENTS.csv (header = line 1)."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class ReplayFailed(LookupProxyError):
    """The events file cannot be replayed as a whole; lists the rows at fault."""

    def __init__(self, file: str, rows: list[BadRow], total: int) -> None:
        self.file = file
        self.rows = rows
        self.total = total
        listed = "\n".join(f"  {file}: {row}" for row in rows)
        more = f"\n  … and {total - len(rows)} more" if total > len(rows) else ""
        super().__init__(f"{total} row(s) cannot be replayed:\n{listed}{more}")


@dataclass
class EmployeeSummary:
    """What happened to one employee during the replay."""

    locked_at: str | None = None
    locked_by: str | None = None
    denied: int = 0
    flags: Counter[str] = field(default_factory=Counter)
    first_flag_at: str | None = None


@dataclass
class Summary:
    """The backtest's outcome for a security officer."""

    events: int = 0
    allowed: int = 0
    denied: int = 0
    seconds: float = 0.0
    compiled: bool = False
    """Whether the hot path ran compiled (lookup_proxy.native): about 2.5 times the speed."""
    denials_by_rule: Counter[str] = field(default_factory=Counter)
    hits_by_rule: Counter[str] = field(default_factory=Counter)
    flags_by_rule: Counter[str] = field(default_factory=Counter)
    lockouts_by_rule: Counter[str] = field(default_factory=Counter)
    refused_before_guard: Counter[str] = field(default_factory=Counter)
    refused_lines: dict[str, list[int]] = field(default_factory=dict)
    withheld: Counter[str] = field(default_factory=Counter)
    """Found records withheld for their business account, by cause (``[accounts]``)."""
    accounts_checked: bool | None = None
    """None: the policy checks no accounts; True: EVENTS.csv named them and replay checked
    them as the live proxy does; False: the policy checks them but EVENTS.csv has no
    ``account`` column, so every found record was shown (a backtest that flatters honest
    staff's friction and informed reps' gains alike)."""
    employees: dict[str, EmployeeSummary] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        locked = {e: s for e, s in self.employees.items() if s.locked_at}
        flagged = {e: s for e, s in self.employees.items() if s.flags}
        return {
            "events": self.events,
            "allowed": self.allowed,
            "denied": self.denied,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.events / self.seconds) if self.seconds else None,
            "compiled": self.compiled,
            "denials_by_rule": dict(self.denials_by_rule),
            "hits_by_rule": dict(self.hits_by_rule),
            "flags_by_rule": dict(self.flags_by_rule),
            "lockouts_by_rule": dict(self.lockouts_by_rule),
            "refused_before_guard": {
                cause: {"count": count, "lines": self.refused_lines[cause]}
                for cause, count in self.refused_before_guard.items()
            },
            "withheld": dict(self.withheld),
            "accounts_checked": self.accounts_checked,
            "employees_locked": {
                e: {"at": s.locked_at, "rule": s.locked_by, "denied": s.denied}
                for e, s in sorted(locked.items())
            },
            "employees_flagged": {
                e: {"first_at": s.first_flag_at, "flags": dict(s.flags)}
                for e, s in sorted(flagged.items())
            },
        }

    def render(self) -> str:
        def share(n: int) -> str:
            return f"{100 * n / self.events:.2f}%" if self.events else "-"

        rate = f"{self.events / self.seconds:,.0f} events/s" if self.seconds else ""
        build = "compiled" if self.compiled else "pure Python, about 40 % of the compiled speed"
        lines = [
            f"Replayed {self.events:,} events in {self.seconds:.1f} s ({rate}; {build})",
            f"  allowed {self.allowed:,} ({share(self.allowed)})   "
            f"denied {self.denied:,} ({share(self.denied)})",
        ]
        rules = sorted(set(self.hits_by_rule) | set(self.denials_by_rule))
        if rules:
            lines.append("")
            lines.append(f"  {'rule':<28}{'fired':>10}{'denied':>10}{'locked':>10}{'flagged':>10}")
            for rule in rules:
                lines.append(
                    f"  {rule:<28}{self.hits_by_rule[rule]:>10,}{self.denials_by_rule[rule]:>10,}"
                    f"{self.lockouts_by_rule[rule]:>10,}{self.flags_by_rule[rule]:>10,}"
                )
            if self.denials_by_rule["locked"]:
                lines.append(
                    f"  {'(already locked)':<28}{'':>10}{self.denials_by_rule['locked']:>10,}"
                )
        if self.refused_before_guard:
            lines.append("")
            lines.append("  Refused before the guard (the live proxy would answer 4xx):")
            for cause, count in self.refused_before_guard.most_common():
                shown = ", ".join(str(n) for n in self.refused_lines[cause][:10])
                lines.append(f"    {cause}: {count:,} (lines {shown}{' …' if count > 10 else ''})")
        if self.withheld:
            lines.append("")
            lines.append(
                "  Withheld after the answer (a business account's line; 403, [accounts]):"
            )
            for cause, count in self.withheld.most_common():
                lines.append(f"    {cause}: {count:,}")
        if self.accounts_checked is False:
            lines.append("")
            lines.append(
                "  The policy checks business accounts ([accounts]) but EVENTS.csv has no "
                "account column: every found record was shown."
            )
        locked = sorted((s.locked_at or "", e, s) for e, s in self.employees.items() if s.locked_at)
        lines.append("")
        lines.append(f"  Employees locked: {len(locked)}")
        for at, employee, info in locked:
            lines.append(
                f"    {employee:<12} {at}  by {info.locked_by}; {info.denied:,} lookups denied"
            )
        flagged = sorted(
            (s.first_flag_at or "", e, s) for e, s in self.employees.items() if s.flags
        )
        lines.append(f"  Employees flagged: {len(flagged)}")
        for at, employee, info in flagged:
            rules_fired = ", ".join(f"{r} ×{n}" for r, n in info.flags.most_common())
            lines.append(f"    {employee:<12} first {at}  {rules_fired}")
        return "\n".join(lines)


def parse_timestamp(text: str) -> float:
    """Epoch seconds from ISO 8601 with an offset, or from epoch seconds."""
    value = text.strip()
    if not value:
        raise ValueError("empty timestamp")
    if value[0].isdigit() and ("-" not in value and ":" not in value):
        return float(value)
    when = datetime.fromisoformat(value)
    if when.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no UTC offset (write e.g. +09:00)")
    return when.timestamp()


class _EventTimes:
    """``parse_timestamp`` for a stream of events, cached per minute.

    Nearly every timestamp has the shape ``YYYY-MM-DDTHH:MM:SS±HH:MM``; for those everything
    but the seconds is parsed once per distinct minute and the seconds added, which gives the
    same epoch seconds (a fixed offset has no daylight-saving steps) at a fraction of the cost.
    Events come sorted, so most share the previous event's minute, which is recognised by its
    text without slicing anything. Any other shape, and every error message, comes from
    ``parse_timestamp`` itself.
    """

    MAX_MINUTES = 100_000

    def __init__(self) -> None:
        self._minutes: dict[str, float] = {}
        # The previous event's minute ("YYYY-MM-DDTHH:MM"), offset and start; no text
        # starts with a NUL, so nothing matches before the first event.
        self._head = "\x00"
        self._tail = ""
        self._start = 0.0

    def parse(self, text: str) -> float:
        if len(text) == 25 and text[16] == ":":
            tens = ord(text[17]) - 48
            units = ord(text[18]) - 48
            if 0 <= tens <= 5 and 0 <= units <= 9:
                if text.startswith(self._head) and text.endswith(self._tail):
                    return self._start + 10 * tens + units
                minute = text[:16] + text[19:]
                start = self._minutes.get(minute)
                if start is None:
                    try:
                        start = parse_timestamp(text[:17] + "00" + text[19:])
                    except ValueError:
                        return parse_timestamp(text)  # the error names the whole timestamp
                    if len(self._minutes) >= self.MAX_MINUTES:
                        self._minutes.clear()
                    self._minutes[minute] = start
                self._head, self._tail, self._start = text[:16], text[19:], start
                return start + 10 * tens + units
        return parse_timestamp(text)


@contextmanager
def _no_cyclic_collection() -> Iterator[None]:
    """The cyclic garbage collector off while events are replayed.

    Deciding an event makes no reference cycles (``tests/test_replay.py`` holds replay to
    that), so reference counting frees everything, while the collector's passes walk every
    object alive, the store's few million windows on a large chain among them: a few percent of
    a 100-employee month, and a tenth of a 3,000-employee one even with full passes held back.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _HandedBack:
    """Lines for ``csv.reader``: a line handed back first, then the file's; keeps what it gave."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self.back: str | None = None
        self.given: list[str] = []

    def __iter__(self) -> _HandedBack:
        return self

    def __next__(self) -> str:
        line = self.back
        if line is None:
            line = next(self._lines)
        else:
            self.back = None
        self.given.append(line)
        return line


def _records(source: Iterator[str]) -> Iterator[tuple[str, list[str]]]:
    """Each record of EVENTS.csv: its text without the line ending, and its fields.

    A line without a quote character is split on commas, which is exactly what ``csv.reader``
    makes of it at a fraction of the cost; a line with one goes to ``csv.reader``, which reads
    on for a quoted newline. DECISIONS.csv echoes the text and appends three fields, so no
    field is ever re-quoted (writing rows through ``csv.writer`` cost a tenth of a replay).
    """
    lines = _HandedBack(source)
    reader = csv.reader(lines)
    for line in source:
        if '"' not in line:
            text = line.rstrip("\r\n")
            yield text, (text.split(",") if text else [])
            continue
        lines.back = line
        lines.given.clear()
        fields = next(reader)
        yield "".join(lines.given).rstrip("\r\n"), fields


class _Progress:
    """A one-line progress bar on stderr for long replays."""

    def __init__(self, total_lines: int, stream: TextIO) -> None:
        self.total = max(total_lines, 1)
        self.stream = stream
        self.started = time.perf_counter()
        self.last = 0.0

    def update(self, done: int, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last < 0.5:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        fraction = min(done / self.total, 1.0)
        eta = (self.total - done) / rate if rate else 0.0
        bar = "#" * int(fraction * 30)
        self.stream.write(
            f"\r  [{bar:<30}] {fraction:6.1%}  {done:,} events  {rate:,.0f}/s  ETA {eta:4.0f}s "
        )
        self.stream.flush()

    def close(self, done: int) -> None:
        self.update(done, force=True)
        self.stream.write("\n")
        self.stream.flush()


def _count_lines(path: Path) -> int:
    count = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            count += chunk.count(b"\n")
    return max(count - 1, 0)


class Replayer:
    """Runs events through justify → target → guard → learn on an event-time clock."""

    def __init__(
        self,
        policy: Policy,
        roles: dict[str, frozenset[str]] | None = None,
        accounts: dict[str, frozenset[str]] | None = None,
    ) -> None:
        self.policy = policy
        self.roles = roles or {}
        """Employee id → roles, from the roster; live, roles come from the token."""
        self.accounts = accounts or {}
        """Employee id → business accounts, from the roster; live, from the token."""
        self.clock = ManualClock(0.0)
        # No key budget: the live memory store sheds the keys closest to expiry when over
        # memory_max_keys, but a backtest that forgot counters would flatter the policy, and a
        # chain that size runs on Redis, which keeps them all.
        self.store = MemoryStore(max_keys=UNBOUNDED_KEYS, numbers_key=REPLAY_NUMBERS_KEY)
        self.guard = Guard(policy, self.store, self.clock)
        self.catalogue = ReasonCatalogue(policy.reasons, policy.auth.claims.accounts is not None)
        self._employees: dict[str, Employee] = {}
        self._times = _EventTimes()
        self._numbers = policy.numbers
        """Read once: a policy attribute is a dictionary lookup on every event."""
        # justify, remembered: a month of events repeats a few reasons and references, and the
        # answer depends only on these inputs. Refusals are not remembered.
        self._reasons: dict[tuple[frozenset[str], frozenset[str], str, str], str] = {}
        self._checks = policy.account_checks()
        """Reason code → its check of found records' accounts (none without ``[accounts]``)."""
        self._columns = len(EVENT_COLUMNS)
        """Columns of the file being replayed: 9 with ``account``."""

    def _employee(self, employee_id: str, store: str, region: str) -> Employee:
        """The employee a row names, one object per id while their store and region hold."""
        employee = self._employees.get(employee_id)
        if employee is None or employee.store != store or employee.region != (region or None):
            roles = self.roles.get(employee_id, frozenset())
            accounts = self.accounts.get(employee_id, frozenset())
            employee = Employee(employee_id, store, region or None, roles, accounts)
            self._employees[employee_id] = employee
        return employee

    def run(
        self,
        events: Path,
        out: Path,
        *,
        progress: bool = False,
        progress_stream: TextIO = sys.stderr,
    ) -> Summary:
        """Replay ``events`` into ``out``; raises ReplayFailed naming every bad row."""
        summary = Summary()
        bad: list[BadRow] = []
        started = time.perf_counter()
        partial = out.with_name(out.name + ".partial")
        bar = _Progress(_count_lines(events), progress_stream) if progress else None
        with (
            events.open(newline="", encoding="utf-8") as source,
            partial.open("w", newline="", encoding="utf-8") as sink,
            _no_cyclic_collection(),
        ):
            records = _records(source)
            first = next(records, None)
            header = None if first is None else first[1]
            names = None if header is None else [h.strip() for h in header]
            if names != list(EVENT_COLUMNS) and names != list(ACCOUNT_EVENT_COLUMNS):
                partial.unlink(missing_ok=True)
                expected = f"{','.join(EVENT_COLUMNS)}[,{ACCOUNT_COLUMN}]"
                raise ReplayFailed(
                    str(events), [BadRow(1, f"header must be {expected}; found {header}")], 1
                )
            self._columns = len(names)
            if self._checks:
                summary.accounts_checked = self._columns == len(ACCOUNT_EVENT_COLUMNS)
            csv.writer(sink, lineterminator="\n").writerow((*names, *DECIDED_COLUMNS))
            bad_total = run_now(self._replay(records, sink.write, summary, bad, bar))
            if bar is not None:
                bar.close(summary.events + bad_total)
        if bad_total:
            partial.unlink(missing_ok=True)
            raise ReplayFailed(str(events), bad, bad_total)
        os.replace(partial, out)
        summary.seconds = time.perf_counter() - started
        # All or none (lookup_proxy/native.py): this module compiled means every one is.
        # (Not the whole list: replay never imports the live proxy's compiled modules.)
        summary.compiled = __name__ in compiled_modules()
        return summary

    async def _replay(
        self,
        records: Iterator[tuple[str, list[str]]],
        write: Callable[[str], object],
        summary: Summary,
        bad: list[BadRow],
        bar: _Progress | None,
    ) -> int:
        """Every row after the header, decided and written; returns how many were bad.

        One coroutine for the whole file, run by ``run_now``: the guard's coroutines are awaited
        from it, which compiled costs a call, where finishing each as its own coroutine raised
        and caught a StopIteration twice an event.
        """
        bad_total = 0
        previous = float("-inf")
        previous_line = 1
        for line, (text, row) in enumerate(records, start=2):
            if bar is not None and line % 4096 == 0:
                bar.update(line - 1)
            problem, when = self._check_row(row, previous, previous_line)
            if problem is not None:
                bad_total += 1
                if len(bad) < MAX_LISTED_ERRORS:
                    bad.append(BadRow(line, problem))
                continue
            previous, previous_line = when, line
            if bad_total:
                continue  # the run already failed; keep looking for more bad rows only
            # The row as it came (its quoting kept, so no field is re-quoted) plus the
            # decision's fields, which never need quoting: rule names and refusal causes are
            # kebab-case words, flags rule names joined by ";".
            decision, rule, flags = await self._decide(line, row, when, summary)
            write(f"{text},{decision},{rule},{flags}\n")
        return bad_total

    def _check_row(
        self, row: list[str], previous: float, previous_line: int
    ) -> tuple[str | None, float]:
        if len(row) != self._columns:
            return f"expected {self._columns} columns, found {len(row)}", previous
        try:
            when = self._times.parse(row[0])
        except ValueError as exc:
            return f"timestamp: {exc}", previous
        if when < previous:
            return (
                f"timestamp {row[0]} is earlier than line {previous_line}'s; "
                "EVENTS.csv must be sorted by time",
                previous,
            )
        found = row[7]
        if found != "true" and found != "false" and found.strip().lower() not in ("true", "false"):
            return f"found must be true or false, not {row[7]!r}", when
        if not row[1].strip() or not row[2].strip():
            return "employee and store must not be empty", when
        return None, when

    async def _decide(
        self, line: int, row: list[str], when: float, summary: Summary
    ) -> tuple[str, str, str]:
        summary.events += 1
        employee = self._employee(row[1], row[2], row[3])
        try:
            reason = self._reason(employee, row[5], row[6])
            number = normalise_number(row[4], self._numbers)
        except Refusal as refusal:
            summary.denied += 1
            summary.refused_before_guard[refusal.cause] += 1
            summary.refused_lines.setdefault(refusal.cause, [])
            if len(summary.refused_lines[refusal.cause]) < 20:
                summary.refused_lines[refusal.cause].append(line)
            return "deny", refusal.cause, ""
        self.clock.set(when)
        lookup = Lookup(str(line), employee, reason, number)
        decision = await self.guard.decide(lookup)
        if decision.hits or decision.locked or not decision.allowed:
            self._tally(row, decision, summary)
        if decision.allowed:
            found = row[7] == "true" or row[7].strip().lower() == "true"
            withheld = self._withheld(row, reason) if found else None
            if withheld is not None:
                found = LEARNED_AS_FOUND[withheld]
            learnt = await self.guard.learn(lookup, found, withheld is not None)
            if learnt:
                self._tally_locks(row, learnt, summary)
            if withheld is not None:
                summary.denied += 1
                summary.withheld[withheld] += 1
                self._employee_summary(row, summary).denied += 1
                return "deny", withheld, ";".join(decision.flags)
            summary.allowed += 1
            return "allow", "", ";".join(decision.flags)
        summary.denied += 1
        return "deny", decision.rule or "", ";".join(decision.flags)

    def _withheld(self, row: list[str], reason: str) -> str | None:
        """The cause the live proxy would withhold this found record for (its account, the
        ``account`` column), or None when it would show it or the file does not say."""
        if self._columns == len(EVENT_COLUMNS):
            return None
        check = self._checks.get(reason)
        if check is None:
            return None
        refusal = check.refusal_for(row[8].strip() or None, row[6].strip() or None, 200)
        return None if refusal is None else refusal.cause

    @staticmethod
    def _employee_summary(row: list[str], summary: Summary) -> EmployeeSummary:
        me = summary.employees.get(row[1])
        if me is None:
            me = summary.employees[row[1]] = EmployeeSummary()
        return me

    def _reason(self, employee: Employee, code: str, reference: str) -> str:
        """The justified reason code (justify), or the Refusal the live proxy would answer."""
        key = (employee.roles, employee.accounts, code, reference)
        reason = self._reasons.get(key)
        if reason is None:
            reason = self.catalogue.justify(employee, code, reference).reason
            if len(self._reasons) >= MAX_REMEMBERED_REASONS:
                self._reasons.clear()
            self._reasons[key] = reason
        return reason

    def _tally(self, row: list[str], decision: Decision, summary: Summary) -> None:
        for hit in decision.hits:
            summary.hits_by_rule[hit.rule] += 1
        flags = decision.flags
        for flag in flags:
            summary.flags_by_rule[flag] += 1
        me = self._employee_summary(row, summary)
        if flags:
            me.flags.update(flags)
            if me.first_flag_at is None:
                me.first_flag_at = row[0]
        if not decision.allowed:
            summary.denials_by_rule[decision.rule or ""] += 1
            me.denied += 1
        self._tally_locks(row, decision.locked, summary)

    def _tally_locks(
        self, row: list[str], locked: Sequence[tuple[str, str]], summary: Summary
    ) -> None:
        """Lockouts made by a decision, or by learning its outcome (a peer rule or an
        escalation that fired then), counted at this row's time."""
        employees = summary.employees
        for employee, rule in locked:
            summary.lockouts_by_rule[rule] += 1
            info = employees.get(employee)
            if info is None:
                info = employees[employee] = EmployeeSummary()
            if info.locked_at is None:
                info.locked_at = row[0]
                info.locked_by = rule


def load_roster(path: Path) -> dict[str, frozenset[str]]:
    """``employee,roles`` (roles separated by ``;`` or spaces) → roles per employee.

    Tokens carry roles live; a backtest needs them from the HR directory instead, or
    role-limited reasons would be refused to everyone. A third column, ``accounts``, is read
    by :func:`load_accounts`.
    """
    return _roster_column(path, 1)


def unassigned_reasons(policy: Policy, accounts: dict[str, frozenset[str]] | None) -> list[str]:
    """The reasons a backtest will refuse to everyone for want of accounts: those with
    ``accounts = "own"`` when the policy takes references from the accounts claim and the
    roster names no employee's accounts (none at all: an ``employee,roles`` roster, or none)."""
    if policy.auth.claims.accounts is None or any(accounts.values() if accounts else ()):
        return []
    return sorted(code for code, r in policy.reasons.items() if r.accounts == "own")


def load_accounts(path: Path) -> dict[str, frozenset[str]]:
    """``employee,roles,accounts`` → the business accounts (references) per employee, as a
    token's ``[auth.claims] accounts`` would name them (none without the column)."""
    return _roster_column(path, 2)


def _roster_column(path: Path, column: int) -> dict[str, frozenset[str]]:
    values: dict[str, frozenset[str]] = {}
    bad: list[BadRow] = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader, None) or []]
        if header not in (["employee", "roles"], ["employee", "roles", "accounts"]):
            raise ReplayFailed(
                str(path),
                [BadRow(1, f"header must be employee,roles[,accounts]; found {header}")],
                1,
            )
        width = len(header)
        for line, row in enumerate(reader, start=2):
            if len(row) != width or not row[0].strip():
                bad.append(BadRow(line, f"expected {','.join(header)}; found {row}"))
                continue
            text = row[column] if column < width else ""
            values[row[0].strip()] = frozenset(text.replace(";", " ").split())
    if bad:
        raise ReplayFailed(str(path), bad[:MAX_LISTED_ERRORS], len(bad))
    return values
