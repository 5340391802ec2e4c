"""Score a policy backtest: how much would attackers have got, and whom did we bother?

`lookup-proxy replay` says what the guard decided for every simulated lookup; TRUTH.csv (from
bench/simulate.py) says which lookups were malicious. Joining the two answers the only questions
a security officer cares about: records disclosed compared with having no guard at all, how soon
each attacker was noticed, and how many honest clerks were refused or locked out. Baseline
decision files (another policy, an older version) are scored side by side so a change is judged
by its difference, not by a number in isolation.

Days are calendar days in Korea (KST): "flagged on day 0" means the attack's first day.

Usage:
    python bench/score.py --truth TRUTH.csv --decisions DECISIONS.csv \\
        [--baseline NAME=DECISIONS.csv ...] [--json OUT.json]

Exit status is 0 whatever the verdict (the verdict is data, not a crash); 2 when an input is
missing or malformed, with the file and line named.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final

from sim_model import (
    ACTORS,
    ALL_THREATS,
    CORPORATE_REASON,
    DECISION_COLUMNS,
    EMPLOYEE_HEADER,
    FAMILIES,
    KST,
    REQUIRED_EVENT_COLUMNS,
    TRUTH_HEADER,
    employees_path_for,
    family_of,
)

from lookup_proxy.accounts import WITHHELD

__all__ = ["InputError", "Targets", "main", "render", "score"]

# Staff groups reported separately: an attacker's ordinary work is honest traffic too, but a
# policy that refuses it has found the attacker, so it must not count against the honest target.
GROUPS: Final = ("honest", "corporate", "attacker_honest")
GROUP_LABELS: Final = {
    "honest": "honest",
    "corporate": "corporate",
    "attacker_honest": "attackers' own work",
}
LOCKED: Final = "locked"


@dataclass(frozen=True)
class Targets:
    """The pass marks DESIGN.md's promise translates to.

    Attackers of each family have their own marks (``informed_*``: insiders who have read the
    policy, issue 9); honest staff have one set whatever the attackers were.
    """

    disclosed_share: float = 0.02  # of what no guard would have disclosed
    per_attacker: int = 10  # records any one attacker may get
    honest_denied_share: float = 0.0005
    corporate_denied: int = 0
    """Of the reps' CORPORATE_ACCOUNT lookups, their runs ("corporate runs untouched"): a
    rep's counter work under everyday reasons meets what any clerk's does."""
    days_to_flag: int = 7
    honest_flagged_share: float = 0.03  # of honest employees flagged at least once
    informed_disclosed_share: float = 0.05
    informed_per_attacker: int = 10
    informed_days_to_flag: int = 7

    def family(self, family: str) -> tuple[float, int, int]:
        """(disclosed share, records per attacker, days to flag) for a threat family."""
        if family == "informed":
            return (
                self.informed_disclosed_share,
                self.informed_per_attacker,
                self.informed_days_to_flag,
            )
        return self.disclosed_share, self.per_attacker, self.days_to_flag


class InputError(Exception):
    """An input file that cannot be scored; the message names the file and the line."""

    def __init__(self, path: Path, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Staff:
    """One employee as the simulator planted them."""

    employee: str
    store: str
    region: str
    role: str
    threat: str
    attack_start: date | None


@dataclass
class AttackerResult:
    """What one decisions file did to one attacker."""

    disclosed: int = 0
    first_flag: date | None = None
    first_deny: date | None = None
    first_lock: date | None = None
    locked: bool = False


@dataclass
class GroupResult:
    """What one decisions file did to one group of honest traffic."""

    lookups: int = 0
    denied: int = 0
    runs: int = 0
    """Lookups under CORPORATE_ACCOUNT: a rep's runs of an account's lines (the rest of a
    rep's lookups are counter work, as any clerk's)."""
    runs_denied: int = 0
    employees: set[str] = field(default_factory=set)
    flagged: set[str] = field(default_factory=set)
    locked: set[str] = field(default_factory=set)
    denied_by_rule: Counter[str] = field(default_factory=Counter)


@dataclass
class FileResult:
    """Everything scored for one decisions file."""

    name: str
    path: Path
    attackers: dict[str, AttackerResult] = field(default_factory=dict)
    groups: dict[str, GroupResult] = field(
        default_factory=lambda: {group: GroupResult() for group in GROUPS}
    )


@dataclass
class Scored:
    """The facts shared by all decisions files plus each file's own results."""

    rows: int
    staff: dict[str, Staff]
    malicious: Counter[str]  # per attacker
    no_guard: Counter[str]  # per attacker: malicious rows whose number was found
    files: list[FileResult]


