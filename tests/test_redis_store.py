"""What only the Redis store has to get right: TTLs, scripts, round trips, and failing fast."""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import Iterator

import pytest
import redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from lookup_proxy.clock import ManualClock
from lookup_proxy.employee import Employee
from lookup_proxy.errors import Refusal
from lookup_proxy.guard import redis_store as redis_store_module
from lookup_proxy.guard.decision import Lookup
from lookup_proxy.guard.engine import Guard
from lookup_proxy.guard.primitives import StoreUnavailable, tick_expiry, window_expiry
from lookup_proxy.guard.redis_store import CALL_SIZE, RedisStore
from lookup_proxy.policy import parse_policy
from tests.harness import GUARD_HEAD, GUARD_REASONS
from tests.servers import free_port

T = 1_790_000_000.0
PROMPT = 1.5
"""Seconds within which a store with a 0.2 s timeout must give up."""


def test_the_redis_fixture_serves_a_private_server(redis_server: str) -> None:
    """The session's redis-server answers PING and keeps what is SET, away from port 6379."""
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    try:
        assert client.ping()
        client.set("lookup-proxy:fixture", "works")
        assert client.get("lookup-proxy:fixture") == "works"
        assert client.connection_pool.connection_kwargs["port"] != 6379
    finally:
        client.close()


def test_the_cluster_fixture_serves_three_masters(redis_cluster: str) -> None:
    """The session's cluster has three masters sharing every slot, and routes keys to them."""
    client = redis.RedisCluster.from_url(redis_cluster, decode_responses=True)
    try:
        info = client.cluster_info()
        assert (info["cluster_state"], str(info["cluster_size"])) == ("ok", "3")
        for tag in ("e:alice", "s:gangnam", "r:seoul"):
            client.set(f"lp:{{{tag}}}:probe", tag)
            assert client.get(f"lp:{{{tag}}}:probe") == tag
    finally:
        client.close()


async def test_add_expires_its_key_a_window_after_its_expiry_slot(
    redis_store: RedisStore,
) -> None:
    """Every window key carries a TTL: the window from the end of the add's expiry slot (an
    eighth of the window), so Redis memory stays bounded."""
    await redis_store.execute([("add", "lp:{e:a}:w", T, "m", 90.0, 5, 0)])
    ttl = await redis_store.client.pttl("lp:{e:a}:w")
    expected = (window_expiry(T, 90.0) - T) * 1000
    assert 90_000 < expected <= 90_000 + 90_000 / 8
    assert expected - 1_000 < ttl <= expected


