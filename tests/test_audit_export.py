"""The exporter against a real redis-server: stream -> archive, idempotent, ordered, durable."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from lookup_proxy.audit.chain import Chain, iso_at
from lookup_proxy.audit.export import (
    Exporter,
    ExportError,
    ExportMetrics,
    open_stream_client,
    stream_key,
)
from lookup_proxy.errors import ConfigError

KEY = stream_key("lp")
T0 = 1_796_283_601.0  # 2026-12-03T07:40:01Z


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def client(fresh_redis: str) -> AsyncIterator[Any]:
    opened = open_stream_client("URL", False, {"URL": fresh_redis})
    yield opened
    await opened.aclose()


def _records(chain_id: str, n: int, start: float = T0) -> list[bytes]:
    chain = Chain(chain_id, None, every=1000, interval=3600)
    out = []
    for i in range(n):
        record: dict[str, object] = {
            "v": 1,
            "kind": "lookup",
            "at": iso_at(start + i),
            "request_id": f"{chain_id}-{i}",
        }
        out.append(orjson.dumps(chain.link(record, start + i)))
    return out


async def _add(client: Any, raws: list[bytes], at: float = T0) -> list[str]:
    ids = []
    for i, raw in enumerate(raws):
        ids.append((await client.xadd(KEY, {"r": raw}, id=f"{int(at * 1000) + i}-0")).decode())
    return ids


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


async def test_stream_key_matches_contract() -> None:
    assert stream_key("lp") == "lp:{audit}:log"


async def test_one_shot_appends_records_unchanged_and_moves_the_position(
    client: Any, tmp_path: Path
) -> None:
    raws = _records("a", 3)
    # any key order, as the writer sends it: bytes must be archived as they are
    raws[1] = orjson.dumps(dict(reversed(list(orjson.loads(raws[1]).items()))))
    ids = await _add(client, raws)
    clock = Clock(T0 + 10)
    registry = CollectorRegistry()
    exporter = Exporter(client, tmp_path, KEY, clock=clock, metrics=ExportMetrics(registry))
    assert await exporter.run_once() == 3
    assert _lines(tmp_path / "audit-2026-12-03.jsonl") == raws
    assert orjson.loads((tmp_path / ".export-position").read_bytes()) == {"stream": ids[-1]}
    assert registry.get_sample_value("lookup_proxy_audit_exported_total") == 3
    assert registry.get_sample_value("lookup_proxy_audit_export_lag_seconds") == 0
    assert await client.xlen(KEY) == 3  # never trimmed by the exporter
    # nothing new: nothing written
    assert await exporter.run_once() == 0
    assert len(_lines(tmp_path / "audit-2026-12-03.jsonl")) == 3


async def test_files_by_utc_day_of_writing(client: Any, tmp_path: Path) -> None:
    clock = Clock(T0 + 10)
    exporter = Exporter(client, tmp_path, KEY, clock=clock)
    first = _records("a", 2)
    await _add(client, first)
    await exporter.run_once()
    clock.now = T0 + 86_400
    later = _records("b", 1, start=T0 + 86_000)
    await _add(client, later, at=T0 + 86_000)  # made on the 3rd, written on the 4th
    await exporter.run_once()
    assert _lines(tmp_path / "audit-2026-12-03.jsonl") == first
    assert _lines(tmp_path / "audit-2026-12-04.jsonl") == later


async def test_settle_leaves_the_newest_entries_for_the_next_round(
    client: Any, tmp_path: Path
) -> None:
    raws = _records("a", 2)
    await _add(client, raws[:1], at=T0)
    await _add(client, raws[1:], at=T0 + 5)
    clock = Clock(T0 + 5.5)
    exporter = Exporter(client, tmp_path, KEY, clock=clock, settle=1.0)
    assert await exporter.run_once() == 1
    clock.now = T0 + 6
    assert await exporter.run_once() == 1
    assert _lines(tmp_path / "audit-2026-12-03.jsonl") == raws


async def test_rerun_after_crash_between_append_and_position_skips_archived(
    client: Any, tmp_path: Path
) -> None:
    raws = _records("a", 5)
    ids = await _add(client, raws)
    clock = Clock(T0 + 10)
    await Exporter(client, tmp_path, KEY, clock=clock).run_once()
    # as if the process died after fsyncing the lines but before writing the position
    (tmp_path / ".export-position").write_bytes(orjson.dumps({"stream": ids[1]}))
    more = _records("b", 2)
    await _add(client, more, at=T0 + 1)
    registry = CollectorRegistry()
    exporter = Exporter(client, tmp_path, KEY, clock=clock, metrics=ExportMetrics(registry))
    assert await exporter.run_once() == 2
    assert _lines(tmp_path / "audit-2026-12-03.jsonl") == raws + more
    assert (
        registry.get_sample_value("lookup_proxy_audit_export_skipped_total", {"why": "duplicate"})
        == 3
    )


async def test_lost_position_file_duplicates_nothing(client: Any, tmp_path: Path) -> None:
    raws = _records("a", 4)
    await _add(client, raws)
    clock = Clock(T0 + 10)
    await Exporter(client, tmp_path, KEY, clock=clock).run_once()
    (tmp_path / ".export-position").unlink()
    clock.now = T0 + 86_400  # even a day later, into another file
    assert await Exporter(client, tmp_path, KEY, clock=clock).run_once() == 0
    assert not (tmp_path / "audit-2026-12-04.jsonl").exists()
    (tmp_path / ".export-position").write_bytes(b"{garbage")
    assert await Exporter(client, tmp_path, KEY, clock=clock).run_once() == 0


async def test_a_chains_records_are_archived_in_seq_order(client: Any, tmp_path: Path) -> None:
    a, b = _records("a", 3), _records("b", 2)
    # concurrent lookups reached Redis out of order: a3 a1 b1 a2 b2 (duplicate a1 too)
    await _add(client, [a[2], a[0], b[0], a[1], a[0], b[1]])
    await Exporter(client, tmp_path, KEY, clock=Clock(T0 + 10)).run_once()
    assert _lines(tmp_path / "audit-2026-12-03.jsonl") == [a[0], a[1], b[0], a[2], b[1]]


async def test_entries_that_are_not_records_are_not_archived(client: Any, tmp_path: Path) -> None:
    [good] = _records("a", 1)
    await client.xadd(KEY, {"x": b"no r field"}, id=f"{int(T0 * 1000)}-0")
    await client.xadd(KEY, {"r": b"not json"}, id=f"{int(T0 * 1000)}-1")
    await client.xadd(KEY, {"r": b'{"chain": "a"}'}, id=f"{int(T0 * 1000)}-2")
    await client.xadd(KEY, {"r": b'{"chain":"z",\n"seq":1}'}, id=f"{int(T0 * 1000)}-3")
    await client.xadd(KEY, {"r": good}, id=f"{int(T0 * 1000)}-4")
    registry = CollectorRegistry()
    exporter = Exporter(
        client, tmp_path, KEY, clock=Clock(T0 + 10), metrics=ExportMetrics(registry)
    )
    assert await exporter.run_once() == 1
    assert _lines(tmp_path / "audit-2026-12-03.jsonl") == [good]
    # the entry with a newline is two lines, neither a record
    assert (
        registry.get_sample_value("lookup_proxy_audit_export_skipped_total", {"why": "invalid"})
        == 5
    )


async def test_an_entry_holding_several_records_archives_each(client: Any, tmp_path: Path) -> None:
    """The guard's store appends a script call's records as one entry, a line each: every line
    is archived (in its chain's order), a line that is not a record is skipped alone, and the
    lag counts records, not entries."""
    a = _records("a", 4)
    await client.xadd(KEY, {"r": b"\n".join([a[1], a[0]])}, id=f"{int(T0 * 1000)}-0")
    await client.xadd(KEY, {"r": b"\n".join([b"not json", a[2], a[3]])}, id=f"{int(T0 * 1000)}-1")
    registry = CollectorRegistry()
    exporter = Exporter(
        client, tmp_path, KEY, clock=Clock(T0 + 10), metrics=ExportMetrics(registry)
    )
    assert (await exporter.lag()).pending == 5
    assert await exporter.run_once() == 4
    assert _lines(tmp_path / "audit-2026-12-03.jsonl") == a
    assert (
        registry.get_sample_value("lookup_proxy_audit_export_skipped_total", {"why": "invalid"})
        == 1
    )
    assert (await exporter.lag()).pending == 0


async def test_an_unterminated_line_left_by_a_crash_is_cut_and_rewritten(
    client: Any, tmp_path: Path
) -> None:
    raws = _records("a", 3)
    await _add(client, raws)
    # a previous run died mid-write: two lines whole, the third cut short, no position
    (tmp_path / "audit-2026-12-03.jsonl").write_bytes(
        raws[0] + b"\n" + raws[1] + b"\n" + raws[2][:20]
    )
    assert await Exporter(client, tmp_path, KEY, clock=Clock(T0 + 10)).run_once() == 1
    assert _lines(tmp_path / "audit-2026-12-03.jsonl") == raws


async def test_a_failed_write_keeps_the_position_and_retries(client: Any, tmp_path: Path) -> None:
    raws = _records("a", 2)
    await _add(client, raws)
    blocker = tmp_path / "audit-2026-12-03.jsonl"
    blocker.mkdir()  # the day file cannot be opened for writing (as on a full or broken disk)
    exporter = Exporter(client, tmp_path, KEY, clock=Clock(T0 + 10))
    with pytest.raises(ExportError, match=r"cannot (read|open) .*audit-2026-12-03\.jsonl"):
        await exporter.run_once()
    assert not (tmp_path / ".export-position").exists()
    blocker.rmdir()
    assert await exporter.run_once() == 2
    assert _lines(blocker) == raws


async def test_lag_counts_pending_and_the_oldest_age(client: Any, tmp_path: Path) -> None:
    exporter = Exporter(client, tmp_path, KEY, clock=Clock(T0 + 100))
    assert (await exporter.lag()).pending == 0
    await _add(client, _records("a", 3), at=T0 + 40)
    lag = await exporter.lag()
    assert (lag.pending, lag.capped, lag.oldest_age) == (3, False, 60.0)
    await exporter.run_once()
    lag = await exporter.lag()
    assert (lag.pending, lag.oldest_age) == (0, 0.0)


async def test_follow_exports_continuously_and_reports_lag(client: Any, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    exporter = Exporter(client, tmp_path, KEY, settle=0.0, metrics=ExportMetrics(registry))
    stop = asyncio.Event()
    task = asyncio.create_task(exporter.follow(0.05, stop))
    import time

    now = time.time()
    raws = _records("live", 4, start=now)
    await _add(client, raws[:2], at=now)
    await _add(client, raws[2:], at=now + 0.01)
    path = tmp_path / f"audit-{time.strftime('%Y-%m-%d', time.gmtime(time.time()))}.jsonl"
    for _ in range(200):
        if path.exists() and len(_lines(path)) == 4:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert _lines(path) == raws
    assert registry.get_sample_value("lookup_proxy_audit_exported_total") == 4
    assert registry.get_sample_value("lookup_proxy_audit_export_lag_seconds") == 0


async def test_follow_survives_an_unreachable_redis(tmp_path: Path) -> None:
    dead = open_stream_client("URL", False, {"URL": "redis://127.0.0.1:1/0"})
    registry = CollectorRegistry()
    exporter = Exporter(dead, tmp_path, KEY, metrics=ExportMetrics(registry))
    stop = asyncio.Event()
    task = asyncio.create_task(exporter.follow(0.01, stop))
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(task, 5)
    await dead.aclose()
    errors = registry.get_sample_value("lookup_proxy_audit_export_errors_total")
    assert errors is not None and errors >= 1


def test_missing_url_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="LOOKUP_PROXY_REDIS_URL"):
        open_stream_client("LOOKUP_PROXY_REDIS_URL", False, {})


def test_position_file_written_atomically(tmp_path: Path) -> None:
    from lookup_proxy.audit.files import write_atomically

    target = tmp_path / ".export-position"
    write_atomically(target, b'{"stream":"1-0"}')
    write_atomically(target, b'{"stream":"2-0"}')
    assert target.read_bytes() == b'{"stream":"2-0"}'
    assert sorted(os.listdir(tmp_path)) == [".export-position"]


async def test_a_write_cut_short_is_undone_and_retried(client: Any, tmp_path: Path) -> None:
    """As on a full disk: the write stops part-way (here at a file-size limit, EFBIG); the
    partial lines are cut off, the position stays, and the next round writes them whole."""
    import resource
    import signal

    first, rest = _records("a", 1), _records("b", 20)
    await _add(client, first)
    exporter = Exporter(client, tmp_path, KEY, clock=Clock(T0 + 10))
    await exporter.run_once()
    path = tmp_path / "audit-2026-12-03.jsonl"
    size = path.stat().st_size
    position = (tmp_path / ".export-position").read_bytes()
    await _add(client, rest, at=T0 + 1)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 300, hard))
    try:
        with pytest.raises(ExportError, match="cannot write"):
            await exporter.run_once()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert path.stat().st_size == size
    assert (tmp_path / ".export-position").read_bytes() == position
    assert await exporter.run_once() == 20
    assert _lines(path) == first + rest


SHIPPED = Path(__file__).resolve().parents[1] / "config" / "policy.toml"


def _policy(directory: Path, kind: str = "redis") -> Path:
    text = SHIPPED.read_text(encoding="utf-8")
    assert 'kind = "memory"\nurl_env' in text
    copy = directory / "policy.toml"
    copy.write_text(text.replace('kind = "memory"\nurl_env', f'kind = "{kind}"\nurl_env'))
    return copy


def test_cli_export_one_shot(
    fresh_redis: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import time

    import redis

    from lookup_proxy.cli import main

    sync = redis.Redis.from_url(fresh_redis)
    raws = _records("cli", 3, start=time.time() - 10)
    for raw in raws:
        sync.xadd(KEY, {"r": raw}, id=f"{int((time.time() - 10) * 1000)}-*")
    sync.close()
    policy = _policy(tmp_path)
    monkeypatch.setenv("LOOKUP_PROXY_REDIS_URL", fresh_redis)
    assert main(["audit", "export", "--config", str(policy)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"exported 3 record(s) to {tmp_path / 'audit'}; 0 pending, oldest 0.0s")
    [day_file] = sorted((tmp_path / "audit").glob("audit-*.jsonl"))
    assert _lines(day_file) == raws


def test_cli_export_refuses_memory_store_and_missing_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lookup_proxy.cli import main

    assert main(["audit", "export", "--config", str(_policy(tmp_path, "memory"))]) == 2
    assert "store.kind = 'memory'" in capsys.readouterr().err
    monkeypatch.delenv("LOOKUP_PROXY_REDIS_URL", raising=False)
    assert main(["audit", "export", "--config", str(_policy(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "<environment>: LOOKUP_PROXY_REDIS_URL: expected a Redis URL" in err
    assert "Traceback" not in err


def test_cli_export_unreachable_redis_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lookup_proxy.cli import main

    monkeypatch.setenv("LOOKUP_PROXY_REDIS_URL", "redis://127.0.0.1:1/0")
    assert main(["audit", "export", "--config", str(_policy(tmp_path))]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: audit stream unavailable:")
    assert "Traceback" not in err


def test_cli_export_overrides_store_kind_and_archive_as_serve_does(
    fresh_redis: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A memory-store policy file whose proxies run with ``--store-kind redis`` (the compose
    file): the exporter takes the same override, and ``--archive`` names where to write."""
    import time

    import redis

    from lookup_proxy.cli import main

    sync = redis.Redis.from_url(fresh_redis)
    raws = _records("over", 2, start=time.time() - 10)
    for raw in raws:
        sync.xadd(KEY, {"r": raw}, id=f"{int((time.time() - 10) * 1000)}-*")
    sync.close()
    monkeypatch.setenv("LOOKUP_PROXY_REDIS_URL", fresh_redis)
    archive = tmp_path / "elsewhere"
    argv = ["audit", "export", "--config", str(_policy(tmp_path, "memory"))]
    assert main([*argv, "--store-kind", "redis", "--archive", str(archive)]) == 0
    capsys.readouterr()
    [day_file] = sorted(archive.glob("audit-*.jsonl"))
    assert _lines(day_file) == raws
