"""A simulated month, day by day, and the files a backtest reads: EVENTS, TRUTH, roster.

EVENTS.csv is what ``lookup-proxy replay`` consumes; TRUTH.csv, row-aligned, says which rows
were malicious and TRUTH.employees.csv who the attackers were and when they started;
EVENTS.roster.csv (employee,roles) is what an HR directory would give replay's ``--roster``.
Days are generated one at a time, so a month of a large chain never sits in memory.
"""

from __future__ import annotations

import csv
import random
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from operator import itemgetter
from pathlib import Path

from lookup_proxy.simulation.campaigns import Campaign, build_campaigns
from lookup_proxy.simulation.contracts import (
    CORPORATE_ROLE,
    EMPLOYEE_HEADER,
    EVENT_HEADER,
    TRUTH_HEADER,
    employees_path_for,
    roster_path_for,
)
from lookup_proxy.simulation.honest import honest_day
from lookup_proxy.simulation.informed import informed_campaigns
from lookup_proxy.simulation.roster import Employee, SimConfig, build_roster
from lookup_proxy.simulation.workday import HOUR, Event, day_segments
from lookup_proxy.simulation.world import World


@dataclass
class Summary:
    """What a run produced, for the stderr report and for tests."""

    rows: int = 0
    by_actor: Counter[str] = field(default_factory=Counter)
    by_threat: Counter[str] = field(default_factory=Counter)
    found_by_threat: Counter[str] = field(default_factory=Counter)
    roster: list[Employee] = field(default_factory=list)
    launch_day: date | None = None


def stamp(start: date, day: int, second: int) -> str:
    """The EVENTS.csv timestamp of a second of a day of the period, in Korean time."""
    prefix = (start + timedelta(days=day)).isoformat()
    return f"{prefix}T{second // HOUR:02d}:{second // 60 % 60:02d}:{second % 60:02d}+09:00"


def event_row(cfg: SimConfig, day: int, event: Event, world: World) -> tuple[str, ...]:
    """One EVENTS.csv row for a generated event, the found record's business account last."""
    t, number, reason, reference, found, employee, _ = event
    return (
        stamp(cfg.start, day, t),
        employee.id,
        employee.store,
        employee.region,
        number,
        reason,
        reference,
        "true" if found else "false",
        world.account_of(number) if found else "",
    )


def month_days(
    cfg: SimConfig,
    roster: Sequence[Employee],
    world: World,
    campaigns: Mapping[str, Campaign],
) -> Iterator[tuple[int, list[Event]]]:
    """Each day of the period with its events in time order (equal seconds keep their order)."""
    for day in range(cfg.days):
        out: list[Event] = []
        for employee in roster:
            if day not in employee.workdays:
                continue
            rng = random.Random(f"{cfg.seed}/{employee.id}/{day}")
            segments = day_segments(employee, rng)
            honest_day(world, employee, segments, day, rng, out)
            campaign = campaigns.get(employee.id)
            if campaign and employee.attack_start is not None and day >= employee.attack_start:
                campaign.day(segments, out)
        out.sort(key=itemgetter(0))  # stable: equal seconds keep generation order
        yield day, out


def all_campaigns(cfg: SimConfig, world: World, roster: Sequence[Employee]) -> dict[str, Campaign]:
    """Every planted attacker's campaign, of each family the config asks for."""
    campaigns = build_campaigns(world, roster)
    if "informed" in cfg.families:
        if cfg.policy is None:
            raise ValueError("informed insiders read a policy: give one (--policy)")
        campaigns.update(informed_campaigns(world, roster, cfg.policy))
    return campaigns


def roles_of(employee: Employee) -> tuple[str, ...]:
    """The roles HR's directory gives an employee: every one is a clerk, reps also sell.

    The informed corporate insider is a rep gone bad: HR gave them the role as to any rep.
    """
    if employee.role == "corporate" or employee.threat == "informed_corporate":
        return ("clerk", CORPORATE_ROLE)
    return ("clerk",)


def write_roster(roster: Sequence[Employee], path: Path) -> None:
    """Write the employee,roles,accounts file replay takes as ``--roster`` (roles, and the
    business accounts a corporate rep works, as an HR directory and the tokens give them; no
    truth)."""
    with path.open("w", newline="", encoding="utf-8") as roster_file:
        writer = csv.writer(roster_file, lineterminator="\n")
        writer.writerow(("employee", "roles", "accounts"))
        for employee in roster:
            accounts = ";".join(account.reference for account in employee.accounts)
            writer.writerow((employee.id, ";".join(roles_of(employee)), accounts))


def simulate(cfg: SimConfig, events_path: Path, truth_path: Path) -> Summary:
    """Write EVENTS, TRUTH and TRUTH.employees, one day at a time to bound memory."""
    roster = build_roster(cfg)
    world = World(cfg)
    campaigns = all_campaigns(cfg, world, roster)
    summary = Summary(roster=roster)
    if 0 <= world.launch < cfg.days:
        summary.launch_day = cfg.start + timedelta(days=world.launch)

    with (
        events_path.open("w", newline="", encoding="utf-8") as events_file,
        truth_path.open("w", newline="", encoding="utf-8") as truth_file,
    ):
        events = csv.writer(events_file, lineterminator="\n")
        truth = csv.writer(truth_file, lineterminator="\n")
        events.writerow(EVENT_HEADER)
        truth.writerow(TRUTH_HEADER)
        row = 0
        for day, out in month_days(cfg, roster, world, campaigns):
            for event in out:
                row += 1
                employee, threat, found = event[5], event[6], event[4]
                events.writerow(event_row(cfg, day, event, world))
                truth.writerow((row, employee.id, employee.role, threat))
                summary.by_actor[employee.role] += 1
                if threat:
                    summary.by_threat[threat] += 1
                    summary.found_by_threat[threat] += found
        summary.rows = row

    with employees_path_for(truth_path).open("w", newline="", encoding="utf-8") as roster_file:
        writer = csv.writer(roster_file, lineterminator="\n")
        writer.writerow(EMPLOYEE_HEADER)
        for employee in roster:
            start = (
                (cfg.start + timedelta(days=employee.attack_start)).isoformat()
                if employee.attack_start is not None
                else ""
            )
            writer.writerow(
                (
                    employee.id,
                    employee.store,
                    employee.region,
                    employee.role,
                    employee.threat,
                    start,
                )
            )
    # Role-limited reasons (CORPORATE_ACCOUNT) must be judged as the live proxy judges them.
    write_roster(roster, roster_path_for(events_path))
    return summary
