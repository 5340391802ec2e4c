"""The audit trail's writer: every lookup attempt, outcome and admin action becomes a chained
record that is durable before it matters.

Durable by construction, not by care: with the Redis store a lookup's own record travels in its
decision's batch (``Guard.audit_log``), so a decision that reached Redis wrote its record in the
same round trip, and one that did not is refused anyway. Everything else (outcomes, refusals
before the guard, admin actions, checkpoints) is queued and flushed in one batch per event-loop
turn, off the terminal's wait. With the memory store, or whenever Redis cannot take a record,
lines go to this writer's own archive file (``audit-<day>.<chain>.jsonl``), one write(2) a turn
for all its records, and are fsynced at least every ``fsync_interval`` on a thread of their own
(on the event loop's, ``fsync(2)`` stopped every lookup for as long as the disk took); a
lookup's own record travels in that same batch, and the lookup waits for it
(:meth:`AuditTrail.stage`: written to the operating system, not yet synced) before it is
forwarded. A lookup whose own record cannot be written anywhere is not forwarded (503
``audit-unavailable``); a record that cannot be written yet is kept and retried, never
dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from lookup_proxy.audit.chain import Chain, Signer, iso_at
from lookup_proxy.audit.pseudonym import Pseudonymiser, last4
from lookup_proxy.clock import Clock
from lookup_proxy.guard.primitives import APPEND, GuardStore, StoreUnavailable
from lookup_proxy.instance import host_name
from lookup_proxy.metrics import AuditMetrics
from lookup_proxy.policy import Audit

log = logging.getLogger("lookup_proxy.audit")

RECORD_VERSION = 1

MAX_PENDING = 100_000
"""Records waiting in memory (neither Redis nor the disk takes them) past which an error is
logged. Nothing is dropped: lookups whose own records cannot be written are refused anyway,
so what piles up is outcomes and admin actions, a few hundred bytes each."""


def new_chain_id(now: float) -> str:
    """One writer's chain: host (and worker, lookup_proxy/instance.py), process and start time,
    safe in a file name."""
    return f"{host_name()}.{os.getpid()}.{int(now * 1000)}"


def stream_key(prefix: str) -> str:
    """The Redis stream every instance appends to (one hash tag: one Cluster node)."""
    return f"{prefix}:{{audit}}:log"


class ArchiveFile:
    """This writer's own append-only file in the archive directory, one per UTC day.

    Lines are written on the caller's thread (a lookup waits for its record to reach the
    operating system); ``fsync(2)`` and closing a day's file run in order on one thread of the
    file's own (``flusher``), so the event loop never waits for the disk: on a cloud volume an
    fsync takes milliseconds, at times far more, and every lookup in flight would wait with it
    (bench/bench_stalls.py). A failed fsync is reported to ``on_error``; the lines were written,
    and the next interval tries again."""

    def __init__(
        self,
        directory: Path,
        chain_id: str,
        fsync_interval: float,
        *,
        on_error: Callable[[OSError], None] | None = None,
        fsync: Callable[[int], None] = os.fsync,
    ) -> None:
        self.directory = directory
        self.chain_id = chain_id
        self.fsync_interval = fsync_interval
        self._fd: int | None = None
        self._day = ""
        self._synced = 0.0
        self._dirty = False
        self._on_error = on_error
        self._fsync = fsync
        self._flusher: ThreadPoolExecutor | None = None
        self._syncing: Future[None] | None = None

    def path_for(self, day: str) -> Path:
        return self.directory / f"audit-{day}.{self.chain_id}.jsonl"

    def write(self, lines: list[bytes], now: float) -> None:
        """Append whole lines with one write; raises OSError (disk full, directory gone)."""
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        if self._fd is None or day != self._day:
            self._open(day)
        assert self._fd is not None
        data = b"".join(lines)
        written = os.write(self._fd, data)
        while written < len(data):  # a short write (signal, nearly full disk): finish it
            written += os.write(self._fd, data[written:])
        self._dirty = True
        if now - self._synced >= self.fsync_interval:
            self.sync(now)

    def _open(self, day: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(
            self.path_for(day), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640
        )
        if self._fd is not None:  # the day's file before: synced and closed after its writes
            self._syncing = self._submit(self._sync_and_close, self._fd)
        self._fd = fd
        self._day = day
        self._dirty = False

    def sync(self, now: float) -> None:
        """Have what was written reach the disk, off the caller's thread; one fsync at a time
        (a slow disk gets the next one when this one is done)."""
        if self._fd is not None and self._dirty:
            if self._syncing is not None and not self._syncing.done():
                return
            self._dirty = False
            self._syncing = self._submit(self._fsync_now, self._fd)
        self._synced = now

    def close(self) -> None:
        """Sync and close the file, waiting for the flusher's work to be done."""
        if self._fd is not None:
            self._submit(self._sync_and_close, self._fd)
            self._fd = None
        if self._flusher is not None:
            self._flusher.shutdown(wait=True)
            self._flusher = None
            self._syncing = None

    def _submit(self, work: Callable[[int], None], fd: int) -> Future[None]:
        if self._flusher is None:
            self._flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-fsync")
        return self._flusher.submit(work, fd)

    def _fsync_now(self, fd: int) -> None:
        try:
            self._fsync(fd)
        except OSError as exc:
            if self._on_error is not None:
                self._on_error(exc)

    def _sync_and_close(self, fd: int) -> None:
        self._fsync_now(fd)
        os.close(fd)


