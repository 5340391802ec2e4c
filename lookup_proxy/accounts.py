"""Business accounts: which lookups may see a business customer's lines.

A business owns consecutive lines, so whoever knows where one business's lines are can walk
them: a record at every step and no miss for any rule to count, where a random number finds a
customer one time in seven. The red-team (2026-12-07) found a clerk walking the chain's
business lines under BILLING_INQUIRY at 72-92 records a month, never flagged, and a corporate
rep walking other businesses' lines under their own account's reference at 46-50 at the
search's last step, with nothing binding (a reference's pattern says only that it looks like
one). No lookup pattern tells these apart from honest work; the answer does, when the backend's
record names the account its line belongs to (``[accounts] field``):

- ``own``: a reason whose reference names the account (CORPORATE_ACCOUNT) sees a record only
  if the record names that very reference; another business's line, or a consumer's, is
  withheld (403 ``reference-mismatch``).
- ``none`` (every other reason, by default): a record that names any account is withheld
  (403 ``business-line``): a business's line is worked under its account's reference.
- ``any``: the reason sees business lines as any other record (a reason kept for serving a
  business line's holder at the counter, with a tight per-reason limit of its own).

A reference is no secret (it is on the contract and on a colleague's screen), so ``own`` alone
would pass another business's lines under that business's own reference: which references an
employee may use at all is the token's to say (``[auth.claims] accounts``, checked at justify:
:mod:`lookup_proxy.justify`).

A record withheld for a reference's mismatch is learned as a miss: the refusal still tells
the rep that the number is somebody's, so it is counted as every probe's miss is, and the
misses rules bound it. A business line withheld from another reason is learned as found, as
it was: honest clerks meet business lines' holders at the counter (the simulated months'
regulars include some), and counting those as misses flagged 12 and 10 honest clerks on tuning
months 1 and 2 where 7 and 5 were (2026-12-07). Only
answers the backend calls found are checked (a 404 shows no record). An answer that cannot be
checked (not UTF-8 JSON, encoded, too large) is refused as one that cannot be trimmed is
(:mod:`lookup_proxy.minimise`); a found answer with no body names no account.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from lookup_proxy.errors import Refusal
from lookup_proxy.minimise import parse_path

Access = Literal["own", "none", "any"]

REFERENCE_MISMATCH: Final = "reference-mismatch"
BUSINESS_LINE: Final = "business-line"
LEARNED_AS_FOUND: Final = {REFERENCE_MISMATCH: False, BUSINESS_LINE: True}
"""Causes of a record withheld for its account, and what the guard learns of each: a
reference's mismatch is a miss (the refusal tells a rep that a consumer's number, or another
business's, is somebody's: an existence oracle, bounded as every probe's misses are); a
business line is found, as it was (the clerk learns nothing they did not know: a business
customer's holder stands at the counter, or a walk knows where the lines are)."""
WITHHELD: Final = frozenset(LEARNED_AS_FOUND)
"""Every cause of a record withheld for its account: a refusal for access, not a suspicion."""


def check_account_path(text: str) -> str:
    """``text`` if it is a field path to one value (no ``[]``); ValueError if not."""
    steps = parse_path(text)
    if any(name is None or lists for name, lists in steps):
        raise ValueError("a field path to one value, such as 'account.reference' (no '[]')")
    return text


class AccountCheck:
    """One reason's check of found records: ``own`` or ``none`` (``any`` needs none)."""

    __slots__ = ("access", "names", "path", "reason")

    def __init__(self, reason: str, access: Access, path: str) -> None:
        self.reason = reason
        self.access = access
        self.path = check_account_path(path)
        self.names = tuple(name for name, _ in parse_path(path) if name is not None)

    def account(self, answer: object) -> str | None:
        """The account the parsed ``answer`` names at the path (None: none, or not a string)."""
        value = answer
        for name in self.names:
            if not isinstance(value, dict):
                return None
            value = value.get(name)
        return value if isinstance(value, str) and value else None

    def refusal(
        self, answer: object, reference: str | None, upstream_status: int
    ) -> Refusal | None:
        """The 403 in place of a record this lookup may not see, or None when it may."""
        return self.refusal_for(self.account(answer), reference, upstream_status)

    def refusal_for(
        self, account: str | None, reference: str | None, upstream_status: int
    ) -> Refusal | None:
        """:meth:`refusal` for a found record that names ``account`` (None: none): the live
        proxy reads it from the answer, replay from EVENTS.csv's ``account`` column."""
        if self.access == "own":
            if reference is not None and account == reference:
                return None
            return Refusal(
                f"This number is not a line of the account {reference}, so its record is not "
                f"shown. Look it up under the reference of the account it belongs to; if you "
                f"are sure it is this one, ask the account's manager to check its lines.",
                status=403,
                cause=REFERENCE_MISMATCH,
                title="Not a line of this account",
                extra={"upstream_status": upstream_status},
            )
        if account is None:
            return None
        return Refusal(
            "This number is a line of a business customer, so its record is shown only to its "
            "account's representatives, under the account's reference. Ask a corporate "
            "representative to help this customer.",
            status=403,
            cause=BUSINESS_LINE,
            title="A business customer's line",
            extra={"upstream_status": upstream_status},
        )


def account_checks(field: str | None, access: Mapping[str, Access]) -> dict[str, AccountCheck]:
    """Reason code → its check, for every reason that does not see any account's lines
    (none without an ``[accounts]`` field)."""
    if field is None:
        return {}
    return {code: AccountCheck(code, mode, field) for code, mode in access.items() if mode != "any"}
