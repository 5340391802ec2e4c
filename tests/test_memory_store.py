"""What only the memory store has to get right: its own clock, sweeping, and a hard key budget."""

from __future__ import annotations

import gc
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lookup_proxy.guard.memory import _SHARDS, _SWEEP_EVERY, _SWEEP_SLICE, MemoryStore
from lookup_proxy.guard.primitives import tick_expiry

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
    store.run([("get", "lp:{e:c}:lock", T + 60)])  # the clock moves on: the lock of 30 s went
    assert await store.keys("lp:*") == ["lp:{e:a}:lock", "lp:{e:a}:rate"]
    store.run([("get", "lp:{e:c}:lock", T + 67.5)])  # and the window, at the end of its slot
    assert await store.keys("lp:*") == ["lp:{e:a}:lock"]


async def test_a_key_taken_over_by_a_tally_keeps_nothing_of_its_window() -> None:
    """A window's key written as a tally (incr, tick, mark) is the tally alone: listed once,
    and once the tally expires, gone, with no window expiry left behind to list."""
    for op in (
        ("incr", "lp:{e:a}:k", "f", 1, 30.0),
        ("tick", "lp:{e:a}:k", T, 10.0, 30.0),
        ("mark", "lp:{e:a}:k", "f", 30.0, T, 10),
    ):
        store = MemoryStore()
        store.run([("add", "lp:{e:a}:k", T, "m", 600.0, 5, 0), op])
        assert await store.keys("lp:*") == ["lp:{e:a}:k"], op[0]
        store.run([("get", "lp:{e:b}:lock", T + 500)])  # the tally's time is up, not the window's
        assert await store.keys("lp:*") == [], op[0]


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
        store.run([("get", "lp:{e:x}:lock", T + 68)])  # past the window and its expiry slot
    assert store.size() == 0


def test_a_sweep_visits_a_slice_of_the_keys_per_batch() -> None:
    """A sweep of every key at once paused the whole proxy for as long as the store was large
    (113 ms for a simulated month's 215,000 keys): no batch drops more than a slice, and the
    sweep goes on batch by batch, shard after shard, until every expired key is gone."""
    store = MemoryStore()
    keys = 3 * _SWEEP_SLICE * _SHARDS  # shards of about three slices each
    store.run([("add", f"lp:{{e:{i}}}:rate", T, "m", 60.0, 5, 0) for i in range(keys)])
    sizes = [store.size()]
    while sizes[-1] and len(sizes) < _SWEEP_EVERY * keys + 1001 + 10 * keys:
        store.run([("get", "lp:{e:x}:lock", T + 68)])  # past the window and its expiry slot
        sizes.append(store.size())
    drops = [before - after for before, after in itertools.pairwise(sizes)]
    assert sizes[-1] == 0
    assert max(drops) == _SWEEP_SLICE  # whole slices of the larger shards, never more
    assert sum(1 for drop in drops if drop) >= keys // _SWEEP_SLICE


def test_windows_are_spread_so_no_dict_holds_many_of_them() -> None:
    """A dict that grows copies every entry at once: the store-wide dicts of 250,000 windows
    took 42 ms to grow (bench/bench_stalls.py). Spread over shards, each holds a small part."""
    store = MemoryStore()
    keys = 20_000
    store.run([("add", f"lp:{{b:{i:07d}}}:block", T, "m", 60.0, 5, 0) for i in range(keys)])
    largest = max(len(shard.windows) for shard in store._shards)
    assert largest < 2 * keys / _SHARDS
    assert store.size() == keys


