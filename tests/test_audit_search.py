"""Searching the archive through its incremental SQLite index (lookup_proxy/audit/archive.py)."""

from __future__ import annotations

import hashlib
import hmac
import multiprocessing
import sqlite3
import threading
from pathlib import Path
from typing import Any

import orjson

from lookup_proxy.audit.archive import OUTCOME_FIELDS, AuditArchive
from lookup_proxy.audit.chain import Chain, Signer, iso_at

T0 = 1_796_283_601.0  # 2026-12-03T07:40:01Z
KEY = b"k" * 32


def subject(number: str, key: bytes = KEY) -> str:
    return hmac.new(key, number.encode(), hashlib.sha256).hexdigest()


class Writer:
    """Writes chained records into one archive file, as the exporter would."""

    def __init__(self, path: Path, chain_id: str = "p1") -> None:
        self.path = path
        self.chain = Chain(chain_id, None, every=10_000, interval=3600)

    def write(self, kind: str, now: float, **fields: Any) -> dict[str, object]:
        record: dict[str, object] = {"v": 1, "kind": kind, "at": iso_at(now), **fields}
        self.chain.link(record, now)
        with self.path.open("ab") as file:
            file.write(orjson.dumps(record) + b"\n")
        return record

    def lookup(self, now: float, rid: str, employee: str, store: str, number: str) -> None:
        self.write(
            "lookup",
            now,
            request_id=rid,
            employee=employee,
            store=store,
            region="R1",
            subject=subject(number),
            key_id="k1",
            last4=number[-4:],
        )

    def outcome(self, now: float, rid: str, outcome: str = "found") -> None:
        self.write(
            "outcome",
            now,
            of=rid,
            decision="allow",
            rule=None,
            flags=[],
            locked=[],
            cause=None,
            status=200,
            upstream_status=200,
            outcome=outcome,
            latency_ms=12.5,
            fields=None,
        )


def _archive(tmp_path: Path) -> tuple[Path, Writer]:
    directory = tmp_path / "audit"
    directory.mkdir()
    writer = Writer(directory / "audit-2026-12-03.jsonl")
    writer.lookup(T0, "r1", "E1", "S1", "01012345678")
    writer.outcome(T0 + 0.1, "r1", "found")
    writer.lookup(T0 + 10, "r2", "E2", "S1", "01012345678")
    writer.lookup(T0 + 20, "r3", "E1", "S2", "01099998888")
    writer.outcome(T0 + 20.1, "r3", "not_found")
    writer.outcome(T0 + 10.5, "r2", "found")  # answers can finish out of order
    writer.lookup(T0 + 30, "r4", "E3", "S2", "01055556666")  # no outcome (proxy died)
    return directory, writer


def test_search_by_subject_newest_first_merged_with_outcomes(tmp_path: Path) -> None:
    directory, _ = _archive(tmp_path)
    with AuditArchive(directory) as archive:
        found = archive.search(subjects=[subject("01012345678")])
    assert [r["request_id"] for r in found] == ["r2", "r1"]
    assert [r["outcome"] for r in found] == ["found", "found"]
    first = found[1]
    assert first["employee"] == "E1"
    assert first["decision"] == "allow"
    assert first["latency_ms"] == 12.5
    assert first["kind"] == "lookup"
    assert first["seq"] == 1  # the lookup's own chain fields, not the outcome's
    assert "of" not in first


def test_search_by_employee_and_store(tmp_path: Path) -> None:
    directory, _ = _archive(tmp_path)
    archive = AuditArchive(directory)
    assert [r["request_id"] for r in archive.search(employee="E1")] == ["r3", "r1"]
    assert [r["request_id"] for r in archive.search(store="S2")] == ["r4", "r3"]
    assert [r["outcome"] for r in archive.search(store="S2")] == [None, "not_found"]
    missing = archive.search(employee="E3")[0]
    assert all(missing[name] is None for name in OUTCOME_FIELDS)
    assert archive.search(employee="nobody") == []
    # filters combine
    assert [r["request_id"] for r in archive.search(employee="E1", store="S2")] == ["r3"]
    archive.close()


def test_since_until_limit(tmp_path: Path) -> None:
    directory, _ = _archive(tmp_path)
    archive = AuditArchive(directory)
    assert [r["request_id"] for r in archive.search(store="S1", since=iso_at(T0 + 5))] == ["r2"]
    assert [r["request_id"] for r in archive.search(store="S1", until=iso_at(T0 + 10))] == ["r1"]
    assert [r["request_id"] for r in archive.search(employee="E1", limit=1)] == ["r3"]
    assert archive.search(employee="E1", since="2026-12-04") == []
    assert len(archive.search(employee="E1", since="2026-12-03", until="2026-12-04")) == 2
    archive.close()


