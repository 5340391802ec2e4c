"""The store primitives mean the same in every store: memory, standalone Redis, Redis Cluster.

The memory store is the reference; the Redis store runs the same batch through a Lua
interpreter. Each test pins one primitive's contract (primitives.py) on every store, and a
seeded differential test replays a long random history against memory and Redis side by side.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from lookup_proxy.audit.export import records_of
from lookup_proxy.guard.memory import Immediate, MemoryStore
from lookup_proxy.guard.primitives import Batch, GuardStore, Op
from lookup_proxy.guard.redis_store import RedisStore

T = 1_790_000_000.0
KEY = "lp:{e:alice}:rate"


async def add(store: GuardStore, now: float, member: str, *, key: str = KEY, window: float = 60.0,
              cap: int = 10, nth: int = 0) -> list[Any]:  # fmt: skip
    return (await store.execute([("add", key, now, member, window, cap, nth)]))[0]  # type: ignore[no-any-return]


async def members(store: GuardStore, since: float, key: str = KEY) -> list[str]:
    return (await store.execute([("members", key, since)]))[0]  # type: ignore[no-any-return]


async def test_add_returns_count_nth_and_oldest_as_int_and_floats(store: GuardStore) -> None:
    """``add`` answers ``[int, float | None, float]``, whichever store ran it."""
    first = await add(store, T, "a", nth=1)
    second = await add(store, T + 1.5, "b", nth=2)
    assert first == [1, T, T]
    assert second == [2, T, T]
    assert type(second[0]) is int
    assert type(second[1]) is float
    assert type(second[2]) is float


async def test_add_nth_score_is_the_nth_newest_or_none(store: GuardStore) -> None:
    """The nth score counts from the newest, and is None when nth is 0 or beyond the count."""
    for offset, member in enumerate("abc"):
        await add(store, T + offset, member)
    assert (await add(store, T + 3, "d", nth=1))[1] == T + 3
    assert (await add(store, T + 4, "e", nth=3))[1] == T + 2
    assert (await add(store, T + 5, "f", nth=0))[1] is None
    assert (await add(store, T + 6, "g", nth=8))[1] is None


async def test_scores_keep_millisecond_precision(store: GuardStore) -> None:
    """Epoch scores come back to the millisecond, the same float that was sent (the Redis store
    keeps whole milliseconds, which Redis stores and compares cheaply; Lua would truncate
    numbers on their way out, so they leave as strings), and a millisecond apart is apart."""
    precise = 1_790_000_000.123
    assert await add(store, precise, "a", nth=1) == [1, precise, precise]
    assert await store.execute([("score", KEY, "a")]) == [precise]
    assert await store.execute([("count", KEY, precise - 0.001)]) == [1]
    assert await store.execute([("count", KEY, precise)]) == [0]


async def test_add_trims_members_at_or_before_the_window_start(store: GuardStore) -> None:
    """A member scored exactly ``now - window`` has left the window; one just after has not."""
    await add(store, T, "a")
    await add(store, T + 0.001, "b")
    count, _, oldest = await add(store, T + 60.0, "c", nth=1)
    assert count == 2
    assert oldest == T + 0.001
    assert await members(store, 0.0) == ["b", "c"]


async def test_add_rescoring_a_member_keeps_one_entry_at_the_new_time(store: GuardStore) -> None:
    """Adding a member again moves it to now instead of counting it twice."""
    await add(store, T, "a")
    await add(store, T + 1, "b")
    count, _, oldest = await add(store, T + 2, "a", nth=1)
    assert count == 2
    assert oldest == T + 1
    assert await members(store, 0.0) == ["b", "a"]


async def test_add_answers_the_oldest_score_only_for_a_rate_log(store: GuardStore) -> None:
    """With ``nth = 0`` (counting windows) the oldest score is not read (one Redis command
    fewer per add); rate logs ask for an nth and get it."""
    await add(store, T, "a")
    assert await add(store, T + 1, "b") == [2, None, None]
    assert await add(store, T + 2, "c", nth=3) == [3, T, T]


async def test_add_keeps_only_the_newest_cap_members(store: GuardStore) -> None:
    """The cap drops the oldest members, so one key never grows past it."""
    for offset in range(6):
        result = await add(store, T + offset, f"m{offset}", cap=3, nth=3)
    assert result == [3, T + 3, T + 3]
    assert await members(store, 0.0) == ["m3", "m4", "m5"]


async def test_add_after_a_clock_step_back_scores_at_the_newest_time(store: GuardStore) -> None:
    """A clock that steps backwards cannot put a new member before older ones."""
    await add(store, T + 10, "a")
    assert await add(store, T + 5, "b", nth=1) == [2, T + 10, T + 10]
    assert await members(store, T + 9) == ["a", "b"]


async def test_add_members_answers_the_count_nth_and_the_window_s_members(
    store: GuardStore,
) -> None:
    """``add_members`` adds as ``add`` does and answers the members after ``now - window``,
    oldest first, in place of the oldest score: the count is their number."""
    await add(store, T, "a")
    await add(store, T + 0.001, "b")
    await add(store, T + 30, "c")
    op = ("add_members", KEY, T + 60.0, "d", 60.0, 10, 2)
    count, nth, listed = (await store.execute([op]))[0]
    assert (count, nth, listed) == (3, T + 30, ["b", "c", "d"])
    assert type(count) is int
    assert type(nth) is float
    again = ("add_members", KEY, T + 61.0, "b", 60.0, 10, 5)
    assert (await store.execute([again]))[0] == [3, None, ["c", "d", "b"]]
    new = ("add_members", "lp:{e:alice}:new", T, "x", 60.0, 10, 1)
    assert (await store.execute([new]))[0] == [1, T, ["x"]]


async def test_add_members_keeps_only_the_newest_cap_members(store: GuardStore) -> None:
    """The cap binds as for ``add``, and the members answered are the ones kept."""
    for offset in range(5):
        await add(store, T + offset, f"m{offset}", cap=10)
    op = ("add_members", KEY, T + 5, "m5", 60.0, 3, 3)
    assert (await store.execute([op]))[0] == [3, T + 3, ["m3", "m4", "m5"]]
    assert await members(store, 0.0) == ["m3", "m4", "m5"]


async def test_note_adds_like_add_and_answers_none(store: GuardStore) -> None:
    """A ``note`` is an add whose count nobody reads: what it adds is counted and listed as an
    add's would be, re-scoring a member moves it, and it answers None."""
    assert await store.execute([("note", KEY, T, "a", 60.0, 10)]) == [None]
    await store.execute([("note", KEY, T + 1, "b", 60.0, 10), ("note", KEY, T + 2, "a", 60.0, 10)])
    assert await members(store, T - 1) == ["b", "a"]
    assert await add(store, T + 3, "c", nth=3) == [3, T + 1, T + 1]


