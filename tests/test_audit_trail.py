"""The audit trail's writer (lookup_proxy/audit/trail.py) through a real proxy: every lookup
attempt and its outcome, pseudonymised, chained, signed, and durable before it matters."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import hmac
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from lookup_proxy.audit.chain import GENESIS, Verifier, record_hash
from lookup_proxy.audit.export import records_of
from lookup_proxy.audit.pseudonym import Pseudonymiser
from lookup_proxy.audit.trail import ArchiveFile, AuditTrail, AuditUnavailable, stream_key
from lookup_proxy.clock import ManualClock
from lookup_proxy.customers import CustomerBase
from lookup_proxy.employee import Employee
from lookup_proxy.guard.decision import Lookup
from lookup_proxy.guard.engine import Guard
from lookup_proxy.guard.redis_store import RedisStore
from lookup_proxy.metrics import AuditMetrics, GuardMetrics
from lookup_proxy.policy import Audit, Policy
from tests.harness import (
    PSEUDONYM_KEYS,
    SIGNER,
    audit_records,
    policy,
    running_proxy,
    token,
)
from tests.test_fallback import BlackHole

BASE = CustomerBase()
FOUND = BASE.find_customers(2)
MISSING = BASE.find_non_customers(1)[0]


def headers(tok: str, reason: str = "PLAN_CHANGE") -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}", "X-Lookup-Reason": reason}


def pseudonym(number: str) -> str:
    _, secret = PSEUDONYM_KEYS.split(":", 1)
    return hmac.new(secret.encode(), number.encode(), hashlib.sha256).hexdigest()


def check_chain(records: list[dict[str, Any]]) -> None:
    """One writer's records link up: seq 1..n, each prev the hash before, every hash right."""
    chains = {r["chain"] for r in records}
    assert len(chains) == 1
    ordered = sorted(records, key=lambda r: r["seq"])
    assert [r["seq"] for r in ordered] == list(range(1, len(ordered) + 1))
    previous = GENESIS
    for record in ordered:
        assert record["prev"] == previous
        assert record["hash"] == record_hash(record)
        previous = record["hash"]


