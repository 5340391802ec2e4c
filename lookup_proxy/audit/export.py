"""``lookup-proxy audit export``: the Redis stream into the append-only archive, idempotently.

With the Redis store every audit record is XADDed to ``<prefix>:{audit}:log`` (field ``r``) in
the guard's own round trip (the records of one script call in one entry, a line each:
``records_of``); the stream is capped by ``audit.stream_retention``, so it is a
buffer, not the archive. The exporter copies records, bytes unchanged, into the day file of the
moment it writes them (``audit-YYYY-MM-DD.jsonl``, UTC), then fsyncs, then replaces
``.export-position`` atomically. It never trims the stream.

Idempotent: at start it reads the ``(chain, seq)`` of every record in the archive files that
can overlap the stream (from the day of the stream's oldest entry on) and skips those, so a crash
between the append and the position write, or a lost position file, never duplicates a record.

Order: the records of one chain are written in ``seq`` order. Concurrent lookups of one proxy
can reach Redis a few milliseconds out of order, so the exporter reads only entries older than
``settle`` seconds and sorts each chain's records within a batch.

A write that fails (disk full) is cut back to the file's previous length and retried on the
next round; the position does not move, the records wait in Redis, and the lag grows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.exceptions import RedisError

from lookup_proxy.audit.files import (
    POSITION_FILE,
    archive_files,
    archive_name,
    day_of,
    fsync_directory,
    write_all,
    write_atomically,
)
from lookup_proxy.audit.trail import stream_key
from lookup_proxy.errors import ConfigError, ConfigProblem

__all__ = [
    "ExportError",
    "ExportMetrics",
    "Exporter",
    "Lag",
    "open_stream_client",
    "records_of",
    "run_export_command",
    "stream_key",
]

log = logging.getLogger("lookup_proxy.audit.export")

FIELD = b"r"
PENDING_CAP = 1000
"""``lag()`` counts the records of unexported entries up to this many entries (counting more
would read them all)."""


class ExportError(Exception):
    """The archive could not be written (disk full, permissions); the position did not move."""


class ExportMetrics:
    """What the continuous exporter reports (its own registry, served on --metrics-port)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lag = Gauge(
            "lookup_proxy_audit_export_lag_seconds",
            "Age of the oldest audit record in the stream not yet in the archive (0: caught up).",
            registry=registry,
        )
        self.exported = Counter(
            "lookup_proxy_audit_exported_total",
            "Audit records appended to the archive.",
            registry=registry,
        )
        self.skipped = Counter(
            "lookup_proxy_audit_export_skipped_total",
            "Stream entries not appended: already archived (duplicate) or not a record (invalid).",
            ["why"],
            registry=registry,
        )
        self.errors = Counter(
            "lookup_proxy_audit_export_errors_total",
            "Export rounds that failed (archive not writable, Redis unreachable).",
            registry=registry,
        )


@dataclass(frozen=True)
class Lag:
    """How far the archive is behind the stream."""

    pending: int
    """Records after the position (in up to ``PENDING_CAP`` entries)."""
    capped: bool
    """``pending`` stopped counting at the cap: there are more."""
    oldest_age: float
    """Seconds since the oldest unexported entry was added; 0 when caught up."""


@dataclass
class _Seen:
    """Which seqs of one chain are archived: all up to ``top`` except ``holes``."""

    top: int = 0
    holes: set[int] = field(default_factory=set)

    def has(self, seq: int) -> bool:
        return seq <= self.top and seq not in self.holes

    def add(self, seq: int) -> None:
        if seq > self.top:
            self.holes.update(range(self.top + 1, seq))
            self.top = seq
        else:
            self.holes.discard(seq)


def _id_ms(stream_id: bytes | str) -> int:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    return int(text.split("-", 1)[0])


def records_of(value: bytes) -> list[bytes]:
    """The records one stream entry holds: the guard's store appends a script call's records
    to the stream as one entry, newline-joined (one XADD a call, not one a record), and a
    record, one line of JSON, never holds a newline itself."""
    return value.split(b"\n")


def _chain_seq(raw: bytes) -> tuple[str, int] | None:
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict):
        return None
    chain, seq = record.get("chain"), record.get("seq")
    if not isinstance(chain, str) or not isinstance(seq, int) or isinstance(seq, bool):
        return None
    return chain, seq


