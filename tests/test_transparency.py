"""Customer access transparency (lookup_proxy/transparency.py) on a real proxy: a customer's
lookups by store, time and reason, never by employee, for the app backend's credential only."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from lookup_proxy.app import build_app
from lookup_proxy.customers import CustomerBase
from lookup_proxy.errors import ConfigError
from lookup_proxy.policy import Policy
from tests.harness import ENV, audit_records, policy, running_proxy, token

BASE = CustomerBase()
CUSTOMER, OTHER = BASE.find_customers(2)
APP_TOKEN = "app-backend-credential-0123456789-abcdefgh"
ENVIRON = {**ENV, "LOOKUP_PROXY_TRANSPARENCY_TOKEN": APP_TOKEN}


def transparent(backend: str, extra: str = "") -> Policy:
    return policy(backend, extra=f"[transparency]\nenabled = true\n{extra}")


def app_headers(credential: str = APP_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


async def test_a_customer_sees_when_where_and_why_their_record_was_looked_up(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """Two lookups of the customer (one found, one refused) and one of someone else: the
    answer lists the customer's two with store, region, reason and whether the record was
    shown, newest first, and names no employee; the query itself is audited by pseudonym."""
    p = transparent(backend)
    clerk = token(p, employee="E77", store="S012", region="R03")
    async with running_proxy(p, environ=ENVIRON) as (url, proxy):
        for number, reason in ((CUSTOMER, "PLAN_CHANGE"), (OTHER, "PLAN_CHANGE")):
            async with client.get(
                f"{url}/customers/{number}",
                headers={"Authorization": f"Bearer {clerk}", "X-Lookup-Reason": reason},
            ) as r:
                assert r.status == 200
        async with client.get(
            f"{url}/customers/{CUSTOMER}",
            headers={"Authorization": f"Bearer {clerk}", "X-Lookup-Reason": "CORPORATE_ACCOUNT"},
        ) as r:
            assert r.status == 400  # no reference: refused, but an attempt on this customer
        await proxy.audit.flush()
        async with client.get(f"{url}/transparency/{CUSTOMER}", headers=app_headers()) as r:
            assert r.status == 200
            assert r.headers["Cache-Control"] == "no-store"
            text = await r.text()
            body = await r.json()
        await proxy.audit.flush()
        [query] = audit_records(proxy.audit.file.directory, "transparency")
    assert body["last4"] == CUSTOMER[-4:] and body["complete"] is True
    shown = sorted(
        ((x["store"], x["region"], x["reason"] or "", x["shown"]) for x in body["lookups"]),
    )
    assert shown == [("S012", "R03", "", False), ("S012", "R03", "PLAN_CHANGE", True)]
    times = [x["at"] for x in body["lookups"]]
    assert times == sorted(times, reverse=True)  # newest first (the two may share a millisecond)
    [plan] = [x for x in body["lookups"] if x["reason"] == "PLAN_CHANGE"]
    assert plan["reason_description"] == "Changing the customer's plan"
    assert "E77" not in text and CUSTOMER not in text
    assert query["status"] == 200 and query["count"] == 2
    assert query["subject"] and CUSTOMER not in str(query)


async def test_only_the_app_backends_credential_is_accepted(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """A terminal's token, a wrong secret or none: 401; each refusal audited too."""
    p = transparent(backend)
    clerk = token(p, employee="E1")
    async with running_proxy(p, environ=ENVIRON) as (url, proxy):
        for headers in (app_headers(clerk), app_headers("x" * 40), {}):
            async with client.get(f"{url}/transparency/{CUSTOMER}", headers=headers) as r:
                assert r.status == 401
                body = await r.json(content_type=None)
                assert body["type"].endswith(":transparency-credential")
        await proxy.audit.flush()
        records = audit_records(proxy.audit.file.directory, "transparency")
    assert [r["status"] for r in records] == [401, 401, 401]


async def test_queries_are_rate_limited(backend: str, client: aiohttp.ClientSession) -> None:
    p = transparent(backend, 'limit = 2\nwindow = "1h"\n')
    async with running_proxy(p, environ=ENVIRON) as (url, _):
        statuses = []
        for _ in range(3):
            async with client.get(f"{url}/transparency/{CUSTOMER}", headers=app_headers()) as r:
                statuses.append(r.status)
                retry = r.headers.get("Retry-After")
    assert statuses == [200, 200, 429]
    assert retry is not None and 0 < int(retry) <= 3601


@pytest.mark.parametrize(
    ("path", "cause"),
    [
        ("/transparency/not-a-number", "bad-number"),
        (f"/transparency/{CUSTOMER}?since=yesterday", "bad-period"),
        (f"/transparency/{CUSTOMER}?since=2026-01-01&until=2025-01-01", "bad-period"),
        (f"/transparency/{CUSTOMER}?since=2020-01-01&until=2026-01-01", "bad-period"),
        (f"/transparency/{CUSTOMER}?employee=E1", "unexpected-query"),
    ],
)
async def test_bad_queries_get_a_problem_naming_what_was_wrong(
    backend: str, client: aiohttp.ClientSession, path: str, cause: str
) -> None:
    p = transparent(backend)
    async with running_proxy(p, environ=ENVIRON) as (url, _):
        async with client.get(url + path, headers=app_headers()) as r:
            assert r.status == 400
            body = await r.json(content_type=None)
    assert body["type"].endswith(":" + cause)


async def test_not_configured_means_not_served(backend: str, client: aiohttp.ClientSession) -> None:
    """The shipped default: no transparency route at all (default deny)."""
    async with running_proxy(policy(backend), environ=ENVIRON) as (url, _):
        async with client.get(f"{url}/transparency/{CUSTOMER}", headers=app_headers()) as r:
            assert r.status == 403


def test_enabled_without_its_credential_refuses_to_start(backend: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_app(transparent(backend), base_dir=Path("."), environ=ENV)
    assert caught.value.problems[0].key == "LOOKUP_PROXY_TRANSPARENCY_TOKEN"


async def test_concurrent_queries_each_get_their_answer(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """Queries run in worker threads at once; each has its own archive connection."""
    p = transparent(backend)
    clerk = token(p, employee="E5", store="S1", region="R1")
    async with running_proxy(p, environ=ENVIRON) as (url, proxy):
        async with client.get(
            f"{url}/customers/{CUSTOMER}",
            headers={"Authorization": f"Bearer {clerk}", "X-Lookup-Reason": "PLAN_CHANGE"},
        ) as r:
            assert r.status == 200
        await proxy.audit.flush()

        async def ask() -> tuple[int, int]:
            async with client.get(f"{url}/transparency/{CUSTOMER}", headers=app_headers()) as r:
                return r.status, len((await r.json())["lookups"])

        answers = await asyncio.gather(*(ask() for _ in range(12)))
    assert answers == [(200, 1)] * 12
