"""Lockouts: the one piece of guard state that outlives every window.

A lockout is a value per employee, written by the rules that lock (and by escalation, and by
security staff by hand), read first by every decision and lifted only by a person. It names the
rule and, for an escalation, the flags behind it, so whoever reviews it can see why. Kept out of
the engine because the admin API, the CLI and the engine all handle lockouts, while only the
engine judges rules.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote

from lookup_proxy.errors import Refusal, locked_out
from lookup_proxy.guard.primitives import Batch, employee_key

VIEWS_CACHED = 8192
"""Parsed lockouts remembered (by value); the cache starts over when full."""


@dataclass(frozen=True, slots=True)
class LockInfo:
    """A lockout as stored: which rule, when, until when (None: until unlocked), and why.

    ``because`` lists what an escalation lock was made of (``rule@day`` flags); empty for a
    rule that locks by itself.
    """

    employee: str
    rule: str
    at: float
    until: float | None
    because: tuple[str, ...] = ()


class LockRecorder(Protocol):
    """Where locks are also written so they outlive the store (the lock journal)."""

    def locked(self, infos: Sequence[LockInfo]) -> None: ...

    def unlocked(self, employee: str, at: float) -> None: ...


class Lockouts:
    """Writes, reads, lists and lifts lockouts through the guard's batches."""

    def __init__(
        self,
        prefix: str,
        duration: float | None,
        contact: str,
        keys: Callable[[str], Awaitable[list[str]]],
        batch: Callable[[], Batch],
        execute: Callable[[Batch], Awaitable[list[Any]]],
    ) -> None:
        self._prefix = prefix
        self._ttl = duration or 0.0
        self._contact = contact
        self._keys = keys
        self._batch = batch
        self._execute = execute
        self._views: dict[tuple[str, str], tuple[LockInfo, str]] = {}
        self.recorder: LockRecorder | None = None
        """Set by the proxy when locks must also go to the lock journal."""

    def key(self, employee_id: str) -> str:
        return employee_key(self._prefix, employee_id, "lock")

    async def write(
        self, employees: Sequence[str], rule: str, now: float, because: Sequence[str] = ()
    ) -> LockInfo:
        """Lock ``employees`` out for ``rule``; returns the first one's lockout."""
        until = now + self._ttl if self._ttl else None
        record: dict[str, Any] = {"rule": rule, "at": now, "until": until}
        if because:
            record["because"] = list(because)
        value = json.dumps(record)
        batch = self._batch()
        for employee in employees:
            batch.set(self.key(employee), value, self._ttl, now)
        await self._execute(batch)
        infos = [LockInfo(employee, rule, now, until, tuple(because)) for employee in employees]
        if self.recorder is not None:
            self.recorder.locked(infos)
        return infos[0]

    async def restore(self, infos: Sequence[LockInfo], now: float) -> int:
        """Write back locks a store lost (from the journal); returns how many were written."""
        batch = self._batch()
        written = 0
        for info in infos:
            if info.until is not None and info.until <= now:
                continue
            record: dict[str, Any] = {"rule": info.rule, "at": info.at, "until": info.until}
            if info.because:
                record["because"] = list(info.because)
            ttl = 0.0 if info.until is None else info.until - now
            batch.set(self.key(info.employee), json.dumps(record), ttl, now)
            written += 1
        await self._execute(batch)
        return written

    def view(self, employee_id: str, value: str) -> tuple[LockInfo, str]:
        """A stored lockout parsed, with the refusal's detail; cached by value, because a
        locked-out employee who keeps trying reads the same value many times."""
        view = self._views.get((employee_id, value))
        if view is None:
            if len(self._views) >= VIEWS_CACHED:
                self._views.clear()
            info = self.parse(employee_id, value)
            view = self._views[employee_id, value] = (info, self.detail(info))
        return view

    def refusal(self, info: LockInfo) -> Refusal:
        return locked_out(self.detail(info), info.until, info.rule)

    def detail(self, info: LockInfo) -> str:
        if info.until is None:
            when = "until it is reviewed"
        else:
            when = "until " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(info.until))
        return (
            f"Your customer lookups are locked {when} because of an unusual pattern of "
            f"lookups. Contact {self._contact} to have it reviewed and unlocked."
        )

    def parse(self, employee_id: str, value: str) -> LockInfo:
        try:
            data = json.loads(value)
            because = tuple(str(item) for item in data.get("because", ()))
            return LockInfo(
                employee_id, str(data["rule"]), float(data["at"]), data.get("until"), because
            )
        except (ValueError, KeyError, TypeError):
            return LockInfo(employee_id, "unknown", 0.0, None)

    async def status(self, employee_id: str, now: float) -> LockInfo | None:
        batch = self._batch()
        batch.get(self.key(employee_id), now)
        value = (await self._execute(batch))[0]
        return None if value is None else self.parse(employee_id, value)

    async def unlocked(self, employees: Sequence[str], now: float) -> list[str]:
        """Those of ``employees`` who are not locked out now."""
        if not employees:
            return []
        batch = self._batch()
        for employee in employees:
            batch.get(self.key(employee), now)
        held = await self._execute(batch)
        return [employee for employee, lock in zip(employees, held, strict=True) if lock is None]

    async def lift(self, employee_id: str, now: float) -> bool:
        """Lift a lockout on every instance at once; True when there was one.

        Unlocking is a reviewed decision, so the employee's own counters are cleared too:
        otherwise the history that caused the lock would lock them again on the next lookup.
        Store- and region-wide counters stay, they belong to the group.
        """
        lock = self.key(employee_id)
        pattern = employee_key(self._prefix, employee_id, "*")
        keys = [key for key in await self._keys(pattern) if key != lock]
        batch = self._batch()
        for key in [lock, *keys]:
            batch.delete(key)
        removed = bool((await self._execute(batch))[0])
        if self.recorder is not None:
            self.recorder.unlocked(employee_id, now)
        return removed

    async def every(self, now: float) -> list[LockInfo]:
        """Every current lockout (admin listing; scans keys, never on the lookup path)."""
        keys = await self._keys(f"{self._prefix}:{{e:*}}:lock")
        if not keys:
            return []
        batch = self._batch()
        for key in keys:
            batch.get(key, now)
        values = await self._execute(batch)
        return [
            self.parse(unquote(key[key.index("{e:") + 3 : key.index("}")]), value)
            for key, value in zip(keys, values, strict=True)
            if value is not None
        ]
