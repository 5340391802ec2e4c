"""End to end through the guard: rate limits, lockouts, the admin API and a store outage,
over real sockets with the demo backend upstream."""

from __future__ import annotations

import asyncio

import aiohttp

from lookup_proxy.customers import CustomerBase
from lookup_proxy.guard.redis_store import RedisStore
from tests.harness import ENV, policy, running_proxy, token
from tests.servers import free_port

BASE = CustomerBase()
FOUND = BASE.find_customers(40)
MISSES = BASE.find_non_customers(40, start="01055550000")

RATE = """
[[rules]]
name = "burst"
kind = "rate"
window = "5m"
limit = 3
"""

LOCKING = """
[[rules]]
name = "random-typing"
kind = "misses"
window = "1h"
limit = 3
ratio = 0.5
action = "lock"

[lockout]
duration = "until-unlocked"
contact = "Security Operations (ext. 1234)"
"""


def lookup_headers(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}", "X-Lookup-Reason": "PLAN_CHANGE"}


async def test_rate_limit_refuses_with_429_and_retry_headers(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """The fourth lookup in five minutes is a 429 with Retry-After and IETF RateLimit headers."""
    p = policy(backend, rules=RATE)
    tok = token(p)
    async with running_proxy(p) as (url, _):
        for index in range(3):
            async with client.get(
                f"{url}/customers/{FOUND[index]}", headers=lookup_headers(tok)
            ) as r:
                assert r.status == 200
                assert r.headers["RateLimit-Policy"] == '"burst";q=3;w=300'
                assert r.headers["RateLimit"].startswith(f'"burst";r={2 - index};t=')
        async with client.get(f"{url}/customers/{FOUND[3]}", headers=lookup_headers(tok)) as r:
            assert r.status == 429
            body = await r.json(content_type=None)
            retry = int(r.headers["Retry-After"])
            assert r.headers["RateLimit"] == f'"burst";r=0;t={retry}'
    assert 295 <= retry <= 300
    assert body["type"] == "urn:lookup-proxy:problem:rate-limited"
    assert body["rule"] == "burst"
    assert "Wait" in body["detail"]


async def test_a_prober_is_locked_out_and_an_admin_unlocks_them(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """Misses lock the employee (403 with whom to contact); an admin lists and lifts the lock."""
    p = policy(backend, rules=LOCKING)
    prober = token(p, employee="E666")
    colleague = token(p, employee="E777")
    admin = {"Authorization": f"Bearer {token(p, employee='SEC1', roles=['security-admin'])}"}
    async with running_proxy(p) as (url, proxy):
        statuses = []
        for number in MISSES[:8]:
            async with client.get(f"{url}/customers/{number}", headers=lookup_headers(prober)) as r:
                statuses.append(r.status)
                last = await r.json(content_type=None)
            await proxy.guard_idle()
        assert statuses[:4] == [404, 404, 404, 404]
        assert statuses[4:] == [403, 403, 403, 403]
        assert last["type"] == "urn:lookup-proxy:problem:locked-out"
        assert "Security Operations (ext. 1234)" in last["detail"]
        async with client.get(
            f"{url}/customers/{FOUND[0]}", headers=lookup_headers(colleague)
        ) as r:
            assert r.status == 200
        async with client.get(f"{url}/admin/locks", headers=admin) as r:
            assert r.status == 200
            locks = (await r.json())["locks"]
        assert [(lock["employee"], lock["rule"], lock["until"]) for lock in locks] == [
            ("E666", "random-typing", None)
        ]
        async with client.delete(f"{url}/admin/locks/E666", headers=admin) as r:
            assert (await r.json()) == {"employee": "E666", "unlocked": True}
        async with client.get(f"{url}/admin/locks/E666", headers=admin) as r:
            assert (await r.json())["locked"] is False
        async with client.get(f"{url}/customers/{FOUND[1]}", headers=lookup_headers(prober)) as r:
            assert r.status == 200
        async with client.get(f"{url}/metrics") as r:
            metrics = await r.text()
    assert 'lookup_proxy_lockouts_total{rule="random-typing"} 1.0' in metrics
    assert (
        'lookup_proxy_rule_hits_total{action="lock",kind="misses",mode="enforce",'
        'rule="random-typing"} 1.0'
    ) in metrics
    assert 'lookup_proxy_guard_decisions_total{decision="deny",rule="locked"} 3.0' in metrics
    assert 'lookup_proxy_store_roundtrip_seconds_count{store="memory"}' in metrics


async def test_the_admin_api_needs_the_admin_role(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """A clerk's token cannot list or lift lockouts; no token is a 401."""
    p = policy(backend)
    async with running_proxy(p) as (url, _):
        clerk = {"Authorization": f"Bearer {token(p)}"}
        async with client.delete(f"{url}/admin/locks/E1", headers=clerk) as r:
            assert r.status == 403
            assert (await r.json(content_type=None))["type"].endswith(":admin-only")
        async with client.get(f"{url}/admin/locks") as r:
            assert r.status == 401


async def test_an_admin_can_lock_by_hand(backend: str, client: aiohttp.ClientSession) -> None:
    """PUT /admin/locks/{employee} locks them out of lookups on the spot."""
    p = policy(backend)
    admin = {"Authorization": f"Bearer {token(p, employee='SEC1', roles=['security-admin'])}"}
    async with running_proxy(p) as (url, _):
        async with client.put(f"{url}/admin/locks/E1", headers=admin) as r:
            assert r.status == 201
        async with client.get(f"{url}/customers/{FOUND[0]}", headers=lookup_headers(token(p))) as r:
            assert r.status == 403
            assert (await r.json(content_type=None))["type"].endswith(":locked-out")


async def test_an_unreachable_store_refuses_with_503_and_never_forwards(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """With Redis down the lookup is refused, not let through unguarded."""
    p = policy(backend, rules=RATE)
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", cluster=False, timeout=0.2)
    async with running_proxy(p, store=store) as (url, _):
        async with client.get(f"{url}/customers/{FOUND[0]}", headers=lookup_headers(token(p))) as r:
            assert r.status == 503
            body = await r.json(content_type=None)
        async with client.get(f"{url}/readyz") as r:
            assert r.status == 503
            assert (await r.json())["checks"]["store"] == "unreachable"
        async with client.get(f"{backend}/_demo/requests") as r:
            assert await r.json() == []
    assert body["type"] == "urn:lookup-proxy:problem:guard-unavailable"


async def test_two_proxies_on_one_redis_allow_exactly_the_limit(
    backend: str, client: aiohttp.ClientSession, fresh_redis: str
) -> None:
    """Two proxy instances sharing Redis (URL from the environment) allow 50 of 200 concurrent
    lookups by one employee, and a lock made through one is enforced by the other."""
    rules = RATE.replace("limit = 3", "limit = 50").replace('window = "5m"', 'window = "1h"')
    p = policy(backend, rules=rules + LOCKING, extra='[store]\nkind = "redis"\n')
    environ = {**ENV, "LOOKUP_PROXY_REDIS_URL": fresh_redis}
    tok = token(p, employee="E50")
    admin = {"Authorization": f"Bearer {token(p, employee='SEC1', roles=['security-admin'])}"}
    async with (
        running_proxy(p, environ=environ) as (first, proxy_a),
        running_proxy(p, environ=environ) as (second, proxy_b),
    ):
        assert proxy_a.store.kind == proxy_b.store.kind == "redis"

        async def one(index: int) -> int:
            url = first if index % 2 else second
            number = FOUND[index % len(FOUND)]
            async with client.get(f"{url}/customers/{number}", headers=lookup_headers(tok)) as r:
                await r.read()
                return r.status

        statuses = await asyncio.gather(*(one(i) for i in range(200)))
        assert statuses.count(200) == 50
        assert statuses.count(429) == 150
        async with client.put(f"{first}/admin/locks/E77", headers=admin) as r:
            assert r.status == 201
        async with client.get(
            f"{second}/customers/{FOUND[0]}", headers=lookup_headers(token(p, employee="E77"))
        ) as r:
            assert r.status == 403
        async with client.delete(f"{second}/admin/locks/E77", headers=admin) as r:
            assert (await r.json())["unlocked"] is True
        async with client.get(
            f"{first}/customers/{FOUND[0]}", headers=lookup_headers(token(p, employee="E77"))
        ) as r:
            assert r.status == 200
