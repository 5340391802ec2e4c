"""Hot reload: a new policy in force without a restart, or the old one kept whole."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client.parser import text_string_to_metric_families

from lookup_proxy.app import Proxy, build_app
from lookup_proxy.customers import CustomerBase
from lookup_proxy.guard import GuardStore
from lookup_proxy.guard.memory import MemoryStore
from lookup_proxy.guard.redis_store import RedisStore
from lookup_proxy.middleware import PROXY
from lookup_proxy.policy import load_policy, policy_hash
from tests.harness import ENV, REASONS, ROOT, audit_records, serving, token
from tests.servers import free_port

NUMBERS = CustomerBase().find_customers(8)


def policy_text(
    upstream: str,
    *,
    rules: str = "",
    reasons: str = "",
    server: str = "",
    routes: str = '[[routes]]\npath = "/customers/{number}"\n',
    upstream_extra: str = "",
) -> str:
    """A policy with generous upstream timeouts (a held upstream must not time out)."""
    return f"""
[server]
admin_role = "security-admin"
{server}

[upstream]
url = "{upstream}"
read_timeout = "10s"
total_timeout = "10s"
{upstream_extra}

{routes}

[auth]
algorithms = ["HS256"]
issuer = "store-idp"
audience = "lookup-proxy"

{REASONS}
{reasons}
{rules}
"""


BURST = """
[[rules]]
name = "burst"
kind = "rate"
window = "10m"
limit = 3
"""


@asynccontextmanager
async def proxy_from_file(
    file: Path, store: GuardStore | None = None
) -> AsyncIterator[tuple[str, Proxy]]:
    """A proxy started from ``file`` (which reloads re-read) on a real socket."""
    app = build_app(
        load_policy(file), base_dir=file.parent, environ=ENV, store=store, policy_file=file
    )
    async with serving(app) as url:
        yield url, app[PROXY]


def lookup_headers(tok: str, reason: str = "PLAN_CHANGE") -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}", "X-Lookup-Reason": reason}


def admin_headers(file: Path) -> dict[str, str]:
    tok = token(load_policy(file), employee="SEC1", roles=["security-admin"])
    return {"Authorization": f"Bearer {tok}"}


async def audited(proxy: Proxy, kind: str) -> list[dict[str, Any]]:
    """The audit trail's records of one kind so far."""
    await proxy.audit.flush()
    return audit_records(proxy.audit.file.directory, kind)


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


async def metrics(client: aiohttp.ClientSession, url: str) -> str:
    async with client.get(url + "/metrics") as r:
        return await r.text()


async def reload(client: aiohttp.ClientSession, url: str, file: Path) -> tuple[int, dict[str, Any]]:
    async with client.post(url + "/admin/policy/reload", headers=admin_headers(file)) as r:
        body: dict[str, Any] = await r.json(content_type=None)
        return r.status, body