# --------------------------------------------------------------------------- reading


class _Table:
    """A CSV file read row by row, remembering the line each row came from."""

    def __init__(self, path: Path, required: Sequence[str]) -> None:
        self.path = path
        try:
            self.handle = path.open(newline="", encoding="utf-8")
        except OSError as error:
            raise InputError(path, None, f"cannot open: {error.strerror}") from None
        self.reader = csv.reader(self.handle)
        try:
            header = self._next()
            if header is None:
                raise InputError(path, 1, "empty file, expected a header")
            missing = [name for name in required if name not in header]
            if missing:
                raise InputError(
                    path, 1, f"header lacks {', '.join(missing)} (expected {','.join(required)})"
                )
        except InputError:
            self.close()
            raise
        self.col = {name: header.index(name) for name in required}
        self.width = max(self.col.values()) + 1

    @property
    def line(self) -> int:
        """The line the last row ended on, for error messages."""
        return self.reader.line_num

    def _next(self) -> list[str] | None:
        try:
            return next(self.reader)
        except StopIteration:
            return None
        except (csv.Error, UnicodeDecodeError) as error:
            raise InputError(self.path, self.line + 1, f"unreadable CSV: {error}") from None

    def next_row(self) -> list[str] | None:
        """Return the next data row (skipping blank lines), or None at the end of the file."""
        while (record := self._next()) is not None:
            if not record:
                continue
            if len(record) < self.width:
                raise InputError(
                    self.path, self.line, f"expected {self.width} columns, found {len(record)}"
                )
            return record
        return None

    def close(self) -> None:
        """Release the file."""
        self.handle.close()


def _date(path: Path, line: int, text: str, what: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InputError(
            path, line, f"{what} must be a date like 2026-10-01, got {text!r}"
        ) from None


def read_staff(path: Path) -> dict[str, Staff]:
    """Load TRUTH.employees.csv, which says who attacks, how, and since when."""
    table = _Table(path, EMPLOYEE_HEADER)
    col = table.col
    staff: dict[str, Staff] = {}
    try:
        while (record := table.next_row()) is not None:
            line = table.line
            employee = record[col["employee"]]
            role = record[col["role"]]
            threat = record[col["threat"]]
            start_text = record[col["attack_start"]]
            if role not in ACTORS:
                raise InputError(
                    path, line, f"role must be one of {', '.join(ACTORS)}, got {role!r}"
                )
            if role == "attacker" and not (threat and start_text):
                raise InputError(path, line, "an attacker needs a threat and an attack_start")
            if role != "attacker" and (threat or start_text):
                raise InputError(path, line, f"a {role} employee cannot have a threat")
            if employee in staff:
                raise InputError(path, line, f"employee {employee} listed twice")
            start = _date(path, line, start_text, "attack_start") if start_text else None
            staff[employee] = Staff(
                employee, record[col["store"]], record[col["region"]], role, threat, start
            )
    finally:
        table.close()
    return staff


def _day(path: Path, line: int, text: str) -> date:
    """Read an event timestamp as the Korean calendar day it fell on."""
    moment: datetime | None
    try:
        if text.replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(text), KST).date()
        moment = datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InputError(path, line, f"timestamp must be ISO 8601 with offset, got {text!r}")
    return moment.astimezone(KST).date()


