"""Searching the archive: "who looked up this customer", an employee's lookups, a store's.

The archive's files are the truth; ``index.sqlite`` beside them only says where to look. It is
caught up at every search from the byte offset it reached in each file (complete lines only), so
it is never stale and never needs a rebuild; deleting it costs one full re-read.

Designed for a year of a 3,000-employee chain (some 75 million lookups): one narrow table per
access path, clustered on ``(key, at)`` (``WITHOUT ROWID``, so the row *is* the index entry)::

    by_subject(subject, at, file, off)   subject: first 60 bits of the pseudonym
    by_employee(employee, at, file, off) employee, store: 63-bit BLAKE2b of the id
    by_store(store, at, file, off)
    outcomes(link, file, off)            link: 63-bit hash of (chain, request_id)
    others(kind, key, at, file, off)     admin, case, transparency, checkpoint records

A search is one range scan of one table, newest first, then one ``pread`` per hit. The keys are
hashes, so every hit is checked against the record it points at (a collision is dropped, never
shown). Several processes may search at once: SQLite's WAL lets readers run while one catches
up, and the catching up happens in ``BEGIN IMMEDIATE`` transactions that re-read the offsets,
so no line is indexed twice.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from lookup_proxy.audit.files import INDEX_FILE, archive_files

__all__ = ["OUTCOME_FIELDS", "AuditArchive", "parse_time"]

OUTCOME_FIELDS = (
    "decision",
    "rule",
    "flags",
    "locked",
    "cause",
    "status",
    "upstream_status",
    "outcome",
    "latency_ms",
    "fields",
)
"""An outcome's fields merged into its lookup (all null when no outcome was recorded)."""