async def test_a_valid_reload_puts_the_new_policy_in_force(
    backend: str, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The admin call answers the new hash, GET /admin/policy shows the new policy, the info
    gauge moves to the new hash (the old series gone), and a second call is "unchanged"."""
    file = tmp_path / "policy.toml"
    file.write_text(policy_text(backend))
    first = policy_hash(load_policy(file))
    async with proxy_from_file(file) as (url, proxy):
        async with client.get(url + "/admin/policy", headers=admin_headers(file)) as r:
            assert r.status == 200
            shown = await r.json()
        assert shown["hash"] == first
        assert shown["policy"]["reasons"]["PLAN_CHANGE"]["fields"] is None
        before = samples(await metrics(client, url), "lookup_proxy_policy_info")
        assert before == {(("hash", first),): 1.0}

        file.write_text(
            policy_text(
                backend,
                reasons='[reasons.DEVICE_SUPPORT]\ndescription = "Device"\nfields = ["name"]\n',
            )
        )
        second = policy_hash(load_policy(file))
        assert second != first
        assert await reload(client, url, file) == (200, {"result": "reloaded", "hash": second})
        async with client.get(url + "/admin/policy", headers=admin_headers(file)) as r:
            shown = await r.json()
        assert shown["hash"] == second
        assert shown["policy"]["reasons"]["DEVICE_SUPPORT"]["fields"] == ["name"]
        device = lookup_headers(token(load_policy(file)), "DEVICE_SUPPORT")
        async with client.get(f"{url}/customers/{NUMBERS[0]}", headers=device) as r:
            assert r.status == 200
            assert list(await r.json()) == ["name"]

        assert await reload(client, url, file) == (200, {"result": "unchanged", "hash": second})
        text = await metrics(client, url)
        admin = await audited(proxy, "admin")
        (looked_up,) = await audited(proxy, "lookup")
    assert [(a["action"], a["employee"], a["status"]) for a in admin] == [
        ("policy.show", "SEC1", 200),
        ("policy.reload", "SEC1", 200),
        ("policy.show", "SEC1", 200),
        ("policy.reload", "SEC1", 200),
    ]
    assert admin[1]["note"] == f"reloaded: {first} -> {second}"
    assert admin[3]["note"] == f"unchanged: {second} -> {second}"
    assert all(a["client"] == "127.0.0.1" and a["request_id"] for a in admin)
    assert looked_up["policy"] == second
    assert samples(text, "lookup_proxy_policy_info") == {(("hash", second),): 1.0}
    assert samples(text, "lookup_proxy_config_reloads_total") == {
        (("result", "ok"),): 1.0,
        (("result", "unchanged"),): 1.0,
        (("result", "error"),): 0.0,
    }


async def test_an_invalid_file_keeps_the_old_policy_and_lists_every_error(
    backend: str,
    client: aiohttp.ClientSession,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 422 problem lists every error (file, key, expectation); each is logged without a
    traceback; the error counter moves; lookups go on under the old policy."""
    file = tmp_path / "policy.toml"
    file.write_text(policy_text(backend))
    first = policy_hash(load_policy(file))
    admin = admin_headers(file)
    tok = token(load_policy(file))
    caplog.set_level(logging.INFO, logger="lookup_proxy")
    async with proxy_from_file(file) as (url, proxy):
        file.write_text(
            policy_text(
                backend,
                reasons='[reasons.DEVICE_SUPPORT]\ndescription = "D"\nfields = ["a..b"]\n',
                upstream_extra="read_timout = 3",
            )
        )
        async with client.post(url + "/admin/policy/reload", headers=admin) as r:
            assert r.status == 422
            assert r.headers["Content-Type"].startswith("application/problem+json")
            body = await r.json(content_type=None)
        assert body["type"] == "urn:lookup-proxy:problem:policy-invalid"
        assert body["hash"] == first
        assert {e["key"] for e in body["errors"]} == {
            "upstream.read_timout",
            "reasons.DEVICE_SUPPORT.fields[0]",
        }
        assert all(e["file"] == str(file) and e["expected"] for e in body["errors"])
        assert proxy.generation.hash == first

        file.write_text("this is [not toml")
        async with client.post(url + "/admin/policy/reload", headers=admin) as r:
            assert r.status == 422
            assert [e["key"] for e in (await r.json(content_type=None))["errors"]] == ["(syntax)"]

        async with client.get(f"{url}/customers/{NUMBERS[0]}", headers=lookup_headers(tok)) as r:
            assert r.status == 200
        text = await metrics(client, url)
        records = await audited(proxy, "admin")
    assert [(a["action"], a["status"]) for a in records] == [("policy.reload", 422)] * 2
    assert records[0]["note"] == f"error: {first} -> {first}"
    assert samples(text, "lookup_proxy_config_reloads_total")[(("result", "error"),)] == 2.0
    assert samples(text, "lookup_proxy_policy_info") == {(("hash", first),): 1.0}
    refused = [rec for rec in caplog.records if rec.name == "lookup_proxy.reload"]
    assert {rec.__dict__["key"] for rec in refused} == {
        "upstream.read_timout",
        "reasons.DEVICE_SUPPORT.fields[0]",
        "(syntax)",
    }
    assert all(rec.levelno == logging.ERROR and rec.exc_info is None for rec in refused)
    assert all(rec.__dict__["trigger"] == "admin:SEC1" for rec in refused)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"server": "port = 9999"}, "server.port"),
        ({"server": "max_connections = 7"}, "server.max_connections"),
        (
            {"routes": '[[routes]]\npath = "/search"\nnumber_from = "query"\n'},
            "routes",
        ),
        ({"upstream_extra": "pool_size = 3"}, "upstream.pool_size"),
        ({"rules": BURST.replace('"rate"', '"distinct"')}, "rules[0].kind"),
        ({"upstream_extra": 'credential_env = "NOT_SET_ANYWHERE"'}, "NOT_SET_ANYWHERE"),
    ],
)
async def test_what_needs_a_restart_is_refused_not_half_applied(
    backend: str,
    client: aiohttp.ClientSession,
    tmp_path: Path,
    change: dict[str, str],
    key: str,
) -> None:
    """Listener, edge, routes, pool size, a rule's kind under its name, a missing secret:
    the reload is refused naming the key, and nothing of the new file is in force."""
    file = tmp_path / "policy.toml"
    file.write_text(policy_text(backend, rules=BURST))
    first = policy_hash(load_policy(file))
    async with proxy_from_file(file) as (url, proxy):
        changed = {"rules": BURST, **change}
        changed["reasons"] = '[reasons.DEVICE_SUPPORT]\ndescription = "New"\n'
        file.write_text(policy_text(backend, **changed))
        status, body = await reload(client, url, file)
        assert status == 422
        assert [e["key"] for e in body["errors"]] == [key]
        assert proxy.generation.hash == first
        assert "DEVICE_SUPPORT" not in proxy.generation.policy.reasons


async def test_the_admin_calls_need_the_admin_role(
    backend: str, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """No token: 401; a clerk's token: 403; a query string: 400; nothing reloaded."""
    file = tmp_path / "policy.toml"
    file.write_text(policy_text(backend))
    clerk = {"Authorization": f"Bearer {token(load_policy(file), employee='E5')}"}
    async with proxy_from_file(file) as (url, proxy):
        for headers, status in (({}, 401), (clerk, 403)):
            async with client.post(url + "/admin/policy/reload", headers=headers) as r:
                assert r.status == status
            async with client.get(url + "/admin/policy", headers=headers) as r:
                assert r.status == status
        async with client.get(url + "/admin/policy?x=1", headers=admin_headers(file)) as r:
            assert r.status == 400
        async with client.post(
            url + "/admin/policy/reload", headers=admin_headers(file), data=b"[1]"
        ) as r:
            assert r.status == 400
        text = await metrics(client, url)
        admin = await audited(proxy, "admin")
    assert sum(samples(text, "lookup_proxy_config_reloads_total").values()) == 0
    assert [(a["action"], a["employee"], a["status"]) for a in admin] == [
        ("policy.reload", None, 401),
        ("policy.show", None, 401),
        ("policy.reload", "E5", 403),
        ("policy.show", "E5", 403),
        ("policy.show", "SEC1", 400),
        ("policy.reload", "SEC1", 400),
    ]


async def held_upstream(
    arrived: asyncio.Event, release: asyncio.Event
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def answer(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.json_response({"name": "Kim", "plan": "5G", "imei": "35-0000"})

    return answer


async def test_a_lookup_in_flight_finishes_under_the_policy_it_started_with(
    client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A lookup held at the backend while the reload trims its reason's fields gets the whole
    answer (its generation had no list); the next lookup gets the trimmed one."""
    arrived, release = asyncio.Event(), asyncio.Event()
    upstream = web.Application()
    upstream.router.add_get("/customers/{number}", await held_upstream(arrived, release))
    async with serving(upstream) as upstream_url:
        file = tmp_path / "policy.toml"
        file.write_text(policy_text(upstream_url))
        tok = token(load_policy(file))
        first = policy_hash(load_policy(file))
        async with proxy_from_file(file) as (url, proxy):

            async def lookup() -> tuple[int, object]:
                async with client.get(
                    f"{url}/customers/{NUMBERS[0]}", headers=lookup_headers(tok)
                ) as r:
                    return r.status, await r.json()

            in_flight = asyncio.create_task(lookup())
            await asyncio.wait_for(arrived.wait(), 5)
            file.write_text(
                policy_text(
                    upstream_url,
                    reasons="",
                ).replace(
                    'description = "Changing the customer\'s plan"',
                    'description = "Changing the customer\'s plan"\nfields = ["name"]',
                )
            )
            assert (await reload(client, url, file))[1]["result"] == "reloaded"
            release.set()
            assert await asyncio.wait_for(in_flight, 5) == (
                200,
                {"name": "Kim", "plan": "5G", "imei": "35-0000"},
            )
            assert await lookup() == (200, {"name": "Kim"})
            records = await audited(proxy, "lookup")
            outcomes = await audited(proxy, "outcome")
    assert [r["policy"] for r in records] == [first, proxy.generation.hash]
    assert first != proxy.generation.hash
    assert [o["fields"] for o in outcomes] == [None, "PLAN_CHANGE"]


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_a_rate_counter_keeps_counting_across_a_reload(
    backend: str,
    client: aiohttp.ClientSession,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    kind: str,
) -> None:
    """Two lookups, a reload that changes something else, two more: the fourth is over the
    limit of three. A rule given a new name starts from zero."""
    store: GuardStore
    if kind == "redis":
        store = RedisStore.from_url(
            request.getfixturevalue("fresh_redis"), cluster=False, timeout=2.0
        )
    else:
        store = MemoryStore()
    file = tmp_path / "policy.toml"
    file.write_text(policy_text(backend, rules=BURST))
    tok = token(load_policy(file))

    async with proxy_from_file(file, store) as (url, proxy):

        async def status(number: str) -> int:
            async with client.get(f"{url}/customers/{number}", headers=lookup_headers(tok)) as r:
                return r.status

        assert [await status(n) for n in NUMBERS[:2]] == [200, 200]
        file.write_text(
            policy_text(backend, rules=BURST, reasons='[reasons.X_NEW]\ndescription = "x"\n')
        )
        assert (await reload(client, url, file))[1]["result"] == "reloaded"
        assert proxy.generation.number == 2
        # With Redis, lookup records still ride the new guard's decision batches.
        assert proxy.generation.guard.audit_log == (None if kind == "memory" else "lp:{audit}:log")
        assert [await status(n) for n in NUMBERS[2:4]] == [200, 429]

        file.write_text(policy_text(backend, rules=BURST.replace('"burst"', '"burst-2"')))
        assert (await reload(client, url, file))[1]["result"] == "reloaded"
        assert [await status(n) for n in NUMBERS[4:7]] == [200, 200, 200]
        await proxy.guard_idle()


async def test_a_reload_during_a_store_outage_keeps_the_local_counts_under_new_limits(
    backend: str, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Guarding locally while Redis is out, a reload's limits (cut by local_limit_share) apply
    to the counts the outage's embedded store already holds."""
    dead = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", cluster=False, timeout=0.5)
    local = '[store]\non_unavailable = "local"\nlocal_limit_share = 0.5\n'
    file = tmp_path / "policy.toml"
    file.write_text(policy_text(backend, rules=BURST.replace("limit = 3", "limit = 4") + local))
    tok = token(load_policy(file))
    async with proxy_from_file(file, dead) as (url, proxy):

        async def status(number: str) -> int:
            async with client.get(f"{url}/customers/{number}", headers=lookup_headers(tok)) as r:
                return r.status

        assert [await status(n) for n in NUMBERS[:2]] == [503, 200]  # the breaker opens
        assert proxy.failover.mode == "local"
        file.write_text(policy_text(backend, rules=BURST.replace("limit = 3", "limit = 8") + local))
        assert (await reload(client, url, file))[1]["result"] == "reloaded"
        assert [await status(n) for n in NUMBERS[2:6]] == [200, 200, 200, 429]


async def test_a_lock_made_before_a_reload_still_holds_after_it(
    backend: str, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Locks live in the kept store: the new generation's guard and the admin API see them."""
    file = tmp_path / "policy.toml"
    file.write_text(policy_text(backend))
    tok = token(load_policy(file), employee="E7")
    async with proxy_from_file(file) as (url, _):
        async with client.put(url + "/admin/locks/E7", headers=admin_headers(file)) as r:
            assert r.status == 201
        file.write_text(policy_text(backend, reasons='[reasons.X_NEW]\ndescription = "x"\n'))
        assert (await reload(client, url, file))[1]["result"] == "reloaded"
        async with client.get(f"{url}/customers/{NUMBERS[0]}", headers=lookup_headers(tok)) as r:
            assert r.status == 403
            assert (await r.json(content_type=None))["type"].endswith("locked-out")
        async with client.get(url + "/admin/locks/E7", headers=admin_headers(file)) as r:
            assert (await r.json())["locked"] is True


async def test_a_changed_admin_role_applies_to_the_admin_api_at_once(
    backend: str, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """``server.admin_role`` is reloadable: the old role's token is refused after the reload."""
    file = tmp_path / "policy.toml"
    file.write_text(policy_text(backend))
    old_admin = admin_headers(file)
    async with proxy_from_file(file) as (url, _):
        file.write_text(
            policy_text(backend).replace('admin_role = "security-admin"', 'admin_role = "soc"')
        )
        assert (await reload(client, url, file))[1]["result"] == "reloaded"
        async with client.get(url + "/admin/locks", headers=old_admin) as r:
            assert r.status == 403
        soc = token(load_policy(file), employee="SEC2", roles=["soc"])
        async with client.get(
            url + "/admin/policy", headers={"Authorization": f"Bearer {soc}"}
        ) as r:
            assert r.status == 200


def es256_token(key: ec.EllipticCurvePrivateKey, employee: str = "E1") -> str:
    now = int(time.time())
    claims = {
        "sub": employee,
        "store": "S1",
        "roles": [],
        "iss": "store-idp",
        "aud": "lookup-proxy",
        "iat": now,
        "exp": now + 600,
    }
    return jwt.encode(claims, key, algorithm="ES256")


def write_public_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


async def test_a_rotated_key_file_is_a_change_even_when_the_policy_text_is_not(
    backend: str, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Same policy text, new public key file: the reload builds a new verifier (result
    "reloaded", same hash); tokens of the old key are refused, the new key's accepted."""
    old_key, new_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    write_public_key(tmp_path / "idp.pem", old_key)
    file = tmp_path / "policy.toml"
    file.write_text(
        policy_text(backend).replace(
            'algorithms = ["HS256"]', 'algorithms = ["ES256"]\npublic_key_file = "idp.pem"'
        )
    )
    async with proxy_from_file(file) as (url, proxy):
        first = proxy.generation.hash

        async def status(key: ec.EllipticCurvePrivateKey) -> int:
            async with client.get(
                f"{url}/customers/{NUMBERS[0]}", headers=lookup_headers(es256_token(key))
            ) as r:
                return r.status

        assert (await status(old_key), await status(new_key)) == (200, 401)
        assert proxy.reloader.reload("test").result == "unchanged"
        write_public_key(tmp_path / "idp.pem", new_key)
        done = proxy.reloader.reload("test")
        assert (done.result, done.hash, done.previous) == ("reloaded", first, first)
        assert (await status(old_key), await status(new_key)) == (401, 200)
        (tmp_path / "idp.pem").write_text("not a key")
        assert proxy.reloader.reload("test").problems[0].key == "auth.public_key_file"
        assert await status(new_key) == 200


# -- SIGHUP on a real `lookup-proxy serve` ----------------------------------------------------


def _get(url: str, headers: dict[str, str] | None = None) -> str:
    import urllib.request

    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=5) as response:
        text: str = response.read().decode()
        return text


def _scrape(url: str) -> str:
    return _get(url + "/metrics")


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_sighup_reloads_a_running_serve_and_keeps_the_old_policy_on_errors(
    tmp_path: Path,
) -> None:
    """SIGHUP to ``lookup-proxy serve``: a valid file moves the hash gauge (the command line's
    overrides still applied); an invalid one is logged key by key (no traceback), counted as an
    error, and the running policy stays."""
    file = tmp_path / "policy.toml"
    file.write_text(policy_text("http://127.0.0.1:9"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    override = f"http://127.0.0.1:{free_port()}"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LOOKUP_PROXY_")}
    environment.update(ENV)  # the JWT secret and the audit trail's keys
    admin = admin_headers(file)
    log_file = tmp_path / "serve.log"
    with log_file.open("wb") as out:
        serve = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lookup_proxy",
                "serve",
                "--config",
                str(file),
                "--port",
                str(port),
                "--upstream-url",
                override,
            ],
            cwd=ROOT,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def shown() -> dict[str, Any]:
        result: dict[str, Any] = json.loads(_get(url + "/admin/policy", admin))
        return result

    try:
        _wait_for(
            lambda: serve.poll() is None and "lookup_proxy_policy_info{" in _scrape(url),
            "the proxy to serve",
        )
        first = shown()["hash"]
        assert f'lookup_proxy_policy_info{{hash="{first}"}} 1.0' in _scrape(url)

        file.write_text(
            policy_text("http://127.0.0.1:9", reasons='[reasons.X_NEW]\ndescription = "x"\n')
        )
        serve.send_signal(signal.SIGHUP)
        _wait_for(lambda: shown()["hash"] != first, "the new policy")
        second, policy = shown()["hash"], shown()["policy"]
        assert "X_NEW" in policy["reasons"]
        assert policy["upstream"]["url"] == override
        text = _scrape(url)
        assert f'lookup_proxy_policy_info{{hash="{second}"}} 1.0' in text
        assert f'hash="{first}"' not in text

        file.write_text(file.read_text() + "\n[reasons.BAD]\ndescripton = 1\n")
        serve.send_signal(signal.SIGHUP)
        _wait_for(
            lambda: 'lookup_proxy_config_reloads_total{result="error"} 1.0' in _scrape(url),
            "the error count",
        )
        text = _scrape(url)
        assert f'lookup_proxy_policy_info{{hash="{second}"}} 1.0' in text
        assert 'lookup_proxy_config_reloads_total{result="ok"} 1.0' in text
        assert shown()["hash"] == second
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=20)
    assert serve.returncode == 0
    lines = [json.loads(line) for line in log_file.read_text().splitlines() if line.startswith("{")]
    reloaded = [line for line in lines if line["event"] == "policy reloaded"]
    assert [(r["trigger"], r["hash"], r["previous"]) for r in reloaded] == [
        ("sighup", second, first)
    ]
    assert reloaded[0]["changed"] == ["reasons"]
    refused = [line for line in lines if line["event"].startswith("policy reload refused")]
    assert {(r["file"], r["key"]) for r in refused} == {
        (str(file), "reasons.BAD.description"),
        (str(file), "reasons.BAD.descripton"),
    }
    assert all("error" not in r and r["expected"] for r in refused)
    assert "Traceback" not in log_file.read_text()
    signals = [
        (a["employee"], a["note"].split(":")[0], a["status"])
        for a in audit_records(tmp_path / "audit", "admin")
        if a["action"] == "policy.reload"
    ]
    assert signals == [(None, "SIGHUP reloaded", 0), (None, "SIGHUP error", 2)]
