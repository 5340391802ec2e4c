"""The case book over every store: opening, raising, reviewing, and concurrent writers."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
import redis

from lookup_proxy.audit.export import records_of
from lookup_proxy.cases import CaseBook, CaseClosed, CaseNotFound, CaseRaiser, Signal
from lookup_proxy.cases.model import fold, iso
from lookup_proxy.clock import ManualClock
from lookup_proxy.guard import Guard
from lookup_proxy.guard.memory import MemoryStore
from lookup_proxy.guard.primitives import GuardStore, Op, StoreUnavailable
from lookup_proxy.guard.redis_store import RedisStore
from lookup_proxy.metrics import ProxyMetrics
from lookup_proxy.policy import parse_policy
from tests.conftest import STORE_TIMEOUT
from tests.harness import ENV, policy_text, run_cli


def book(store: GuardStore, clock: ManualClock | None = None) -> CaseBook:
    return CaseBook(store, "lp", clock or ManualClock())


def flag(employee: str, *rules: str, locked: bool = False) -> Signal:
    return Signal(employee, rules, locked, "S1", "R1")


async def test_a_flag_opens_a_case_and_the_next_raises_it(store: GuardStore) -> None:
    """The first signal opens a case; later ones raise it, merging rules and the lock."""
    clock = ManualClock()
    cases = book(store, clock)
    opened, event = await cases.signal(flag("E1", "distinct-day"))
    assert event == "opened"
    assert opened.status == "open" and opened.rules == ["distinct-day"] and not opened.locked
    clock.advance(60)
    raised, event = await cases.signal(flag("E1", "misses", locked=True))
    assert event == "raised"
    assert raised.id == opened.id
    assert raised.rules == ["distinct-day", "misses"]
    assert raised.locked and raised.raised == 1
    assert raised.store == "S1" and raised.region == "R1"
    assert [e.event for e in raised.events] == ["opened", "raised"]
    assert raised.updated_at == opened.opened_at + 60


async def test_repeats_are_counted_without_growing_the_log(store: GuardStore) -> None:
    """A signal with nothing new (same rules, no new lock) counts as a raise but adds no event."""
    cases = book(store)
    opened, _ = await cases.signal(flag("E1", "distinct-day"))
    for _ in range(5):
        case, event = await cases.signal(flag("E1", "distinct-day"))
        assert event == "raised"
    assert case.id == opened.id and case.raised == 5
    assert len(case.events) == 1
    assert (await cases.case(opened.id)).raised == 5


async def test_escalation_opens_a_locked_case(store: GuardStore) -> None:
    """An escalation lock (rule 'escalation') opens a case marked locked."""
    case, event = await book(store).signal(flag("E9", "escalation", locked=True))
    assert event == "opened" and case.locked and case.rules == ["escalation"]


async def test_acknowledge_and_resolve_with_note_and_reviewer(store: GuardStore) -> None:
    """Reviewers' transitions are kept with who and why; after resolving, a flag opens anew."""
    clock = ManualClock()
    cases = book(store, clock)
    opened, _ = await cases.signal(flag("E1", "distinct-day"))
    clock.advance(10)
    acknowledged = await cases.acknowledge(opened.id, "SEC1", "looking into it")
    assert acknowledged.status == "acknowledged"
    clock.advance(10)
    resolved = await cases.resolve(opened.id, "SEC2", "a corporate batch", "false-positive")
    assert resolved.status == "resolved" and resolved.resolution == "false-positive"
    assert [(e.event, e.by, e.note) for e in resolved.events] == [
        ("opened", None, None),
        ("acknowledged", "SEC1", "looking into it"),
        ("resolved", "SEC2", "a corporate batch"),
    ]
    with pytest.raises(CaseClosed):
        await cases.resolve(opened.id, "SEC3", "again", "other")
    clock.advance(10)
    again, event = await cases.signal(flag("E1", "distinct-day"))
    assert event == "opened" and again.id != opened.id
    assert opened.id == "E1~0" and again.id.startswith("E1~")
    assert [c.id for c in await cases.cases("all")] == [again.id, opened.id]
    assert [c.id for c in await cases.cases("open")] == [again.id]
    assert [c.id for c in await cases.cases("resolved")] == [opened.id]
    assert await cases.cases("acknowledged") == []


async def test_unknown_cases_are_not_found(store: GuardStore) -> None:
    """A case id nobody opened is CaseNotFound for reading and reviewing alike."""
    cases = book(store)
    with pytest.raises(CaseNotFound):
        await cases.case("E404~0")
    with pytest.raises(CaseNotFound):
        await cases.acknowledge("E404~0", "SEC1", None)