async def test_count_if_counts_only_after_a_count_above_its_threshold(store: GuardStore) -> None:
    """``count_if`` answers the count when the primitive before it counted more than
    ``over``, else None: a found count a misses rule reads only past its limit."""
    for offset, member in enumerate(["x", "y", "z"]):
        await add(store, T + offset, member)
    results = await store.execute(
        [
            ("count", KEY, 0.0),  # 3
            ("count_if", KEY, T, 2),  # 3 > 2: counted
            ("count", KEY, T),  # 2
            ("count_if", KEY, 0.0, 2),  # 2 is not above 2
            ("get", "lp:{e:a}:nothing", T),  # not a count
            ("count_if", KEY, 0.0, -1),
        ]
    )
    assert results == [3, 2, 2, None, None, None]


async def test_count_and_members_see_only_members_after_since(store: GuardStore) -> None:
    """``count`` and ``members`` are ``score > since``, oldest first."""
    for offset, member in enumerate(["x", "y", "z"]):
        await add(store, T + offset, member)
    results = await store.execute(
        [("count", KEY, T), ("members", KEY, T), ("count", KEY, T - 1), ("members", KEY, T + 2)]
    )
    assert results == [2, ["y", "z"], 3, []]


async def test_missing_keys_count_zero_and_have_no_members(store: GuardStore) -> None:
    """Reading a window nobody wrote is empty, not an error."""
    results = await store.execute(
        [("count", "lp:{e:x}:none", 0.0), ("members", "lp:{e:x}:none", 0.0)]
    )
    assert results == [0, []]


