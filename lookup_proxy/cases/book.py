"""The case book: case events kept in the guard's store, shared by every instance.

Why events and not case documents: see :mod:`lookup_proxy.cases.model`. Here is how they are
kept, with nothing but the guard's store primitives, so the book works unchanged on the memory
store, Redis and Redis Cluster:

``<prefix>:{cases}:seq``            tally; field ``event`` numbers events (``incr``: unique
                                    ids without coordination).
``<prefix>:{cases}:log:<employee>`` window of the employee's events, scored by time (the
                                    store keeps later writes later even when a clock steps
                                    back, at an equal score).
``<prefix>:{cases}:raises``         tally; per case id, the raises that brought nothing new.
``<prefix>:{cases}:employees``      window of employees with case events (listing without a
                                    key scan).

Every key carries the ``{cases}`` hash tag, so every batch below is one group: one Lua call on
Redis, one Cluster slot, one step of the memory store — atomic. A transition is appended in
the same batch that reads the employee's log back, so the writer learns at once what its event
became in the order every reader sees.

Races, and why none loses a transition:

* Two instances signalling one employee at once: both append; both signals land in the one
  unresolved case (its id does not depend on which came first, see the model).
* A signal that brings nothing new (its rules are in the open case, no new lock) is only
  counted (``incr`` on ``raises``) in a batch that also reads the log back: if the case was
  resolved meanwhile, the count is taken back and the signal appended as an event, which
  opens a new case.
* Two reviewers resolving one case at once: both append; the first in store order resolves, the
  second learns its event came too late (:class:`CaseClosed`).
* Order: every writer reads the log first and writes its event at least :data:`STEP` after
  the newest event it saw, so its event follows everything it saw even when its clock is
  behind another instance's. Only events written concurrently can share a score (the store
  never lets a later write sort earlier by time); those are ordered by the member's text:
  reviewers' events (``0|``) before signals (``1|``), so a signal concurrent with a resolution
  falls into the next case — it stays in the queue rather than vanishing into a closed one —
  and concurrent reviewers' events by event id.

Events stay :data:`RETENTION` after the employee's last case event, at most :data:`LOG_CAP` per
employee (oldest dropped first); the audit archive keeps every transition for good.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import quote

import orjson

from lookup_proxy.cases.model import SIGNAL, Case, Folded, Signal, employee_of, fold
from lookup_proxy.clock import Clock
from lookup_proxy.guard.primitives import Batch, GuardStore

RETENTION: Final = 400 * 86_400.0
"""How long the store keeps an employee's case events after their last one: a year of monthly
reviews, and a month to spare."""

LOG_CAP: Final = 1000
"""Events kept per employee. Repeats are counted, not appended, so only new rules, locks and
reviewers' events take room."""

STEP: Final = 0.001
"""How far after the newest event seen a writer places its own (one millisecond)."""

INDEX_CAP: Final = 200_000
"""Employees with case events that the listing knows of."""


class CaseNotFound(LookupError):
    """No case with that id (or it is older than the store keeps)."""


class CaseClosed(Exception):
    """The case was resolved before this transition reached it."""

    def __init__(self, case: Case) -> None:
        super().__init__(f"case {case.id} is already resolved")
        self.case = case


