"""The justify step on its own: reason codes, roles and references from the catalogue."""

from __future__ import annotations

import pytest

from lookup_proxy.employee import Employee
from lookup_proxy.errors import Refusal
from lookup_proxy.justify import ReasonCatalogue
from tests.harness import policy

CATALOGUE = ReasonCatalogue(policy("http://127.0.0.1:1").reasons)
CLERK = Employee("E1", "S1", "R1", frozenset({"clerk"}))


def refusal(reason: str | None, reference: str | None = None, who: Employee = CLERK) -> Refusal:
    with pytest.raises(Refusal) as caught:
        CATALOGUE.justify(who, reason, reference)
    return caught.value


def test_an_own_account_reason_takes_only_the_references_the_token_names() -> None:
    """With ``[auth.claims] accounts``, a reason with ``accounts = "own"`` refuses a reference
    the employee's token does not name (403 account-not-assigned); without the claim, or for
    another reason, any reference that fits passes."""
    reasons = policy(
        "http://127.0.0.1:1", extra='[accounts]\nfield = "account.reference"\n'
    ).reasons
    reasons["CORPORATE_ACCOUNT"] = reasons["CORPORATE_ACCOUNT"].model_copy(
        update={"accounts": "own"}
    )
    rep = Employee("E2", "S1", "R1", frozenset({"clerk"}), frozenset({"CORP-000001"}))
    assigned = ReasonCatalogue(reasons, assigned=True)
    assert assigned.justify(rep, "CORPORATE_ACCOUNT", "CORP-000001").reference == "CORP-000001"
    with pytest.raises(Refusal) as caught:
        assigned.justify(rep, "CORPORATE_ACCOUNT", "CORP-000002")
    assert (caught.value.status, caught.value.cause) == (403, "account-not-assigned")
    assert "CORP-000002" in caught.value.detail
    assert ReasonCatalogue(reasons).justify(rep, "CORPORATE_ACCOUNT", "CORP-000002").reason
    assert assigned.justify(rep, "PLAN_CHANGE", None).reason == "PLAN_CHANGE"


def test_a_catalogue_code_is_accepted_with_surrounding_spaces_trimmed() -> None:
    """Terminals that pad the header still get their reason recognised."""
    justification = CATALOGUE.justify(CLERK, "  PLAN_CHANGE ", None)
    assert (justification.reason, justification.reference) == ("PLAN_CHANGE", None)


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_a_missing_reason_lists_the_choices(reason: str | None) -> None:
    """The clerk is told to choose a reason and which ones exist."""
    refused = refusal(reason)
    assert (refused.status, refused.cause) == (400, "missing-reason")
    assert "PLAN_CHANGE" in refused.detail


def test_an_unknown_reason_is_refused_without_echoing_it() -> None:
    """A made-up code is refused with the catalogue; what the terminal sent is not repeated."""
    for sent in ("PROSPECTING", "<script>", "X\x00Y"):
        refused = refusal(sent)
        assert refused.cause == "unknown-reason"
        assert sent not in refused.detail
        assert "PLAN_CHANGE" in refused.detail


def test_codes_are_case_sensitive() -> None:
    """`plan_change` is not a catalogue code: there is one spelling per reason."""
    assert refusal("plan_change").cause == "unknown-reason"


def test_role_limited_codes_need_the_role() -> None:
    """FRAUD_REVIEW is refused to a clerk and accepted for a fraud analyst."""
    refused = refusal("FRAUD_REVIEW")
    assert (refused.status, refused.cause) == (403, "reason-not-permitted")
    analyst = Employee("E2", "S1", None, frozenset({"fraud-analyst"}))
    assert CATALOGUE.justify(analyst, "FRAUD_REVIEW", None).reason == "FRAUD_REVIEW"


@pytest.mark.parametrize(
    ("reference", "cause"),
    [
        (None, "missing-reference"),
        ("", "missing-reference"),
        ("CORP-12345", "bad-reference"),
        ("CORP-1234567", "bad-reference"),
        ("corp-123456", "bad-reference"),
        ("CORP-123456 X", "bad-reference"),
    ],
)
def test_references_must_match_the_whole_pattern(reference: str | None, cause: str) -> None:
    """The reference must fully match; the hint tells the clerk its shape."""
    refused = refusal("CORPORATE_ACCOUNT", reference)
    assert refused.cause == cause
    assert "CORP- followed by 6 digits" in refused.detail


def test_a_valid_reference_is_kept() -> None:
    """A corporate lookup keeps its reference for the backend and the audit line."""
    assert CATALOGUE.justify(CLERK, "CORPORATE_ACCOUNT", "CORP-004211").reference == "CORP-004211"


def test_an_overlong_free_reference_is_refused() -> None:
    """Codes without a pattern still bound the reference's length."""
    assert refusal("PLAN_CHANGE", "x" * 129).cause == "bad-reference"