class AuditUnavailable(Exception):
    """A lookup's own record could not be made durable: the lookup must not be forwarded."""


class AuditTrail:
    """Makes, chains and delivers audit records for one process (see the module docstring)."""

    def __init__(
        self,
        config: Audit,
        *,
        directory: Path,
        signer: Signer | None,
        pseudonyms: Pseudonymiser,
        clock: Clock,
        policy_hash: str,
        metrics: AuditMetrics,
        store: GuardStore | None = None,
        key_prefix: str = "lp",
        chain_id: str | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.policy_hash = policy_hash
        self.metrics = metrics
        self.pseudonyms = pseudonyms
        self.chain = Chain(
            chain_id or new_chain_id(clock.now()),
            signer,
            every=config.checkpoint_every,
            interval=config.checkpoint_interval,
        )
        self.file = ArchiveFile(
            directory, self.chain.chain_id, config.fsync_interval, on_error=self._sync_failed
        )
        self.store = store
        """With a shared store (Redis), records go to its stream; else to the file."""
        self.stream = stream_key(key_prefix) if store is not None else None
        self._pending: list[tuple[str, bytes]] = []
        self._waiters: list[asyncio.Future[None]] = []
        """Lookups waiting for their records among ``_pending`` to be durable (:meth:`stage`)."""
        self._flushing: asyncio.Task[None] | None = None
        self._sending = asyncio.Lock()
        self.store_up: Callable[[], bool] = lambda: True
        """Whether the store is worth asking (the proxy's circuit breaker is closed)."""
        self._sealing: asyncio.Task[None] | None = None

    @classmethod
    def from_policy(
        cls,
        config: Audit,
        *,
        base_dir: Path,
        environ: Mapping[str, str],
        clock: Clock,
        policy_hash: str,
        metrics: AuditMetrics,
        store: GuardStore | None,
        key_prefix: str,
    ) -> AuditTrail:
        """The trail the policy configures; ConfigError when a key it needs is missing."""
        return cls(
            config,
            directory=base_dir / config.archive,
            signer=Signer.from_environ(environ, config.signing_key_env),
            pseudonyms=Pseudonymiser.from_environ(environ, config.pseudonym_keys_env),
            clock=clock,
            policy_hash=policy_hash,
            metrics=metrics,
            store=store,
            key_prefix=key_prefix,
        )

    # -- making records ----------------------------------------------------------------------

    def line(self, kind: str, fields: Mapping[str, Any]) -> bytes:
        """A linked record (not yet delivered: version, kind, time, fields, chain) as the line
        to store, encoded once (Chain.link_line)."""
        now = self.clock.now()
        record: dict[str, Any] = {"v": RECORD_VERSION, "kind": kind, "at": iso_at(now)}
        record.update(fields)
        return self.chain.link_line(record, now)

    def subject(self, number: str | None) -> dict[str, Any]:
        """The pseudonym fields of a canonical number (all null when it is not known)."""
        if number is None:
            return {"subject": None, "key_id": None, "last4": None}
        subject, key_id = self.pseudonyms.subject(number)
        return {"subject": subject, "key_id": key_id, "last4": last4(number)}

    def lookup(self, fields: Mapping[str, Any], number: str | None) -> bytes:
        """A lookup attempt's record as the line to store (the caller delivers it: in the
        decision's batch, or with :meth:`stage`/:meth:`deliver`)."""
        return self.line("lookup", {**fields, **self.subject(number), "policy": self.policy_hash})

    def write(self, kind: str, fields: Mapping[str, Any]) -> None:
        """Make a record and queue it for the next flush; never blocks, never raises."""
        self.deliver(kind, self.line(kind, fields))

    # -- delivering --------------------------------------------------------------------------

    def deliver(self, kind: str, line: bytes) -> None:
        """Queue a made record; flushed on the next event-loop turn with everything queued."""
        if len(self._pending) == MAX_PENDING:  # once per pile-up, not once per record
            log.error("audit records pile up: neither the stream nor the archive takes them")
        self._pending.append((kind, line))
        self.metrics.pending.set(len(self._pending))
        self._seal_if_due()
        if self._flushing is None or self._flushing.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop (a CLI before its loop starts): flush() writes it
            self._flushing = loop.create_task(self._flush_soon())

    def stage(self, kind: str, line: bytes) -> asyncio.Future[None]:
        """Queue a lookup's own record with everything else of this turn; the future is done
        once it is durable (the stream, else the archive file) and raises AuditUnavailable
        when neither took it (the record is then kept and retried; the lookup must not go on).

        Await it before forwarding, not before deciding: the decision runs while the turn's
        records gather, and one write(2) carries them all. A write per lookup was 8 % of the
        memory store's CPU under load (py-spy, 2026-12-05)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.deliver(kind, line)
        return waiter

    def stored_in_batch(self, kind: str) -> None:
        """Count a record that travelled in a decision's batch."""
        self.metrics.recorded(kind, "stream").inc()

    def _seal_if_due(self) -> None:
        if self.chain.checkpoint_due(self.clock.now()):
            self._checkpoint()

    def _checkpoint(self, *, final: bool = False) -> None:
        record = self.chain.checkpoint(self.clock.now(), final=final)
        self._pending.append(("checkpoint", orjson.dumps(record)))
        self.metrics.pending.set(len(self._pending))

    async def _flush_soon(self) -> None:
        await asyncio.sleep(0)  # let this turn's lookups queue theirs: one batch for all
        await self.flush()

    async def flush(self) -> None:
        """Make everything queued durable: the stream, else the file; kept when neither.
        Returns once what was queued before the call is durable (or kept), whoever sends it."""
        async with self._sending:
            await self._send()

    async def _send(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            waiters, self._waiters = self._waiters, []
            delivered = await self._to_stream(batch) or self._to_file(batch)
            if not delivered:
                self._pending[:0] = batch
                self.metrics.pending.set(len(self._pending))
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(AuditUnavailable("neither the stream nor the file"))
                        waiter.exception()  # retrieved: a refused lookup may never await it
                return
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        self.metrics.pending.set(0)

    async def _to_stream(self, batch: list[tuple[str, bytes]]) -> bool:
        store, stream = self.store, self.stream
        if store is None or stream is None or not self.store_up():
            return False
        now = self.clock.now()
        keep = self.config.stream_retention
        ops = [(APPEND, stream, line.decode(), now, keep) for _, line in batch]
        try:
            await store.execute(ops)
        except StoreUnavailable:
            self.metrics.write_errors.labels(sink="stream").inc()
            log.warning("audit records go to the archive file: the store is unavailable")
            return False
        for kind, _ in batch:
            self.metrics.recorded(kind, "stream").inc()
        return True

    def _to_file(self, batch: list[tuple[str, bytes]]) -> bool:
        try:
            self.file.write([line + b"\n" for _, line in batch], self.clock.now())
        except OSError as exc:
            self.metrics.write_errors.labels(sink="file").inc()
            log.error(
                "audit records kept in memory: the archive file cannot be written",
                extra={"error": exc.strerror or str(exc), "pending": len(batch)},
            )
            return False
        for kind, _ in batch:
            self.metrics.recorded(kind, "file").inc()
        return True

    def _sync_failed(self, exc: OSError) -> None:
        """The flusher's fsync failed (its thread): counted and logged, without a traceback."""
        self.metrics.write_errors.labels(sink="file").inc()
        log.error(
            "audit archive file could not be synced to disk",
            extra={"error": exc.strerror or str(exc)},
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Seal on time even when nothing new arrives to notice it is due."""
        self._sealing = asyncio.get_running_loop().create_task(self._seal_periodically())

    async def _seal_periodically(self) -> None:
        interval = max(0.05, min(self.config.checkpoint_interval, self.config.fsync_interval))
        while True:
            await asyncio.sleep(interval)
            if self.chain.checkpoint_due(self.clock.now()):
                self._checkpoint()
            if self._pending:
                await self.flush()
            self.file.sync(self.clock.now())  # on the file's own thread

    async def close(self) -> int:
        """Seal the chain with a final checkpoint and make everything durable; the number of
        records that could not be (0 unless neither the stream nor the disk took them)."""
        if self._sealing is not None:
            self._sealing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sealing
        if self._flushing is not None and not self._flushing.done():
            await self._flushing
        self._checkpoint(final=True)
        await self.flush()
        lost = len(self._pending)
        if lost:
            log.error("audit records lost at shutdown", extra={"records": lost})
        self.file.close()
        return lost
