"""Guard signals reach the case book off the terminal's wait, and survive store trouble.

The walk hands each flagging or locking decision to :meth:`CaseRaiser.signal` and moves on; a
background task writes them to the book. Signals waiting for the store are merged per employee
(rules united, counts added), so a flag storm or an outage holds at most one pending signal per
employee, and a failed write is put back and retried with a growing pause instead of being
dropped. Nothing here raises into the walk: store trouble is a log line and a metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Final

from lookup_proxy.cases.audit import AuditWriter, case_record
from lookup_proxy.cases.book import CaseBook
from lookup_proxy.cases.model import Signal
from lookup_proxy.errors import Refusal
from lookup_proxy.guard.primitives import StoreUnavailable

if TYPE_CHECKING:
    from lookup_proxy.metrics import CaseMetrics

log = logging.getLogger("lookup_proxy.cases")

RETRY_FIRST: Final = 0.5
RETRY_MAX: Final = 30.0


class CaseRaiser:
    """Feeds signals to the book in the background, merged per employee while they wait."""

    def __init__(self, book: CaseBook, audit: AuditWriter, metrics: CaseMetrics) -> None:
        self.book = book
        self.audit = audit
        self.metrics = metrics
        self._pending: dict[str, Signal] = {}
        self._worker: asyncio.Task[None] | None = None
        self._pause = RETRY_FIRST
        self._busy = False

    def signal(self, signal: Signal) -> None:
        """Queue a signal; returns at once (called from the walk)."""
        waiting = self._pending.get(signal.employee)
        self._pending[signal.employee] = signal if waiting is None else waiting.merge(signal)
        self.metrics.pending.set(len(self._pending))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work())

    async def _work(self) -> None:
        while self._pending:
            employee = next(iter(self._pending))
            signal = self._pending.pop(employee)
            self._busy = True
            try:
                case, event = await self.book.signal(signal)
            except (StoreUnavailable, Refusal) as exc:
                self._put_back(signal)
                self.metrics.store_errors.inc()
                log.warning(
                    "case signal not written yet: store unavailable",
                    extra={"employee": employee, "retry_in": self._pause, "error": str(exc)},
                )
                self._busy = False
                await asyncio.sleep(self._pause)
                self._pause = min(self._pause * 2, RETRY_MAX)
                continue
            except Exception:
                self.metrics.dropped.inc()
                log.exception("case signal dropped", extra={"employee": employee})
                continue
            finally:
                self._busy = False
                self.metrics.pending.set(len(self._pending))
            self._pause = RETRY_FIRST
            self.metrics.events.labels(event=event).inc()
            self.audit.write(
                "case", case_record(case, event, rules=signal.rules, note=_count_note(signal))
            )

    def _put_back(self, signal: Signal) -> None:
        newer = self._pending.pop(signal.employee, None)
        self._pending[signal.employee] = signal if newer is None else signal.merge(newer)

    @property
    def pending(self) -> int:
        return len(self._pending) + (1 if self._busy else 0)

    async def idle(self) -> None:
        """Wait until every signal so far is written (tests, shutdown)."""
        while self._worker is not None and not self._worker.done():
            await asyncio.wait({self._worker})

    async def close(self, grace: float) -> None:
        """Give pending signals ``grace`` seconds, then say loudly what is left."""
        worker = self._worker
        if worker is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(worker), grace)
        if not worker.done():
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        if self._pending:
            self.metrics.dropped.inc(len(self._pending))
            log.error(
                "case signals not written at shutdown (the locks themselves are kept)",
                extra={"employees": sorted(self._pending)},
            )


def _count_note(signal: Signal) -> str | None:
    return None if signal.count == 1 else f"{signal.count} decisions"