async def test_remove_reports_whether_the_member_was_there(store: GuardStore) -> None:
    """``remove`` answers 1 for a present member and 0 otherwise, and the member is gone."""
    await add(store, T, "a")
    await add(store, T + 1, "b")
    results = await store.execute(
        [("remove", KEY, "a"), ("remove", KEY, "a"), ("members", KEY, 0.0)]
    )
    assert results == [1, 0, ["b"]]
    assert await store.execute([("remove", "lp:{e:x}:none", "a")]) == [0]


async def test_a_window_emptied_by_remove_lives_on_until_it_expires(store: GuardStore) -> None:
    """Removing a window's last member leaves no member any read sees, but the window itself:
    ``delete`` answers 1 and ``keys`` lists it (Redis keeps a placeholder, so the key keeps its
    TTL), and an add starts counting from one again."""
    await add(store, T, "a")
    assert await store.execute([("remove", KEY, "a")]) == [1]
    reads = [("count", KEY, 0.0), ("members", KEY, 0.0), ("score", KEY, "a"), ("remove", KEY, "a")]
    assert await store.execute(reads) == [0, [], None, 0]
    assert await store.keys("lp:{e:alice}:*") == [KEY]
    assert (await add(store, T + 1, "b", nth=1))[:2] == [1, T + 1]
    assert await store.execute([("remove", KEY, "b"), ("delete", KEY)]) == [1, 1]
    assert await store.keys("lp:{e:alice}:*") == []


async def test_get_set_and_delete_values(store: GuardStore) -> None:
    """Values: ``get`` is None until ``set``; ``delete`` answers 1 only when something went."""
    lock = "lp:{e:alice}:lock"
    results = await store.execute(
        [
            ("get", lock, T),
            ("set", lock, '{"rule": "r", "até": 1}', 3600.0, T),
            ("get", lock, T),
            ("delete", lock),
            ("delete", lock),
            ("get", lock, T),
        ]
    )
    assert results == [None, 1, '{"rule": "r", "até": 1}', 1, 0, None]


async def test_delete_removes_a_window(store: GuardStore) -> None:
    """``delete`` works on windows too, which is how counters are reset."""
    await add(store, T, "a")
    assert await store.execute([("delete", KEY), ("count", KEY, 0.0)]) == [1, 0]


async def test_score_answers_a_member_s_time_without_changing_anything(store: GuardStore) -> None:
    """``score`` is the member's score as a float, ``None`` for a stranger or a missing key."""
    await add(store, T + 0.25, "a")
    results = await store.execute(
        [("score", KEY, "a"), ("score", KEY, "b"), ("score", "lp:{e:x}:none", "a")]
    )
    assert results == [T + 0.25, None, None]
    assert type(results[0]) is float
    assert await store.execute([("count", KEY, 0.0)]) == [1]


async def test_incr_adds_to_a_tally_field_and_fields_lists_them(store: GuardStore) -> None:
    """``incr`` starts a field at 0 and answers the new value; ``fields`` lists every field."""
    tally = "lp:{s:gangnam}:peer:1"
    results = await store.execute(
        [
            ("incr", tally, "alice m", 1, 60.0),
            ("incr", tally, "alice m", 2, 60.0),
            ("incr", tally, "bob o", -1, 60.0),
            ("fields", tally),
            ("fields", "lp:{s:gangnam}:peer:none"),
        ]
    )
    assert results[:3] == [1, 3, -1]
    pairs = results[3]
    assert dict(zip(pairs[::2], pairs[1::2], strict=True)) == {"alice m": 3, "bob o": -1}
    assert all(type(value) is int for value in pairs[1::2])
    assert results[4] == []