async def test_one_open_case_per_employee_whatever_the_concurrency(store: GuardStore) -> None:
    """Many concurrent signals for one employee: one case, every raise counted, every rule kept."""
    cases = book(store)
    signals = [flag("E1", f"rule-{i % 4}", locked=i == 7) for i in range(20)]
    results = await asyncio.gather(*(cases.signal(s) for s in signals))
    [case] = await cases.cases("all")
    assert {written.id for written, _ in results} == {case.id} == {"E1~0"}
    assert case.raised == 19
    assert sorted(case.rules) == ["rule-0", "rule-1", "rule-2", "rule-3"]
    assert case.locked


async def test_two_books_on_one_redis_lose_nothing(fresh_redis: str) -> None:
    """Two instances (two stores, two connections) raising one employee at once, while a
    reviewer resolves: every signal ends up in a case and at most one case is unresolved."""
    first = RedisStore.from_url(fresh_redis, cluster=False, timeout=STORE_TIMEOUT)
    second = RedisStore.from_url(fresh_redis, cluster=False, timeout=STORE_TIMEOUT)
    try:
        a, b = book(first), book(second)
        opened, _ = await a.signal(flag("E1", "distinct-day"))

        async def raise_many(cases: CaseBook, rule: str) -> None:
            for i in range(15):
                await cases.signal(flag("E1", rule if i % 2 else "distinct-day"))

        async def resolve_soon() -> None:
            await asyncio.sleep(0.01)
            await b.resolve(opened.id, "SEC1", "checked", "false-positive")

        await asyncio.gather(raise_many(a, "misses"), raise_many(b, "sequential"), resolve_soon())
        every = await a.cases("all")
        assert sum(1 for c in every if c.status != "resolved") <= 1
        signals = sum(c.raised + 1 for c in every)
        assert signals == 31  # the opening one and 2 x 15, none lost
        assert every == await b.cases("all")
    finally:
        await first.close()
        await second.close()


async def test_two_reviewers_resolving_at_once_one_wins(fresh_redis: str) -> None:
    """Concurrent resolutions from two instances: exactly one takes effect, the other is told."""
    first = RedisStore.from_url(fresh_redis, cluster=False, timeout=STORE_TIMEOUT)
    second = RedisStore.from_url(fresh_redis, cluster=False, timeout=STORE_TIMEOUT)
    try:
        a, b = book(first), book(second)
        opened, _ = await a.signal(flag("E1", "distinct-day"))
        outcomes = await asyncio.gather(
            a.resolve(opened.id, "SEC1", "one", "other"),
            b.resolve(opened.id, "SEC2", "two", "abuse-confirmed"),
            return_exceptions=True,
        )
        assert sum(isinstance(o, CaseClosed) for o in outcomes) == 1
        case = await a.case(opened.id)
        assert [e.event for e in case.events].count("resolved") == 1
    finally:
        await first.close()
        await second.close()


def test_the_fold_ignores_a_review_meant_for_a_resolved_case() -> None:
    """A late reviewer's event names its case; reached after that case closed, it is inert."""
    events = [
        {"i": 1, "k": "signal", "t": 1.0, "rules": ["a"], "locked": False, "n": 1},
        {"i": 2, "k": "resolved", "t": 2.0, "case": "E1~0", "by": "X", "resolution": "other"},
        {"i": 3, "k": "signal", "t": 3.0, "rules": ["a"], "locked": False, "n": 1},
        {"i": 4, "k": "resolved", "t": 4.0, "case": "E1~0", "by": "Y", "resolution": "other"},
    ]
    folded = fold("E1", events, {})
    assert [(c.id, c.status) for c in folded.cases] == [("E1~0", "resolved"), ("E1~2", "open")]
    assert 4 not in folded.effective


def test_times_are_iso_with_milliseconds_and_z() -> None:
    """Case times are written like audit records' ``at``."""
    assert iso(1_790_000_000.1239) == "2026-09-21T14:13:20.123Z"


class Outage:
    """A store that is out until told otherwise, then the memory store (a real one)."""

    kind = "memory"

    def __init__(self) -> None:
        self.out = True
        self.inner = MemoryStore()
        self.numbers_key = self.inner.numbers_key

    async def execute(self, ops: list[Op]) -> list[object]:
        if self.out:
            raise StoreUnavailable("down")
        return await self.inner.execute(ops)

    async def ping(self) -> None: ...

    async def keys(self, pattern: str) -> list[str]:
        return await self.inner.keys(pattern)

    async def close(self) -> None: ...


class Collected:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, object]]] = []

    def write(self, kind: str, fields: dict[str, object]) -> None:
        self.records.append((kind, fields))


