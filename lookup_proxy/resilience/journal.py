"""The lock journal: every lock and unlock, appended to a file that outlives the store.

A lock in Redis is lost when Redis comes back empty; an enumerator the guard caught must not be
free again because of that. Each instance appends to its own file in one directory that every
instance mounts (no two writers share a file, so no interleaved lines), and fsyncs every entry:
locks are rare, so durability costs nothing on the lookup path. The current locks are the merge
of every file by time: the latest entry per employee wins, a lock past its ``until`` is gone.

A line that cannot be parsed (a torn last write after a crash) is skipped and counted, never
fatal: the other locks still count.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from lookup_proxy.guard.lockouts import LockInfo
from lookup_proxy.instance import host_name

log = logging.getLogger("lookup_proxy.journal")


@dataclass(frozen=True, slots=True)
class Entry:
    """One journal line: a lock (with its rule and until) or an unlock."""

    employee: str
    at: float
    locked: LockInfo | None


class LockJournal:
    """Appends lock and unlock entries; reads back the locks that hold now."""

    def __init__(
        self,
        directory: Path,
        instance: str | None = None,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.directory = directory
        self._on_error = on_error
        self.instance = instance or f"{host_name()}-{os.getpid()}"
        self.path = directory / f"locks-{_safe(self.instance)}.jsonl"
        self.unreadable = 0
        """Lines skipped on the last read (torn writes)."""
        directory.mkdir(parents=True, exist_ok=True)

    # -- writing (called by Lockouts on every lock and lift) ----------------------------------

    def locked(self, infos: Sequence[LockInfo]) -> None:
        self._append(
            [
                {
                    "op": "lock",
                    "employee": info.employee,
                    "rule": info.rule,
                    "at": info.at,
                    "until": info.until,
                    "because": list(info.because),
                }
                for info in infos
            ]
        )

    def unlocked(self, employee: str, at: float) -> None:
        self._append([{"op": "unlock", "employee": employee, "at": at}])

    def _append(self, entries: list[dict[str, object]]) -> None:
        # Each entry starts on a fresh line, so one torn by a crash never swallows the next.
        data = b"".join(b"\n" + orjson.dumps(entry) for entry in entries) + b"\n"
        # O_APPEND: one write per batch lands whole at the end even if a second process opened
        # the same file by mistake; fsync before returning, so an acknowledged lock survives.
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            # The lock itself is in the store and holds; only its survival of an empty store is
            # at risk, which ops must hear about (disk full, volume gone), without a traceback.
            log.error(
                "lock journal write failed",
                extra={"file": str(self.path), "error": exc.strerror or str(exc)},
            )
            if self._on_error is not None:
                self._on_error()

    # -- reading ------------------------------------------------------------------------------

    def entries(self) -> Iterator[Entry]:
        """Every readable entry of every instance's file, in no particular order."""
        self.unreadable = 0
        for path in sorted(self.directory.glob("locks-*.jsonl")):
            try:
                lines = path.read_bytes().splitlines()
            except OSError as exc:
                log.error(
                    "lock journal file unreadable", extra={"file": str(path), "error": str(exc)}
                )
                continue
            for line in lines:
                if not line.strip():
                    continue
                entry = _parse(line)
                if entry is None:
                    self.unreadable += 1
                else:
                    yield entry

    def current(self, now: float) -> list[LockInfo]:
        """The locks that hold at ``now``: the latest entry per employee, if it is a lock."""
        latest: dict[str, Entry] = {}
        for entry in self.entries():
            seen = latest.get(entry.employee)
            if seen is None or entry.at >= seen.at:
                latest[entry.employee] = entry
        return sorted(
            (
                entry.locked
                for entry in latest.values()
                if entry.locked is not None
                and (entry.locked.until is None or entry.locked.until > now)
            ),
            key=lambda info: (info.at, info.employee),
        )


def _parse(line: bytes) -> Entry | None:
    try:
        data = orjson.loads(line)
        employee, at = str(data["employee"]), float(data["at"])
        if data["op"] == "unlock":
            return Entry(employee, at, None)
        if data["op"] != "lock":
            return None
        until = data.get("until")
        info = LockInfo(
            employee,
            str(data["rule"]),
            at,
            None if until is None else float(until),
            tuple(str(item) for item in data.get("because", ())),
        )
        return Entry(employee, at, info)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:64]