def test_a_key_renewed_while_a_sweep_is_under_way_is_kept() -> None:
    """The sweep visits a snapshot of the keys, judging each by its expiry when visited: keys
    used again after the sweep began live on, whichever shard they are in."""
    store = MemoryStore()
    keys = 2 * _SWEEP_SLICE
    store.run([("add", f"lp:{{e:{i}}}:rate", T, "m", 60.0, 5, 0) for i in range(keys)])
    while store.size() == keys:
        store.run([("get", "lp:{e:x}:lock", T + 68)])
    assert 0 < store.size() < keys  # the sweep is under way: some gone, some not yet visited
    # Every key used again: those gone start anew, those not yet visited must not go.
    every = [f"lp:{{e:{i}}}:rate" for i in range(keys)]
    store.run([("add", key, T + 69, "n", 60.0, 5, 0) for key in every])
    for _ in range(2 * _SHARDS + 2):
        store.run([("get", "lp:{e:x}:lock", T + 69)])
    assert store.size() == keys
    # Each holds the new member alone: the first had expired.
    assert store.run([("count", key, T + 1) for key in every]) == [1] * keys


def test_windows_are_nothing_the_garbage_collector_walks() -> None:
    """A serving proxy holds a window per employee, block and day: hundreds of thousands.

    As objects the collector tracks, each young collection walked the new ones and each full
    collection all of them (111 ms after 100,000 lookups of 4,000 employees); a window made
    of dicts of strings and floats is untracked, so the store's size costs no pause.
    """
    store = MemoryStore()
    gc.collect()
    before = len(gc.get_objects())
    for i in range(2_000):
        store.run(
            [
                ("add", f"lp:{{e:{i}}}:hour", T + i, f"0102000{i:04d}", 3600.0, 81, 0),
                ("add", f"lp:{{e:{i}}}:hour", T + i + 1, f"0103000{i:04d}", 3600.0, 81, 2),
                ("remove", f"lp:{{e:{i}}}:hour", f"0102000{i:04d}"),
                ("note", f"lp:{{e:{i}}}:blk:0102", T + i, f"0102000{i:04d}", 604_800.0, 9),
            ]
        )
    assert store.size() == 4_000
    gc.collect()
    assert len(gc.get_objects()) - before < 100


def test_a_tally_lives_ttl_past_the_first_change_of_its_newest_field() -> None:
    """The increment that starts a field sets the TTL; later ones of the field leave it."""
    store = MemoryStore()
    store.run([("set", "lp:{e:x}:clock", "t", 0, T)])
    store.run([("incr", "lp:{s:a}:t", "alice|o", 1, 60.0)])
    store.run(
        [("set", "lp:{e:x}:clock", "t", 0, T + 50), ("incr", "lp:{s:a}:t", "alice|o", 1, 60.0)]
    )
    store.run([("set", "lp:{e:x}:clock", "t", 0, T + 60)])
    assert store.run([("fields", "lp:{s:a}:t")]) == [[]]
    store.run([("incr", "lp:{s:a}:t", "alice|o", 1, 60.0)])
    store.run(
        [("set", "lp:{e:x}:clock", "t", 0, T + 100), ("incr", "lp:{s:a}:t", "bob|o", 1, 60.0)]
    )
    store.run([("set", "lp:{e:x}:clock", "t", 0, T + 150)])
    assert store.run([("fields", "lp:{s:a}:t")]) == [["alice|o", 1, "bob|o", 1]]


def test_a_tally_of_ticks_is_swept_after_its_tick_expiry() -> None:
    """A rate rule's buckets go a window after the end of their tick period, like any key."""
    store = MemoryStore()
    store.run([("tick", f"lp:{{e:{i}}}:burst", T, 30.0, 300.0) for i in range(500)])
    assert store.size() == 500
    gone = tick_expiry(int(T // 30), 30.0, 300.0)
    for _ in range(_SWEEP_EVERY * 500 + 1001):
        store.run([("get", "lp:{e:x}:lock", gone - 1)])
    assert store.size() == 500
    for _ in range(_SWEEP_EVERY * 500 + 1001):
        store.run([("get", "lp:{e:x}:lock", gone)])
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
        "COUNT_IF",
        "MEMBERS",
        "REMOVE",
        "GET",
        "SET",
        "DELETE",
        "SCORE",
        "INCR",
        "FIELDS",
        "APPEND",
        "TICK",
        "PICK",
    ):
        assert getattr(memory, "_" + name) == getattr(primitives, name), name


def test_the_immediate_batch_answers_count_if_as_the_store_does() -> None:
    """Replay's batch runs each primitive as described; ``count_if`` reads the result before
    it there too."""
    store = MemoryStore()
    store.run([("add", "lp:{e:a}:w", T, "m", 60.0, 10, 0)])
    batch = store.immediate()
    batch.count("lp:{e:a}:w", 0.0)
    batch.count_if("lp:{e:a}:w", 0.0, 0)
    batch.count_if("lp:{e:a}:w", 0.0, 5)
    assert batch.executed() == [1, 1, None]


def test_an_unknown_primitive_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="zincrby"):
        MemoryStore().run([("zincrby", "lp:{e:a}:x")])


