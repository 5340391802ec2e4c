"""Business accounts: a business customer's line is shown only under its account's reference."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from lookup_proxy.accounts import AccountCheck, account_checks, check_account_path
from lookup_proxy.app import Proxy
from lookup_proxy.customers import CustomerBase
from lookup_proxy.errors import ConfigError
from lookup_proxy.policy import Policy, parse_policy
from lookup_proxy.replay import ACCOUNT_EVENT_COLUMNS, Replayer
from tests.harness import audit_records, policy_text, running_proxy, serving, token

BASE = CustomerBase()
OURS, THEIRS = BASE.businesses[0], BASE.businesses[1]
CONSUMER = BASE.find_customers(1)[0]
NOBODY = BASE.find_non_customers(1)[0]

CORPORATE = (
    '[reasons.CORPORATE_ACCOUNT]\ndescription = "Business lines"\n'
    'reference_pattern = "CORP-[0-9]{6}"\nreference_hint = "CORP- followed by 6 digits"\n'
)
FRAUD = '[reasons.FRAUD_REVIEW]\ndescription = "Fraud team review"\nroles = ["fraud-analyst"]\n'

# Three misses of any kind in a day lock: what a withheld record must count towards.
MISSES_LOCK = """
[[rules]]
name = "misses-lock"
kind = "misses"
window = "1d"
limit = 2
action = "lock"
"""


def accounts_text(upstream: str, rules: str = "", claim: bool = False) -> str:
    """The harness policy with ``[accounts]``: corporate reps see their own account's lines,
    the fraud team any business's, every other reason none; with ``claim``, tokens name the
    accounts each employee works."""
    extra = '[accounts]\nfield = "account.reference"\n'
    if claim:
        extra += '\n[auth.claims]\naccounts = "accounts"\n'
    text = policy_text(upstream, rules=rules, extra=extra)
    assert CORPORATE in text and FRAUD in text
    text = text.replace(CORPORATE, CORPORATE + 'accounts = "own"\n')
    return text.replace(FRAUD, FRAUD + 'accounts = "any"\n')


def accounts_policy(upstream: str, rules: str = "", claim: bool = False) -> Policy:
    return parse_policy(accounts_text(upstream, rules, claim), "accounts.toml")


def ask(
    p: Policy, reason: str, reference: str | None = None, roles: tuple[str, ...] = ()
) -> dict[str, str]:
    sent = {
        "Authorization": f"Bearer {token(p, employee='E7', roles=roles)}",
        "X-Lookup-Reason": reason,
    }
    if reference is not None:
        sent["X-Lookup-Reference"] = reference
    return sent


def rep(p: Policy, reference: str) -> dict[str, str]:
    return ask(p, "CORPORATE_ACCOUNT", reference, ("corporate-sales",))


async def seen(client: aiohttp.ClientSession, backend: str) -> list[dict[str, Any]]:
    async with client.get(backend + "/_demo/requests") as response:
        result: list[dict[str, Any]] = await response.json()
        return result


async def outcomes(proxy: Proxy) -> list[dict[str, Any]]:
    await proxy.audit.flush()
    return audit_records(proxy.audit.file.directory, "outcome")


def test_own_shows_only_the_reference_s_lines_and_none_shows_no_business_line() -> None:
    """``own``: the record's account must be the reference, exactly, as a string; ``none``: a
    record naming any account is refused, one naming none passes; ``any`` is not checked."""
    own = AccountCheck("CORPORATE_ACCOUNT", "own", "account.reference")
    ours = {"account": {"reference": "CORP-000001"}}
    assert own.refusal(ours, "CORP-000001", 200) is None
    for other in (
        {"account": {"reference": "CORP-000002"}},
        {"account": {"reference": "corp-000001"}},
        {"account": "CORP-000001"},
        {"account": {"reference": 1}},
        {"name": "a consumer"},
        ["CORP-000001"],
        None,
    ):
        refused = own.refusal(other, "CORP-000001", 200)
        assert refused is not None and refused.cause == "reference-mismatch"
        assert refused.status == 403 and "CORP-000001" in refused.detail
    none = AccountCheck("BILLING_INQUIRY", "none", "account.reference")
    refused = none.refusal(ours, None, 200)
    assert refused is not None and (refused.status, refused.cause) == (403, "business-line")
    assert none.refusal({"name": "a consumer"}, None, 200) is None
    assert none.refusal({"account": {"reference": ""}}, None, 200) is None
    # Replay decides from EVENTS.csv's account column with the same rules (refusal_for).
    assert own.refusal_for("CORP-000001", "CORP-000001", 200) is None
    for account in ("CORP-000002", None):
        refused = own.refusal_for(account, "CORP-000001", 200)
        assert refused is not None and refused.cause == "reference-mismatch"
    refused = none.refusal_for("CORP-000001", None, 200)
    assert refused is not None and refused.cause == "business-line"
    assert none.refusal_for(None, None, 200) is None
    checks = account_checks("account.reference", {"A": "own", "B": "none", "C": "any"})
    assert sorted(checks) == ["A", "B"]
    assert account_checks(None, {"A": "own"}) == {}
    with pytest.raises(ValueError, match="one value"):
        check_account_path("accounts[].reference")


@pytest.mark.parametrize(
    ("edit", "key", "expected"),
    [
        (
            lambda t: t.replace('field = "account.reference"', 'field = "lines[].account"'),
            "accounts.field",
            "one value",
        ),
        (
            lambda t: t.replace('accounts = "any"', 'accounts = "own"'),
            "reasons.FRAUD_REVIEW.accounts",
            "reference_pattern",
        ),
        (
            lambda t: t.replace('[accounts]\nfield = "account.reference"\n', ""),
            "reasons.CORPORATE_ACCOUNT.accounts",
            "[accounts]",
        ),
    ],
)
def test_a_bad_accounts_setting_names_file_key_and_expectation(
    edit: Any, key: str, expected: str
) -> None:
    """A list path, ``own`` without a reference, or access without ``[accounts]``: errors."""
    with pytest.raises(ConfigError) as caught:
        parse_policy(edit(accounts_text("http://127.0.0.1:9")), "bad.toml")
    problems = {problem.key: problem for problem in caught.value.problems}
    assert key in problems, problems
    assert problems[key].file == "bad.toml"
    assert expected in problems[key].expected


async def test_a_line_of_the_reference_s_account_is_shown_to_its_rep(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """The rep's own business's line, under its reference: the record, untouched; a consumer's
    line under an everyday reason and a business line under an ``any`` reason: shown too."""
    p = accounts_policy(backend)
    async with running_proxy(p) as (url, proxy):
        line = OURS.line(5)
        async with client.get(f"{url}/customers/{line}", headers=rep(p, OURS.reference)) as r:
            assert r.status == 200
            record = await r.json()
        async with client.get(
            f"{url}/customers/{CONSUMER}", headers=ask(p, "BILLING_INQUIRY")
        ) as r:
            assert r.status == 200
            assert (await r.json())["number"] == CONSUMER
        fraud = ask(p, "FRAUD_REVIEW", roles=("fraud-analyst",))
        async with client.get(f"{url}/customers/{THEIRS.line(1)}", headers=fraud) as r:
            assert r.status == 200
            assert (await r.json())["account"]["reference"] == THEIRS.reference
        outcome = (await outcomes(proxy))[0]
    assert record == BASE.record(line)
    assert record["account"]["reference"] == OURS.reference
    assert outcome["outcome"] == "found"


@pytest.mark.parametrize(
    ("who", "cause"),
    [
        ("a rep, another business's line", "reference-mismatch"),
        ("a rep, a consumer's line", "reference-mismatch"),
        ("a clerk, a business line", "business-line"),
    ],
)
async def test_a_record_the_lookup_may_not_see_is_withheld(
    backend: str,
    client: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    who: str,
    cause: str,
) -> None:
    """A 403 problem that says what to do and shows nothing of the record; the audit outcome
    and the refusals metric name the cause; no traceback, no record in the log."""
    caplog.set_level(logging.INFO)
    p = accounts_policy(backend)
    number = CONSUMER if "consumer" in who else THEIRS.line(0)
    sent = ask(p, "BILLING_INQUIRY") if who.startswith("a clerk") else rep(p, OURS.reference)
    record = BASE.record(number)
    assert record is not None
    async with running_proxy(p) as (url, proxy):
        async with client.get(f"{url}/customers/{number}", headers=sent) as r:
            assert r.status == 403
            assert r.headers["Content-Type"].startswith("application/problem+json")
            raw = await r.text()
        async with client.get(url + "/metrics") as m:
            metrics = await m.text()
        (outcome,) = await outcomes(proxy)
    body = json.loads(raw)
    assert body["type"] == f"urn:lookup-proxy:problem:{cause}"
    assert body["upstream_status"] == 200
    if cause == "reference-mismatch":
        assert OURS.reference in body["detail"]
    assert record["name"] not in raw and THEIRS.reference not in raw and number not in raw
    logged = "\n".join(f"{rec.getMessage()} {rec.__dict__}" for rec in caplog.records)
    assert record["name"] not in logged and "Traceback" not in logged
    assert all(rec.exc_info is None for rec in caplog.records)
    assert (outcome["outcome"], outcome["status"], outcome["cause"]) == ("refused", 403, cause)
    assert f'lookup_proxy_refusals_total{{cause="{cause}",status="403"}} 1.0' in metrics


async def test_with_the_accounts_claim_a_rep_uses_only_their_own_accounts_references(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """A reference is no secret: under another business's own reference its lines would pass
    ``own``. With ``[auth.claims] accounts`` the reference must be one the token names: 403
    account-not-assigned before anything is forwarded; the rep's own account works."""
    p = accounts_policy(backend, claim=True)
    mine = token(p, employee="E7", roles=["corporate-sales"], accounts=[OURS.reference])
    sent = {"Authorization": f"Bearer {mine}", "X-Lookup-Reason": "CORPORATE_ACCOUNT"}
    async with running_proxy(p) as (url, _):
        own = {**sent, "X-Lookup-Reference": OURS.reference}
        async with client.get(f"{url}/customers/{OURS.line(2)}", headers=own) as r:
            assert r.status == 200
        theirs = {**sent, "X-Lookup-Reference": THEIRS.reference}
        async with client.get(f"{url}/customers/{THEIRS.line(2)}", headers=theirs) as r:
            assert r.status == 403
            body = await r.json(content_type=None)
    assert body["type"] == "urn:lookup-proxy:problem:account-not-assigned"
    assert THEIRS.reference in body["detail"]
    forwarded = [entry["path"] for entry in await seen(client, backend)]
    assert f"/customers/{OURS.line(2)}" in forwarded
    assert f"/customers/{THEIRS.line(2)}" not in forwarded


