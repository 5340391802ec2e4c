"""The review queue: flags and locks become cases that reach a person.

``model`` folds an employee's case events into cases (pure, no store); ``book`` keeps those
events in the guard's store, shared by every instance; ``raiser`` feeds the guard's signals to
the book off the terminal's wait; ``audit`` is what every transition is also written to.
"""

from lookup_proxy.cases.book import CaseBook, CaseClosed, CaseNotFound
from lookup_proxy.cases.model import RESOLUTIONS, STATUSES, Case, CaseEvent, Signal
from lookup_proxy.cases.raiser import CaseRaiser

__all__ = [
    "RESOLUTIONS",
    "STATUSES",
    "Case",
    "CaseBook",
    "CaseClosed",
    "CaseEvent",
    "CaseNotFound",
    "CaseRaiser",
    "Signal",
]
