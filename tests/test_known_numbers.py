"""The filters of known numbers are keyed with a secret of the store: an insider who has read the
code cannot choose numbers their own filter takes for known (which no share of misses counts)."""

from __future__ import annotations

import hashlib
import random

import pytest

from lookup_proxy.errors import ConfigError
from lookup_proxy.guard.known_numbers import (
    HASHES,
    KnownNumbers,
    key_from_secret,
    key_id,
    new_key,
    offsets,
)
from lookup_proxy.guard.memory import MemoryStore
from lookup_proxy.guard.primitives import BIT_SET_BITS, Batch, GuardStore
from lookup_proxy.guard.redis_store import RedisStore
from lookup_proxy.policy import Store
from lookup_proxy.stores import numbers_key, open_store

NOW = 1_790_000_000.0
MET = 2_000
"""Numbers the employee has met: a busy clerk's four weeks, the filter a sixth full."""


def _number(rng: random.Random) -> str:
    return f"010{rng.randint(20_000_000, 99_999_999):08d}"


def _public_offsets(number: str) -> list[int]:
    """The bits as the code computed them before the filter was keyed: what an insider who has
    read the code can compute without the store's secret."""
    digest = hashlib.blake2b(number.encode(), digest_size=2 * HASHES).digest()
    return [int.from_bytes(digest[2 * i : 2 * i + 2], "big") % BIT_SET_BITS for i in range(HASHES)]


def _collisions(bits: set[int], compute: object, met: set[str], want: int) -> list[str]:
    """Numbers never met whose bits, as ``compute`` gives them, are all set in ``bits``."""
    rng = random.Random(7)
    found: list[str] = []
    while len(found) < want:
        number = _number(rng)
        if number not in met and set(compute(number)) <= bits:  # type: ignore[operator]
            found.append(number)
    return found


async def _sight_all(store: GuardStore, known: KnownNumbers, numbers: list[str]) -> list[bool]:
    batch = Batch()
    for number in numbers:
        known.add_sight(batch, "alice", number, NOW)
    results = await store.execute(batch.ops)
    return [KnownNumbers.new(results, at) for at in range(len(numbers))]


async def test_numbers_chosen_to_collide_without_the_key_are_new_to_the_employee(
    store: GuardStore,
) -> None:
    """An insider who knows the numbers they met and the code, but not the store's key, picks
    numbers their filter would call known were it unkeyed, or keyed with a key they guessed:
    all of them are new to the filter the guard keeps. Where the computed bits do match the
    filter's (the guessed key is the store's), the same search finds numbers it calls known:
    the search is the attack, not a search that cannot succeed."""
    rng = random.Random(1)
    met = {_number(rng) for _ in range(MET)}
    # Fixed keys, so the filter's own chance collisions (about one number in 6,000 here) fall
    # the same way every run: the store's, and the insider's guess.
    secret, guessed = key_from_secret("the store's secret " * 3), key_from_secret("a guess " * 5)
    known = KnownNumbers("lp", secret)
    first = await _sight_all(store, known, sorted(met))
    assert sum(first) >= MET - 5  # met one by one: new, but for the filter's own few collisions
    for compute in (_public_offsets, lambda n: offsets(n, guessed)):
        bits = {bit for number in met for bit in compute(number)}
        chosen = _collisions(bits, compute, met, 20)
        assert await _sight_all(store, known, chosen) == [True] * 20
    own = {bit for number in met for bit in offsets(number, secret)}
    colliding = _collisions(own, lambda n: offsets(n, secret), met, 5)
    assert await _sight_all(store, known, colliding) == [False] * 5


def test_a_key_s_bits_and_name_are_its_own() -> None:
    """Two keys give a number other bits (nearly always all four), and the filters other key
    names: a store whose key changes starts empty filters instead of misreading the old bits.
    The name's fingerprint is 32 bits of a keyed hash, not the key."""
    one, other = new_key(), new_key()
    rng = random.Random(3)
    numbers = [_number(rng) for _ in range(200)]
    same = sum(offsets(n, one) == offsets(n, other) for n in numbers)
    assert same == 0
    assert all(len(offsets(n, one)) == HASHES for n in numbers)
    assert KnownNumbers("lp", one).key("alice") == f"lp:{{e:alice}}:known-numbers:{key_id(one)}"
    assert key_id(one) != key_id(other) and len(key_id(one)) == 8
    assert key_id(one) not in one.hex()


def test_a_secret_from_the_environment_gives_every_instance_one_key() -> None:
    """The same secret, the same key (instances sharing Redis read each other's filters); an
    unset one, none; a short one is refused, naming the variable and what it must be."""
    config = Store(kind="redis")
    environ = {config.known_numbers_key_env: "s" * 40}
    assert numbers_key(config, environ) == numbers_key(config, dict(environ))
    assert numbers_key(config, environ) == key_from_secret("s" * 40)
    assert numbers_key(config, {config.known_numbers_key_env: "t" * 40}) != key_from_secret(
        "s" * 40
    )
    assert numbers_key(config, {}) is None
    with pytest.raises(ConfigError) as refused:
        numbers_key(config, {config.known_numbers_key_env: "short"})
    (problem,) = refused.value.problems
    assert problem.key == "LOOKUP_PROXY_KNOWN_NUMBERS_KEY"
    assert "at least 32 characters" in problem.expected and problem.found == "5 characters"


async def test_a_proxy_s_redis_store_needs_the_shared_key(fresh_redis: str) -> None:
    """Opened for a proxy, a Redis store without the key in the environment is a config error
    naming the variable (a key of its own would disagree with every other instance's filters);
    opened for a tool that never learns (``cases``, ``unlock``) it needs none. Two stores opened
    from one environment share the key; memory stores each make their own, or take the
    environment's."""
    config = Store(kind="redis")
    environ = {config.url_env: fresh_redis}
    with pytest.raises(ConfigError) as refused:
        open_store(config, environ)
    (problem,) = refused.value.problems
    assert (problem.file, problem.key, problem.found) == (
        "<environment>",
        "LOOKUP_PROXY_KNOWN_NUMBERS_KEY",
        "unset",
    )
    assert "the same in every instance" in problem.expected
    tool = open_store(config, environ, learning=False)
    await tool.close()
    environ[config.known_numbers_key_env] = "k" * 48
    first, second = open_store(config, environ), open_store(config, environ)
    try:
        assert isinstance(first, RedisStore) and isinstance(second, RedisStore)
        assert first.numbers_key == second.numbers_key == key_from_secret("k" * 48)
    finally:
        await first.close()
        await second.close()
    memory = Store(kind="memory")
    assert MemoryStore().numbers_key != MemoryStore().numbers_key
    from_env = open_store(memory, {memory.known_numbers_key_env: "k" * 48})
    assert from_env.numbers_key == key_from_secret("k" * 48)
