"""The admin API on a real proxy over real sockets: every route, its refusals, its audit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lookup_proxy.cases import Signal
from tests.harness import audit_records, policy, running_proxy, token

ADMIN = ("security-admin",)


def records(directory: Path, kind: str) -> list[dict[str, Any]]:
    """The audit records of ``kind`` in a (stopped) proxy's archive."""
    return audit_records(directory, kind)


async def call(
    client: aiohttp.ClientSession, method: str, url: str, tok: str | None, **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    headers = {**kwargs.pop("headers", {})}
    if tok is not None:
        headers["Authorization"] = f"Bearer {tok}"
    async with client.request(method, url, headers=headers, **kwargs) as response:
        body: dict[str, Any] = await response.json(content_type=None)
        if response.status >= 400:
            assert response.content_type == "application/problem+json"
            assert body["status"] == response.status
        return response.status, body


async def test_the_review_queue_end_to_end(
    backend: str, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A flagged employee's case is listed, shown, acknowledged and resolved with an unlock;
    every call and every transition is an audit record."""
    p = policy(backend)
    sec = token(p, employee="SEC1", roles=ADMIN)
    async with running_proxy(p, audit_dir=tmp_path) as (url, proxy):
        await proxy.guard.lock("E7", rule="escalation")
        proxy.raiser.signal(Signal("E7", ("distinct-day", "escalation"), True, "S1", "R1"))
        await proxy.raiser.idle()
        status, listed = await call(client, "GET", f"{url}/admin/cases", sec)
        assert status == 200
        [case] = listed["cases"]
        assert case["employee"] == "E7" and case["locked"] and case["status"] == "open"
        assert case["rules"] == ["distinct-day", "escalation"]
        case_url = f"{url}/admin/cases/{case['id']}"
        status, shown = await call(client, "GET", case_url, sec)
        assert status == 200 and shown["evidence"] == [] and shown["id"] == case["id"]
        status, acknowledged = await call(
            client, "POST", case_url + "/acknowledge", sec, json={"note": "on it"}
        )
        assert status == 200 and acknowledged["status"] == "acknowledged"
        status, _ = await call(client, "GET", f"{url}/admin/cases?status=open", sec)
        body = {"note": "confirmed with the manager", "resolution": "false-positive"}
        status, resolved = await call(
            client, "POST", case_url + "/resolve", sec, json={**body, "unlock": True}
        )
        assert status == 200 and resolved["status"] == "resolved"
        assert resolved["resolution"] == "false-positive"
        assert [e["event"] for e in resolved["events"]] == ["opened", "acknowledged", "resolved"]
        assert resolved["events"][2]["by"] == "SEC1"
        assert await proxy.guard.lock_status("E7") is None
        status, again = await call(client, "POST", case_url + "/resolve", sec, json=body)
        assert status == 409 and again["type"].endswith("case-resolved")
        status, listed = await call(client, "GET", f"{url}/admin/cases?status=resolved", sec)
        assert [c["id"] for c in listed["cases"]] == [case["id"]]
    admin = records(tmp_path, "admin")
    assert [(r["action"], r["status"]) for r in admin] == [
        ("cases.list", 200),
        ("cases.show", 200),
        ("cases.acknowledge", 200),
        ("cases.list", 200),
        ("cases.resolve", 200),
        ("cases.resolve", 409),
        ("cases.list", 200),
    ]
    assert {r["employee"] for r in admin} == {"SEC1"}
    assert admin[4]["target"] == case["id"] and admin[4]["note"] == body["note"]
    assert admin[0]["query"] == {"status": "open"}
    assert all(r["request_id"] and r["client"] == "127.0.0.1" for r in admin)
    transitions = [(r["event"], r["by"]) for r in records(tmp_path, "case")]
    assert transitions == [("opened", None), ("acknowledged", "SEC1"), ("resolved", "SEC1")]


async def test_a_flagging_lookup_opens_a_case(
    backend: str, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A real lookup that a flag rule fires on opens a case off the terminal's wait."""
    rules = (
        '[[rules]]\nname = "any-lookup"\nkind = "rate"\nwindow = "1h"\nlimit = 0\naction = "flag"\n'
    )
    p = policy(backend, rules=rules)
    async with running_proxy(p, audit_dir=tmp_path) as (url, proxy):
        headers = {"Authorization": f"Bearer {token(p)}", "X-Lookup-Reason": "PLAN_CHANGE"}
        async with client.get(f"{url}/customers/01012345678", headers=headers) as response:
            assert response.status in (200, 404)
        await proxy.raiser.idle()
        [case] = await proxy.cases.cases("open")
    assert case.employee == "E1" and case.rules == ["any-lookup"] and not case.locked
    assert case.store == "S1" and case.region == "R1"
    [opened] = records(tmp_path, "case")
    assert opened["event"] == "opened" and opened["case"] == case.id


async def test_locks_with_notes(
    backend: str, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Lock, show, list and unlock by hand, each with an optional note in the audit record."""
    p = policy(backend)
    sec = token(p, employee="SEC1", roles=ADMIN)
    async with running_proxy(p, audit_dir=tmp_path) as (url, _):
        status, lock = await call(
            client, "PUT", f"{url}/admin/locks/E5", sec, json={"note": "called in sick, badge used"}
        )
        assert status == 201 and lock["rule"] == "manual"
        status, shown = await call(client, "GET", f"{url}/admin/locks/E5", sec)
        assert shown["locked"] and shown["lock"]["employee"] == "E5"
        status, listed = await call(client, "GET", f"{url}/admin/locks", sec)
        assert [lock["employee"] for lock in listed["locks"]] == ["E5"]
        status, lifted = await call(client, "DELETE", f"{url}/admin/locks/E5", sec)
        assert status == 200 and lifted == {"employee": "E5", "unlocked": True}
    admin = records(tmp_path, "admin")
    assert [(r["action"], r["target"], r["note"]) for r in admin] == [
        ("locks.lock", "E5", "called in sick, badge used"),
        ("locks.show", "E5", None),
        ("locks.list", None, None),
        ("locks.unlock", "E5", None),
    ]


async def test_activity_and_search_find_the_lookups_in_the_archive(
    backend: str, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """An employee's activity and a search by number, employee or store find a real lookup
    in the archive; the clear number never reaches the admin audit record."""
    p = policy(backend)
    sec = token(p, employee="SEC1", roles=ADMIN)
    clerk = {"Authorization": f"Bearer {token(p, employee='E5')}", "X-Lookup-Reason": "PLAN_CHANGE"}
    async with running_proxy(p, audit_dir=tmp_path) as (url, proxy):
        async with client.get(f"{url}/customers/010-1234-5678", headers=clerk) as response:
            request_id = response.headers["X-Request-Id"]
        await proxy.guard_idle()
        await proxy.audit.flush()
        since = "2020-12-01T00:00:00Z"
        status, body = await call(
            client,
            "GET",
            f"{url}/admin/employees/E5/activity",
            sec,
            params={"since": since, "limit": "5"},
        )
        assert status == 200
        assert [r["request_id"] for r in body["lookups"]] == [request_id]
        for query in ("number=010-1234-5678", "number=%2B821012345678", "store=S1", "employee=E5"):
            status, body = await call(client, "GET", f"{url}/admin/audit?{query}", sec)
            assert status == 200
            assert [r["request_id"] for r in body["records"]] == [request_id], query
        status, body = await call(client, "GET", f"{url}/admin/audit?employee=E6", sec)
        assert body == {"records": []}
    admin = records(tmp_path, "admin")
    assert admin[0]["query"] == {
        "employee": "E5",
        "since": "2020-12-01T00:00:00+00:00",
        "until": None,
        "limit": 5,
    }
    assert len(admin[1]["query"]["subjects"]) == 1
    # The number searched for (010-1234-5678) is in no admin record, in any form. Not its
    # four digits alone: the records hold some 1,500 random hex digits (ids, hashes), so "1234"
    # turns up in a few runs in a hundred.
    for form in ("12345678", "1234-5678", "1234 5678"):
        assert form not in str(admin)


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "cause", "named"),
    [
        ("GET", "/admin/cases?stauts=open", {}, 400, "unknown-parameter", "stauts"),
        ("GET", "/admin/cases?status=closed", {}, 400, "bad-parameter", "status"),
        ("GET", "/admin/cases?status=open&status=all", {}, 400, "bad-parameter", "status"),
        ("GET", "/admin/cases/not-a-case", {}, 400, "bad-case-id", None),
        ("GET", "/admin/cases/E1~0", {}, 404, "case-not-found", None),
        (
            "POST",
            "/admin/cases/E1~0/acknowledge",
            {"json": {"note": "x"}},
            404,
            "case-not-found",
            None,
        ),
        (
            "POST",
            "/admin/cases/E1~0/resolve",
            {"data": b"{", "headers": {"Content-Type": "application/json"}},
            400,
            "bad-json",
            None,
        ),
        ("POST", "/admin/cases/E1~0/resolve", {"json": [1]}, 400, "bad-json", None),
        ("POST", "/admin/cases/E1~0/resolve", {"data": b"note=x"}, 400, "bad-json", None),
        (
            "POST",
            "/admin/cases/E1~0/resolve",
            {"json": {"resolution": "other"}},
            400,
            "missing-field",
            "note",
        ),
        (
            "POST",
            "/admin/cases/E1~0/resolve",
            {"json": {"note": "n", "resolution": "meh"}},
            400,
            "bad-field",
            "resolution",
        ),
        (
            "POST",
            "/admin/cases/E1~0/resolve",
            {"json": {"note": "n", "resolution": "other", "unlock": "yes"}},
            400,
            "bad-field",
            "unlock",
        ),
        (
            "POST",
            "/admin/cases/E1~0/resolve",
            {"json": {"note": "n", "resolution": "other", "x": 1}},
            400,
            "unknown-field",
            "x",
        ),
        (
            "POST",
            "/admin/cases/E1~0/resolve",
            {"json": {"note": "n" * 2001, "resolution": "other"}},
            400,
            "note-too-long",
            "note",
        ),
        (
            "POST",
            "/admin/cases/E1~0/resolve",
            {"json": {"note": "a\x00b", "resolution": "other"}},
            400,
            "bad-field",
            "note",
        ),
        ("PUT", "/admin/locks/E*", {}, 400, "bad-employee-id", None),
        ("DELETE", "/admin/locks/E1", {"json": {"note": 5}}, 400, "bad-field", "note"),
        ("GET", "/admin/locks?x=1", {}, 400, "unknown-parameter", "x"),
        ("GET", "/admin/employees/E1/activity?since=yesterday", {}, 400, "bad-parameter", "since"),
        (
            "GET",
            "/admin/employees/E1/activity?since=2026-12-01T00:00:00",
            {},
            400,
            "bad-parameter",
            "since",
        ),
        ("GET", "/admin/employees/E1/activity?limit=0", {}, 400, "bad-parameter", "limit"),
        ("GET", "/admin/audit", {}, 400, "bad-search", None),
        ("GET", "/admin/audit?employee=E1&store=S1", {}, 400, "bad-search", None),
        ("GET", "/admin/audit?number=12", {}, 400, "bad-parameter", "number"),
        ("GET", "/admin/cases", {"data": b"x"}, 400, "unexpected-body", None),
        ("GET", "/admin/audit?number=010-1234-5678&store=S1", {}, 400, "bad-search", None),
    ],
)
async def test_strict_inputs_are_named_problems(
    backend: str,
    client: aiohttp.ClientSession,
    tmp_path: Path,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    cause: str,
    named: str | None,
) -> None:
    """Whatever is wrong is refused with a problem naming it, and (past framing) audited."""
    p = policy(backend)
    sec = token(p, employee="SEC1", roles=ADMIN)
    async with running_proxy(p, audit_dir=tmp_path) as (url, _):
        got, body = await call(client, method, url + path, sec, **kwargs)
    assert (got, body["type"].rsplit(":", 1)[1]) == (status, cause)
    if named is not None:
        assert named in (body.get("parameter"), body.get("field"))
    if cause != "unexpected-body":
        [record] = records(tmp_path, "admin")
        assert record["status"] == status and record["employee"] == "SEC1"


@pytest.mark.parametrize("path", ["/admin/cases", "/admin/locks", "/admin/openapi.json"])
async def test_tokens_and_roles(
    backend: str, client: aiohttp.ClientSession, tmp_path: Path, path: str
) -> None:
    """No token is 401, a clerk's token 403; both audited (the clerk by name)."""
    p = policy(backend)
    async with running_proxy(p, audit_dir=tmp_path) as (url, _):
        status, body = await call(client, "GET", url + path, None)
        assert status == 401
        status, body = await call(client, "GET", url + path, token(p, employee="E2"))
        assert status == 403 and body["type"].endswith("admin-only")
    assert [(r["employee"], r["status"]) for r in records(tmp_path, "admin")] == [
        (None, 401),
        ("E2", 403),
    ]