class Exporter:
    """Moves records from one audit stream into one archive directory."""

    def __init__(
        self,
        client: Any,
        directory: Path,
        key: str,
        *,
        batch: int = 1000,
        settle: float = 1.0,
        clock: Callable[[], float] = time.time,
        metrics: ExportMetrics | None = None,
    ) -> None:
        self.client = client  # redis.asyncio Redis or RedisCluster, decode_responses=False
        self.directory = directory
        self.key = key
        self.batch = batch
        self.settle = settle
        self.clock = clock
        self.metrics = metrics
        self._seen: dict[str, _Seen] | None = None
        self._position: str | None = None

    # -- position and what is archived -------------------------------------------------------

    @property
    def position_file(self) -> Path:
        return self.directory / POSITION_FILE

    def read_position(self) -> str:
        """The last stream id exported, ``0-0`` when none (or the file is unreadable)."""
        try:
            data = orjson.loads(self.position_file.read_bytes())
        except FileNotFoundError:
            return "0-0"
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("export position unreadable; deduplicating from the archive: %s", exc)
            return "0-0"
        value = data.get("stream") if isinstance(data, dict) else None
        if not isinstance(value, str) or "-" not in value:
            log.warning("export position malformed; deduplicating from the archive")
            return "0-0"
        return value

    async def _load(self) -> None:
        """The position, and the (chain, seq) already archived among files the stream spans."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._position = self.read_position()
        oldest = await self.client.xrange(self.key, "-", "+", count=1)
        seen: dict[str, _Seen] = {}
        if oldest:
            first_day = time.strftime("%Y-%m-%d", time.gmtime(_id_ms(oldest[0][0]) / 1000 - 86_400))
            for path in archive_files(self.directory):
                day = day_of(path.name)
                if day is not None and day >= first_day:
                    _scan(path, seen)
        self._seen = seen

    # -- one round ---------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Export every entry older than ``settle`` seconds; returns how many were appended."""
        if self._seen is None:
            await self._load()
        total = 0
        while True:
            cutoff = int((self.clock() - self.settle) * 1000)
            entries = await self.client.xrange(
                self.key, f"({self._position}", str(cutoff), count=self.batch
            )
            if not entries:
                break
            total += self._export(entries)
            if len(entries) < self.batch:
                break
        await self._update_lag()
        return total

    def _export(self, entries: Sequence[tuple[bytes, Mapping[bytes, bytes]]]) -> int:
        assert self._seen is not None
        kept: list[tuple[str, int, bytes]] = []
        in_batch: set[tuple[str, int]] = set()
        for stream_id, fields in entries:
            for raw in records_of(fields.get(FIELD, b"")):  # no field: one empty line, no record
                parsed = _chain_seq(raw)
                if parsed is None:
                    log.error(
                        "audit stream entry %s holds something that is not an audit record;"
                        " not archived",
                        stream_id.decode(errors="replace"),
                    )
                    self._count_skip("invalid")
                    continue
                chain, seq = parsed
                seen = self._seen.get(chain)
                if (seen is not None and seen.has(seq)) or (chain, seq) in in_batch:
                    self._count_skip("duplicate")
                    continue
                in_batch.add((chain, seq))
                kept.append((chain, seq, raw))
        # a chain's records in seq order, in the slots its records held (chains stay interleaved)
        slots: dict[str, list[int]] = {}
        for index, (chain, _, _) in enumerate(kept):
            slots.setdefault(chain, []).append(index)
        ordered: list[tuple[str, int, bytes]] = list(kept)
        for indexes in slots.values():
            for slot, item in zip(
                indexes, sorted((kept[i] for i in indexes), key=lambda r: r[1]), strict=True
            ):
                ordered[slot] = item
        last_id = entries[-1][0].decode()
        if ordered:
            self._append(b"".join(raw + b"\n" for _, _, raw in ordered))
        write_atomically(self.position_file, orjson.dumps({"stream": last_id}))
        self._position = last_id
        for chain, seq, _ in ordered:
            self._seen.setdefault(chain, _Seen()).add(seq)
        if self.metrics is not None:
            self.metrics.exported.inc(len(ordered))
        return len(ordered)

    def _append(self, data: bytes) -> None:
        """Append ``data`` to today's file and fsync; on failure cut the file back."""
        path = self.directory / archive_name(self.clock())
        created = not path.exists()
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        except OSError as exc:
            raise ExportError(f"cannot open {path}: {exc.strerror or exc}") from None
        try:
            before = os.fstat(fd).st_size
            if before:
                _repair_tail(fd, path, before)
                before = os.fstat(fd).st_size
            try:
                write_all(fd, data)
                os.fsync(fd)
            except OSError as exc:
                try:
                    os.ftruncate(fd, before)
                    os.fsync(fd)
                except OSError:
                    log.error(
                        "could not cut %s back to %d bytes after a failed write", path, before
                    )
                raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from None
        finally:
            os.close(fd)
        if created:
            fsync_directory(self.directory)

    def _count_skip(self, why: str) -> None:
        if self.metrics is not None:
            self.metrics.skipped.labels(why).inc()

    # -- lag ---------------------------------------------------------------------------------

    async def lag(self) -> Lag:
        """Records after the position and the age of the oldest of them."""
        position = self._position if self._position is not None else self.read_position()
        entries = await self.client.xrange(self.key, f"({position}", "+", count=PENDING_CAP + 1)
        if not entries:
            return Lag(0, False, 0.0)
        age = max(0.0, self.clock() - _id_ms(entries[0][0]) / 1000)
        records = sum(
            len(records_of(fields.get(FIELD, b""))) for _, fields in entries[:PENDING_CAP]
        )
        return Lag(records, len(entries) > PENDING_CAP, age)

    async def _update_lag(self) -> None:
        if self.metrics is None:
            return
        position = self._position or "0-0"
        entries = await self.client.xrange(self.key, f"({position}", "+", count=1)
        age = max(0.0, self.clock() - _id_ms(entries[0][0]) / 1000) if entries else 0.0
        self.metrics.lag.set(age)

    # -- continuous --------------------------------------------------------------------------

    async def follow(self, interval: float, stop: asyncio.Event) -> None:
        """``run_once`` every ``interval`` seconds until ``stop`` is set; failures are logged,
        counted and retried (the records wait in Redis meanwhile)."""
        while not stop.is_set():
            try:
                await self.run_once()
            except ExportError as exc:
                log.error("audit export failed, retrying: %s", exc)
                if self.metrics is not None:
                    self.metrics.errors.inc()
            except (OSError, ConnectionError, RedisError) as exc:
                log.warning("audit export: Redis unavailable, retrying: %s", exc)
                if self.metrics is not None:
                    self.metrics.errors.inc()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)