class CaseBook:
    """Opens, raises, acknowledges, resolves and lists cases in a guard store."""

    def __init__(self, store: GuardStore, prefix: str, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._prefix = prefix
        self._seq = f"{prefix}:{{cases}}:seq"
        self._raises = f"{prefix}:{{cases}}:raises"
        self._index = f"{prefix}:{{cases}}:employees"

    # -- keys --------------------------------------------------------------------------------

    def _log(self, employee: str) -> str:
        return f"{self._prefix}:{{cases}}:log:{quote(employee, safe='')}"

    # -- reading -----------------------------------------------------------------------------

    def _read(self, batch: Batch, employee: str) -> None:
        """The employee's log, then every repeat count: what :meth:`_fold` needs."""
        batch.members(self._log(employee), 0.0)
        batch.fields(self._raises)

    @staticmethod
    def _fold(employee: str, members: list[Any], flat: list[Any]) -> Folded:
        repeats = {str(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
        return fold(employee, (_decode(m) for m in members), repeats)

    async def _run(self, batch: Batch) -> list[Any]:
        return await self.store.execute(batch.ops)

    async def employee_cases(self, employee: str) -> Folded:
        batch = Batch()
        self._read(batch, employee)
        members, flat = await self._run(batch)
        return self._fold(employee, members, flat)

    async def cases(self, status: str = "open") -> list[Case]:
        """Cases with ``status`` (``all``: every one), newest first."""
        batch = Batch()
        batch.members(self._index, 0.0)
        employees: list[str] = (await self._run(batch))[0]
        if not employees:
            return []
        batch = Batch()
        for employee in employees:
            batch.members(self._log(employee), 0.0)
        batch.fields(self._raises)
        results = await self._run(batch)
        flat = results[-1]
        found: list[Case] = []
        for employee, members in zip(employees, results, strict=False):
            for case in self._fold(employee, members, flat).cases:
                if status == "all" or case.status == status:
                    found.append(case)
        found.sort(key=lambda case: (case.opened_at, case.id), reverse=True)
        return found

    async def case(self, case_id: str) -> Case:
        """The case with this id; raises :class:`CaseNotFound`."""
        case = (await self.employee_cases(employee_of(case_id))).find(case_id)
        if case is None:
            raise CaseNotFound(case_id)
        return case

    # -- writing -----------------------------------------------------------------------------

    async def _next_ids(self, count: int) -> int:
        """The first of ``count`` fresh event ids."""
        batch = Batch()
        batch.incr(self._seq, "event", count, RETENTION * 10)
        last: int = (await self._run(batch))[0]
        return last - count + 1

    async def _append(self, employee: str, event: dict[str, Any]) -> Folded:
        """Append one event and fold the log it landed in, in one atomic batch."""
        now = float(event["t"])
        batch = Batch()
        batch.add(self._log(employee), now, _encode(event), RETENTION, LOG_CAP, 0)
        batch.add(self._index, now, employee, RETENTION, INDEX_CAP, 0)
        self._read(batch, employee)
        results = await self._run(batch)
        return self._fold(employee, results[-2], results[-1])

    async def signal(self, signal: Signal) -> tuple[Case, str]:
        """Open a case for the signal or raise the employee's open one; returns the case and
        what happened to it (``opened`` or ``raised``)."""
        folded = await self.employee_cases(signal.employee)
        current = folded.open_case()
        if current is not None and _adds_nothing(current, signal):
            # Count it; in the same batch, read back whether the case is still unresolved.
            batch = Batch()
            batch.incr(self._raises, current.id, signal.count, RETENTION)
            self._read(batch, signal.employee)
            _, members, flat = await self._run(batch)
            after = self._fold(signal.employee, members, flat)
            still = after.open_case()
            if still is not None and still.id == current.id:
                return still, "raised"
            folded = after
            undo = Batch()  # resolved meanwhile: the signal belongs to a new case
            undo.incr(self._raises, current.id, -signal.count, RETENTION)
            await self._run(undo)
        event_id = await self._next_ids(1)
        event: dict[str, Any] = {
            "i": event_id,
            "k": SIGNAL,
            "t": max(self.clock.now(), folded.newest + STEP),
            "rules": list(signal.rules),
            "locked": signal.locked,
            "store": signal.store,
            "region": signal.region,
            "n": signal.count,
        }
        after = await self._append(signal.employee, event)
        case_id, name = after.placed[event_id]
        case = after.find(case_id)
        assert case is not None
        return case, name

    async def acknowledge(self, case_id: str, by: str, note: str | None) -> Case:
        return await self._review(case_id, "acknowledged", by, note, None)

    async def resolve(self, case_id: str, by: str, note: str | None, resolution: str) -> Case:
        return await self._review(case_id, "resolved", by, note, resolution)

    async def _review(
        self, case_id: str, kind: str, by: str, note: str | None, resolution: str | None
    ) -> Case:
        employee = employee_of(case_id)
        folded = await self.employee_cases(employee)
        before = folded.find(case_id)
        if before is None:
            raise CaseNotFound(case_id)
        if before.status == "resolved":
            raise CaseClosed(before)
        event_id = await self._next_ids(1)
        event: dict[str, Any] = {
            "i": event_id,
            "k": kind,
            "t": max(self.clock.now(), folded.newest + STEP),
            "case": case_id,
            "by": by,
            "note": note,
            "resolution": resolution,
        }
        after = await self._append(employee, event)
        case = after.find(case_id)
        if case is None:  # only if the log was trimmed under us
            raise CaseNotFound(case_id)
        if event_id not in after.effective:
            raise CaseClosed(case)
        return case


def _encode(event: dict[str, Any]) -> str:
    """``0|`` reviewers' events, ``1|`` signals, then the zero-padded id: the order of events
    with equal scores (see the module's docstring)."""
    kind = "1" if event["k"] == SIGNAL else "0"
    return f"{kind}|{event['i']:020d}|{orjson.dumps(event).decode()}"


def _decode(member: str) -> dict[str, Any]:
    decoded: dict[str, Any] = orjson.loads(member[23:])
    return decoded


def _adds_nothing(case: Case, signal: Signal) -> bool:
    return set(signal.rules) <= set(case.rules) and (case.locked or not signal.locked)


def rules_of(flags: Sequence[str], rule: str | None) -> tuple[str, ...]:
    """A decision's rules for a case: its flags, then the rule that locked, once each."""
    rules = list(dict.fromkeys(flags))
    if rule is not None and rule not in rules:
        rules.append(rule)
    return tuple(rules)