class _Decisions(_Table):
    """One decisions file read in step with the truth."""

    def __init__(self, name: str, path: Path) -> None:
        super().__init__(path, (*REQUIRED_EVENT_COLUMNS, *DECISION_COLUMNS))
        self.name = name

    def aligned(self, row: int, employee: str) -> list[str]:
        """Fetch the decision for truth row `row`, checking it is the same lookup."""
        record = self.next_row()
        if record is None:
            raise InputError(self.path, self.line, f"ends after {row - 1} rows; the truth has more")
        if record[self.col["employee"]] != employee:
            raise InputError(
                self.path,
                self.line,
                f"row {row} is employee {record[self.col['employee']]!r} but the truth says "
                f"{employee!r}: decisions and truth are not row-aligned",
            )
        for column, allowed in (("found", ("true", "false")), ("decision", ("allow", "deny"))):
            value = record[self.col[column]]
            if value not in allowed:
                raise InputError(
                    self.path, self.line, f"{column} must be {' or '.join(allowed)}, got {value!r}"
                )
        return record

    def finish(self, rows: int) -> None:
        """Refuse a decisions file longer than the truth: it belongs to another run."""
        if self.next_row() is not None:
            raise InputError(self.path, self.line, f"has more than the truth's {rows} rows")


def score(
    truth_path: Path,
    decisions: Sequence[tuple[str, Path]],
    employees_path: Path | None = None,
) -> Scored:
    """Join the truth with every decisions file in one streaming pass."""
    if not decisions:
        raise ValueError("score needs at least one decisions file")
    staff = read_staff(employees_path or employees_path_for(truth_path))
    results = [FileResult(name, path) for name, path in decisions]
    for result in results:
        result.attackers = {e: AttackerResult() for e, s in staff.items() if s.role == "attacker"}
    malicious: Counter[str] = Counter()
    no_guard: Counter[str] = Counter()

    truth = _Table(truth_path, TRUTH_HEADER)
    tcol = truth.col
    files: list[_Decisions] = []
    try:
        files.extend(_Decisions(name, path) for name, path in decisions)
        row = 0
        while (record := truth.next_row()) is not None:
            row += 1
            person = _check_truth(truth, record, row, staff)
            employee, actor, threat = person.employee, person.role, record[tcol["threat"]]
            rows = [source.aligned(row, employee) for source in files]
            # Every file replays the same events, so the first one's clock and outcomes serve all.
            first = files[0]
            day = _day(first.path, first.line, rows[0][first.col["timestamp"]])
            found = rows[0][first.col["found"]] == "true"
            if threat:
                malicious[employee] += 1
                no_guard[employee] += found
            group = "attacker_honest" if actor == "attacker" else actor
            for source, result, decision_row in zip(files, results, rows, strict=True):
                col = source.col
                denied = decision_row[col["decision"]] == "deny"
                rule = decision_row[col["rule"]]
                flags = bool(decision_row[col["flags"]].strip())
                flagged = denied or flags
                if threat:
                    if found and not denied:
                        result.attackers[employee].disclosed += 1
                else:
                    # A record withheld for its business account is an honest denial, not a
                    # flag (nothing is raised for review); for an attacker, a refusal seen.
                    suspected = flags or (denied and rule not in WITHHELD)
                    tally = result.groups[group]
                    _tally_group(tally, employee, denied, suspected, rule)
                    if decision_row[col["reason"]] == CORPORATE_REASON:
                        tally.runs += 1
                        tally.runs_denied += denied
                if actor == "attacker":
                    _tally_attacker(result.attackers[employee], person, day, denied, flagged, rule)
        for source in files:
            source.finish(row)
    finally:
        truth.close()
        for source in files:
            source.close()
    return Scored(row, staff, malicious, no_guard, results)