async def test_a_process_sets_the_ttl_on_its_first_add_of_a_slot_and_leaves_it_after(
    redis_store: RedisStore,
) -> None:
    """The TTL is set once per expiry slot by each process: its later adds of the slot leave
    it as it is (no PEXPIRE), its first add of a later slot sets it again; a clock that stepped
    back has its add scored at the newest member, and counts as that member's slot."""
    key = "lp:{e:a}:slots"
    slot = 80.0 / 8
    start = (T // slot) * slot  # the start of a slot
    await redis_store.execute([("add", key, start + 1, "m1", 80.0, 50, 0)])
    await redis_store.client.pexpire(key, 5_000)  # a mark: did the next add set the TTL?
    await redis_store.execute([("add", key, start + 9, "m2", 80.0, 50, 0)])
    assert await redis_store.client.pttl(key) <= 5_000
    await redis_store.execute([("add", key, start + 3, "m3", 80.0, 50, 0)])  # stepped back
    assert await redis_store.client.pttl(key) <= 5_000
    assert await redis_store.execute([("members", key, start + 8.5)]) == [["m2", "m3"]]
    await redis_store.execute([("add", key, start + 11, "m4", 80.0, 50, 0)])  # the next slot
    expected = (window_expiry(start + 11, 80.0) - (start + 11)) * 1000
    assert expected - 1_000 < await redis_store.client.pttl(key) <= expected
    assert await redis_store.execute([("count", key, 0.0)]) == [4]


async def test_another_process_refreshes_in_its_own_first_add_and_never_shortens_a_ttl(
    redis_store: RedisStore,
) -> None:
    """Every process refreshes on its own first add of a slot, with GT: a process whose clock
    is behind never cuts short the TTL another one set."""
    key = "lp:{e:a}:shared"
    slot = 80.0 / 8
    start = (T // slot) * slot
    expected = (window_expiry(start + 1, 80.0) - (start + 1)) * 1000
    other = RedisStore(redis_store.client, timeout=0.5)  # a second proxy process
    await redis_store.execute([("add", key, start + 1, "m1", 80.0, 50, 0)])
    await redis_store.client.pexpire(key, 10_000_000)  # set by a process whose clock is ahead
    await other.execute([("add", key, start + 2, "m2", 80.0, 50, 0)])
    assert await redis_store.client.pttl(key) > 9_000_000  # not shortened
    await redis_store.client.pexpire(key, 5_000)
    await other.execute([("add", key, start + 3, "m3", 80.0, 50, 0)])  # its second of the slot
    await redis_store.execute([("add", key, start + 4, "m4", 80.0, 50, 0)])
    assert await redis_store.client.pttl(key) <= 5_000
    third = RedisStore(redis_store.client, timeout=0.5)
    await third.execute([("add", key, start + 1, "m5", 80.0, 50, 0)])  # its first: extends
    assert expected - 1_000 < await redis_store.client.pttl(key) <= expected


async def test_a_window_redis_lost_gets_its_ttl_again_within_the_slot(
    redis_store: RedisStore,
) -> None:
    """An add to an otherwise empty window sets the TTL whatever the process remembers: a key
    Redis lost (a restart without persistence, a flush, an eviction) never lives for good."""
    key = "lp:{e:a}:lost"
    slot = 80.0 / 8
    start = (T // slot) * slot
    await redis_store.execute([("add", key, start + 1, "m1", 80.0, 50, 0)])
    await redis_store.client.delete(key)
    await redis_store.execute([("add", key, start + 2, "m2", 80.0, 50, 0)])
    expected = (window_expiry(start + 2, 80.0) - (start + 2)) * 1000
    assert expected - 1_000 < await redis_store.client.pttl(key) <= expected


async def test_members_past_the_window_go_with_the_first_add_of_a_slot_that_has_company(
    redis_store: RedisStore,
) -> None:
    """An add alone in its window only sets the TTL; members past the window go with the
    first add of a later slot that finds others in the window, and never count meanwhile."""
    key = "lp:{e:a}:trim"
    slot = 80.0 / 8
    start = (T // slot) * slot
    await redis_store.execute([("add", key, start + 1, "m1", 80.0, 50, 0)])
    assert await redis_store.execute([("add", key, start + 82, "m2", 80.0, 50, 0)]) == [
        [1, None, None]
    ]
    await redis_store.execute([("add", key, start + 85, "m3", 80.0, 50, 0)])  # same slot
    assert await redis_store.client.zcard(key) == 3  # m1 is still there, past the window
    assert await redis_store.execute([("count", key, start + 5)]) == [2]
    await redis_store.execute([("add", key, start + 91, "m4", 80.0, 50, 0)])  # a new slot
    assert await redis_store.client.zrange(key, 0, -1) == ["m2", "m3", "m4"]


async def test_a_note_sets_the_ttl_and_trims_only_with_its_first_note_of_a_slot(
    redis_store: RedisStore,
) -> None:
    """A note is one ZADD but on the process's first note of a slot: a new key gets its TTL,
    an old one loses what is past the window and past the newest ``cap`` and has its TTL
    refreshed. Between two such notes a window may hold more than ``cap`` (bounded by the
    slot's notes), which no count of the window's recent members sees differently."""
    key = "lp:{e:a}:notes"
    slot = 80.0 / 8
    start = (T // slot) * slot
    await redis_store.execute([("note", key, start + 1, "m1", 80.0, 3)])
    expected = (window_expiry(start + 1, 80.0) - (start + 1)) * 1000
    assert expected - 1_000 < await redis_store.client.pttl(key) <= expected
    await redis_store.client.pexpire(key, 5_000)  # a mark: did a later note set the TTL?
    for offset in range(2, 6):  # the same slot: one ZADD each
        await redis_store.execute([("note", key, start + offset, f"m{offset}", 80.0, 3)])
    assert await redis_store.client.pttl(key) <= 5_000
    assert await redis_store.client.zcard(key) == 5  # past the cap until the next slot
    await redis_store.execute([("note", key, start + 82, "m6", 80.0, 3)])  # a new slot
    assert await redis_store.client.zrange(key, 0, -1) == ["m4", "m5", "m6"]
    expected = (window_expiry(start + 82, 80.0) - (start + 82)) * 1000
    assert expected - 1_000 < await redis_store.client.pttl(key) <= expected


async def test_a_note_after_another_process_emptied_the_window_finds_its_ttl(
    redis_store: RedisStore,
) -> None:
    """Forgiving a typo removes the only miss in a log, perhaps in another proxy process than
    the one that noted it: the emptied key keeps its TTL (its last member stays as a
    placeholder no read sees), so the first process's next note, which sets no TTL in a slot it
    already refreshed, never leaves the key without one. A delete by this process forgets the
    slot, so its next note sets the TTL afresh."""
    key = "lp:{e:a}:miss"
    slot = 80.0 / 8
    start = (T // slot) * slot
    other = RedisStore(redis_store.client, timeout=0.5)  # a second proxy process
    await redis_store.execute([("note", key, start + 1, "m1", 80.0, 50)])
    assert await other.execute([("remove", key, "m1")]) == [1]
    assert await redis_store.client.zrange(key, 0, -1, withscores=True) == [("m1", -math.inf)]
    await redis_store.execute([("note", key, start + 2, "m2", 80.0, 50)])  # the same slot
    expected = (window_expiry(start + 1, 80.0) - (start + 1)) * 1000
    assert 0 < await redis_store.client.pttl(key) <= expected
    assert await redis_store.execute([("members", key, 0.0), ("count", key, -1e18)]) == [
        ["m2"],
        1,
    ]
    await redis_store.execute([("delete", key)])
    await redis_store.execute([("note", key, start + 3, "m3", 80.0, 50)])
    expected = (window_expiry(start + 3, 80.0) - (start + 3)) * 1000
    assert expected - 1_000 < await redis_store.client.pttl(key) <= expected


async def test_an_emptied_redis_makes_the_process_refresh_every_key_again(
    fresh_redis: str,
) -> None:
    """What the process remembers refreshing is forgotten when Redis is found emptied (here a
    flush, noticed by the marker), so its next add to each key sets the TTL again."""
    store = RedisStore.from_url(fresh_redis, cluster=False, timeout=0.5)
    key = "lp:{e:a}:w"
    await store.execute([("add", key, T, "m0", 80.0, 50, 0)])
    assert key in store._slots.remembered  # refreshed in this slot
    await store.client.flushall()
    await store.verify()
    assert key not in store._slots.remembered
    await store.execute([("add", key, T + 1, "m1", 80.0, 50, 0)])
    assert 0 < await store.client.pttl(key) <= (window_expiry(T + 1, 80.0) - T - 1) * 1000
    await store.close()


async def test_windows_keep_whole_milliseconds(redis_store: RedisStore) -> None:
    """Window scores are integral milliseconds (a listpack keeps them as integers and Redis
    formats them without printf), and the primitives still answer in seconds."""
    key = "lp:{e:a}:ms"
    assert await redis_store.execute([("add", key, T + 0.25, "m1", 60.0, 5, 1)]) == [
        [1, T + 0.25, T + 0.25]
    ]
    assert await redis_store.client.zscore(key, "m1") == (T + 0.25) * 1000
    assert await redis_store.client.object("encoding", key) == "listpack"
    await redis_store.execute([("note", key, T + 1.0004, "m2", 60.0, 5)])
    assert await redis_store.client.zscore(key, "m2") == T * 1000 + 1000  # rounded
    assert await redis_store.execute(
        [("score", key, "m2"), ("count", key, T + 0.2), ("count", key, T + 0.25)]
    ) == [T + 1.0, 2, 1]
    assert await redis_store.execute([("members", key, T + 0.26)]) == [["m2"]]


async def test_a_store_written_in_seconds_is_converted_once_at_start(fresh_redis: str) -> None:
    """A store a version before milliseconds wrote (the epoch marker, no scores marker, window
    scores in seconds) is converted by the first instance at start-up, before any lookup's
    batch: its counts are all there. A removal's -inf placeholder and other types stay; the
    scores marker makes later starts leave the store alone."""
    client = AsyncRedis.from_url(fresh_redis, decode_responses=True)
    await client.set("lp:epoch", "old")
    await client.zadd("lp:{e:a}:w", {"m1": T - 30.5, "m2": T - 10.25})
    await client.expire("lp:{e:a}:w", 120)  # every window key has a TTL
    await client.zadd("lp:{e:b}:miss", {"gone": -math.inf})
    await client.hset("lp:{e:a}:burst:ticks", mapping={"5966666": 3})
    await client.zadd("other:{x}", {"kept": 12.5})  # not under the prefix: not ours
    store = RedisStore.from_url(fresh_redis, cluster=False, timeout=0.5)
    assert await store.execute(
        [("count", "lp:{e:a}:w", T - 60), ("add", "lp:{e:a}:w", T, "m3", 60.0, 5, 2)]
    ) == [2, [3, T - 10.25, T - 30.5]]
    assert await client.zrange("lp:{e:a}:w", 0, -1, withscores=True) == [
        ("m1", (T - 30.5) * 1000),
        ("m2", (T - 10.25) * 1000),
        ("m3", T * 1000),
    ]
    assert await client.zrange("lp:{e:b}:miss", 0, -1, withscores=True) == [("gone", -math.inf)]
    assert await client.hgetall("lp:{e:a}:burst:ticks") == {"5966666": "3"}
    assert await client.zscore("other:{x}", "kept") == 12.5
    assert await client.get("lp:scores") == "ms"
    await store.close()
    again = RedisStore.from_url(fresh_redis, cluster=False, timeout=0.5)
    assert await again.execute([("count", "lp:{e:a}:w", T - 60)]) == [3]
    assert await client.zscore("lp:{e:a}:w", "m1") == (T - 30.5) * 1000
    await again.close()
    await client.aclose()


async def test_a_long_conversion_refuses_lookups_meanwhile_and_loses_nothing(
    fresh_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chain's store holds millions of keys: its conversion outlasts what a lookup may wait,
    so lookups are refused (503) while it goes on, not held; then every count is there."""
    client = AsyncRedis.from_url(fresh_redis, decode_responses=True)
    await client.set("lp:epoch", "old")
    keys = [f"lp:{{e:E{n:05d}}}:w" for n in range(20_000)]
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.zadd(key, {"m": T - 5.5})
            pipe.expire(key, 600)
        await pipe.execute()
    monkeypatch.setattr(redis_store_module, "CONVERSION_KEYS", 1)  # a call per key: slow
    store = RedisStore.from_url(fresh_redis, cluster=False, timeout=0.5)
    store._deadline = 0.05  # a lookup waits 0.4 s for a recovery
    with pytest.raises(StoreUnavailable, match="still being recovered"):
        await store.execute([("count", keys[0], T - 60)])
    assert store._recovery is not None and not store._recovery.done()
    await asyncio.wait_for(asyncio.shield(store._recovery), 60)
    assert await store.execute([("count", key, T - 60) for key in keys[::997]]) == [1] * 21
    assert await client.zscore(keys[-1], "m") == (T - 5.5) * 1000
    await store.close()
    await client.aclose()


async def test_a_cluster_written_in_seconds_is_converted_on_every_master(
    fresh_cluster: str,
) -> None:
    """On a Cluster the conversion scans every master and converts key by key (each its own
    slot), before the first batch."""
    client = AsyncRedisCluster.from_url(fresh_cluster, decode_responses=True)
    await client.set("lp:epoch", "old")
    keys = [f"lp:{{e:{name}}}:w" for name in ("alice", "bob", "carol", "dave", "erin")]
    for key in keys:
        await client.zadd(key, {"m": T - 5.5})
    store = RedisStore.from_url(fresh_cluster, cluster=True, timeout=1.0)
    assert await store.execute([("count", key, T - 60) for key in keys]) == [1] * 5
    for key in keys:
        assert await client.zscore(key, "m") == (T - 5.5) * 1000
    assert len({client.keyslot(key) for key in keys}) > 1
    await store.close()
    await client.aclose()


async def test_a_new_store_is_marked_in_milliseconds(fresh_redis: str) -> None:
    """An empty Redis gets both markers at first contact: nothing to convert, then or later."""
    store = RedisStore.from_url(fresh_redis, cluster=False, timeout=0.5)
    await store.execute([("add", "lp:{e:a}:w", 5.0, "m", 60.0, 5, 0)])
    assert await store.client.get("lp:scores") == "ms"
    await store.close()
    again = RedisStore.from_url(fresh_redis, cluster=False, timeout=0.5)
    assert await again.execute([("count", "lp:{e:a}:w", 0.0)]) == [1]
    assert await again.client.zscore("lp:{e:a}:w", "m") == 5000
    await again.close()


async def test_adds_read_no_newest_score_unless_the_clock_stepped_back(fresh_redis: str) -> None:
    """The add script reads a window's newest score (ZRANGE) only after a step back of more
    than STEP_BACK: that read was a fifth of a lookup's commands."""
    store = RedisStore.from_url(fresh_redis, cluster=False, timeout=0.5)

    async def zranges() -> int:
        stats = await store.client.info("commandstats")
        return int(stats.get("cmdstat_zrange", {}).get("calls", 0))

    await store.execute([("add", "lp:{e:a}:w", T, "m0", 80.0, 50, 0)])
    before = await zranges()
    for i in range(1, 20):  # a batch of one loop turn is slightly out of order: no read
        await store.execute([("add", "lp:{e:a}:w", T + i - (i % 2) * 0.5, f"m{i}", 80.0, 50, 0)])
    assert await zranges() == before
    await store.execute([("add", "lp:{e:a}:w", T + 5, "back", 80.0, 50, 0)])
    assert await zranges() == before + 1
    await store.close()


async def test_a_tick_sets_the_ttl_and_drops_old_buckets_once_a_tick_period(
    redis_store: RedisStore,
) -> None:
    """The first tick of a tick period (half a window) drops the buckets before the window and
    sets the TTL to ``tick_expiry``; later ticks of the period cost HINCRBY and HGETALL only."""
    key = "lp:{e:a}:ticks"
    width, window = 10.0, 60.0
    start = (T // 30) * 30  # a tick period's start
    await redis_store.execute([("tick", key, start + 1, width, window)])
    bucket = int((start + 1) // width)
    expected = (tick_expiry(bucket, width, window) - (start + 1)) * 1000
    assert expected - 1_000 < await redis_store.client.pttl(key) <= expected
    await redis_store.client.pexpire(key, 500_000)  # a mark: did a later tick set the TTL?
    await redis_store.execute([("tick", key, start + 12, width, window)])  # same period
    assert await redis_store.client.pttl(key) > 400_000
    await redis_store.execute([("tick", key, start + 75, width, window)])  # two periods on
    later = int((start + 75) // width)
    expected = (tick_expiry(later, width, window) - (start + 75)) * 1000
    assert expected - 1_000 < await redis_store.client.pttl(key) <= expected
    fields = await redis_store.client.hgetall(key)
    assert {int(f) for f in fields} == {bucket + 1, later}  # the first bucket left the window


async def test_set_with_a_ttl_expires_and_without_one_persists(redis_store: RedisStore) -> None:
    """``set`` with ttl expires on Redis's clock; ttl 0 stores it for good, clearing an old TTL."""
    await redis_store.execute([("set", "lp:{e:a}:lock", "x", 0.5, T)])
    assert 0 < await redis_store.client.pttl("lp:{e:a}:lock") <= 500
    await redis_store.execute([("set", "lp:{e:b}:lock", "x", 60.0, T)])
    await redis_store.execute([("set", "lp:{e:b}:lock", "y", 0, T)])
    assert await redis_store.client.pttl("lp:{e:b}:lock") == -1
    await asyncio.sleep(0.6)
    assert await redis_store.execute(
        [("get", "lp:{e:a}:lock", T), ("get", "lp:{e:b}:lock", T)]
    ) == [
        None,
        "y",
    ]


async def test_a_flushed_script_cache_is_refilled_transparently(redis_store: RedisStore) -> None:
    """After SCRIPT FLUSH (a restart or failover) batches still run, one group or several."""
    one_group = [("add", "lp:{e:a}:w", T, "m", 60.0, 5, 1)]
    many_groups = [("add", f"lp:{{{tag}}}:w", T, "m", 60.0, 5, 1) for tag in ("e:a", "s:b", "r:c")]
    for batch in (one_group, many_groups):
        await redis_store.client.script_flush()
        assert await redis_store.execute(batch) == [[1, T, T]] * len(batch)
        assert await redis_store.execute(batch) == [[1, T, T]] * len(batch)


async def test_a_standalone_batch_is_one_script_call_whatever_its_hash_tags(
    fresh_redis: str,
) -> None:
    """Three hash tags and a plain read cost one EVALSHA, and no SCRIPT EXISTS or raw command:
    standalone Redis runs a script on any keys."""
    store = RedisStore.from_url(fresh_redis, cluster=False, timeout=2.0)
    try:
        batch = [("add", f"lp:{{{tag}}}:w", T, "m", 60.0, 5, 1) for tag in ("e:a", "s:b", "r:c")]
        await store.execute(batch)  # loads the script
        await store.client.config_resetstat()
        results = await store.execute([*batch, ("get", "lp:{e:a}:lock", T)])
        assert results == [[1, T, T]] * 3 + [None]
        stats = await store.client.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] == 1
        assert [
            name for name in stats if name.startswith(("cmdstat_script", "cmdstat_eval|"))
        ] == []
        assert "cmdstat_eval" not in stats
    finally:
        await store.close()


async def test_batches_of_one_loop_turn_share_one_call_and_keep_their_results(
    fresh_redis: str,
) -> None:
    """Ten lookups' batches asked for at once go as one script call; each gets its own
    results, and one that names an unknown primitive fails alone, before anything is sent."""
    store = RedisStore.from_url(fresh_redis, cluster=False, timeout=2.0)
    try:
        await store.execute([("get", "lp:{e:x}:lock", T)])  # loads the script
        await store.client.config_resetstat()
        batches = [
            [("add", f"lp:{{e:{n}}}:w", T + n, f"m{n}", 60.0, 5, 1), ("count", "lp:{c}:x", T)]
            for n in range(10)
        ]
        bad = [("nonsense", "lp:{e:z}:w")]
        answers = await asyncio.gather(
            *(store.execute(batch) for batch in batches),
            store.execute(bad),  # type: ignore[list-item]
            return_exceptions=True,
        )
        assert answers[:10] == [[[1, T + n, T + n], 0] for n in range(10)]
        assert isinstance(answers[10], ValueError)
        stats = await store.client.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] == 1
    finally:
        await store.close()


async def test_a_large_turn_goes_in_round_trips_of_whole_batches(fresh_redis: str) -> None:
    """A hundred batches of two primitives asked for at once are 200 primitives: two calls
    (whole batches up to CALL_SIZE, then the rest), every batch answered with its own."""
    store = RedisStore.from_url(fresh_redis, cluster=False, timeout=2.0)
    try:
        await store.execute([("get", "lp:{e:x}:lock", T)])  # loads the script
        await store.client.config_resetstat()
        batches = [
            [("add", f"lp:{{e:{n}}}:w", T + n, "m", 60.0, 5, 1), ("get", f"lp:{{e:{n}}}:v", T)]
            for n in range(100)
        ]
        answers = await asyncio.gather(*(store.execute(batch) for batch in batches))
        assert answers == [[[1, T + n, T + n], None] for n in range(100)]
        stats = await store.client.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] == -(-200 // CALL_SIZE)
    finally:
        await store.close()


async def test_keys_lists_matching_keys_on_every_master(redis_store: RedisStore) -> None:
    """``keys`` finds lock keys whatever node they live on, and only those matching."""
    employees = [f"emp{index}" for index in range(30)]
    await redis_store.execute([("set", f"lp:{{e:{e}}}:lock", "x", 60.0, T) for e in employees])
    await redis_store.execute([("add", "lp:{e:emp0}:rate", T, "m", 60.0, 5, 0)])
    found = await redis_store.keys("lp:{e:*}:lock")
    assert found == sorted(f"lp:{{e:{e}}}:lock" for e in employees)


async def test_a_killed_connection_is_replaced_without_failing_a_lookup(fresh_redis: str) -> None:
    """Redis closing a pooled connection (restart, idle timeout) costs a reconnect, not a 503."""
    store = RedisStore.from_url(fresh_redis, cluster=False, timeout=2.0)
    admin = redis.Redis.from_url(fresh_redis)
    try:
        await store.execute([("get", "lp:{e:a}:lock", T)])
        assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
        assert await store.execute([("get", "lp:{e:a}:lock", T)]) == [None]
    finally:
        admin.close()
        await store.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers, like a hung Redis."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


@pytest.mark.parametrize("cluster", [False, True], ids=["standalone", "cluster"])
async def test_a_closed_port_raises_store_unavailable_promptly(cluster: bool) -> None:
    """Nobody listening: every call raises StoreUnavailable at once instead of retrying on."""
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}", cluster=cluster, timeout=0.2)
    try:
        for call in (
            lambda: store.execute([("get", "lp:{e:a}:lock", T), ("count", "lp:{s:b}:w", T)]),
            store.ping,
            lambda: store.keys("*"),
        ):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await call()
            assert time.monotonic() - started < PROMPT
    finally:
        await store.close()


@pytest.mark.parametrize("cluster", [False, True], ids=["standalone", "cluster"])
async def test_a_hung_server_raises_store_unavailable_within_the_timeout(
    silent_port: int, cluster: bool
) -> None:
    """A server that accepts and never answers is given up on after the timeout, not awaited."""
    store = RedisStore.from_url(f"redis://127.0.0.1:{silent_port}", cluster=cluster, timeout=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.execute([("get", "lp:{e:a}:lock", T)])
        assert time.monotonic() - started < PROMPT
    finally:
        await store.close()


async def test_an_incr_sets_the_ttl_when_it_starts_a_field_and_leaves_it_otherwise(
    redis_store: RedisStore,
) -> None:
    """A tally's TTL is set by the increment that starts a field from zero (the first of a
    peer's day), not by every one: later increments of the field cost HINCRBY alone."""
    tally = "lp:{s:gangnam}:peers:86400:1"
    await redis_store.execute([("incr", tally, "alice|o", 1, 60.0)])
    assert 59_000 < await redis_store.client.pttl(tally) <= 60_000
    await redis_store.client.pexpire(tally, 500_000)  # a mark: did a later increment set it?
    await redis_store.execute([("incr", tally, "alice|o", 1, 60.0)])
    assert await redis_store.client.pttl(tally) > 400_000
    await redis_store.execute([("incr", tally, "bob|o", 1, 60.0)])  # a new field sets it
    assert 59_000 < await redis_store.client.pttl(tally) <= 60_000


class Trickle:
    """A TCP relay in front of a real redis-server that can start passing its answers one byte
    at a time, each well within the socket timeout: a degraded network path."""

    def __init__(self, target: str) -> None:
        self.host, port = target.removeprefix("redis://").split("/")[0].split(":")
        self.target_port = int(port)
        self.slow = False
        self.server: asyncio.Server | None = None
        self.pumps: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(
            self.host, self.target_port
        )
        for source, sink, throttled in (
            (reader, upstream_writer, False),
            (upstream_reader, writer, True),
        ):
            task = asyncio.create_task(self._pump(source, sink, throttled))
            self.pumps.add(task)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, throttled: bool
    ) -> None:
        try:
            while data := await source.read(65536):
                if throttled and self.slow:
                    for byte in data:
                        sink.write(bytes([byte]))
                        await sink.drain()
                        await asyncio.sleep(0.05)
                else:
                    sink.write(data)
                    await sink.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            sink.close()

    async def close(self) -> None:
        for task in self.pumps:
            task.cancel()
        await asyncio.gather(*self.pumps, return_exceptions=True)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_an_answer_trickling_in_is_given_up_on_after_the_timeout(fresh_redis: str) -> None:
    """Every byte comes within the socket timeout, yet the batch is given up on: the timeout
    bounds reading a whole answer (redis-py's), not each read, so a degraded path gets the
    terminal a 503 instead of a wait of minutes (found looking for the cause of a chaos-test
    hang: not this)."""
    relay = Trickle(fresh_redis)
    port = await relay.start()
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}", cluster=False, timeout=0.2)
    window = [("add", "lp:{e:a}:w", T + i, f"member-{i:04d}", 600.0, 500, 0) for i in range(300)]
    try:
        await store.execute(window)
        assert len((await store.execute([("members", "lp:{e:a}:w", T)]))[0]) == 299
        relay.slow = True  # the next answer (3 kB of members) would take minutes
        async with asyncio.timeout(30):  # a hang fails the test instead of stalling the suite
            with pytest.raises(StoreUnavailable):
                await store.execute([("members", "lp:{e:a}:w", T)])
    finally:
        await store.close()
        await relay.close()


async def test_the_guard_refuses_with_503_when_redis_is_down() -> None:
    """An unreachable store never lets a lookup through: the guard answers 503 with Retry-After."""
    policy = parse_policy(
        GUARD_HEAD
        + GUARD_REASONS
        + """
        [[rules]]
        name = "per-minute"
        kind = "rate"
        window = "1m"
        limit = 10
        """
    )
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}", cluster=False, timeout=0.2)
    guard = Guard(policy, store, ManualClock(T))
    employee = Employee("alice", "gangnam", "seoul", frozenset())
    try:
        with pytest.raises(Refusal) as refused:
            await guard.decide(Lookup("r1", employee, "BILLING_INQUIRY", "01012345678"))
        assert refused.value.status == 503
        assert refused.value.headers["Retry-After"] == "5"
    finally:
        await store.close()
