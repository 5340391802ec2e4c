"""Data minimisation per reason: field paths, trimming answers, and what is refused instead."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from lookup_proxy.app import Proxy
from lookup_proxy.errors import ConfigError
from lookup_proxy.minimise import FieldSet, Unfilterable, parse_answer, parse_path, read_answer
from lookup_proxy.policy import parse_policy
from tests.harness import audit_records, policy, policy_text, running_proxy, serving, token

RECORD = {
    "number": "01020000007",
    "name": "김민지",
    "birth_date": "1990-01-01",
    "plan": {"name": "5G Premium", "monthly_fee": 89000, "discount": {"kind": "selective"}},
    "lines": [
        {"number": "01020000007", "device": "Galaxy", "imei": "35-000000-000000-0"},
        {"number": "01020000008", "imei": "35-111111-111111-1"},
        {"device": "iPad"},
    ],
    "address": "Seoul",
}

PLAN_CHANGE_FIELDS = 'fields = ["name", "plan.name", "lines[].number"]'


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("name", (("name", 0),)),
        ("plan.name", (("plan", 0), ("name", 0))),
        ("lines[].number", (("lines", 1), ("number", 0))),
        ("lines[]", (("lines", 1),)),
        ("grid[][].x", (("grid", 2), ("x", 0))),
        ("[].name", ((None, 1), ("name", 0))),
        ("[]", ((None, 1),)),
        ("이름", (("이름", 0),)),
        ("$meta.@id", (("$meta", 0), ("@id", 0))),
    ],
)
def test_well_formed_paths_parse_into_steps(
    path: str, steps: tuple[tuple[str | None, int], ...]
) -> None:
    """Names joined by dots, [] after a name for each list level, a bare [] only at the top."""
    assert parse_path(path) == steps


@pytest.mark.parametrize(
    "path",
    ["", ".", "a.", ".a", "a..b", "a[", "a]", "a[0]", "a[]x", "a.[]", "a b", "a[].[]", "a,b"],
)
def test_malformed_paths_are_refused(path: str) -> None:
    """Anything outside the documented syntax is a ValueError saying what is expected."""
    with pytest.raises(ValueError, match="a field path such as"):
        parse_path(path)


def test_a_bad_path_in_the_policy_names_file_key_and_expectation() -> None:
    """Policy validation reports each bad path at its own index, like every other key."""
    text = policy_text(
        "http://127.0.0.1:9",
        extra='[reasons.DEVICE_SUPPORT]\ndescription = "d"\nfields = ["name", "plan..name", 7]\n',
    )
    with pytest.raises(ConfigError) as caught:
        parse_policy(text, "shop.toml")
    problems = {p.key: p for p in caught.value.problems}
    assert set(problems) == {"reasons.DEVICE_SUPPORT.fields[1]", "reasons.DEVICE_SUPPORT.fields[2]"}
    bad = problems["reasons.DEVICE_SUPPORT.fields[1]"]
    assert bad.file == "shop.toml"
    assert bad.expected.startswith("a field path such as 'name'")
    assert bad.found == "'plan..name'"
    assert problems["reasons.DEVICE_SUPPORT.fields[2]"].expected == "a string"


def test_nested_objects_and_lists_keep_only_what_is_named() -> None:
    """Members inside objects and inside each list element; a list keeps its length."""
    kept = FieldSet("PLAN_CHANGE", ["name", "plan.name", "lines[].number"]).apply(RECORD)
    assert kept == {
        "name": "김민지",
        "plan": {"name": "5G Premium"},
        "lines": [{"number": "01020000007"}, {"number": "01020000008"}, {}],
    }


def test_a_named_field_is_kept_whole_and_overlaps_widen() -> None:
    """Naming ``plan`` keeps all of it, whichever order ``plan`` and ``plan.name`` come in."""
    for paths in (["plan", "plan.name"], ["plan.name", "plan"]):
        assert FieldSet("X", paths).apply(RECORD) == {"plan": RECORD["plan"]}
    assert FieldSet("X", ["lines[]"]).apply(RECORD) == {"lines": RECORD["lines"]}


def test_values_not_of_the_shape_a_path_walks_through_are_removed() -> None:
    """A string where an object is expected, an object where a list is, null: nothing kept."""
    answer = {
        "plan": "5G Premium",
        "lines": {"number": "x"},
        "owner": None,
        "tags": ["a", {"name": "b"}],
    }
    fields = FieldSet("X", ["plan.name", "lines[].number", "owner.name", "tags[].name"])
    assert fields.apply(answer) == {"tags": [{"name": "b"}]}


def test_top_level_lists_are_addressed_with_a_leading_bracket() -> None:
    """``[].name`` trims every element of a list answer; an object answer is not that shape."""
    fields = FieldSet("X", ["[].name"])
    assert fields.apply([{"name": "a", "x": 1}, {"x": 2}]) == [{"name": "a"}, {}]
    with pytest.raises(Unfilterable):
        fields.apply({"name": "a"})
    with pytest.raises(Unfilterable):
        FieldSet("X", ["name"]).apply([{"name": "a"}])


def test_an_empty_list_leaves_an_empty_object() -> None:
    """``fields = []``: the terminal learns that an answer came, nothing in it."""
    assert FieldSet("X", []).apply(RECORD) == {}
    with pytest.raises(Unfilterable):
        FieldSet("X", []).apply("text")


NOT_PLAIN_JSON = [
    b"<html>record</html>",
    b'{"name": NaN}',
    '\ufeff{"name": "a"}'.encode(),
    b'{"name": "\xff"}',
    b'{"name": "a"',
    b"[" * 100_000 + b"]" * 100_000,
]
"""Markup, NaN, a byte-order mark, bad UTF-8, truncation, absurd nesting."""


@pytest.mark.parametrize("body", NOT_PLAIN_JSON)
def test_bodies_that_are_not_plain_json_are_unfilterable(body: bytes) -> None:
    """Markup, NaN, a byte-order mark, bad UTF-8, truncation, absurd nesting: refused."""
    with pytest.raises(Unfilterable):
        FieldSet("X", ["name"]).filter_body(body)


@pytest.mark.parametrize("body", NOT_PLAIN_JSON)
def test_an_answer_only_read_is_refused_alike(body: bytes) -> None:
    """The fast reading for the account check (orjson) refuses what the exact one refuses."""
    with pytest.raises(Unfilterable):
        read_answer(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"account": "ACME-1", "lines": [1, 2.5, -0, true, null], "n": "\\u00e9"}',
        b'{"account": "A", "account": "B"}',
        b' [{"a": {}}, []] ',
        b'{"lone": "\\ud800"}',  # orjson refuses a lone surrogate; the exact reading takes it
    ],
)
def test_an_answer_only_read_parses_as_the_exact_reading(body: bytes) -> None:
    """Where orjson is stricter than the standard library, the exact reading decides."""
    assert read_answer(body) == parse_answer(body)


def test_filtered_bodies_are_compact_utf8_json() -> None:
    """Hangul stays UTF-8 (not \\u escapes); big integers survive the round trip."""
    body = json.dumps({"name": "김민지", "id": 12345678901234567890123, "x": 1}).encode()
    assert FieldSet("X", ["name", "id"]).filter_body(body) == (
        '{"name":"김민지","id":12345678901234567890123}'.encode()
    )


# -- end to end ------------------------------------------------------------------------------

NUMBER_JSON = "01020000007"
NUMBER_TEXT = "01020000008"
NUMBER_BIG = "01020000009"
NUMBER_MISSING = "01020000010"
NUMBER_GZIP = "01020000011"
RAW_JSON = b'{ "name" : "\\uae40\\ubbfc\\uc9c0",  "birth_date": "1990-01-01", "name": "dup" }'


async def record_backend(request: web.Request) -> web.Response:
    number = request.match_info["number"]
    if number == NUMBER_JSON:
        response = web.Response(
            body=json.dumps(RECORD, ensure_ascii=False).encode(),
            content_type="application/json",
            charset="utf-8",
        )
        response.headers["ETag"] = '"full-record"'
        response.headers["X-Backend"] = "kept"
        return response
    if number == NUMBER_TEXT:
        return web.Response(text=f"name: {RECORD['name']}\nbirth_date: 1990-01-01")
    if number == NUMBER_BIG:
        return web.json_response({"name": "x", "blob": "y" * 4096})
    if number == NUMBER_GZIP:
        response = web.Response(body=RAW_JSON, content_type="application/json")
        response.headers["Content-Encoding"] = "gzip"
        return response
    return web.json_response({"error": "not found", "number": number}, status=404)


async def raw_backend(request: web.Request) -> web.Response:
    """Odd spacing, escapes and a duplicate key: what passes untouched must be byte-identical."""
    return web.Response(body=RAW_JSON, content_type="application/json")


@asynccontextmanager
async def backend_for_fields() -> AsyncIterator[str]:
    upstream = web.Application()
    upstream.router.add_get("/customers/{number}", record_backend)
    upstream.router.add_get("/raw/{number}", raw_backend)
    async with serving(upstream) as url:
        yield url


def trimming_policy(upstream: str, limit: int = 2048) -> str:
    return policy_text(
        upstream,
        upstream_extra=f"max_filtered_body = {limit}",
        extra=f"""
