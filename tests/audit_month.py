"""A month of audit records written as the proxy would: JSON lines per the issue-11 contract,
in ``audit-YYYY-MM-DD.jsonl`` files by UTC day of writing, linked and sealed by the trail's own
``lookup_proxy.audit.chain.Chain`` (so ``lookup-proxy audit verify`` accepts the month).

The writer keeps its own books (what each employee did), so tests compare the report against
what was written, not against the report's own arithmetic.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from lookup_proxy.audit.chain import Chain, Signer

PSEUDONYM_KEY = b"k" * 32
KEY_ID = "k1"
POLICY_HASH = "0123456789abcdef"
LOCAL = timedelta(hours=9)  # [hours] utc_offset default: +09:00


def at_text(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def local(day: int, hour: int, minute: int, *, month: int = 10, year: int = 2026) -> datetime:
    """A local store time as a UTC instant."""
    return datetime(year, month, day, hour, minute, tzinfo=UTC) - LOCAL


@dataclass
class Books:
    """What one employee did in the month, as written."""

    lookups: int = 0
    found: int = 0
    not_found: int = 0
    refused: int = 0
    after_hours: int = 0
    subjects: set[str] = field(default_factory=set)


class ArchiveWriter:
    """One proxy process's chain, appending to the archive directory."""

    def __init__(self, directory: Path, chain: str = "proxy-a-20260930T000000Z") -> None:
        self.directory = directory
        self.signer = Signer.generate()
        self.chain = Chain(chain, self.signer, every=1000, interval=86_400.0)
        self.queued: list[tuple[str, str, dict[str, Any]]] = []
        self.own_files: set[str] = set()
        """Days whose records go to the writer's own ``audit-<day>.<chain>.jsonl``."""
        self.books: dict[str, Books] = defaultdict(Books)
        self.numbers: list[str] = []
        self.requests = 0

    def write(self, kind: str, moment: datetime, fields: dict[str, Any], *, day: str = "") -> None:
        """Queue a record; ``flush`` chains them in time order, as the writer made them."""
        record: dict[str, Any] = {"v": 1, "kind": kind, "at": at_text(moment), **fields}
        self.queued.append((record["at"], day or moment.strftime("%Y-%m-%d"), record))

    def lookup(
        self,
        moment: datetime,
        employee: str | None,
        store: str | None,
        number: str | None,
        *,
        outcome: str,
        cause: str | None = None,
        rule: str | None = None,
        locked: tuple[str, ...] = (),
        counted: bool = True,
        written_on: str = "",
        region: str | None = "R1",
    ) -> None:
        """An attempt and its outcome (``found``, ``not_found`` or ``refused``)."""
        self.requests += 1
        request_id = f"req-{self.requests:06d}"
        subject = None
        if number is not None:
            self.numbers.append(number)
            subject = hmac.new(PSEUDONYM_KEY, number.encode(), hashlib.sha256).hexdigest()
        self.write(
            "lookup",
            moment,
            {
                "request_id": request_id,
                "employee": employee,
                "store": store,
                "region": region if employee is not None else None,
                "client": "10.1.2.3",
                "route": "GET /customers/{number}",
                "reason": "PLAN_CHANGE" if employee is not None else None,
                "reference": None,
                "subject": subject,
                "key_id": KEY_ID if subject else None,
                "last4": number[-4:] if number else None,
                "policy": POLICY_HASH,
            },
            day=written_on,
        )
        refused = outcome == "refused"
        self.write(
            "outcome",
            moment + timedelta(milliseconds=40),
            {
                "of": request_id,
                "decision": "refuse" if refused else "allow",
                "rule": rule,
                "flags": [],
                "locked": list(locked),
                "cause": cause,
                "status": 403 if refused else (200 if outcome == "found" else 404),
                "upstream_status": None if refused else (200 if outcome == "found" else 404),
                "outcome": outcome,
                "latency_ms": 12.5,
                "fields": None,
            },
            day=written_on,
        )
        if employee is None or not counted:
            return
        books = self.books[employee]
        books.lookups += 1
        books.found += outcome == "found"
        books.not_found += outcome == "not_found"
        books.refused += refused
        if subject is not None:
            books.subjects.add(subject)
        second = ((moment + LOCAL).hour * 60 + (moment + LOCAL).minute) * 60
        books.after_hours += not 9 * 3600 <= second < 22 * 3600

    def admin(
        self, moment: datetime, actor: str, action: str, target: str, note: str | None
    ) -> None:
        self.write(
            "admin",
            moment,
            {
                "request_id": f"adm-{len(self.queued)}",
                "employee": actor,
                "client": "10.9.9.9",
                "action": action,
                "target": target,
                "note": note,
                "status": 200,
                "query": None,
            },
        )

    def case(
        self,
        moment: datetime,
        case: str,
        event: str,
        employee: str,
        rules: list[str],
        by: str | None = None,
        note: str | None = None,
        resolution: str | None = None,
    ) -> None:
        self.write(
            "case",
            moment,
            {
                "case": case,
                "event": event,
                "employee": employee,
                "rules": rules,
                "by": by,
                "note": note,
                "resolution": resolution,
            },
        )

    def flush(self) -> None:
        """Chain (seq, prev, hash per the contract) and append to the day files."""
        self.directory.mkdir(parents=True, exist_ok=True)
        lines: dict[str, list[bytes]] = defaultdict(list)
        day = ""
        for at, day, record in sorted(self.queued, key=lambda q: q[0]):
            now = datetime.fromisoformat(at).timestamp()
            lines[day].append(orjson.dumps(self.chain.link(record, now)))
            if self.chain.checkpoint_due(now):
                lines[day].append(orjson.dumps(self.chain.checkpoint(now)))
        if day:
            lines[day].append(orjson.dumps(self.chain.checkpoint(now, final=True)))
        for day, chunk in sorted(lines.items()):
            if day in self.own_files:  # the proxy wrote that day itself (Redis unreachable)
                day = f"{day}.{self.chain.chain_id}"
            with (self.directory / f"audit-{day}.jsonl").open("ab") as out:
                out.write(b"".join(line + b"\n" for line in chunk))
        self.queued.clear()
