"""What only the memory store has to get right: its own clock, sweeping, and a hard key budget."""

from __future__ import annotations

import pytest

from lookup_proxy.guard.memory import _SWEEP_EVERY, MemoryStore

T = 1_790_000_000.0


def test_values_expire_on_the_injected_clock() -> None:
    """A value's TTL runs on the times the primitives carry, so replay needs no sleeping."""
    store = MemoryStore()
    assert store.run([("set", "lp:{e:a}:lock", "x", 60.0, T)]) == [1]
    assert store.run([("get", "lp:{e:a}:lock", T + 59.9)]) == ["x"]
    assert store.run([("get", "lp:{e:a}:lock", T + 60.0)]) == [None]


def test_a_value_without_ttl_never_expires() -> None:
    """ttl 0 is "until deleted": a year later it is still there."""
    store = MemoryStore()
    store.run([("set", "lp:{e:a}:lock", "x", 0, T)])
    assert store.run([("get", "lp:{e:a}:lock", T + 365 * 86400)]) == ["x"]


async def test_keys_lists_only_live_keys_matching_the_pattern() -> None:
    """Expired windows and values drop out of the admin listing."""
    store = MemoryStore()
    store.run(
        [
            ("add", "lp:{e:a}:rate", T, "m", 60.0, 5, 0),
            ("set", "lp:{e:a}:lock", "x", 600.0, T),
            ("set", "lp:{e:b}:lock", "x", 30.0, T),
        ]
    )
    assert await store.keys("lp:{e:*}:lock") == ["lp:{e:a}:lock", "lp:{e:b}:lock"]
    store.run([("get", "lp:{e:c}:lock", T + 60)])  # the clock moves on
    assert await store.keys("lp:*") == ["lp:{e:a}:lock"]


def test_deleting_an_expired_key_reports_nothing_deleted_as_redis_does() -> None:
    """Expired but not yet swept, a value or a window is already gone: delete answers 0."""
    store = MemoryStore()
    store.run([("set", "lp:{e:a}:lock", "x", 20.0, T), ("add", "lp:{e:a}:w", T, "m", 5.0, 5, 0)])
    store.run([("add", "lp:{e:b}:w", T + 30, "m", 60.0, 5, 0)])  # the clock moves on
    assert store.run([("delete", "lp:{e:a}:lock"), ("delete", "lp:{e:a}:w")]) == [0, 0]
    assert store.run([("delete", "lp:{e:b}:w")]) == [1]


def test_a_sweep_drops_expired_keys_without_being_asked() -> None:
    """Keys nobody touches again are swept once enough operations have run."""
    store = MemoryStore()
    store.run([("add", f"lp:{{e:{i}}}:rate", T, "m", 60.0, 5, 0) for i in range(500)])
    assert store.size() == 500
    for _ in range(_SWEEP_EVERY * 500 + 1001):
        store.run([("get", "lp:{e:x}:lock", T + 61)])
    assert store.size() == 0


def test_over_budget_the_soonest_to_expire_go_first_and_locks_stay() -> None:
    """Even when every operation makes a new key, ``max_keys`` holds; locks without expiry stay."""
    store = MemoryStore(max_keys=1000)
    store.run([("set", "lp:{e:boss}:lock", "x", 0, T)])
    for i in range(3000):
        store.run([("add", f"lp:{{e:{i}}}:rate", T + i, "m", 3600.0, 5, 0)])
        assert store.size() <= 1000
    assert store.evicted >= 2000
    assert store.run([("get", "lp:{e:boss}:lock", T + 3000)]) == ["x"]
    assert store.run([("count", "lp:{e:2999}:rate", T)]) == [1]


def test_the_store_dispatches_on_the_contract_s_opcodes() -> None:
    """memory.py keeps its own copies of the opcodes (cheaper when compiled): they must match."""
    from lookup_proxy.guard import memory, primitives

    for name in (
        "ADD",
        "COUNT",
        "MEMBERS",
        "REMOVE",
        "GET",
        "SET",
        "DELETE",
        "SCORE",
        "INCR",
        "FIELDS",
    ):
        assert getattr(memory, "_" + name) == getattr(primitives, name), name


def test_an_unknown_primitive_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="zincrby"):
        MemoryStore().run([("zincrby", "lp:{e:a}:x")])