[reasons.DEVICE_SUPPORT]
description = "A device question"
{PLAN_CHANGE_FIELDS}
""",
        routes='[[routes]]\npath = "/customers/{number}"\n\n[[routes]]\npath = "/raw/{number}"\n',
    )


async def outcomes(proxy: Proxy) -> list[dict[str, Any]]:
    """The audit trail's outcome records so far."""
    await proxy.audit.flush()
    return audit_records(proxy.audit.file.directory, "outcome")


def ask(tok: str, reason: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}", "X-Lookup-Reason": reason}


async def test_a_reason_with_fields_gets_a_trimmed_answer_and_the_record_names_the_set(
    client: aiohttp.ClientSession,
) -> None:
    """Only the listed fields leave the proxy; Content-Length is the trimmed body's; the ETag of
    the whole record is gone; the audit outcome record names the field set."""
    async with backend_for_fields() as upstream:
        p = parse_policy(trimming_policy(upstream))
        tok = token(p)
        async with running_proxy(p) as (url, proxy):
            async with client.get(
                f"{url}/customers/{NUMBER_JSON}", headers=ask(tok, "DEVICE_SUPPORT")
            ) as r:
                assert r.status == 200
                raw = await r.read()
                answer_headers = r.headers
            (outcome,) = await outcomes(proxy)
    assert json.loads(raw) == {
        "name": "김민지",
        "plan": {"name": "5G Premium"},
        "lines": [{"number": "01020000007"}, {"number": "01020000008"}, {}],
    }
    assert int(answer_headers["Content-Length"]) == len(raw)
    assert answer_headers["Content-Type"] == "application/json; charset=utf-8"
    assert "ETag" not in answer_headers
    assert answer_headers["X-Backend"] == "kept"
    assert answer_headers["X-Request-Id"]
    assert b"imei" not in raw and b"birth_date" not in raw and b"monthly_fee" not in raw
    assert (outcome["fields"], outcome["outcome"]) == ("DEVICE_SUPPORT", "found")