# -- window arithmetic against a reference model (hypothesis) ---------------------------------


class ReferenceWindow:
    """The ``add``/``count``/``members`` contract (guard/primitives.py) the plainest way: a dict
    of member scores, trimmed at ``now - window``, capped to the newest, expiring a window after
    the end of its last add's slot (an eighth of the window); the oldest score answered only for
    ``nth > 0``."""

    def __init__(self) -> None:
        self.scores: dict[str, float] = {}
        self.expiry = 0.0

    def add(self, now: float, member: str, window: float, cap: int, nth: int) -> list[object]:
        self.scores = {m: s for m, s in self.scores.items() if s > now - window}
        self.scores[member] = now
        newest_first = sorted(self.scores.items(), key=lambda item: -item[1])[:cap]
        self.scores = dict(newest_first)
        slot = window / 8
        self.expiry = (now // slot + 1) * slot + window
        nth_score = newest_first[nth - 1][1] if 0 < nth <= len(newest_first) else None
        oldest = min(self.scores.values()) if nth > 0 else None
        return [len(self.scores), nth_score, oldest]

    def live(self, latest: float) -> dict[str, float]:
        return self.scores if self.expiry > latest else {}

    def count(self, since: float, latest: float) -> int:
        return sum(1 for score in self.live(latest).values() if score > since)

    def members(self, since: float, latest: float) -> list[str]:
        after = [(s, m) for m, s in self.live(latest).items() if s > since]
        return [m for _, m in sorted(after)]


WINDOW_OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            st.integers(1, 90),  # seconds since the previous add: the clock only moves on
            st.integers(0, 9),  # member
            st.integers(0, 9),  # nth
        ),
        st.tuples(st.just("count"), st.integers(-10, 400)),  # since: this far back
        st.tuples(st.just("members"), st.integers(-10, 400)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(
    ops=WINDOW_OPS,
    window=st.sampled_from([1, 30, 60, 300]),
    cap=st.integers(1, 8),
    keys=st.integers(1, 2),
)
def test_window_arithmetic_matches_the_reference_model(
    ops: list[tuple[object, ...]], window: int, cap: int, keys: int
) -> None:
    """Whatever the order of adds and reads: the same counts, members, nth and oldest scores
    as the plain model — trimming, capping, re-scoring and expiry included."""
    store = MemoryStore()
    models = [ReferenceWindow() for _ in range(keys)]
    now = T
    for index, op in enumerate(ops):
        which = index % keys
        key = f"lp:{{e:{which}}}:rate"
        if op[0] == "add":
            _, step, member, nth = op
            assert isinstance(step, int) and isinstance(member, int) and isinstance(nth, int)
            now += step
            expected = models[which].add(now, f"n{member}", float(window), cap, nth)
            (got,) = store.run([("add", key, now, f"n{member}", float(window), cap, nth)])
            assert got == expected
        else:
            kind, back = op
            assert isinstance(back, int)
            since = now - back
            (got,) = store.run([(kind, key, since)])
            model = models[which]
            assert got == (
                model.count(since, now) if kind == "count" else model.members(since, now)
            )