def test_several_keys_after_a_rotation(tmp_path: Path) -> None:
    directory, writer = _archive(tmp_path)
    old = subject("01012345678", b"o" * 32)
    writer.write("lookup", T0 - 100, request_id="r0", employee="E9", store="S9", subject=old)
    archive = AuditArchive(directory)
    found = archive.search(subjects=[subject("01012345678"), old])
    assert [r["request_id"] for r in found] == ["r2", "r1", "r0"]
    archive.close()


def test_incremental_catch_up_and_partial_lines(tmp_path: Path) -> None:
    directory, writer = _archive(tmp_path)
    archive = AuditArchive(directory)
    assert len(archive.search(employee="E1")) == 2
    writer.lookup(T0 + 40, "r5", "E1", "S1", "01012345678")
    writer.outcome(T0 + 40.1, "r5")
    # a line being written right now is not indexed until it is complete
    line = orjson.dumps({"v": 1, "kind": "lookup", "employee": "E1", "at": iso_at(T0 + 50)})
    with writer.path.open("ab") as file:
        file.write(line[:20])
    assert [r["request_id"] for r in archive.search(employee="E1")] == ["r5", "r3", "r1"]
    with writer.path.open("ab") as file:
        file.write(line[20:] + b"\n")
    assert len(archive.search(employee="E1")) == 4
    # a new day's file and a writer's own file are picked up too
    other = Writer(directory / "audit-2026-12-04.p2.jsonl", "p2")
    other.lookup(T0 + 86_400, "q1", "E1", "S1", "01012345678")
    assert archive.search(employee="E1")[0]["request_id"] == "q1"
    assert archive.catch_up() == 0
    archive.close()


def test_a_copy_in_two_files_is_returned_once(tmp_path: Path) -> None:
    directory, writer = _archive(tmp_path)
    lines = writer.path.read_bytes().splitlines(keepends=True)
    (directory / "audit-2026-12-03.p1.jsonl").write_bytes(lines[0])
    with AuditArchive(directory) as archive:
        assert [r["request_id"] for r in archive.search(employee="E1")] == ["r3", "r1"]