async def test_pick_answers_chosen_fields_of_a_tally_and_none_where_missing(
    store: GuardStore,
) -> None:
    """``pick`` reads some fields of a tally (one clerk's counts among a region's)."""
    tally = "lp:{s:gangnam}:peer:2"
    await store.execute([("incr", tally, "alice|o", 5, 60.0), ("incr", tally, "bob|m", 2, 60.0)])
    results = await store.execute(
        [
            ("pick", tally, ["alice|m", "alice|t", "alice|o"]),
            ("pick", tally, ["bob|m"]),
            ("pick", "lp:{s:gangnam}:peer:none", ["alice|o", "bob|o"]),
        ]
    )
    assert results == [[None, None, 5], [2], [None, None]]
    assert type(results[0][2]) is int


async def test_a_tally_is_deleted_like_any_key(store: GuardStore) -> None:
    """Unlocking clears an employee's keys with ``delete``: tallies go the same way."""
    tally = "lp:{e:alice}:tally"
    await store.execute([("incr", tally, "f", 1, 60.0)])
    assert await store.execute([("delete", tally), ("fields", tally)]) == [1, []]
    assert await store.execute([("delete", tally)]) == [0]


async def _expires_in_90_seconds(store: GuardStore, key: str) -> None:
    """Check that ``key`` lives 90 s from now (Redis), then let it expire: the memory store
    on its clock (a primitive at T + 200), Redis by a TTL cut to a millisecond."""
    if isinstance(store, MemoryStore):
        store.run([("get", "lp:{e:x}:clock", T + 200)])
    else:
        assert isinstance(store, RedisStore)
        assert 85_000 < await store.client.pttl(key) <= 90_000
        await store.client.pexpire(key, 1)
        await asyncio.sleep(0.01)


async def test_mark_answers_whether_a_field_is_new_and_counts_like_a_tally(
    store: GuardStore,
) -> None:
    """``mark`` answers 1 the first time a field is marked and 0 after; its fields are a
    tally's (1 each), and the key goes with ``delete`` and expires ``ttl`` after it was made."""
    day = "lp:{e:alice}:seen:1"
    results = await store.execute(
        [
            ("mark", day, "010", 90.0, T, 100),
            ("mark", day, "011", 90.0, T + 1, 100),
            ("mark", day, "010", 90.0, T + 2, 100),
            ("mark", "lp:{e:alice}:seen:2", "010", 90.0, T + 2, 100),
            ("pick", day, ["010", "011", "012"]),
        ]
    )
    assert results == [1, 1, 0, 1, [1, 1, None]]
    assert type(results[0]) is int
    assert await store.execute([("delete", day), ("mark", day, "010", 90.0, T + 3, 100)]) == [1, 1]
    await _expires_in_90_seconds(store, day)
    assert await store.execute([("mark", day, "010", 90.0, T + 200, 100)]) == [1]


async def test_a_marked_tally_past_its_cap_starts_over(store: GuardStore) -> None:
    """Past ``cap`` fields every field is new again: the memory store at the cap, Redis with a
    process's first mark of the hour (here: a new hour), so the tally stays bounded."""
    day = "lp:{e:alice}:seen:3"
    marks = [("mark", day, f"0{n}", 7200.0, T, 3) for n in range(3)]
    assert await store.execute(marks) == [1, 1, 1]
    later = T + 3600  # the next hour: Redis checks the size again
    assert await store.execute([("mark", day, "00", 7200.0, later, 3)]) == [1]
    assert await store.execute([("pick", day, ["00", "01", "02"])]) == [[1, None, None]]


