"""The *justify* step: every lookup names why it is made, from the policy's reason catalogue.

There is deliberately no "prospecting" reason; a code can require a reference (a corporate
account number) and can be reserved to roles. Details are written for the clerk at the terminal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lookup_proxy.employee import Employee
from lookup_proxy.errors import bad_request, not_permitted
from lookup_proxy.policy import Reason

_MAX_REFERENCE = 128


@dataclass(frozen=True, slots=True)
class Justification:
    """A reason code from the catalogue, and its reference when one was given."""

    reason: str
    reference: str | None


class ReasonCatalogue:
    """Checks a lookup's reason and reference against the policy."""

    def __init__(self, reasons: dict[str, Reason], assigned: bool = False) -> None:
        self._reasons = reasons
        self._assigned = assigned
        """Whether tokens name the accounts each employee works (``[auth.claims] accounts``):
        then a reason with ``accounts = "own"`` takes only those references."""
        self._patterns = {
            code: re.compile(reason.reference_pattern)
            for code, reason in reasons.items()
            if reason.reference_pattern is not None
        }
        self._choices = ", ".join(sorted(reasons))

    def justify(
        self, employee: Employee, reason: str | None, reference: str | None
    ) -> Justification:
        """The justification, or a 400/403 Refusal naming what is missing or wrong."""
        code = (reason or "").strip()
        if not code:
            raise bad_request(
                "Choose a reason for this lookup (for example CONTRACT_RENEWAL). Every customer "
                f"lookup needs one of: {self._choices}.",
                "missing-reason",
            )
        entry = self._reasons.get(code)
        if entry is None:
            # Not echoed: an answer repeats nothing the terminal sent.
            raise bad_request(
                f"That is not a lookup reason. Choose one of: {self._choices}.",
                "unknown-reason",
            )
        if entry.roles is not None and not employee.roles.intersection(entry.roles):
            raise not_permitted(
                f"Your role may not look up customers for {code} ({entry.description}). "
                "Choose the reason that matches the customer in front of you, or ask your "
                "store manager.",
                "reason-not-permitted",
            )
        ref = (reference or "").strip() or None
        pattern = self._patterns.get(code)
        if pattern is not None:
            hint = entry.reference_hint or f"matching {entry.reference_pattern}"
            if ref is None:
                raise bad_request(
                    f"A lookup for {code} needs a reference ({hint}). Enter it and try again.",
                    "missing-reference",
                )
            if len(ref) > _MAX_REFERENCE or pattern.fullmatch(ref) is None:
                raise bad_request(
                    f"The reference for {code} must be {hint}. Check it and try again.",
                    "bad-reference",
                )
            if self._assigned and entry.accounts == "own" and ref not in employee.accounts:
                # A reference is no secret (it is on the contract and on a colleague's
                # screen): the account's own reps may use it, nobody else.
                raise not_permitted(
                    f"The account {ref} is not one of yours, so you may not look up its lines. "
                    "Ask the account's representative, or your manager to assign it to you.",
                    "account-not-assigned",
                )
        elif ref is not None and len(ref) > _MAX_REFERENCE:
            raise bad_request(
                f"The reference is too long (at most {_MAX_REFERENCE} characters).",
                "bad-reference",
            )
        return Justification(code, ref)