def test_reused_request_id_joins_the_following_outcome(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    directory.mkdir()
    writer = Writer(directory / "audit-2026-12-03.jsonl")
    writer.lookup(T0, "same-id-1", "E1", "S1", "01012345678")
    writer.outcome(T0 + 1, "same-id-1", "found")
    writer.lookup(T0 + 2, "same-id-1", "E1", "S1", "01012345678")
    writer.outcome(T0 + 3, "same-id-1", "not_found")
    with AuditArchive(directory) as archive:
        assert [r["outcome"] for r in archive.search(employee="E1")] == ["not_found", "found"]


def test_a_rewritten_file_is_indexed_again(tmp_path: Path) -> None:
    directory, writer = _archive(tmp_path)
    archive = AuditArchive(directory)
    assert len(archive.search(employee="E1")) == 2
    lines = writer.path.read_bytes().splitlines(keepends=True)
    writer.path.write_bytes(b"".join(lines[:1]))
    assert [r["request_id"] for r in archive.search(employee="E1")] == ["r1"]
    archive.close()


def test_index_can_be_deleted_and_rebuilt(tmp_path: Path) -> None:
    directory, _ = _archive(tmp_path)
    with AuditArchive(directory) as archive:
        before = archive.search(store="S1")
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        (directory / name).unlink(missing_ok=True)
    with AuditArchive(directory) as archive:
        assert archive.search(store="S1") == before


def test_index_schema_is_one_narrow_table_per_path(tmp_path: Path) -> None:
    directory, _ = _archive(tmp_path)
    with AuditArchive(directory) as archive:
        archive.catch_up()
    db = sqlite3.connect(directory / "index.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    counts = {
        table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        for table in ("by_subject", "by_employee", "by_store", "outcomes")
    }
    assert counts == {"by_subject": 4, "by_employee": 4, "by_store": 4, "outcomes": 3}
    plan = " ".join(
        str(row)
        for row in db.execute(
            "EXPLAIN QUERY PLAN SELECT at, file, off FROM by_subject WHERE subject IN (1, 2) "
            "AND at >= 0 AND at < 9 ORDER BY at DESC LIMIT 5"
        )
    )
    assert "SEARCH by_subject USING PRIMARY KEY" in plan
    db.close()


def test_case_events_and_records_by_kind(tmp_path: Path) -> None:
    directory, writer = _archive(tmp_path)
    writer.write(
        "case",
        T0 + 50,
        case="C1",
        event="opened",
        employee="E1",
        rules=["r"],
        by=None,
        note=None,
        resolution=None,
    )
    writer.write(
        "admin",
        T0 + 60,
        request_id="a1",
        employee="SEC1",
        client="10.0.0.1",
        action="cases.acknowledge",
        target="C1",
        note="looking",
        status=200,
        query=None,
    )
    writer.write(
        "case",
        T0 + 70,
        case="C1",
        event="acknowledged",
        employee="E1",
        rules=["r"],
        by="SEC1",
        note="looking",
        resolution=None,
    )
    writer.write(
        "case",
        T0 + 80,
        case="C2",
        event="opened",
        employee="E2",
        rules=["r"],
        by=None,
        note=None,
        resolution=None,
    )
    with AuditArchive(directory) as archive:
        assert [e["event"] for e in archive.case_events("C1")] == ["opened", "acknowledged"]
        assert [r["action"] for r in archive.records(kind="admin")] == ["cases.acknowledge"]
        assert [r["case"] for r in archive.records(kind="case", limit=2)] == ["C2", "C1"]


def _search_in_process(directory: str) -> list[str]:
    with AuditArchive(directory) as archive:
        return [str(r["request_id"]) for r in archive.search(store="S9", limit=10_000)]


def test_several_processes_catch_up_and_search_at_once(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    directory.mkdir()
    lines = []
    chain = Chain("p", None, every=10**9, interval=1e9)
    for i in range(30_000):
        record: dict[str, object] = {
            "v": 1,
            "kind": "lookup",
            "at": iso_at(T0 + i),
            "request_id": f"r{i}",
            "employee": f"E{i % 50}",
            "store": "S9" if i % 10 == 0 else "S1",
            "subject": None,
        }
        lines.append(orjson.dumps(chain.link(record, T0 + i)) + b"\n")
    (directory / "audit-2026-12-03.jsonl").write_bytes(b"".join(lines[:15_000]))
    (directory / "audit-2026-12-04.jsonl").write_bytes(b"".join(lines[15_000:]))
    context = multiprocessing.get_context("spawn")
    with context.Pool(3) as pool:
        results = pool.map(_search_in_process, [str(directory)] * 3)
    expected = [f"r{i}" for i in range(29_990, -1, -10)]
    assert results == [expected] * 3
    db = sqlite3.connect(directory / "index.sqlite")
    assert db.execute("SELECT count(*) FROM by_employee").fetchone() == (30_000,)
    db.close()


SHIPPED = Path(__file__).resolve().parents[1] / "config" / "policy.toml"


def test_cli_search_by_number_in_any_format(tmp_path: Path, monkeypatch: Any, capsys: Any) -> None:
    import json

    from lookup_proxy.cli import main

    _archive(tmp_path)
    policy = tmp_path / "policy.toml"
    policy.write_text(SHIPPED.read_text(encoding="utf-8"))
    monkeypatch.setenv("LOOKUP_PROXY_PSEUDONYM_KEYS", f"k2:{'n' * 32},k1:{KEY.decode()}")
    monkeypatch.setenv("LOOKUP_PROXY_AUDIT_SIGNING_KEY", Signer.generate().private_pem().decode())
    argv = ["audit", "search", "--config", str(policy), "--as", "SEC1"]
    assert main([*argv, "--number", "+82 10-1234-5678", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)["records"]
    assert [r["request_id"] for r in records] == ["r2", "r1"]
    assert main([*argv, "--employee", "E1", "--since", "2026-12-03T07:40:10Z"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "2026-12-03T07:40:21.000Z  E1  S2  -  -  8888  allow  not_found  r3"
    ]
    assert captured.err == "1 lookup(s)\n"
    # each search is itself audited: who searched, for what (the number only as pseudonyms)
    searches = [
        json.loads(line)
        for path in sorted((tmp_path / "audit").glob("audit-*.*.jsonl"))
        for line in path.read_bytes().splitlines()
        if json.loads(line)["kind"] == "admin"
    ]
    assert [(r["employee"], r["action"]) for r in searches] == [("SEC1", "audit.search")] * 2
    assert len(searches[0]["query"]["subjects"]) == 2 and searches[1]["target"] == "E1"
    assert "1234-5678" not in json.dumps(searches) and "12345678" not in json.dumps(searches)
    assert main([*argv, "--number", "12345"]) == 2
    assert capsys.readouterr().err.startswith("error: --number: ")
    monkeypatch.delenv("LOOKUP_PROXY_PSEUDONYM_KEYS")
    assert main([*argv, "--number", "010-1234-5678"]) == 2
    assert "LOOKUP_PROXY_PSEUDONYM_KEYS" in capsys.readouterr().err


def test_threads_opening_a_new_index_at_once_all_get_it(tmp_path: Path) -> None:
    """Sixteen searches opening a fresh index at the same moment, forty times: switching it to
    WAL mode could answer "database is locked" to one of them without waiting (a transparency
    query failed that way, about one run in thirty); every one now gets its connection."""
    failures: list[BaseException] = []
    for trial in range(40):
        directory = tmp_path / f"audit-{trial}"
        directory.mkdir()
        start = threading.Barrier(16)

        def open_index(directory: Path = directory, start: threading.Barrier = start) -> None:
            archive = AuditArchive(directory)
            start.wait()
            try:
                archive.db.execute("SELECT 1")
            except BaseException as exc:  # collected and asserted below
                failures.append(exc)
            finally:
                archive.close()

        threads = [threading.Thread(target=open_index) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []
