"""A careful attacker at a terminal, one request at a time: forged and odd tokens, spoofed and
repeated headers, numbers that are not numbers, request shapes no route declares, and the admin
API. Each case is sent byte for byte over a raw socket (so repeated headers and absolute-form
targets go out as written) to a real proxy in front of a real recording backend, and asserts:

- the exact status and a problem body whose ``type`` names the cause, with ``request_id`` equal
  to the ``X-Request-Id`` header;
- that nothing in the answer echoes the hostile value (``instance`` is the request id's URN);
- that nothing reached the backend (or, for headers that are ignored rather than refused, that
  the backend saw our values and not the terminal's);
- that the server is unharmed: a good lookup right after still answers 200.

Parser-level garbage (oversize heads, CL+TE, obs-fold, bad bytes, no Host) is not here: aiohttp
rejects it before the application runs, and it has its own suite.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import pytest

from lookup_proxy.customers import CustomerBase
from lookup_proxy.guard.redis_store import RedisStore
from lookup_proxy.policy import Policy
from tests.harness import SECRET, policy, running_proxy, token
from tests.servers import free_port

NUMBER = CustomerBase().find_customers(1)[0]
DASHED = f"{NUMBER[:3]}-{NUMBER[3:7]}-{NUMBER[7:]}"
LOOKUP = f"/customers/{NUMBER}"
HUGE = "A" * 5000
MARK = "Zq9HostileMark"
"""A string no honest answer contains: cases embed it to prove it is not echoed."""

ROUTES = """
[[routes]]
path = "/customers/{number}"

[[routes]]
path = "/search"
number_from = "query"
number_param = "msisdn"
"""

Token = Callable[[Policy], str]
Upstream = Callable[[Mapping[str, str]], None]


# -- tokens --------------------------------------------------------------------------------


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "E1",
        "store": "S1",
        "region": "R1",
        "roles": [],
        "iss": "store-idp",
        "aud": "lookup-proxy",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    }
    for name, value in changes.items():
        if value is _DROP:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


_DROP = object()


def signed(secret: str = SECRET, algorithm: str = "HS256", **changes: Any) -> Token:
    return lambda _p: jwt.encode(_claims(**changes), secret, algorithm=algorithm)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(alg: str) -> Token:
    def make(_p: Policy) -> str:
        head = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        return f"{head}.{_b64(json.dumps(_claims()).encode())}."

    return make


def tampered(_p: Policy) -> str:
    """A genuine signature over another employee's claims."""
    genuine = jwt.encode(_claims(), SECRET, algorithm="HS256")
    head, _, sig = genuine.split(".")
    return f"{head}.{_b64(json.dumps(_claims(sub='E999')).encode())}.{sig}"


def good(p: Policy) -> str:
    return token(p)


def admin(p: Policy) -> str:
    return token(p, employee="SEC1", roles=["security-admin"])


# -- cases ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One hostile request and what the proxy must answer."""

    id: str
    status: int
    cause: str | None
    """The problem type's suffix; ``None`` for requests that are served (ignored headers)."""
    method: str = "GET"
    target: str = LOOKUP
    authorization: tuple[str, ...] | Token | None = good
    """The Authorization header(s): literal values, a token maker (``Bearer`` added), none."""
    reason: tuple[str, ...] = ("PLAN_CHANGE",)
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    hostile: str | None = None
    """A value that must appear nowhere in the answer (``instance`` aside)."""
    upstream: Upstream | None = None
    """For served cases: what the backend must (not) have seen."""
    extra: Mapping[str, object] = field(default_factory=dict)
    """Members the problem body must carry."""


def bearer(value: str) -> tuple[str, ...]:
    return (f"Bearer {value}",)


def saw(name: str, expected: str | None) -> Upstream:
    def check(got: Mapping[str, str]) -> None:
        assert got.get(name) == expected, (name, got.get(name))

    return check


TOKENS = [
    Case("token-missing", 401, "token-missing", authorization=None),
    Case("token-empty", 401, "token-missing", authorization=("",)),
    Case("token-no-bearer-scheme", 401, "token-malformed", authorization=(f"{MARK}.a.b",)),
    Case("token-basic-scheme", 401, "token-malformed", authorization=("Basic dXNlcjpwYXNz",)),
    Case("token-bearer-alone", 401, "token-malformed", authorization=("Bearer",)),
    Case("token-garbage", 401, "token-malformed", authorization=bearer(f"{MARK}.{MARK}.{MARK}")),
    Case("token-two-parts", 401, "token-malformed", authorization=bearer("abc.def")),
    Case("token-huge-garbage", 401, "token-malformed", authorization=bearer("a.b." + "c" * 8000)),
    Case("token-not-base64", 401, "token-malformed", authorization=bearer("!!!.???.***")),
    Case("token-alg-none", 401, "token-invalid", authorization=unsigned("none")),
    Case("token-alg-None-case", 401, "token-invalid", authorization=unsigned("None")),
    Case("token-forged-secret", 401, "token-invalid", authorization=signed("x" * 40)),
    Case(
        "token-algorithm-not-allowed",
        401,
        "token-invalid",
        authorization=signed(secret="y" * 64, algorithm="HS512"),
    ),
    Case("token-tampered-claims", 401, "token-invalid", authorization=tampered),
    Case("token-expired", 401, "token-expired", authorization=signed(exp=int(time.time()) - 600)),
    Case(
        "token-future-iat",
        401,
        "token-not-yet-valid",
        authorization=signed(iat=int(time.time()) + 600, exp=int(time.time()) + 1200),
    ),
    Case(
        "token-future-nbf",
        401,
        "token-not-yet-valid",
        authorization=signed(nbf=int(time.time()) + 600),
    ),
    Case("token-no-iat", 401, "token-claims", authorization=signed(iat=_DROP)),
    Case("token-no-exp", 401, "token-claims", authorization=signed(exp=_DROP)),
    Case("token-exp-infinite", 401, "token-claims", authorization=signed(exp=1e400)),
    Case("token-exp-text", 401, "token-claims", authorization=signed(exp="tomorrow")),
    Case(
        "token-lives-a-year",
        401,
        "token-claims",
        authorization=signed(exp=int(time.time()) + 365 * 86400),
    ),
    Case("token-wrong-issuer", 401, "token-claims", authorization=signed(iss="evil-idp")),
    Case("token-wrong-audience", 401, "token-claims", authorization=signed(aud="other-app")),
    Case("token-no-employee", 401, "token-claims", authorization=signed(sub=_DROP)),
    Case("token-employee-huge", 401, "token-claims", authorization=signed(sub=HUGE)),
    Case("token-roles-a-number", 401, "token-claims", authorization=signed(roles=7)),
    Case(
        "token-two-authorization-headers",
        400,
        "duplicate-header",
        authorization=lambda p: f"{token(p)}\r\nAuthorization: Bearer {token(p, employee='E2')}",
        extra={"header": "Authorization"},
    ),
]

HEADERS = [
    Case(
        "reason-twice",
        400,
        "duplicate-header",
        reason=("PLAN_CHANGE", "BILLING_INQUIRY"),
        extra={"header": "X-Lookup-Reason"},
    ),
    Case(
        "reference-twice",
        400,
        "duplicate-header",
        reason=("CORPORATE_ACCOUNT",),
        headers=(("X-Lookup-Reference", "CORP-000001"), ("X-Lookup-Reference", "CORP-000002")),
        extra={"header": "X-Lookup-Reference"},
    ),
    Case("reason-missing", 400, "missing-reason", reason=()),
    Case("reason-blank", 400, "missing-reason", reason=("   ",)),
    Case("reason-lower-case", 400, "unknown-reason", reason=("plan_change",)),
    Case("reason-prospecting", 400, "unknown-reason", reason=("PROSPECTING",)),
    Case("reason-huge", 400, "unknown-reason", reason=(MARK + HUGE,), hostile=MARK),
    Case("reason-unicode", 400, "unknown-reason", reason=(f"ＰＬＡＮ{MARK}",), hostile=MARK),
    Case("reason-markup", 400, "unknown-reason", reason=("<b>X</b>",), hostile="<b>X</b>"),
    Case("reason-role-restricted", 403, "reason-not-permitted", reason=("FRAUD_REVIEW",)),
    Case("reference-missing", 400, "missing-reference", reason=("CORPORATE_ACCOUNT",)),
    Case(
        "reference-wrong-pattern",
        400,
        "bad-reference",
        reason=("CORPORATE_ACCOUNT",),
        headers=(("X-Lookup-Reference", f"CORP-{MARK}"),),
        hostile=MARK,
    ),
    Case(
        "reference-huge",
        400,
        "bad-reference",
        headers=(("X-Lookup-Reference", MARK + HUGE),),
        hostile=MARK,
    ),
    Case(
        "employee-header-instead-of-token",
        401,
        "token-missing",
        authorization=None,
        headers=(("X-Employee-Id", "E1"), ("X-Store-Id", "S1")),
    ),
    Case(
        "spoofed-employee-header-is-ignored",
        200,
        None,
        headers=(("X-Employee-Id", "E999"), ("X-Store-Id", "S999"), ("X-Region-Id", "R9")),
        upstream=lambda got: (saw("x-employee-id", "E1")(got), saw("x-store-id", "S1")(got)),
    ),
    Case(
        "spoofed-forwarded-for-from-an-untrusted-peer",
        200,
        None,
        headers=(("X-Forwarded-For", "203.0.113.9"), ("Forwarded", "for=203.0.113.9")),
        upstream=lambda got: (
            saw("x-forwarded-for", "127.0.0.1")(got),
            saw("forwarded", None)(got),
        ),
    ),
    Case(
        "spoofed-reason-smuggled-in-another-header",
        200,
        None,
        headers=(("X-Lookup-Reason-Override", "FRAUD_REVIEW"), ("Cookie", "role=admin")),
        upstream=lambda got: (
            saw("x-lookup-reason", "PLAN_CHANGE")(got),
            saw("x-lookup-reason-override", None)(got),
            saw("cookie", None)(got),
        ),
    ),
    Case(
        "hostile-request-id-is-replaced",
        400,
        "missing-reason",
        reason=(),
        headers=(("X-Request-Id", f"../{MARK}/<script>"),),
        hostile=MARK,
    ),
]