async def test_sight_answers_whether_a_number_is_new_to_two_generations(
    store: GuardStore,
) -> None:
    """``sight`` sets its bits in its generation's half of the key and answers 1 when one of
    them was clear there and one is clear in the other half (the generation before), else 0;
    a missing key has every bit clear. The key's first sight of a later generation forgets the
    half that generation reuses (two generations old), and both halves when the key skipped a
    generation; a sight one generation behind the key's sets bits in the half of the
    generation before without turning the key back. The bits are numbered as Redis numbers a
    string's (byte by byte, the highest bit first), after a 32-bit header holding the key's
    generation, so both stores hold the same bytes."""
    key = "lp:{e:alice}:known-numbers"
    results = await store.execute(
        [
            ("sight", key, [0, 9, 65_535], 4, 90.0, T),  # all clear: new
            ("sight", key, [0, 9], 4, 90.0, T + 1),  # all set: known
            ("sight", key, [9, 10], 4, 90.0, T + 2),  # one of them clear: new
            ("sight", key, [5, 6], 3, 90.0, T + 2),  # behind: set in the half of 3, new to 4
            ("sight", key, [5, 6], 4, 90.0, T + 3),  # new in 4, known in 3
            ("sight", key, [7], 5, 90.0, T + 4),  # a turn: new to 5 and to 4
            ("sight", key, [0, 9], 5, 90.0, T + 4),  # new to 5, known in 4
            ("sight", key, [5, 6], 6, 90.0, T + 5),  # a turn: 4 forgotten, 5 knows only 5
            ("sight", key, [7], 6, 90.0, T + 5),  # known in 5
            ("sight", key, [7], 8, 90.0, T + 6),  # 7 skipped: both halves forgotten
            ("sight", key, [7], 9, 90.0, T + 7),  # known in 8
        ]
    )
    assert results == [1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0]
    assert all(type(result) is int for result in results)
    if isinstance(store, RedisStore):
        header, first, odd = await store.client.execute_command(
            "BITFIELD", key, "GET", "u32", 0, "GET", "u16", 32, "GET", "u8", 32 + 65_536
        )
        assert (header, first, odd) == (9, 0b0000_0001_0000_0000, 0b0000_0001)  # 7 in both
    assert await store.execute([("delete", key), ("sight", key, [0], 4, 90.0, T + 8)]) == [1, 1]
    await _expires_in_90_seconds(store, key)
    assert await store.execute([("sight", key, [0], 4, 90.0, T + 200)]) == [1]
    assert await store.execute([("delete", "lp:{e:alice}:known-numbers:9")]) == [0]


async def tick(store: GuardStore, now: float, key: str = KEY, width: float = 10.0,
               window: float = 60.0) -> dict[int, int]:  # fmt: skip
    """Tick once; the buckets answered, as bucket → count (checking they are integers)."""
    flat = (await store.execute([("tick", key, now, width, window)]))[0]
    assert all(type(value) is int for value in flat)
    return dict(zip(flat[::2], flat[1::2], strict=True))