def _check_truth(truth: _Table, record: list[str], row: int, staff: dict[str, Staff]) -> Staff:
    """Refuse truth rows that disagree with their own numbering or with the roster."""
    col = truth.col
    employee, actor, threat = record[col["employee"]], record[col["actor"]], record[col["threat"]]
    if record[col["row"]] != str(row):
        raise InputError(truth.path, truth.line, f"row should be {row}, got {record[col['row']]!r}")
    person = staff.get(employee)
    if person is None:
        raise InputError(truth.path, truth.line, f"employee {employee!r} is not in the roster")
    if actor != person.role:
        raise InputError(
            truth.path, truth.line, f"actor {actor!r} but the roster says {person.role!r}"
        )
    if threat and threat != person.threat:
        raise InputError(
            truth.path, truth.line, f"threat {threat!r} but the roster says {person.threat!r}"
        )
    return person


def _tally_group(group: GroupResult, employee: str, denied: bool, flagged: bool, rule: str) -> None:
    group.lookups += 1
    group.employees.add(employee)
    if flagged:
        group.flagged.add(employee)
    if denied:
        group.denied += 1
        group.denied_by_rule[rule or "?"] += 1
        if rule == LOCKED:
            group.locked.add(employee)


def _tally_attacker(
    tally: AttackerResult, person: Staff, day: date, denied: bool, flagged: bool, rule: str
) -> None:
    """Track when the guard first noticed an attacker, on any of their rows since the attack."""
    if denied and rule == LOCKED:
        tally.locked = True
    if person.attack_start is None or day < person.attack_start:
        return
    if flagged and tally.first_flag is None:
        tally.first_flag = day
    if denied and tally.first_deny is None:
        tally.first_deny = day
    if denied and rule == LOCKED and tally.first_lock is None:
        tally.first_lock = day


# --------------------------------------------------------------------------- reporting


def _days(start: date | None, day: date | None) -> int | None:
    if start is None or day is None:
        return None
    return (day - start).days