async def test_a_reference_s_mismatches_count_as_misses_and_business_lines_do_not(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """A mismatch still tells a rep that the number is somebody's, so the guard learns it as
    a miss: three in a day trip a misses lock, as three probes that found nobody would. A
    business line withheld from a clerk is learned as found, as it was (the holder stands at
    the counter): four in a row lock nobody."""
    p = accounts_policy(backend, MISSES_LOCK)
    async with running_proxy(p) as (url, proxy):
        statuses, body = [], {}
        for index in range(4):
            number = THEIRS.line(index)
            async with client.get(f"{url}/customers/{number}", headers=rep(p, OURS.reference)) as r:
                statuses.append(r.status)
                body = await r.json(content_type=None)
            await proxy.guard_idle()
        assert statuses == [403, 403, 403, 403]
        assert body["type"].endswith(":locked-out") and body["rule"] == "misses-lock"
        clerk = {**ask(p, "BILLING_INQUIRY"), "Authorization": f"Bearer {token(p, employee='E9')}"}
        causes = []
        for index in range(4):
            async with client.get(f"{url}/customers/{OURS.line(index)}", headers=clerk) as r:
                causes.append((r.status, (await r.json(content_type=None))["type"]))
            await proxy.guard_idle()
        async with client.get(f"{url}/customers/{CONSUMER}", headers=clerk) as r:
            assert r.status == 200
    assert causes == [(403, "urn:lookup-proxy:problem:business-line")] * 4


# Misses refused once they reach half of the numbers new to the clerk (and pass two).
MISSES_SHARE = """
[[rules]]
name = "misses-share"
kind = "misses"
window = "1d"
limit = 2
ratio = 0.5
"""


async def test_business_lines_withheld_from_a_clerk_do_not_pad_their_share_of_misses(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """Four business lines withheld from a clerk disclosed nothing, so they count among none
    of the clerk's numbers (``Guard.learn``'s ``withheld``): after three misses, all that is
    new to them, the next lookup is refused, as with no lines at all. Four customers' records
    disclosed to another clerk are four numbers, and after the same misses it passes."""
    p = accounts_policy(backend, MISSES_SHARE)
    nobody = BASE.find_non_customers(6)
    customers = BASE.find_customers(6)
    padding = {"E9": [OURS.line(i) for i in range(4)], "E8": customers[:4]}
    misses = {"E9": [*nobody[:3], customers[4]], "E8": [*nobody[3:], customers[5]]}
    answers: dict[str, list[tuple[int, str]]] = {}
    async with running_proxy(p) as (url, proxy):
        for employee, numbers in padding.items():
            sent = {**ask(p, "BILLING_INQUIRY"), "Authorization": f"Bearer {token(p, employee)}"}
            answers[employee] = []
            for number in [*numbers, *misses[employee]]:
                async with client.get(f"{url}/customers/{number}", headers=sent) as r:
                    body = await r.json(content_type=None)
                    answers[employee].append((r.status, body.get("rule") or body.get("type", "")))
                await proxy.guard_idle()
    withheld = (403, "urn:lookup-proxy:problem:business-line")
    assert answers["E9"][:4] == [withheld] * 4
    assert [status for status, _ in answers["E9"][4:7]] == [404] * 3
    assert answers["E9"][7] == (403, "misses-share")
    assert [status for status, _ in answers["E8"]] == [200] * 4 + [404] * 3 + [200]


async def test_a_not_found_answer_passes_as_it_came(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """A 404 shows no record, so nothing is checked: it passes under any reason."""
    p = accounts_policy(backend)
    async with running_proxy(p) as (url, _):
        async with client.get(f"{url}/customers/{NOBODY}", headers=rep(p, OURS.reference)) as r:
            assert r.status == 404
        async with client.get(f"{url}/customers/{NOBODY}", headers=ask(p, "BILLING_INQUIRY")) as r:
            assert r.status == 404


async def text_backend(request: web.Request) -> web.Response:
    return web.Response(text=f"account: {OURS.reference}")


async def test_an_answer_that_cannot_be_checked_is_refused(
    client: aiohttp.ClientSession,
) -> None:
    """A found answer that is not JSON cannot say whose line it is: a 502, nothing passed on."""
    upstream = web.Application()
    upstream.router.add_get("/customers/{number}", text_backend)
    async with serving(upstream) as backend:
        p = accounts_policy(backend)
        async with running_proxy(p) as (url, _):
            async with client.get(
                f"{url}/customers/{OURS.line(0)}", headers=ask(p, "BILLING_INQUIRY")
            ) as r:
                assert r.status == 502
                body = await r.json(content_type=None)
    assert body["type"] == "urn:lookup-proxy:problem:upstream-unfilterable"
    assert OURS.reference not in json.dumps(body)


def test_the_demo_base_s_business_lines_name_their_account() -> None:
    """Every line of a business is a customer whose record names the account; others do not."""
    for business in BASE.businesses:
        for index in (0, business.size - 1):
            record = BASE.record(business.line(index))
            assert record is not None and record["account"]["reference"] == business.reference
        assert BASE.business_of(business.line(business.size - 1)) == business
    consumer = BASE.record(CONSUMER)
    assert consumer is not None and "account" not in consumer
    with pytest.raises(IndexError):
        OURS.line(OURS.size)


async def test_replay_with_the_account_column_decides_as_the_live_proxy_answers(
    backend: str, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The same lookups through the live proxy (which reads each found answer's account) and
    through replay (which reads EVENTS.csv's ``account``, the value the answer has at
    ``[accounts] field``): the same lookups shown and the same causes withheld, and the same
    lock from the mismatches learned as misses."""
    p = accounts_policy(backend, MISSES_LOCK)
    lookups = [
        ("E1", "BILLING_INQUIRY", "", CONSUMER),
        ("E1", "BILLING_INQUIRY", "", OURS.line(0)),
        ("E1", "FRAUD_REVIEW", "", THEIRS.line(0)),
        ("E1", "BILLING_INQUIRY", "", NOBODY),
        ("E2", "CORPORATE_ACCOUNT", OURS.reference, OURS.line(1)),
        ("E2", "CORPORATE_ACCOUNT", OURS.reference, THEIRS.line(1)),
        ("E2", "CORPORATE_ACCOUNT", OURS.reference, CONSUMER),
        ("E2", "CORPORATE_ACCOUNT", OURS.reference, THEIRS.line(2)),
        ("E2", "CORPORATE_ACCOUNT", OURS.reference, OURS.line(2)),
    ]
    roles = {"E1": ["fraud-analyst"], "E2": ["corporate-sales"]}
    live: list[tuple[str, str]] = []
    async with running_proxy(p) as (url, proxy):
        for employee, reason, reference, number in lookups:
            sent = {
                "Authorization": f"Bearer {token(p, employee=employee, roles=roles[employee])}",
                "X-Lookup-Reason": reason,
            }
            if reference:
                sent["X-Lookup-Reference"] = reference
            async with client.get(f"{url}/customers/{number}", headers=sent) as r:
                body = await r.json(content_type=None)
                cause = "" if r.status in (200, 404) else body["type"].rsplit(":", 1)[1]
                if cause == "locked-out":
                    cause = body["rule"]  # replay's rule column names the lock's rule
                live.append(("allow" if not cause else "deny", cause))
            await proxy.guard_idle()
    events = tmp_path / "events.csv"
    rows = []
    for second, (employee, reason, reference, number) in enumerate(lookups):
        record = BASE.record(number)
        account = (record or {}).get("account", {}).get("reference", "")
        when = f"2026-10-01T10:00:{second:02d}+09:00"
        found = "true" if record is not None else "false"
        rows.append(f"{when},{employee},S1,R1,{number},{reason},{reference},{found},{account}")
    events.write_text(",".join(ACCOUNT_EVENT_COLUMNS) + "\n" + "\n".join(rows) + "\n")
    out = tmp_path / "decisions.csv"
    Replayer(p, {e: frozenset(r) for e, r in roles.items()}).run(events, out)
    replayed = [tuple(line.split(",")[-3:-1]) for line in out.read_text().splitlines()[1:]]
    assert replayed == live
    # What both saw: shown, withheld by cause, and the third mismatch's lock.
    assert live == [
        ("allow", ""),
        ("deny", "business-line"),
        ("allow", ""),
        ("allow", ""),
        ("allow", ""),
        ("deny", "reference-mismatch"),
        ("deny", "reference-mismatch"),
        ("deny", "reference-mismatch"),
        ("deny", "misses-lock"),
    ]
