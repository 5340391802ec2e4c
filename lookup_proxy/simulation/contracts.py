"""File layouts and vocabulary shared by the traffic simulator, the scorer and the red-team.

The tools must agree on columns, actor and threat names and where side files live; keeping
those facts here means a change to one contract cannot silently desynchronise another tool.
The replay columns come from the replay tool itself, so the two cannot drift.
"""

from __future__ import annotations

from datetime import timedelta, timezone
from pathlib import Path
from typing import Final

from lookup_proxy.replay import ACCOUNT_EVENT_COLUMNS, DECIDED_COLUMNS, EVENT_COLUMNS

KST: Final = timezone(timedelta(hours=9), "KST")

EVENT_HEADER: Final = ACCOUNT_EVENT_COLUMNS
"""The simulator writes the optional ``account`` column: its business customers' lines name
their account, so replay withholds them as the live proxy's ``[accounts]`` does."""
DECISION_COLUMNS: Final = DECIDED_COLUMNS
REQUIRED_EVENT_COLUMNS: Final = EVENT_COLUMNS
"""The columns every EVENTS.csv has (``account`` is optional)."""
TRUTH_HEADER: Final = ("row", "employee", "actor", "threat")
EMPLOYEE_HEADER: Final = ("employee", "store", "region", "role", "threat", "attack_start")

ACTORS: Final = ("honest", "corporate", "attacker")

REASONS: Final = (
    "NEW_SUBSCRIPTION",
    "CONTRACT_RENEWAL",
    "PLAN_CHANGE",
    "BILLING_INQUIRY",
    "DEVICE_SUPPORT",
    "CORPORATE_ACCOUNT",
)
CORPORATE_REASON: Final = "CORPORATE_ACCOUNT"
CORPORATE_ROLE: Final = "corporate-sales"

# Ordered as DESIGN.md lists them, so reports read in the same order as the threat model.
CLASSIC_THREATS: Final = (
    "random_typing",
    "sequential_asc",
    "sequential_desc",
    "strided",
    "block_shuffle",
    "slow_probe",
    "collusion",
    "rotation",
    "shift_burst",
)
THREATS: Final = CLASSIC_THREATS
# Insiders who have read the policy (lookup_proxy.simulation.informed); a family of their own.
INFORMED_THREATS: Final = (
    "informed_newsub",
    "informed_typo_farm",
    "informed_slow",
    "informed_after_hours",
    "informed_groups",
    "informed_corporate",
    "informed_rotation",
    "informed_padded",
    "informed_quiet",
    "informed_business_walk",
)
QUIET_WORK: Final = 0.1
"""An ``informed_quiet`` insider's pace of honest work, as a share of what their rota gives a
clerk: a part-timer, a manager or a back-office clerk with a terminal, whose few numbers of
their own are what a rule that judges only busy employees never looks at."""
ALL_THREATS: Final = (*CLASSIC_THREATS, *INFORMED_THREATS)
FAMILIES: Final = {"classic": CLASSIC_THREATS, "informed": INFORMED_THREATS}


def family_of(threat: str) -> str:
    """The family a threat class belongs to (``classic`` for names it does not know)."""
    return "informed" if threat in INFORMED_THREATS else "classic"


def roster_path_for(events: Path) -> Path:
    """The employee roster (employee,roles) written next to EVENTS.csv, for replay --roster."""
    return events.with_suffix(".roster.csv")


def employees_path_for(truth: Path) -> Path:
    """Place the per-employee truth next to the per-row truth so one path names both."""
    return truth.with_suffix(".employees.csv")