_NOT_MERGED = frozenset({"v", "kind", "at", "chain", "seq", "prev", "hash", "sig", "of"})
_COMMIT_EVERY = 50_000
_CHUNK = 8 << 20
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, indexed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS by_subject (
    subject INTEGER NOT NULL, at INTEGER NOT NULL, file INTEGER NOT NULL, off INTEGER NOT NULL,
    PRIMARY KEY (subject, at, file, off)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS by_employee (
    employee INTEGER NOT NULL, at INTEGER NOT NULL, file INTEGER NOT NULL, off INTEGER NOT NULL,
    PRIMARY KEY (employee, at, file, off)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS by_store (
    store INTEGER NOT NULL, at INTEGER NOT NULL, file INTEGER NOT NULL, off INTEGER NOT NULL,
    PRIMARY KEY (store, at, file, off)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outcomes (
    link INTEGER NOT NULL, file INTEGER NOT NULL, off INTEGER NOT NULL,
    PRIMARY KEY (link, file, off)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS others (
    kind TEXT NOT NULL, key INTEGER NOT NULL, at INTEGER NOT NULL, file INTEGER NOT NULL,
    off INTEGER NOT NULL,
    PRIMARY KEY (kind, key, at, file, off)
) WITHOUT ROWID;
"""
_TABLES = ("by_subject", "by_employee", "by_store", "outcomes", "others")


def _h(text: str) -> int:
    """A 63-bit key for an id (SQLite integers are signed 64-bit)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest()) >> 1


def _subject_key(subject: str) -> int | None:
    try:
        return int(subject[:15], 16)
    except ValueError:
        return None


def parse_time(value: str | datetime) -> int:
    """Milliseconds since the epoch of an ISO-8601 time or date (naive means UTC)."""
    when = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _at_ms(at: object) -> int | None:
    if not isinstance(at, str):
        return None
    try:
        return parse_time(at)
    except ValueError:
        return None


def _link(chain: object, request_id: object) -> int | None:
    if not isinstance(chain, str) or not isinstance(request_id, str):
        return None
    return _h(chain + "\0" + request_id)


def _case_key(record: dict[str, Any]) -> int | None:
    kind = record.get("kind")
    key: object
    if kind == "case":
        key = record.get("case")
    elif kind == "admin":
        key = record.get("employee")
    elif kind == "transparency":
        subject = record.get("subject")
        return _subject_key(subject) if isinstance(subject, str) else None
    else:
        key = record.get("chain")
    return _h(key) if isinstance(key, str) else 0


INDEX_BUSY_TIMEOUT = 60.0
"""Seconds a connection to the search index waits for another's lock."""


def _write_ahead(db: sqlite3.Connection) -> None:
    """Put the index in WAL mode (it stays so in the file), waiting out other openers.

    Searches run in worker threads, each with its own connection: when several open a new index
    at once, switching the journal mode can answer "database is locked" at once, without the
    busy timeout (SQLite does not wait on that lock), which failed a query with a 500. So the
    switch is retried until the same timeout has passed.
    """
    deadline = time.monotonic() + INDEX_BUSY_TIMEOUT
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


class AuditArchive:
    """Search over one archive directory (``policy.audit.archive``)."""

    def __init__(self, directory: Path | str, *, index: Path | str | None = None) -> None:
        self.directory = Path(directory)
        self.index_path = Path(index) if index is not None else self.directory / INDEX_FILE
        self._db: sqlite3.Connection | None = None

    # -- the index ---------------------------------------------------------------------------

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self.index_path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.index_path, timeout=INDEX_BUSY_TIMEOUT, isolation_level=None)
            _write_ahead(db)
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA cache_size=-262144")  # 256 MiB
            db.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
            self._db = db
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> AuditArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def catch_up(self) -> int:
        """Index every complete line written since the last call; returns how many."""
        total = 0
        for path in archive_files(self.directory):
            total += self._catch_up_file(path)
        return total

    def _catch_up_file(self, path: Path) -> int:
        db = self.db
        size = path.stat().st_size
        row = db.execute("SELECT id, indexed FROM files WHERE name = ?", (path.name,)).fetchone()
        if row is not None and row[1] == size:
            return 0  # the common case: nothing new, no write lock taken
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT id, indexed FROM files WHERE name = ?", (path.name,)
            ).fetchone()
            if row is None:
                file_id = db.execute(
                    "INSERT INTO files(name, indexed) VALUES (?, 0)", (path.name,)
                ).lastrowid
                offset = 0
            else:
                file_id, offset = row
            assert file_id is not None
            if offset > size:  # shorter than what was indexed: not append-only; start over
                for table in _TABLES:
                    db.execute(f"DELETE FROM {table} WHERE file = ?", (file_id,))  # noqa: S608
                offset = 0
            count = pending = 0
            for batch, reached in _lines_from(path, offset):
                self._index(db, file_id, batch)
                db.execute("UPDATE files SET indexed = ? WHERE id = ?", (reached, file_id))
                count += len(batch)
                pending += len(batch)
                if pending >= _COMMIT_EVERY:  # bounded transactions; readers see progress
                    db.execute("COMMIT")
                    db.execute("BEGIN IMMEDIATE")
                    pending = 0
                    current = db.execute(
                        "SELECT indexed FROM files WHERE id = ?", (file_id,)
                    ).fetchone()
                    if current is None or current[0] != reached:
                        break  # another process went on with this file meanwhile
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return count

    @staticmethod
    def _index(db: sqlite3.Connection, file_id: int, batch: list[tuple[int, bytes]]) -> None:
        subjects: list[tuple[int, int, int, int]] = []
        employees: list[tuple[int, int, int, int]] = []
        stores: list[tuple[int, int, int, int]] = []
        outcomes: list[tuple[int, int, int]] = []
        others: list[tuple[str, int, int, int, int]] = []
        for off, raw in batch:
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue  # audit verify reports it
            if not isinstance(record, dict):
                continue
            kind = record.get("kind")
            if kind == "outcome":
                link = _link(record.get("chain"), record.get("of"))
                if link is not None:
                    outcomes.append((link, file_id, off))
                continue
            at = _at_ms(record.get("at"))
            if at is None:
                continue
            if kind == "lookup":
                subject, employee, store = (record.get(k) for k in ("subject", "employee", "store"))
                if isinstance(subject, str) and (key := _subject_key(subject)) is not None:
                    subjects.append((key, at, file_id, off))
                if isinstance(employee, str):
                    employees.append((_h(employee), at, file_id, off))
                if isinstance(store, str):
                    stores.append((_h(store), at, file_id, off))
            elif isinstance(kind, str):
                key = _case_key(record)
                others.append((kind, key if key is not None else 0, at, file_id, off))
        db.executemany("INSERT OR IGNORE INTO by_subject VALUES (?, ?, ?, ?)", subjects)
        db.executemany("INSERT OR IGNORE INTO by_employee VALUES (?, ?, ?, ?)", employees)
        db.executemany("INSERT OR IGNORE INTO by_store VALUES (?, ?, ?, ?)", stores)
        db.executemany("INSERT OR IGNORE INTO outcomes VALUES (?, ?, ?)", outcomes)
        db.executemany("INSERT OR IGNORE INTO others VALUES (?, ?, ?, ?, ?)", others)

    # -- reading records back ----------------------------------------------------------------

    def _reader(self) -> _Reader:
        names = dict(self.db.execute("SELECT id, name FROM files").fetchall())
        return _Reader(self.directory, names)

    # -- search ------------------------------------------------------------------------------

    def search(
        self,
        *,
        subjects: Sequence[str] | None = None,
        employee: str | None = None,
        store: str | None = None,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Lookup records matching every filter given (at least one of ``subjects``,
        ``employee``, ``store``), newest first, ``since <= at < until``, each merged with its
        outcome."""
        if not subjects and employee is None and store is None:
            raise ValueError("search needs subjects, an employee or a store")
        if limit < 1:
            return []
        self.catch_up()
        low = parse_time(since) if since is not None else -(2**62)
        high = parse_time(until) if until is not None else 2**62
        if subjects:
            keys = [k for k in (_subject_key(s) for s in subjects) if k is not None]
            table, column = "by_subject", "subject"
        elif employee is not None:
            keys, table, column = [_h(employee)], "by_employee", "employee"
        else:
            assert store is not None
            keys, table, column = [_h(store)], "by_store", "store"
        if not keys:
            return []
        wanted_subjects = set(subjects or ())

        def matches(record: dict[str, Any]) -> bool:
            return (
                record.get("kind") == "lookup"
                and (not wanted_subjects or record.get("subject") in wanted_subjects)
                and (employee is None or record.get("employee") == employee)
                and (store is None or record.get("store") == store)
            )

        reader = self._reader()
        try:
            results: list[dict[str, Any]] = []
            seen: set[str] = set()
            for file_id, off in self._scan(table, column, keys, low, high, limit):
                record = reader.read(file_id, off)
                if record is None or not matches(record):
                    continue
                digest = str(record.get("hash"))
                if digest in seen:  # the same record in two files
                    continue
                seen.add(digest)
                results.append(self._merge(reader, record))
                if len(results) >= limit:
                    break
            return results
        finally:
            reader.close()

    def _scan(
        self, table: str, column: str, keys: list[int], low: int, high: int, limit: int
    ) -> Iterator[tuple[int, int]]:
        """(file, off) newest first, in pages (hits that fail the check need more rows)."""
        marks = ",".join("?" * len(keys))
        upper = high
        page = limit + 16
        while True:
            rows = self.db.execute(
                f"SELECT at, file, off FROM {table} WHERE {column} IN ({marks}) "  # noqa: S608
                "AND at >= ? AND at < ? ORDER BY at DESC, file DESC, off DESC LIMIT ?",
                (*keys, low, upper, page),
            ).fetchall()
            for _, file_id, off in rows:
                yield file_id, off
            if len(rows) < page:
                return
            # continue strictly below the last time seen; ties at that ms are re-read whole
            last_at = rows[-1][0]
            tail = self.db.execute(
                f"SELECT file, off FROM {table} WHERE {column} IN ({marks}) "  # noqa: S608
                "AND at = ? ORDER BY file DESC, off DESC",
                (*keys, last_at),
            ).fetchall()
            yielded = {(f, o) for at, f, o in rows if at == last_at}
            for file_id, off in tail:
                if (file_id, off) not in yielded:
                    yield file_id, off
            upper = last_at
            page *= 2

    def _merge(self, reader: _Reader, lookup: dict[str, Any]) -> dict[str, Any]:
        merged = dict(lookup)
        for name in OUTCOME_FIELDS:
            merged.setdefault(name, None)
        chain, request_id = lookup.get("chain"), lookup.get("request_id")
        link = _link(chain, request_id)
        if link is None:
            return merged
        best: dict[str, Any] | None = None
        for file_id, off in self.db.execute(
            "SELECT file, off FROM outcomes WHERE link = ? ORDER BY file, off", (link,)
        ):
            outcome = reader.read(file_id, off)
            if outcome is None or outcome.get("of") != request_id or outcome.get("chain") != chain:
                continue
            seq, own = outcome.get("seq"), lookup.get("seq")
            if isinstance(seq, int) and isinstance(own, int) and seq < own:
                continue  # an earlier lookup's outcome that reused the request id
            if best is None or (isinstance(seq, int) and seq < best.get("seq", seq + 1)):
                best = outcome
        if best is not None:
            for name, value in best.items():
                if name not in _NOT_MERGED and name != "request_id":
                    merged[name] = value
        return merged

    def records(
        self,
        *,
        kind: str,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Records of one kind other than lookup/outcome (admin, case, transparency,
        checkpoint), newest first."""
        self.catch_up()
        low = parse_time(since) if since is not None else -(2**62)
        high = parse_time(until) if until is not None else 2**62
        rows = self.db.execute(
            "SELECT file, off FROM others WHERE kind = ? AND at >= ? AND at < ? "
            "ORDER BY at DESC, file DESC, off DESC LIMIT ?",
            (kind, low, high, limit),
        ).fetchall()
        return self._read_all(rows, lambda r: r.get("kind") == kind)

    def case_events(self, case_id: str) -> list[dict[str, Any]]:
        """A case's ``case`` records, oldest first."""
        self.catch_up()
        rows = self.db.execute(
            "SELECT file, off FROM others WHERE kind = 'case' AND key = ? ORDER BY at, file, off",
            (_h(case_id),),
        ).fetchall()
        return self._read_all(rows, lambda r: r.get("case") == case_id)

    def _read_all(self, rows: Iterable[tuple[int, int]], keep: Any) -> list[dict[str, Any]]:
        reader = self._reader()
        try:
            out, seen = [], set()
            for file_id, off in rows:
                record = reader.read(file_id, off)
                if record is not None and keep(record) and record.get("hash") not in seen:
                    seen.add(record.get("hash"))
                    out.append(record)
            return out
        finally:
            reader.close()


class _Reader:
    """Reads single lines at offsets, keeping each file open once."""

    def __init__(self, directory: Path, names: dict[int, str]) -> None:
        self.directory = directory
        self.names = names
        self._fds: dict[int, int] = {}

    def read(self, file_id: int, off: int) -> dict[str, Any] | None:
        fd = self._fds.get(file_id)
        if fd is None:
            name = self.names.get(file_id)
            if name is None:
                return None
            try:
                fd = os.open(self.directory / name, os.O_RDONLY)
            except OSError:
                return None
            self._fds[file_id] = fd
        data = b""
        size = 4096
        while True:
            data = os.pread(fd, size, off)
            end = data.find(b"\n")
            if end >= 0:
                data = data[:end]
                break
            if len(data) < size:
                break
            size *= 4
        try:
            record = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        return record if isinstance(record, dict) else None

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _lines_from(path: Path, offset: int) -> Iterator[tuple[list[tuple[int, bytes]], int]]:
    """Batches of (offset, line) of complete lines from ``offset``, with the offset reached."""
    with path.open("rb") as file:
        file.seek(offset)
        carry = b""
        position = offset
        while True:
            chunk = file.read(_CHUNK)
            if not chunk:
                return
            data = carry + chunk
            end = data.rfind(b"\n")
            if end < 0:
                carry = data
                continue
            batch: list[tuple[int, bytes]] = []
            start = 0
            while start <= end:
                stop = data.index(b"\n", start)
                if stop > start:
                    batch.append((position + start, data[start:stop]))
                start = stop + 1
            position += end + 1
            carry = data[end + 1 :]
            yield batch, position