NUMBERS = [
    Case("number-ten-digits-for-010", 400, "bad-number", target="/customers/0101234567"),
    Case("number-twelve-digits", 400, "bad-number", target="/customers/010123456789"),
    Case(
        "number-full-width-digits",
        400,
        "bad-number",
        target="/customers/%EF%BC%90%EF%BC%91%EF%BC%90%EF%BC%91%EF%BC%92%EF%BC%93"
        "%EF%BC%94%EF%BC%95%EF%BC%96%EF%BC%97%EF%BC%98",
    ),
    Case(
        "number-arabic-indic-digits",
        400,
        "bad-number",
        target="/customers/" + "%D9%A0%D9%A1%D9%A0" + "%D9%A1" * 8,
    ),
    Case("number-too-long", 400, "bad-number", target="/customers/" + "0" * 300),
    Case("number-with-letters", 400, "bad-number", target="/customers/010-CALL-NOW0"),
    Case("number-landline-seoul", 400, "bad-number", target="/customers/02-123-4567"),
    Case("number-landline-gyeonggi", 400, "bad-number", target="/customers/031-123-4567"),
    Case("number-other-country", 400, "bad-number", target="/customers/+1-555-123-4567"),
    Case("number-country-code-without-plus", 400, "bad-number", target="/customers/821012345678"),
    Case("number-only-separators", 400, "bad-number", target="/customers/%20-%20"),
    Case("number-nul-byte", 400, "bad-number", target=f"/customers/{NUMBER}%00"),
    Case("number-two-numbers", 400, "bad-number", target=f"/customers/{NUMBER},{NUMBER}"),
    Case("number-encoded-slash", 400, "bad-number", target=f"/customers/010%2F{NUMBER[3:]}"),
    Case("number-matrix-parameter", 400, "bad-number", target=f"{LOOKUP};jsessionid=1"),
    Case("number-empty", 403, "route-not-allowed", target="/customers/"),
]

SHAPES = [
    Case("query-on-a-path-route", 400, "unexpected-query", target=f"{LOOKUP}?number=01099999999"),
    Case("query-lone-ampersand", 400, "unexpected-query", target=f"{LOOKUP}?&"),
    Case(
        "query-route-extra-parameter",
        400,
        "unexpected-query",
        target=f"/search?msisdn={NUMBER}&page=2",
    ),
    Case(
        "query-route-number-twice",
        400,
        "bad-number",
        target=f"/search?msisdn={NUMBER}&msisdn=01099999999",
    ),
    Case("query-route-number-missing", 400, "bad-number", target="/search"),
    Case(
        "query-route-number-smuggled-with-semicolon",
        400,
        "bad-number",
        target=f"/search?msisdn={NUMBER};msisdn=01099999999",
    ),
    Case(
        "body-on-get",
        400,
        "unexpected-body",
        headers=(("Content-Length", "17"),),
        body=b'{"number": "010"}',
    ),
    Case(
        "chunked-body-on-get",
        400,
        "unexpected-body",
        headers=(("Transfer-Encoding", "chunked"),),
        body=b"5\r\nhello\r\n0\r\n\r\n",
    ),
    Case("absolute-form-target", 400, "bad-target", target=f"http://backend.internal{LOOKUP}"),
    Case("network-path-target", 400, "bad-target", target=f"//backend.internal{LOOKUP}"),
    Case("fragment-in-target", 400, "bad-target", target=f"{LOOKUP}#{MARK}", hostile=MARK),
    Case("post-to-a-lookup", 405, "method-not-allowed", method="POST"),
    Case("put-to-a-lookup", 405, "method-not-allowed", method="PUT"),
    Case("delete-a-lookup", 405, "method-not-allowed", method="DELETE"),
    Case("options-on-a-lookup", 405, "method-not-allowed", method="OPTIONS"),
    Case("unknown-method", 405, "method-not-allowed", method="PROPFIND"),
    Case("double-slash-inside", 403, "route-not-allowed", target=f"/customers//{NUMBER}"),
    Case("dot-dot-segment", 403, "route-not-allowed", target=f"/x/..{LOOKUP}"),
    Case("encoded-dot-dot", 403, "route-not-allowed", target=f"/customers/%2e%2e{LOOKUP}"),
    Case("trailing-slash", 403, "route-not-allowed", target=f"{LOOKUP}/"),
    Case("upper-case-path", 403, "route-not-allowed", target=f"/CUSTOMERS/{NUMBER}"),
    Case("sub-resource", 403, "route-not-allowed", target=f"{LOOKUP}/contracts"),
    Case("backend-only-path", 403, "route-not-allowed", target="/_demo/requests"),
]

ADMIN = [
    Case("admin-no-token", 401, "token-missing", target="/admin/locks", authorization=None),
    Case("admin-clerk-token", 403, "admin-only", target="/admin/locks"),
    Case("admin-clerk-unlocks", 403, "admin-only", method="DELETE", target="/admin/locks/E1"),
    Case(
        "admin-expired-token",
        401,
        "token-expired",
        target="/admin/locks",
        authorization=signed(exp=int(time.time()) - 600, roles=["security-admin"]),
    ),
    Case("admin-id-star", 400, "bad-employee-id", target="/admin/locks/*", authorization=admin),
    Case(
        "admin-id-star-unlock",
        400,
        "bad-employee-id",
        method="DELETE",
        target="/admin/locks/*",
        authorization=admin,
    ),
    Case(
        "admin-id-encoded-traversal",
        400,
        "bad-employee-id",
        method="PUT",
        target="/admin/locks/..%2F..",
        authorization=admin,
    ),
    Case(
        "admin-id-huge",
        400,
        "bad-employee-id",
        target="/admin/locks/E" + "1" * 3000,
        authorization=admin,
    ),
    Case(
        "admin-id-past-the-request-line-limit",
        431,
        "request-head-too-large",
        target="/admin/locks/E" + "1" * 5000,
        authorization=admin,
    ),
    Case(
        "admin-id-key-separator",
        400,
        "bad-employee-id",
        method="DELETE",
        target="/admin/locks/E1:lock",
        authorization=admin,
    ),
    Case(
        "admin-id-hash-tag",
        403,
        "route-not-allowed",
        method="DELETE",
        target="/admin/locks/%7Be:E1%7D",
        authorization=admin,
    ),
    Case(
        "admin-id-glob",
        400,
        "bad-employee-id",
        target="/admin/locks/E%5B0-9%5D",
        authorization=admin,
    ),
    Case("admin-post-to-list", 405, "method-not-allowed", method="POST", target="/admin/locks"),
    Case(
        "admin-patch-a-lock",
        405,
        "method-not-allowed",
        method="PATCH",
        target="/admin/locks/E1",
        authorization=admin,
    ),
    Case(
        "admin-two-authorization-headers",
        400,
        "duplicate-header",
        target="/admin/locks",
        authorization=lambda p: f"{admin(p)}\r\nAuthorization: Bearer {token(p)}",
    ),
    Case("admin-dot-dot-out", 403, "route-not-allowed", target="/admin/locks/../../healthz"),
]

CASES = TOKENS + HEADERS + NUMBERS + SHAPES + ADMIN


# -- the exchange --------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    raw_headers: str
    body: bytes


def request_bytes(case: Case, p: Policy, port: int) -> bytes:
    lines = [f"{case.method} {case.target} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    auth = case.authorization
    if callable(auth):
        lines.append(f"Authorization: Bearer {auth(p)}")
    elif auth is not None:
        lines.extend(f"Authorization: {value}" for value in auth)
    lines.extend(f"X-Lookup-Reason: {reason}" for reason in case.reason)
    lines.extend(f"{name}: {value}" for name, value in case.headers)
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + case.body


async def exchange(port: int, data: bytes) -> Answer:
    """Send ``data`` and read the whole answer (the proxy closes: ``Connection: close``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", ""):
        body = _dechunk(body)
    return Answer(int(status_line.split()[1]), headers, head.decode("latin-1"), body)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


async def backend_saw(client: aiohttp.ClientSession, backend: str) -> list[dict[str, Any]]:
    async with client.get(backend + "/_demo/requests") as response:
        seen: list[dict[str, Any]] = await response.json()
    async with client.delete(backend + "/_demo/requests"):
        pass
    return seen


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_hostile_request(case: Case, backend: str, client: aiohttp.ClientSession) -> None:
    """Each hostile request gets its exact refusal, reaches no backend, and harms nothing."""
    p = policy(backend, routes=ROUTES)
    async with running_proxy(p) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        answer = await exchange(port, request_bytes(case, p, port))
        seen = await backend_saw(client, backend)
        assert answer.status == case.status, answer.body[:300]
        assert answer.headers["server"] == "lookup-proxy"
        request_id = answer.headers["x-request-id"]
        if case.cause is None:
            assert len(seen) == 1, seen
            assert case.upstream is not None
            case.upstream(seen[0]["headers"])
        else:
            assert seen == [], seen
            assert answer.headers["content-type"] == "application/problem+json"
            problem = json.loads(answer.body)
            assert problem["type"] == f"urn:lookup-proxy:problem:{case.cause}"
            assert problem["status"] == case.status
            assert problem["request_id"] == request_id
            assert isinstance(problem["detail"], str) and problem["detail"]
            for name, value in case.extra.items():
                assert problem[name] == value, name
            if case.status == 405:
                assert answer.headers["allow"]
            assert problem["instance"] == f"urn:lookup-proxy:request:{request_id}"
            if case.hostile is not None:
                assert case.hostile not in json.dumps(problem, ensure_ascii=False)
                assert case.hostile not in answer.raw_headers
        # Unharmed: the same proxy still serves an honest lookup, and only that one goes upstream.
        lookup = {"Authorization": f"Bearer {token(p)}", "X-Lookup-Reason": "PLAN_CHANGE"}
        async with client.get(f"{url}/customers/{DASHED}", headers=lookup) as r:
            assert r.status == 200
            assert (await r.json())["number"] == NUMBER
        assert [entry["path"] for entry in await backend_saw(client, backend)] == [
            f"/customers/{DASHED}"
        ]


def test_the_suite_is_broad() -> None:
    """At least sixty cases, and every family represented."""
    assert len(CASES) >= 60
    assert all(len(family) >= 5 for family in (TOKENS, HEADERS, NUMBERS, SHAPES, ADMIN))
    assert len({case.id for case in CASES}) == len(CASES)


# -- expected conditions leave no tracebacks -----------------------------------------------


async def test_expected_failures_are_logged_without_tracebacks(
    backend: str, client: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis refusing, the backend refusing and every 400 are conditions, not bugs: they are
    answered with problems and logged without a traceback."""
    caplog.set_level(logging.DEBUG)
    dead_redis = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}", cluster=False, timeout=0.5)
    lookup = {"Authorization": "", "X-Lookup-Reason": "PLAN_CHANGE"}
    p = policy(backend, routes=ROUTES)
    async with running_proxy(p, store=dead_redis) as (url, _):
        lookup["Authorization"] = f"Bearer {token(p)}"
        async with client.get(url + LOOKUP, headers=lookup) as r:
            assert r.status == 503
        admin_headers = {"Authorization": f"Bearer {admin(p)}"}
        async with client.get(url + "/admin/locks", headers=admin_headers) as r:
            assert r.status == 503
        async with client.delete(url + "/admin/locks/E1", headers=admin_headers) as r:
            assert r.status == 503
    refused_upstream = policy(f"http://127.0.0.1:{free_port()}", routes=ROUTES)
    async with running_proxy(refused_upstream) as (url, _):
        lookup["Authorization"] = f"Bearer {token(refused_upstream)}"
        async with client.get(url + LOOKUP, headers=lookup) as r:
            assert r.status == 502
        port = int(url.rsplit(":", 1)[1])
        for case in CASES:
            if case.status == 400:
                answer = await exchange(port, request_bytes(case, refused_upstream, port))
                assert answer.status == 400, case.id
    with_traceback = [(rec.name, rec.getMessage()) for rec in caplog.records if rec.exc_info]
    assert with_traceback == []
    assert any(rec.levelno == logging.WARNING for rec in caplog.records)