async def test_reasons_without_fields_pass_the_answer_untouched(
    client: aiohttp.ClientSession,
) -> None:
    """Byte for byte, unparsed, even when not JSON; the outcome record's field set is null."""
    async with backend_for_fields() as upstream:
        p = parse_policy(trimming_policy(upstream))
        tok = token(p)
        async with running_proxy(p) as (url, proxy):
            async with client.get(f"{url}/raw/{NUMBER_JSON}", headers=ask(tok, "PLAN_CHANGE")) as r:
                assert r.status == 200
                assert await r.read() == RAW_JSON
            async with client.get(
                f"{url}/customers/{NUMBER_TEXT}", headers=ask(tok, "PLAN_CHANGE")
            ) as r:
                assert r.status == 200
                assert "birth_date" in await r.text()
            assert [record["fields"] for record in await outcomes(proxy)] == [None, None]


async def test_a_duplicate_key_answer_is_rewritten_with_one_value(
    client: aiohttp.ClientSession,
) -> None:
    """Under a list the terminal gets our JSON, not the backend's bytes: one ``name`` only."""
    async with backend_for_fields() as upstream:
        p = parse_policy(trimming_policy(upstream))
        async with running_proxy(p) as (url, _):
            async with client.get(
                f"{url}/raw/{NUMBER_JSON}", headers=ask(token(p), "DEVICE_SUPPORT")
            ) as r:
                assert r.status == 200
                assert await r.read() == b'{"name":"dup"}'


@pytest.mark.parametrize(
    ("number", "problem"),
    [
        (NUMBER_TEXT, "not declared JSON (Content-Type)"),
        (NUMBER_BIG, "larger than upstream.max_filtered_body"),
        (NUMBER_GZIP, "encoded (Content-Encoding)"),
    ],
)
async def test_answers_that_cannot_be_trimmed_are_refused_not_passed_through(
    client: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture, number: str, problem: str
) -> None:
    """Not JSON, too large, or encoded: a 502 problem, and the log keeps no customer data."""
    caplog.set_level(logging.INFO)
    async with backend_for_fields() as upstream:
        p = parse_policy(trimming_policy(upstream, limit=1024))
        async with running_proxy(p) as (url, proxy):
            async with client.get(
                f"{url}/customers/{number}", headers=ask(token(p), "DEVICE_SUPPORT")
            ) as r:
                assert r.status == 502
                assert r.headers["Content-Type"].startswith("application/problem+json")
                body = await r.json(content_type=None)
            async with client.get(url + "/metrics") as m:
                metrics = await m.text()
            (outcome,) = await outcomes(proxy)
    assert body["type"] == "urn:lookup-proxy:problem:upstream-unfilterable"
    assert body["upstream_status"] == 200
    assert "김민지" not in json.dumps(body, ensure_ascii=False)
    (warning,) = [rec for rec in caplog.records if rec.name == "lookup_proxy.forward"]
    assert warning.__dict__["problem"] == problem
    assert warning.__dict__["fields"] == "DEVICE_SUPPORT"
    logged = "\n".join(str(rec.__dict__) for rec in caplog.records)
    assert "김민지" not in logged and "yyyy" not in logged
    assert (outcome["outcome"], outcome["status"]) == ("upstream_error", 502)
    assert (outcome["fields"], outcome["upstream_status"]) == ("DEVICE_SUPPORT", 200)
    assert 'lookup_proxy_refusals_total{cause="upstream-unfilterable",status="502"} 1.0' in metrics


async def test_not_found_answers_are_trimmed_too(client: aiohttp.ClientSession) -> None:
    """Whatever the status, only listed fields leave: the 404 body's echoed number is gone."""
    async with backend_for_fields() as upstream:
        p = parse_policy(trimming_policy(upstream))
        async with running_proxy(p) as (url, proxy):
            async with client.get(
                f"{url}/customers/{NUMBER_MISSING}", headers=ask(token(p), "DEVICE_SUPPORT")
            ) as r:
                assert r.status == 404
                assert await r.json() == {}
            await proxy.guard_idle()


async def test_the_demo_backend_record_trimmed_for_a_reason(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """With the shipped demo backend: a reason listing one field sees exactly that field."""
    from lookup_proxy.customers import CustomerBase

    number = CustomerBase().find_customers(1)[0]
    p = policy(backend, extra='[reasons.DEVICE_SUPPORT]\ndescription = "d"\nfields = ["number"]\n')
    async with running_proxy(p) as (url, _):
        async with client.get(
            f"{url}/customers/{number}", headers=ask(token(p), "DEVICE_SUPPORT")
        ) as r:
            assert await r.json() == {"number": number}
        async with client.get(
            f"{url}/customers/{number}", headers=ask(token(p), "PLAN_CHANGE")
        ) as r:
            assert len(await r.json()) > 1