async def test_the_raiser_keeps_signals_through_a_store_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While the store is out signals wait (merged per employee), are counted as errors and
    logged, never raised; once it is back they open the case, with an audit record."""
    store = Outage()
    metrics = ProxyMetrics()
    audit = Collected()
    raiser = CaseRaiser(CaseBook(store, "lp", ManualClock()), audit, metrics.cases)
    with caplog.at_level(logging.WARNING, "lookup_proxy.cases"):
        raiser.signal(flag("E1", "a"))
        raiser.signal(flag("E1", "b", locked=True))
        await asyncio.sleep(0.05)
        assert metrics.cases.store_errors._value.get() >= 1
        assert "store unavailable" in caplog.text
        store.out = False
        await asyncio.wait_for(raiser.idle(), 10)
    [case] = await raiser.book.cases("open")
    assert case.rules == ["a", "b"] and case.locked and case.raised == 1
    [(kind, record)] = audit.records
    assert kind == "case" and record["event"] == "opened" and record["case"] == case.id
    assert record["by"] is None and record["employee"] == "E1"
    await raiser.close(grace=1)


async def test_the_cli_reviews_cases_in_the_policys_redis(fresh_redis: str, tmp_path: Path) -> None:
    """``cases``, ``cases show``, ``cases resolve --unlock``, ``locks`` and ``unlock`` act on the
    shared store as a named reviewer; plain error lines and exit codes otherwise."""
    config = tmp_path / "policy.toml"
    config.write_text(policy_text("http://127.0.0.1:9", extra='[store]\nkind = "redis"\n'))
    env = {**ENV, "LOOKUP_PROXY_REDIS_URL": fresh_redis}
    store = RedisStore.from_url(fresh_redis, cluster=False, timeout=STORE_TIMEOUT)
    try:
        guard = Guard(parse_policy(config.read_text(), str(config)), store, ManualClock())
        await guard.lock("E7", rule="escalation")
        case, _ = await book(store).signal(flag("E7", "escalation", locked=True))
    finally:
        await store.close()
    base = ("--config", str(config), "--as", "SEC1")

    listed = await asyncio.to_thread(run_cli, "cases", *base, env=env)
    assert listed.returncode == 0, listed.stderr
    assert case.id in listed.stdout and "escalation locked" in listed.stdout
    shown = await asyncio.to_thread(run_cli, "cases", "show", case.id, *base, "--json", env=env)
    assert json.loads(shown.stdout)["id"] == case.id
    locks = await asyncio.to_thread(run_cli, "locks", *base, env=env)
    assert locks.stdout.startswith("E7\tescalation")
    resolved = await asyncio.to_thread(
        run_cli,
        "cases", "resolve", case.id, *base,
        "--note", "spoke to E7", "--resolution", "false-positive", "--unlock",
        env=env,
    )  # fmt: skip
    assert resolved.returncode == 0, resolved.stderr
    assert "resolved by SEC1: spoke to E7" in resolved.stdout
    assert (await asyncio.to_thread(run_cli, "locks", *base, env=env)).stdout == ""
    again = await asyncio.to_thread(
        run_cli, "cases", "resolve", case.id, *base, "--note", "x", "--resolution", "other", env=env
    )
    assert (again.returncode, again.stderr) == (1, f"error: case {case.id} is already resolved\n")
    unlocked = await asyncio.to_thread(run_cli, "unlock", "E7", *base, "--note", "n", env=env)
    assert unlocked.stdout == "E7: was not locked\n"
    nobody = await asyncio.to_thread(run_cli, "locks", "--config", str(config), env=env)
    assert nobody.returncode == 2 and "--as EMPLOYEE_ID is required" in nobody.stderr
    assert "Traceback" not in nobody.stderr + again.stderr
    stream = redis.Redis.from_url(fresh_redis, decode_responses=True)
    try:
        written = [
            json.loads(raw)
            for _, fields in stream.xrange("lp:{audit}:log")
            for raw in records_of(fields["r"].encode())
        ]
    finally:
        stream.close()
    admin = [
        (r["action"], r["employee"], r["target"], r["status"])
        for r in written
        if r["kind"] == "admin"
    ]
    assert admin == [
        ("cases.list", "SEC1", None, 0),
        ("cases.show", "SEC1", case.id, 0),
        ("locks.list", "SEC1", None, 0),
        ("cases.resolve", "SEC1", case.id, 0),
        ("locks.list", "SEC1", None, 0),
        ("cases.resolve", "SEC1", case.id, 1),
        ("locks.unlock", "SEC1", "E7", 0),
    ]
    [resolution] = [r for r in written if r["kind"] == "case"]
    assert (resolution["event"], resolution["by"], resolution["note"]) == (
        "resolved",
        "SEC1",
        "spoke to E7",
    )
    assert sum(r["kind"] == "checkpoint" and r["final"] for r in written) == 7


def test_the_cli_says_why_a_memory_store_is_no_use() -> None:
    """With the memory store, cases live inside each proxy: the CLI says so."""
    result = run_cli("locks", "--as", "SEC1")
    assert result.returncode == 2
    assert "store is 'memory'" in result.stderr and "/admin/locks" in result.stderr