async def test_tick_counts_each_bucket_and_answers_those_in_the_window(store: GuardStore) -> None:
    """``tick`` adds one to ``floor(now / width)`` and answers every bucket from
    ``floor((now - window) / width)`` on: the one the window starts in counts whole."""
    start = (T // 10) * 10  # a bucket's start
    first = int(start // 10)
    assert await tick(store, start + 1) == {first: 1}
    assert await tick(store, start + 9.5) == {first: 2}
    assert await tick(store, start + 10) == {first: 2, first + 1: 1}
    # 65 s on: the window (5 s .. 65 s) starts in the first bucket, which still counts.
    assert await tick(store, start + 65) == {first: 2, first + 1: 1, first + 6: 1}
    # 70 s on it has left; so has the second bucket at 80 s.
    assert await tick(store, start + 70) == {first + 1: 1, first + 6: 1, first + 7: 1}
    assert await tick(store, start + 80) == {first + 6: 1, first + 7: 1, first + 8: 1}
    # Another key counts alone.
    assert await tick(store, start + 80, key="lp:{e:bob}:rate") == {first + 8: 1}


async def test_tick_after_a_clock_step_back_counts_in_the_earlier_bucket(store: GuardStore) -> None:
    """A clock that stepped back ticks its own (earlier) bucket; nothing newer is lost."""
    start = (T // 10) * 10
    first = int(start // 10)
    await tick(store, start + 25)
    assert await tick(store, start + 12) == {first + 1: 1, first + 2: 1}
    assert await tick(store, start + 26) == {first + 1: 1, first + 2: 2}


async def test_a_tick_tally_is_deleted_like_any_key(store: GuardStore) -> None:
    """Unlocking clears an employee's keys: a tally of ticks starts again from nothing."""
    await tick(store, T)
    await tick(store, T + 1)
    assert await store.execute([("delete", KEY)]) == [1]
    assert await tick(store, T + 2) == {int((T + 2) // 10): 1}


async def test_results_come_back_in_batch_order_across_hash_tags(store: GuardStore) -> None:
    """A batch interleaving employee, store and region keys is answered in its own order."""
    ops: list[Op] = []
    for index in range(4):
        for tag in ("e:alice", "s:gangnam", "r:seoul", "e:bob"):
            ops.append(("add", f"lp:{{{tag}}}:w", T + index, f"{tag}-{index}", 60.0, 10, 1))
    ops.append(("members", "lp:{s:gangnam}:w", 0.0))
    ops.append(("get", "lp:{r:seoul}:lock", T))
    ops.append(("count", "lp:{e:bob}:w", T + 1))
    results = await store.execute(ops)
    for position in range(16):
        index = position // 4
        assert results[position] == [index + 1, T + index, T]
    assert results[16:] == [[f"s:gangnam-{i}" for i in range(4)], None, 2]


async def test_an_empty_batch_answers_an_empty_list(store: GuardStore) -> None:
    """Nothing to run costs nothing and answers nothing."""
    assert await store.execute([]) == []


async def test_unknown_primitives_are_a_programming_error(store: GuardStore) -> None:
    """An opcode the contract does not define raises ValueError, not StoreUnavailable."""
    with pytest.raises(ValueError, match="primitive"):
        await store.execute([("zincrby", KEY)])


def _random_batch(
    rng: random.Random,
    now: float,
    windows: dict[str, float],
    reference: MemoryStore,
    members: int = 12,
    caps: tuple[int, int] = (1, 6),
) -> list[Op]:
    """A batch touching each key once, so no two members tie on a score.

    Each key keeps one window, and reads and removals only look inside it, as every rule does:
    beyond a window's end the stores may differ, memory expiring keys on the injected clock
    and Redis on its own.
    """
    ops: list[Op] = []
    for key in rng.sample(sorted(windows), rng.randint(1, len(windows))):
        window = windows[key]
        since = now - window * rng.choice((0.01, 0.1, 0.5, 0.9, 1.0))
        roll = rng.random()
        if key.endswith((":k", ":j")):
            # Bit sets: a sight of a few of 24 bits (so they fill and overlap) in a generation
            # of 1,000 s, now and then one behind (a process a moment behind the turn) or, for
            # ``k``, one that skips ahead (a key not sighted for a generation).
            bits = rng.sample(range(24), rng.randint(1, 4))
            generation = 2 + int((now - T) // 1000) + (3 if key.endswith(":k") else 0)
            generation -= rng.random() < 0.05
            ops.append(("sight", key, bits, generation, 1e6, now))
        elif key.endswith(":t"):
            # A key keeps one width, as a rule does: four buckets a window for a, twelve for b.
            ops.append(("tick", key, now, window / (4 if "{e:a}" in key else 12), window))
        elif roll < 0.55:
            member = str(rng.randrange(members))
            cap, nth = rng.randint(*caps), rng.randint(0, caps[1] + 1)
            kind = rng.choice(("add", "add", "add_members", "note"))
            if kind == "note":
                # A cap a note never reaches: Redis applies it once per expiry slot (see the
                # contract), the memory store on every note.
                ops.append(("note", key, now, member, window, 10 * members))
            else:
                ops.append((kind, key, now, member, window, cap, nth))
        elif roll < 0.7:
            ops.append(("count", key, since))
        elif roll < 0.85:
            ops.append(("members", key, since))
        else:
            live = reference.run([("members", key, now - window)])[0]
            ops.append(("remove", key, rng.choice([*live, "absent"])))
    return ops


async def test_redis_matches_the_memory_store_on_a_random_history(redis_store: RedisStore) -> None:
    """Two thousand random batches give identical answers from memory and from Redis (at times
    on the millisecond, which is what the Redis store keeps)."""
    rng = random.Random(20210401)
    reference = MemoryStore()
    windows = {
        f"lp:{{e:{name}}}:w{i}": window
        for name in ("a", "b", "c")
        for i, window in enumerate((5.0, 30.0, 120.0))
    }
    windows |= {f"lp:{{e:{name}}}:{window:g}:t": window for name in "ab" for window in (6.0, 60.0)}
    windows |= {f"lp:{{e:{name}}}:known:{bits}": 1e6 for name in "ab" for bits in "kj"}
    now = T
    for step in range(2000):
        now = round(now + rng.choice((0.001, 0.25, 1.0, 3.0, 7.5)), 3)
        ops = _random_batch(rng, now, windows, reference)
        expected = await reference.execute(ops)
        assert await redis_store.execute(ops) == expected, f"step {step}: {ops}"


async def test_redis_matches_the_memory_store_on_long_windows(redis_store: RedisStore) -> None:
    """Windows of up to a hundred members, read at every depth: the memory store finds where
    ``since`` falls by steps from either end or by bisection, and must agree with Redis."""
    rng = random.Random(20261129)
    reference = MemoryStore()
    windows = {f"lp:{{e:{name}}}:long": 600.0 for name in ("a", "b")}
    now = T
    for step in range(1500):
        now += rng.choice((0.5, 1.0, 3.0, 20.0))
        ops = _random_batch(rng, now, windows, reference, members=400, caps=(80, 120))
        expected = await reference.execute(ops)
        assert await redis_store.execute(ops) == expected, f"step {step}: {ops}"


def _describe(batch: Batch, ops: list[Op]) -> None:
    """Describe ``ops`` to ``batch``, one method call each (the methods are named by opcode)."""
    for op in ops:
        getattr(batch, op[0])(*op[1:])


def test_a_batch_describes_exactly_the_contract_s_primitives() -> None:
    """Rules describe primitives to a Batch; what it collects for a store are the contract's ops."""
    ops: list[Op] = [
        ("add", KEY, T, "m", 60.0, 5, 2),
        ("add_members", KEY, T, "m", 60.0, 5, 2),
        ("note", KEY, T, "n", 60.0, 5),
        ("count", KEY, T - 60),
        ("members", KEY, T - 60),
        ("remove", KEY, "m"),
        ("get", "lp:{e:a}:lock", T),
        ("set", "lp:{e:a}:lock", "x", 30.0, T),
        ("delete", "lp:{e:a}:lock"),
        ("score", KEY, "m"),
        ("incr", "lp:{s:a}:t", "f", 2, 60.0),
        ("fields", "lp:{s:a}:t"),
        ("append", "lp:{a}:log", "entry", T, 60.0),
        ("tick", "lp:{e:a}:ticks", T, 10.0, 60.0),
        ("pick", "lp:{s:a}:t", ["f", "g"]),
        ("mark", "lp:{e:a}:seen", "m", 60.0, T, 100),
        ("sight", "lp:{e:a}:known", [1, 2], 7, 60.0, T),
    ]
    batch = Batch()
    _describe(batch, ops)
    assert batch.ops == ops
    assert batch.executed() is None


def test_the_memory_store_s_immediate_batch_answers_what_run_answers() -> None:
    """Replay's batch runs each primitive as described; its answers match ``run`` on a random
    history (trims, caps, re-scored oldest members, removals) and on values."""
    rng = random.Random(20261128)
    by_ops, by_calls = MemoryStore(), MemoryStore()
    windows = {f"lp:{{e:{name}}}:w{i}": w for name in "ab" for i, w in enumerate((5.0, 40.0))}
    windows |= {f"lp:{{e:{name}}}:known:{bits}": 1e6 for name in "ab" for bits in "kj"}
    now = T
    for step in range(3000):
        now = round(now + rng.choice((0.001, 0.25, 1.0, 3.0, 7.5)), 3)
        ops = _random_batch(rng, now, windows, by_ops)
        if step % 50 == 0:
            ops += [("set", "lp:{e:a}:lock", str(step), 20.0, now), ("get", "lp:{e:a}:lock", now)]
        if step % 75 == 0:
            ops += [("delete", "lp:{e:a}:lock"), ("get", "lp:{e:a}:lock", now)]
        if step % 10 == 0:
            ops += [("incr", "lp:{s:a}:t", str(step % 3), 1, 50.0), ("fields", "lp:{s:a}:t")]
            ops += [("tick", "lp:{e:a}:ticks", now, 4.0, 20.0), ("pick", "lp:{s:a}:t", ["1", "9"])]
            ops += [("score", key, "3") for key in sorted(windows)]
        immediate = by_calls.immediate()
        assert isinstance(immediate, Immediate)
        _describe(immediate, ops)
        assert immediate.executed() == by_ops.run(ops), f"step {step}: {ops}"
    assert by_calls.size() == by_ops.size()


async def _log_entries(store: GuardStore, key: str) -> list[str]:
    if isinstance(store, MemoryStore):
        return store.entries(key)
    assert isinstance(store, RedisStore)
    return [
        _text(raw)
        for _, fields in await store.client.xrange(key)
        for raw in records_of(fields[b"r"] if b"r" in fields else fields["r"].encode())
    ]


async def test_append_keeps_entries_in_order_and_answers_an_id(store: GuardStore) -> None:
    """``append`` adds to the end of a log (the audit stream) and returns the entry's id; a
    batch mixing it with other primitives keeps every other result in place."""
    log = "lp:{audit}:log"
    first = await store.execute([("append", log, '{"n":1}', T, 3600.0)])
    both = await store.execute(
        [("add", KEY, T, "a", 60.0, 10, 0), ("append", log, '{"n":2}', T, 3600.0)]
    )
    assert isinstance(first[0], str) and isinstance(both[1], str)
    assert both[0] == [1, None, None]
    assert await _log_entries(store, log) == ['{"n":1}', '{"n":2}']


async def test_a_calls_appends_keep_their_order_and_each_answer(store: GuardStore) -> None:
    """Several appends in one batch (a turn's lookups and outcomes) read back in order, each
    answered with an id, every other result in place."""
    log = "lp:{audit}:log"
    await store.execute([("append", log, '{"n":0}', T, 3600.0)])
    results = await store.execute(
        [
            ("append", log, '{"n":1}', T + 1, 3600.0),
            ("add", KEY, T + 1, "a", 60.0, 10, 0),
            ("append", log, '{"n":2}', T + 1, 3600.0),
            ("append", log, '{"n":3}', T + 1, 3600.0),
        ]
    )
    assert results[1] == [1, None, None]
    assert all(isinstance(results[i], str) for i in (0, 2, 3))
    assert await _log_entries(store, log) == [f'{{"n":{i}}}' for i in range(4)]


async def test_redis_keeps_a_calls_appends_in_one_stream_entry(redis_store: RedisStore) -> None:
    """One XADD a call, not one a record: the call's records are one entry, a line each, and
    the answers all name it; an entry that holds a newline would split wrongly, so it is
    refused before anything is sent."""
    log = "lp:{audit}:log"
    results = await redis_store.execute(
        [("append", log, f'{{"n":{i}}}', T, 3600.0) for i in range(3)]
    )
    entries = await redis_store.client.xrange(log)
    assert len(entries) == 1 and len(set(results)) == 1
    assert _text(entries[0][0]) == results[0]
    with pytest.raises(ValueError, match="newline"):
        await redis_store.execute([("append", log, '{"n":\n4}', T, 3600.0)])
    assert len(await redis_store.client.xrange(log)) == 1


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