def _repair_tail(fd: int, path: Path, size: int) -> None:
    """A crash mid-write can leave an unterminated last line; it was never counted as exported
    (the position moves only after fsync), so it is cut off and its records are written again."""
    tail = os.pread(fd, min(size, 65_536), max(0, size - 65_536))
    if tail.endswith(b"\n"):
        return
    cut = tail.rfind(b"\n")
    if cut < 0 and size > len(tail):
        log.error("%s ends in an unterminated line longer than 64 KiB; left as is", path)
        return
    keep = size - len(tail) + cut + 1
    log.warning(
        "%s: cutting an unterminated last line (%d bytes) left by a crash", path, size - keep
    )
    os.ftruncate(fd, keep)
    os.fsync(fd)


def _scan(path: Path, seen: dict[str, _Seen]) -> None:
    try:
        with path.open("rb") as lines:
            for line in lines:
                parsed = _chain_seq(line)
                if parsed is not None:
                    seen.setdefault(parsed[0], _Seen()).add(parsed[1])
    except OSError as exc:  # exporting without knowing what is archived would duplicate
        raise ExportError(f"cannot read {path}: {exc.strerror or exc}") from None


def open_stream_client(url_env: str, cluster: bool, environ: Mapping[str, str]) -> Any:
    """A redis-py asyncio client for the URL in ``environ[url_env]`` (bytes responses)."""
    url = environ.get(url_env, "").strip()
    if not url:
        raise ConfigError(
            [
                ConfigProblem(
                    "<environment>",
                    url_env,
                    "a Redis URL such as redis://127.0.0.1:6379/0 (the audit stream)",
                    "unset",
                )
            ]
        )
    options: dict[str, Any] = {"socket_connect_timeout": 5.0, "socket_timeout": 30.0}
    if cluster:
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(url, **options)
    from redis.asyncio import Redis

    return Redis.from_url(url, **options)


def run_export_command(
    policy: Any,
    directory: Path,
    environ: Mapping[str, str],
    follow: bool,
    interval: float,
    metrics_port: int | None,
    run: Callable[[Any], None],
) -> int:
    """``lookup-proxy audit export``: one round (prints what it did), or ``--follow``."""
    client = open_stream_client(policy.store.url_env, policy.store.cluster, environ)
    key = stream_key(policy.store.key_prefix)
    registry = CollectorRegistry()
    exporter = Exporter(client, directory, key, metrics=ExportMetrics(registry))
    outcome: list[int] = []

    async def once() -> None:
        try:
            exported = await exporter.run_once()
            lag = await exporter.lag()
        finally:
            await client.aclose()
        more = "+" if lag.capped else ""
        print(
            f"exported {exported} record(s) to {directory}; "
            f"{lag.pending}{more} pending, oldest {lag.oldest_age:.1f}s"
        )
        outcome.append(0)

    async def forever() -> None:
        import signal

        from prometheus_client import start_http_server

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        server = None
        if metrics_port is not None:
            server, _ = start_http_server(metrics_port, registry=registry)
        log.info("exporting", extra={"stream": key, "archive": str(directory)})
        try:
            await exporter.follow(interval, stop)
        finally:
            if server is not None:
                server.shutdown()
            await client.aclose()
        outcome.append(0)

    try:
        run(forever() if follow else once())
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (RedisError, OSError) as exc:
        print(f"error: audit stream unavailable: {exc}", file=sys.stderr)
        return 1
    return outcome[0] if outcome else 1
