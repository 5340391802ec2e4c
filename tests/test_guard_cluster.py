"""The guard on a real three-master Redis Cluster, and several proxies sharing one Redis.

The cluster test picks employee, store and region names whose hash tags live on three
different masters, so a decision's batch really is split into groups that run on different
nodes. The concurrency tests race 200 lookups through two proxy instances (two guards, two
connection pools) to show a limit is a limit across instances, not per instance.
"""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio.cluster import RedisCluster

from lookup_proxy.clock import SystemClock
from lookup_proxy.employee import Employee
from lookup_proxy.guard.decision import Lookup
from lookup_proxy.guard.engine import Guard
from lookup_proxy.guard.redis_store import RedisStore
from tests.test_guard_conformance import Desk, make_policy, number

SCOPES = """
[[rules]]
name = "per-minute"
kind = "rate"
window = "1m"
limit = 5
action = "lock"

[[rules]]
name = "store-block"
kind = "block"
scope = "store"
window = "1d"
limit = 3
block_digits = 7
member_min = 2
action = "lock"

[[rules]]
name = "region-distinct"
kind = "distinct"
scope = "region"
window = "1h"
limit = 5
action = "flag"

[[rules]]
name = "misses"
kind = "misses"
window = "1h"
limit = 2
"""


async def master_of(client: RedisCluster, tag: str) -> str:
    """The master holding keys tagged ``tag``."""
    await client.initialize()
    node = client.get_node_from_key(f"lp:{{{tag}}}:x")
    assert node is not None
    return node.name


async def spread_names(client: RedisCluster) -> tuple[str, str]:
    """A store and a region whose hash tags sit on masters other than ``{e:alice}``'s."""
    taken = {await master_of(client, "e:alice")}
    chosen: list[str] = []
    for kind in ("s", "r"):
        for index in range(100):
            name = f"{kind}{index}"
            node = await master_of(client, f"{kind}:{name}")
            if node not in taken:
                taken.add(node)
                chosen.append(name)
                break
    store, region = chosen
    return store, region


@pytest.mark.cluster
async def test_every_scope_works_with_its_keys_on_three_masters(fresh_cluster: str) -> None:
    """Employee, store and region rules decide, learn, lock and unlock across three nodes."""
    store = RedisStore.from_url(fresh_cluster, cluster=True, timeout=2.0)
    assert isinstance(store.client, RedisCluster)
    store_name, region = await spread_names(store.client)
    alice = Employee("alice", store_name, region, frozenset())
    bob = Employee("bob", store_name, region, frozenset())
    carol = Employee("carol", store_name, region, frozenset())
    dave = Employee("dave", "elsewhere", region, frozenset())
    try:
        desk = Desk(make_policy(SCOPES), store)
        desk.at(0)
        assert (await desk.look(alice, number(1), found=True)).allowed
        desk.at(1)
        assert (await desk.look(alice, number(2), found=False)).allowed
        desk.at(2)
        assert (await desk.look(bob, number(3), found=True)).allowed
        desk.at(3)
        caught = await desk.look(bob, number(4))
        assert caught.rule == "store-block"
        assert set(caught.locked) == {("bob", "store-block"), ("alice", "store-block")}

        desk.at(4)
        far = [number(i * 1000, base=1055550000) for i in range(2)]
        flagged = [await desk.look(dave, n, found=True) for n in far]
        assert [d.allowed for d in flagged] == [True, True]
        assert flagged[1].flags == ("region-distinct",)

        desk.at(5)
        misses = [number(0, base=base) for base in (1011110000, 1022220000, 1033330000)]
        assert [(await desk.look(carol, n, found=False)).allowed for n in misses] == [True] * 3
        assert (await desk.look(carol, number(0, base=1044440000))).rule == "misses"

        assert (await desk.look(alice, number(0, base=1077770000))).rule == "locked"
        assert await desk.guard.unlock("alice")
        assert (await desk.look(alice, number(0, base=1077770000))).allowed

        keys = await store.keys("lp:{*")
        tags = {key[key.index("{") + 1 : key.index("}")] for key in keys}
        assert {"e:alice", f"s:{store_name}", f"r:{region}"} <= tags
        nodes = {
            await master_of(store.client, tag)
            for tag in ("e:alice", f"s:{store_name}", f"r:{region}")
        }
        assert len(nodes) == 3
    finally:
        await store.close()


RATE_50 = """
[[rules]]
name = "per-hour"
kind = "rate"
window = "1h"
limit = 50
"""


@pytest.mark.parametrize(
    "kind", ["redis", pytest.param("redis-cluster", marks=pytest.mark.cluster)]
)
async def test_two_proxies_sharing_redis_allow_exactly_the_limit(
    request: pytest.FixtureRequest, kind: str
) -> None:
    """200 concurrent lookups by one employee through two instances: exactly 50 get through."""
    cluster = kind == "redis-cluster"
    url: str = request.getfixturevalue("fresh_cluster" if cluster else "fresh_redis")
    stores = [RedisStore.from_url(url, cluster=cluster, timeout=5.0) for _ in range(2)]
    try:
        policy = make_policy(RATE_50)
        guards = [Guard(policy, store, SystemClock()) for store in stores]
        employee = Employee("alice", "gangnam", "seoul", frozenset())
        lookups = [Lookup(f"req-{i}", employee, "BILLING_INQUIRY", number(i)) for i in range(200)]
        decisions = await asyncio.gather(
            *(guards[i % 2].decide(lookup) for i, lookup in enumerate(lookups))
        )
        assert sum(decision.allowed for decision in decisions) == 50
        refused = [decision for decision in decisions if not decision.allowed]
        assert {decision.rule for decision in refused} == {"per-hour"}
        assert {decision.refusal.status for decision in refused if decision.refusal} == {429}
    finally:
        for store in stores:
            await store.close()