def _pct(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole else 0.0


def summarise(scored: Scored, targets: Targets = Targets()) -> dict[str, Any]:
    """Build the report as plain data: the JSON output and the source of the printed table."""
    attackers = sorted(
        (s for s in scored.staff.values() if s.role == "attacker"),
        key=lambda s: (_threat_order(s.threat), s.employee),
    )
    threats = sorted({s.threat for s in attackers}, key=_threat_order)
    names = [f.name for f in scored.files]

    def tally(key: str, value: str, members: list[str]) -> dict[str, Any]:
        no_guard = sum(scored.no_guard[e] for e in members)
        entry: dict[str, Any] = {
            key: value,
            "attackers": len(members),
            "malicious": sum(scored.malicious[e] for e in members),
            "no_guard": no_guard,
            "no_guard_max_per_attacker": max((scored.no_guard[e] for e in members), default=0),
            "disclosed": {},
            "disclosed_pct_of_no_guard": {},
            "max_per_attacker": {},
        }
        for result in scored.files:
            disclosed = [result.attackers[e].disclosed for e in members]
            entry["disclosed"][result.name] = sum(disclosed)
            entry["disclosed_pct_of_no_guard"][result.name] = round(
                _pct(sum(disclosed), no_guard), 3
            )
            entry["max_per_attacker"][result.name] = max(disclosed, default=0)
        return entry

    threat_rows = [
        tally("threat", threat, [s.employee for s in attackers if threat in ("total", s.threat)])
        for threat in [*threats, "total"]
    ]
    family_rows = [
        tally("family", family, [s.employee for s in attackers if family_of(s.threat) == family])
        for family in FAMILIES
        if any(family_of(s.threat) == family for s in attackers)
    ]

    attacker_rows: list[dict[str, Any]] = []
    for person in attackers:
        per_file: dict[str, Any] = {}
        for result in scored.files:
            tally = result.attackers[person.employee]
            per_file[result.name] = {
                "disclosed": tally.disclosed,
                "days_to_flag": _days(person.attack_start, tally.first_flag),
                "days_to_deny": _days(person.attack_start, tally.first_deny),
                "days_to_lock": _days(person.attack_start, tally.first_lock),
                "locked": tally.locked,
            }
        attacker_rows.append(
            {
                "employee": person.employee,
                "store": person.store,
                "region": person.region,
                "threat": person.threat,
                "attack_start": person.attack_start.isoformat() if person.attack_start else None,
                "malicious": scored.malicious[person.employee],
                "no_guard": scored.no_guard[person.employee],
                "results": per_file,
            }
        )

    staff_rows: dict[str, Any] = {}
    for result in scored.files:
        staff_rows[result.name] = {
            group: {
                "employees": len(tally.employees),
                "lookups": tally.lookups,
                "denied": tally.denied,
                "denied_pct": round(_pct(tally.denied, tally.lookups), 4),
                "runs": tally.runs,
                "runs_denied": tally.runs_denied,
                "flagged_employees": sorted(tally.flagged),
                "locked_employees": sorted(tally.locked),
                "denied_by_rule": dict(tally.denied_by_rule.most_common()),
            }
            for group, tally in result.groups.items()
        }

    verdicts = {
        name: _verdict(name, family_rows, attacker_rows, staff_rows[name], targets)
        for name in names
    }
    return {
        "rows": scored.rows,
        "decisions": {f.name: str(f.path) for f in scored.files},
        "targets": {
            "disclosed_pct_of_no_guard": 100 * targets.disclosed_share,
            "max_records_per_attacker": targets.per_attacker,
            "honest_denied_pct": 100 * targets.honest_denied_share,
            "corporate_denied": targets.corporate_denied,
            "days_to_flag": targets.days_to_flag,
            "honest_flagged_pct": 100 * targets.honest_flagged_share,
            "informed_disclosed_pct_of_no_guard": 100 * targets.informed_disclosed_share,
            "informed_max_records_per_attacker": targets.informed_per_attacker,
            "informed_days_to_flag": targets.informed_days_to_flag,
        },
        "threats": threat_rows,
        "families": family_rows,
        "attackers": attacker_rows,
        "staff": staff_rows,
        "verdicts": verdicts,
    }


def _threat_order(threat: str) -> tuple[int, str]:
    return (ALL_THREATS.index(threat) if threat in ALL_THREATS else len(ALL_THREATS), threat)


def _verdict(
    name: str,
    families: list[dict[str, Any]],
    attackers: list[dict[str, Any]],
    staff: dict[str, Any],
    targets: Targets,
) -> dict[str, Any]:
    """Hold one decisions file against every target, explaining each outcome in a line.

    Checks are tagged with what they judge: a threat family's attackers, or honest staff. The
    classic family's and honest staff's come first, in their long-standing order; the informed
    family's only when the run planted such insiders.
    """
    checks: list[dict[str, Any]] = []

    def check(family: str, target: str, ok: bool, detail: str) -> None:
        checks.append({"family": family, "target": target, "ok": ok, "detail": detail})

    by_family = {row["family"]: row for row in families}
    empty = {"disclosed": {name: 0}, "no_guard": 0}

    def attacker_checks(family: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        share, per_attacker, _ = targets.family(family)
        label = "attacker" if family == "classic" else f"{family} attacker"
        members = [a for a in attackers if family_of(a["threat"]) == family]
        total = by_family.get(family, empty)
        disclosed, no_guard = total["disclosed"][name], total["no_guard"]
        check(
            family,
            f"{'' if family == 'classic' else family + ' '}total disclosed <= {100 * share:g}% "
            "of no guard",
            disclosed <= share * no_guard,
            f"{disclosed} of {no_guard} ({_pct(disclosed, no_guard):.2f}%)",
        )
        worst = max(members, key=lambda a: a["results"][name]["disclosed"], default=None)
        worst_count = worst["results"][name]["disclosed"] if worst else 0
        check(
            family,
            f"no single {label} > {per_attacker} records",
            worst_count <= per_attacker,
            f"worst {worst['employee']} ({worst['threat']}) {worst_count}"
            if worst
            else "no attackers",
        )
        return members, total

    def flagged_in_time(family: str, members: list[dict[str, Any]]) -> None:
        days = targets.family(family)[2]
        late = [
            a
            for a in members
            if a["malicious"]
            and (
                a["results"][name]["days_to_flag"] is None
                or a["results"][name]["days_to_flag"] > days
            )
        ]
        active = sum(1 for a in members if a["malicious"])
        label = "attacker" if family == "classic" else f"{family} attacker"
        check(
            family,
            f"every {label} flagged within {days} days",
            not late,
            f"{active - len(late)} of {active} in time"
            + (
                "; late or never: "
                + ", ".join(
                    f"{a['employee']} ({a['threat']}, "
                    f"{_fmt_days(a['results'][name]['days_to_flag'])})"
                    for a in late
                )
                if late
                else ""
            ),
        )

    classic, _ = attacker_checks("classic")

    locked = staff["honest"]["locked_employees"] + staff["corporate"]["locked_employees"]
    check(
        "honest",
        "no honest or corporate employee locked",
        not locked,
        f"{len(locked)} locked" + (f": {', '.join(sorted(locked)[:10])}" if locked else ""),
    )

    honest = staff["honest"]
    check(
        "honest",
        f"honest lookups denied <= {100 * targets.honest_denied_share:g}%",
        honest["denied"] <= targets.honest_denied_share * honest["lookups"],
        f"{honest['denied']} of {honest['lookups']} ({honest['denied_pct']:.4f}%)",
    )

    corporate = staff["corporate"]
    check(
        "honest",
        f"corporate runs denied = {targets.corporate_denied}",
        corporate["runs_denied"] <= targets.corporate_denied,
        f"{corporate['runs_denied']} of {corporate['runs']} CORPORATE_ACCOUNT lookups; "
        f"{corporate['denied']} of all {corporate['lookups']} of the reps' lookups",
    )

    flagged_in_time("classic", classic)

    flagged, employees = len(honest["flagged_employees"]), honest["employees"]
    check(
        "honest",
        f"honest staff flagged <= {100 * targets.honest_flagged_share:g}%",
        flagged <= targets.honest_flagged_share * employees,
        f"{flagged} of {employees} ({_pct(flagged, employees):.2f}%)",
    )

    if "informed" in by_family:
        informed, _ = attacker_checks("informed")
        flagged_in_time("informed", informed)

    verdict: dict[str, Any] = {"pass": all(c["ok"] for c in checks), "checks": checks}
    verdict["families"] = {
        family: all(c["ok"] for c in checks if c["family"] == family)
        for family in ("classic", *(f for f in by_family if f != "classic"), "honest")
    }
    return verdict


def _fmt_days(days: int | None) -> str:
    return "never" if days is None else f"day {days}"


def _cell(days: int | None) -> str:
    return "-" if days is None else str(days)


def render(report: dict[str, Any]) -> str:
    """Lay the report out as fixed-width tables for a terminal."""
    names = list(report["decisions"])
    out = [
        f"{report['rows']} lookups scored; decisions: "
        + ", ".join(f"{n}={p}" for n, p in report["decisions"].items()),
        "",
        "Records disclosed by threat class (malicious lookups of a found number that were allowed)",
    ]
    head = f"{'threat':<22}{'attackers':>10}{'malicious':>10}{'no-guard':>9}{'max':>5}"
    for name in names:
        head += f" | {name[:12]:>12}{'%':>8}{'max':>5}"
    out.append(head)
    families = [{**row, "threat": f"family {row['family']}"} for row in report["families"]]
    for entry in [*report["threats"], *families]:
        line = (
            f"{entry['threat']:<22}{entry['attackers']:>10}{entry['malicious']:>10}"
            f"{entry['no_guard']:>9}{entry['no_guard_max_per_attacker']:>5}"
        )
        for name in names:
            line += (
                f" | {entry['disclosed'][name]:>12}"
                f"{entry['disclosed_pct_of_no_guard'][name]:>7.2f}%"
                f"{entry['max_per_attacker'][name]:>5}"
            )
        out.append(line)

    for name in names:
        out += [
            "",
            f"Attackers under {name} (days counted from attack_start; - = never)",
            f"{'employee':<9}{'threat':<22}{'start':<11}{'malicious':>10}{'no-guard':>9}"
            f"{'disclosed':>10}{'flag':>5}{'deny':>5}{'lock':>5}  locked",
        ]
        for attacker in report["attackers"]:
            result = attacker["results"][name]
            out.append(
                f"{attacker['employee']:<9}{attacker['threat']:<22}"
                f"{attacker['attack_start'] or '-':<11}{attacker['malicious']:>10}"
                f"{attacker['no_guard']:>9}{result['disclosed']:>10}"
                f"{_cell(result['days_to_flag']):>5}{_cell(result['days_to_deny']):>5}"
                f"{_cell(result['days_to_lock']):>5}  {'yes' if result['locked'] else 'no'}"
            )

        out += [
            "",
            f"Honest traffic under {name}",
            f"{'group':<21}{'employees':>10}{'lookups':>9}{'denied':>8}{'%':>9}{'flagged':>8}"
            f"{'locked':>7}  denied by rule",
        ]
        for group, tally in report["staff"][name].items():
            rules = ", ".join(f"{r} {n}" for r, n in list(tally["denied_by_rule"].items())[:4])
            out.append(
                f"{GROUP_LABELS[group]:<21}{tally['employees']:>10}{tally['lookups']:>9}"
                f"{tally['denied']:>8}{tally['denied_pct']:>8.4f}%"
                f"{len(tally['flagged_employees']):>8}{len(tally['locked_employees']):>7}"
                f"  {rules}"
            )

    for name in names:
        verdict = report["verdicts"][name]
        out += ["", f"Verdict for {name}"]
        for item in verdict["checks"]:
            out.append(f"{'PASS' if item['ok'] else 'FAIL'}  {item['target']}: {item['detail']}")
        met = sum(1 for c in verdict["checks"] if c["ok"])
        out.append(
            f"VERDICT {name}: {'PASS' if verdict['pass'] else 'FAIL'} "
            f"({met}/{len(verdict['checks'])} targets met; "
            + ", ".join(f"{f} {'PASS' if ok else 'FAIL'}" for f, ok in verdict["families"].items())
            + ")"
        )
    return "\n".join(out)


# --------------------------------------------------------------------------- command line


def _named(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=DECISIONS.csv, got {text!r}")
    return name, Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Score from the command line; malformed input exits 2, any verdict exits 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--truth", type=Path, required=True, help="TRUTH.csv from simulate.py")
    parser.add_argument(
        "--employees", type=Path, default=None, help="default: TRUTH.employees.csv next to --truth"
    )
    parser.add_argument("--decisions", type=Path, required=True, help="DECISIONS.csv from replay")
    parser.add_argument("--name", default="policy", help="label for --decisions (default: policy)")
    parser.add_argument(
        "--baseline",
        type=_named,
        action="append",
        default=[],
        metavar="NAME=DECISIONS.csv",
        help="another decisions file to score alongside (repeatable)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON")
    args = parser.parse_args(argv)
    decisions: list[tuple[str, Path]] = [(args.name, args.decisions), *args.baseline]
    labels = [name for name, _ in decisions]
    if len(set(labels)) != len(labels):
        parser.error(f"decision file names must be unique, got {', '.join(labels)}")

    try:
        report = summarise(score(args.truth, decisions, args.employees))
    except InputError as error:
        print(f"score: error: {error}", file=sys.stderr)
        return 2
    print(render(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
