"""Vocabulary shared by the traffic simulator and the scorer (re-exported from the package).

Both tools must agree on file layouts, threat names and what "the same number" means; those
facts now live in ``lookup_proxy.simulation`` (contracts, number_space, customer_book), where the
installed red-team reads them too. This module keeps the names the bench scripts import.
"""

from __future__ import annotations

from lookup_proxy.simulation.contracts import (
    ACTORS,
    ALL_THREATS,
    CLASSIC_THREATS,
    CORPORATE_REASON,
    DECISION_COLUMNS,
    EMPLOYEE_HEADER,
    EVENT_HEADER,
    FAMILIES,
    INFORMED_THREATS,
    KST,
    REASONS,
    REQUIRED_EVENT_COLUMNS,
    THREATS,
    TRUTH_HEADER,
    employees_path_for,
    family_of,
    roster_path_for,
)
from lookup_proxy.simulation.customer_book import CustomerBook, is_customer
from lookup_proxy.simulation.number_space import (
    NUMBER_STYLES,
    SUBSCRIBER_MAX,
    SUBSCRIBER_MIN,
    canonical,
    format_number,
    number_of,
    random_subscriber,
)

__all__ = [
    "ACTORS",
    "ALL_THREATS",
    "CLASSIC_THREATS",
    "CORPORATE_REASON",
    "DECISION_COLUMNS",
    "EMPLOYEE_HEADER",
    "EVENT_HEADER",
    "FAMILIES",
    "INFORMED_THREATS",
    "KST",
    "NUMBER_STYLES",
    "REASONS",
    "REQUIRED_EVENT_COLUMNS",
    "SUBSCRIBER_MAX",
    "SUBSCRIBER_MIN",
    "THREATS",
    "TRUTH_HEADER",
    "CustomerBook",
    "canonical",
    "employees_path_for",
    "family_of",
    "format_number",
    "is_customer",
    "number_of",
    "random_subscriber",
    "roster_path_for",
]