async def test_each_lookup_leaves_its_attempt_and_outcome_pseudonymised_and_chained(
    backend: str, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Allowed, not found and refused lookups: one ``lookup`` and one ``outcome`` record each,
    the number only as its keyed pseudonym and last four digits, no token anywhere; the
    proxy's chain links up and ends in a checkpoint signed with the configured key."""
    p = policy(backend)
    tok = token(p, employee="E31", store="S7", region="R2")
    directory = tmp_path / "audit"
    async with running_proxy(p, audit_dir=directory) as (url, _):
        ids = []
        for number, reason in (
            (FOUND[0], "PLAN_CHANGE"),
            (MISSING, "PLAN_CHANGE"),
            (FOUND[1], "NOPE"),
        ):
            async with client.get(f"{url}/customers/{number}", headers=headers(tok, reason)) as r:
                ids.append((r.headers["X-Request-Id"], r.status))
    assert [status for _, status in ids] == [200, 404, 400]
    records = audit_records(directory)
    lookups = {r["request_id"]: r for r in records if r["kind"] == "lookup"}
    outcomes = {r["of"]: r for r in records if r["kind"] == "outcome"}
    assert set(lookups) == set(outcomes) == {request_id for request_id, _ in ids}
    found, missing, refused = (lookups[request_id] for request_id, _ in ids)
    assert (found["employee"], found["store"], found["region"]) == ("E31", "S7", "R2")
    assert found["route"] == "GET /customers/{number}" and found["reason"] == "PLAN_CHANGE"
    assert found["subject"] == pseudonym(FOUND[0]) and found["last4"] == FOUND[0][-4:]
    assert found["key_id"] == "t1" and len(found["policy"]) == 16
    assert found["client"] == "127.0.0.1"
    assert outcomes[found["request_id"]]["outcome"] == "found"
    assert outcomes[missing["request_id"]]["outcome"] == "not_found"
    refused_outcome = outcomes[refused["request_id"]]
    assert (refused_outcome["decision"], refused_outcome["cause"], refused_outcome["status"]) == (
        "refuse",
        "unknown-reason",
        400,
    )
    assert refused["reason"] is None and refused["subject"] == pseudonym(FOUND[1])
    text = "".join(path.read_text() for path in directory.glob("audit-*.jsonl"))
    for number in (*FOUND, MISSING):
        assert number not in text
    assert tok.split(".")[2] not in text
    check_chain(records)
    checkpoints = [r for r in records if r["kind"] == "checkpoint"]
    assert checkpoints[-1]["final"] is True
    verifier = Verifier.from_signer(SIGNER)
    assert all(verifier.verify_checkpoint(c) for c in checkpoints)


async def test_a_refusal_before_identification_is_recorded_with_what_is_known(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """No token: no employee, but the number it asked for (as its pseudonym) and the cause."""
    p = policy(backend)
    async with running_proxy(p) as (url, proxy):
        async with client.get(f"{url}/customers/{FOUND[0]}") as r:
            assert r.status == 401
            request_id = r.headers["X-Request-Id"]
        await proxy.audit.flush()
        [attempt] = audit_records(proxy.audit.file.directory, "lookup")
        [outcome] = audit_records(proxy.audit.file.directory, "outcome")
    assert attempt["request_id"] == outcome["of"] == request_id
    assert attempt["employee"] is None and attempt["subject"] == pseudonym(FOUND[0])
    assert (outcome["cause"], outcome["status"]) == ("token-missing", 401)


async def test_the_guard_writes_a_lookups_record_in_its_decisions_one_batch(
    fresh_redis: str,
) -> None:
    """``Guard.decide`` with an audit log: the lookup's record is in the stream when the
    decision returns, and the decision took exactly one store round trip."""
    p = policy("http://127.0.0.1:9", rules=RATE_RULE, extra='[store]\nkind = "redis"\n')
    store = RedisStore.from_url(fresh_redis, cluster=False, timeout=0.5)
    registry = CollectorRegistry()
    guard = Guard(p, store, ManualClock(time.time()), GuardMetrics(registry))
    guard.audit_log, guard.audit_keep = stream_key("lp"), 3600.0
    employee = Employee("E5", "S1", "R1", frozenset({"clerk"}))
    decision = await guard.decide(
        Lookup("req-1", employee, "PLAN_CHANGE", FOUND[0], '{"kind":"lookup","n":1}')
    )
    raw = Redis.from_url(fresh_redis)
    entries = await raw.xrange(stream_key("lp"))
    await raw.aclose()
    await store.close()
    assert decision.allowed
    assert [fields[b"r"] for _, fields in entries] == [b'{"kind":"lookup","n":1}']
    assert _store_calls(registry) == 1


async def test_with_redis_every_record_goes_to_the_stream_and_none_to_files(
    backend: str, client: aiohttp.ClientSession, fresh_redis: str
) -> None:
    """A lookup's record and its outcome in the stream (in that order), the archive directory
    untouched: the exporter moves them there."""
    p = policy(backend, extra='[store]\nkind = "redis"\n')
    store = RedisStore.from_url(fresh_redis, cluster=False, timeout=0.5)
    tok = token(p, employee="E5")
    async with running_proxy(p, store=store) as (url, proxy):
        async with client.get(f"{url}/customers/{FOUND[0]}", headers=headers(tok)) as r:
            assert r.status == 200
            request_id = r.headers["X-Request-Id"]
        await proxy.guard_idle()
        await proxy.audit.flush()
        raw = Redis.from_url(fresh_redis)
        entries = await raw.xrange(stream_key("lp"))
        await raw.aclose()
        directory = proxy.audit.file.directory
    records = [json.loads(raw) for _, fields in entries for raw in records_of(fields[b"r"])]
    assert [(r["kind"], r.get("request_id", r.get("of"))) for r in records][:2] == [
        ("lookup", request_id),
        ("outcome", request_id),
    ]
    assert not list(directory.glob("audit-*.jsonl"))


RATE_RULE = """
[[rules]]
name = "burst"
kind = "rate"
window = "5m"
limit = 30
action = "deny"
"""


def _store_calls(registry: CollectorRegistry) -> float:
    text = generate_latest(registry).decode()
    for family in text_string_to_metric_families(text):
        if family.name == "lookup_proxy_store_roundtrip_seconds":
            return sum(s.value for s in family.samples if s.name.endswith("_count"))
    raise AssertionError("no store latency histogram")


async def test_with_redis_out_records_go_to_the_archive_file_and_none_is_lost(
    backend: str, client: aiohttp.ClientSession
) -> None:
    """A Redis that does not answer: the lookup is refused (503) and both its records land in
    the proxy's own archive file instead of the stream."""
    p = policy(backend, extra='[store]\nkind = "redis"\n')
    black_hole = BlackHole()
    store = RedisStore.from_url(await black_hole.start(), cluster=False, timeout=0.2)
    tok = token(p, employee="E6")
    async with running_proxy(p, store=store) as (url, proxy):
        async with client.get(f"{url}/customers/{FOUND[0]}", headers=headers(tok)) as r:
            assert r.status == 503
            request_id = r.headers["X-Request-Id"]
        await proxy.audit.flush()
        records = audit_records(proxy.audit.file.directory)
    assert black_hole.server is not None
    black_hole.server.close()
    assert [r["kind"] for r in records if r.get("request_id", r.get("of")) == request_id] == [
        "lookup",
        "outcome",
    ]


async def test_an_archive_that_cannot_be_written_refuses_lookups_before_they_are_forwarded(
    backend: str, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Memory store, archive directory unusable (a file stands where it should be): 503
    audit-unavailable, and the backend never sees the lookup."""
    blocked = tmp_path / "archive"
    blocked.write_text("not a directory")
    p = policy(backend)
    p = p.model_copy(update={"audit": p.audit.model_copy(update={"archive": str(blocked)})})
    async with running_proxy(p) as (url, _):
        async with client.get(f"{url}/customers/{FOUND[0]}", headers=headers(token(p))) as r:
            assert r.status == 503
            body = await r.json(content_type=None)
        async with client.get(backend + "/_demo/requests") as seen:
            assert await seen.json() == []
    assert body["type"] == "urn:lookup-proxy:problem:audit-unavailable"


def _file_trail(directory: Path, registry: CollectorRegistry | None = None) -> AuditTrail:
    return AuditTrail(
        Audit(),
        directory=directory,
        signer=None,
        pseudonyms=Pseudonymiser([("k1", b"k" * 32)]),
        clock=ManualClock(time.time()),
        policy_hash="p",
        metrics=AuditMetrics(registry or CollectorRegistry()),
    )


async def test_a_turns_staged_records_are_written_together_before_their_lookups_go_on(
    tmp_path: Path,
) -> None:
    """Memory store: lookups' own records staged in one turn reach the archive file in one
    batch, in seq order, and each lookup's wait ends only once its record is there."""
    trail = _file_trail(tmp_path / "archive")
    lines = [trail.lookup({"request_id": f"r{i}"}, "01012345678") for i in range(3)]
    waits = [trail.stage("lookup", line) for line in lines]
    assert not any(wait.done() for wait in waits)
    assert not (tmp_path / "archive").exists()  # nothing written until the turn ends
    await asyncio.gather(*waits)
    [archived] = (tmp_path / "archive").glob("audit-*.jsonl")
    assert archived.read_bytes().splitlines() == lines
    trail.file.close()


async def test_a_staged_record_no_sink_takes_refuses_its_lookup_and_is_kept(
    tmp_path: Path,
) -> None:
    """The archive cannot be written: every lookup of the turn hears AuditUnavailable, and
    their records wait in memory and are written once the directory is back."""
    blocked = tmp_path / "archive"
    blocked.write_text("not a directory")
    trail = _file_trail(blocked)
    lines = [trail.lookup({"request_id": f"r{i}"}, "01012345678") for i in range(2)]
    waits = [trail.stage("lookup", line) for line in lines]
    for wait in waits:
        with pytest.raises(AuditUnavailable):
            await wait
    blocked.unlink()
    await trail.flush()
    [archived] = blocked.glob("audit-*.jsonl")
    assert archived.read_bytes().splitlines() == lines
    trail.file.close()


DAY = 1_790_000_000.0  # 2026-09-21 UTC, mid-day


def test_the_archive_file_syncs_to_disk_off_the_writer_s_thread(tmp_path: Path) -> None:
    """fsync(2) took the event loop with it for as long as the disk took, every
    ``fsync_interval``: it runs on the file's own thread, and the writer goes on meanwhile."""
    started, release = threading.Event(), threading.Event()
    synced: list[tuple[int, str]] = []

    def slow_disk(fd: int) -> None:
        started.set()
        assert release.wait(10), "the test never let the disk finish"
        synced.append((fd, threading.current_thread().name))

    archive = ArchiveFile(tmp_path, "w1", 0.0, fsync=slow_disk)
    archive.write([b'{"seq":1}\n'], DAY)  # due at once: fsync_interval 0
    assert started.wait(10)  # the disk is busy with it, and the write has returned
    archive.write([b'{"seq":2}\n'], DAY + 0.5)  # one sync at a time: this one waits its turn
    assert synced == []
    release.set()
    archive.close()  # waits for the flusher: its fsync, then the day's sync and close
    assert [name.startswith("audit-fsync") for _, name in synced] == [True, True]
    assert threading.current_thread().name not in {name for _, name in synced}
    [written] = tmp_path.glob("audit-*.w1.jsonl")
    assert written.read_bytes() == b'{"seq":1}\n{"seq":2}\n'


def test_a_day_s_file_is_synced_before_it_is_closed_and_the_next_one_is_written(
    tmp_path: Path,
) -> None:
    """At midnight UTC the day's file is handed to the flusher (synced, then closed, after
    whatever it still had to do) and the new day's lines go to a file of their own."""
    calls: list[tuple[str, int]] = []

    def disk(fd: int) -> None:
        os.fstat(fd)  # still open: the close comes after the sync
        calls.append(("fsync", fd))

    archive = ArchiveFile(tmp_path, "w1", 3600.0, fsync=disk)
    archive.write([b"a\n"], DAY)
    archive.write([b"b\n"], DAY + 86_400)
    archive.close()
    first, second = calls[0][1], calls[-1][1]
    fds = [fd for _, fd in calls]
    # The old day's syncs (its interval's, then the one before its close) all come before
    # anything of the new day's; every sync found its file still open (``disk``).
    assert first != second and set(fds) == {first, second}
    assert fds == sorted(fds, key=lambda fd: fd == second)
    assert sorted(path.read_bytes() for path in tmp_path.glob("audit-*.w1.jsonl")) == [
        b"a\n",
        b"b\n",
    ]


def test_a_failed_fsync_is_reported_and_the_next_interval_tries_again(tmp_path: Path) -> None:
    """The disk refused a sync (EIO): the error reaches ``on_error`` (the trail counts it in
    ``lookup_proxy_audit_write_errors_total{sink="file"}`` and logs it), the lines stay
    written, and the next interval's sync is tried."""
    failures: list[OSError] = []
    attempts: list[int] = []

    def failing_once(fd: int) -> None:
        attempts.append(fd)
        if len(attempts) == 1:
            raise OSError(errno.EIO, "Input/output error")

    archive = ArchiveFile(tmp_path, "w1", 1.0, on_error=failures.append, fsync=failing_once)
    archive.write([b"a\n"], DAY)
    archive.close()  # drains the flusher; a new one starts with the next write
    archive.write([b"b\n"], DAY + 2)
    archive.close()
    assert [failure.errno for failure in failures] == [errno.EIO]
    assert len(attempts) == 4  # first write's sync (failed), close's, second write's, close's
    [written] = tmp_path.glob("audit-*.w1.jsonl")
    assert written.read_bytes() == b"a\nb\n"


async def test_the_trail_counts_and_logs_a_failed_sync(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What the trail does with a sync the disk refused: a write error of the file sink, and an
    error line naming it without a traceback (a disk error is no bug of ours)."""
    registry = CollectorRegistry()
    trail = _file_trail(tmp_path / "archive", registry)

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    trail.file._fsync = failing  # the disk fails; everything else is the trail's own
    with caplog.at_level("ERROR", logger="lookup_proxy.audit"):
        trail.write("admin", {"action": "unlock"})
        await trail.flush()
        trail.file.close()  # waits for the flusher's syncs
    lines = [r for r in caplog.records if "synced" in r.getMessage()]
    assert lines and all(r.exc_info is None for r in lines)
    assert lines[0].__dict__["error"] == "Input/output error"
    errors = registry.get_sample_value("lookup_proxy_audit_write_errors_total", {"sink": "file"})
    assert errors == len(lines)
    [written] = (tmp_path / "archive").glob("audit-*.jsonl")
    assert b'"action":"unlock"' in written.read_bytes()


def test_the_proxy_refuses_to_start_without_its_audit_keys(backend: str) -> None:
    """No pseudonym key or no signing key in the environment: a config error naming it."""
    from lookup_proxy.app import build_app
    from lookup_proxy.errors import ConfigError
    from tests.harness import ENV

    p: Policy = policy(backend)
    for missing in ("LOOKUP_PROXY_PSEUDONYM_KEYS", "LOOKUP_PROXY_AUDIT_SIGNING_KEY"):
        environ = {k: v for k, v in ENV.items() if k != missing}
        with pytest.raises(ConfigError) as caught:
            build_app(p, base_dir=Path("."), environ=environ)
        assert caught.value.problems[0].key == missing
