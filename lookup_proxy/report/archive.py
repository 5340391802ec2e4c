"""Loading a month from the audit archive: which files, which lines, which records.

The archive holds ``audit-YYYY-MM-DD.jsonl`` (and ``audit-YYYY-MM-DD.<chain>.jsonl``) files
named by the UTC day a record was *written* (by the exporter that drains the Redis stream,
possibly days later, or by a proxy itself; see ``lookup_proxy.audit.files``). So a month's
records sit in that month's files, the day before it (a month in local time starts before UTC
midnight east of Greenwich) and up to the stream's retention after it. Records are selected by
their own ``at``, never by the file they are in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import orjson

from lookup_proxy.audit.files import archive_files as all_archive_files
from lookup_proxy.audit.files import day_of
from lookup_proxy.report.errors import ReportError

MONTH: Final = re.compile(r"(\d{4})-(\d{2})")


@dataclass(frozen=True)
class Month:
    """A calendar month in the stores' local time (``[hours] utc_offset``), as UTC bounds."""

    year: int
    month: int
    utc_offset: int
    """Seconds east of UTC of the stores' local time."""

    @classmethod
    def parse(cls, text: str, utc_offset: int) -> Month:
        match = MONTH.fullmatch(text.strip())
        if match is None or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1970:
            raise ReportError(f"--month must be a month as YYYY-MM, e.g. 2026-10 (got {text!r})")
        return cls(int(match.group(1)), int(match.group(2)), utc_offset)

    @property
    def label(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start(self) -> datetime:
        """The first instant of the month (local midnight), in UTC."""
        local = datetime(self.year, self.month, 1, tzinfo=UTC)
        return local - timedelta(seconds=self.utc_offset)

    @property
    def end(self) -> datetime:
        """The first instant after the month, in UTC."""
        year, month = (self.year + 1, 1) if self.month == 12 else (self.year, self.month + 1)
        return Month(year, month, self.utc_offset).start

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def bounds(self) -> tuple[str, str]:
        """``at`` strings bounding the month: ``low <= at < high`` (ISO order is time order)."""
        return _at(self.start), _at(self.end)


def _at(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class Reading:
    """What loading found besides the records: the reviewer is told about all of it."""

    files: list[Path] = field(default_factory=list)
    unreadable: int = 0
    """Lines that are not a JSON object with a string ``at`` and ``kind`` (a torn last line
    after a crash, or tampering: ``lookup-proxy audit verify`` says which)."""
    duplicates: int = 0
    """Records of a chain and ``seq`` already read (an export repeated after a crash), counted
    once."""


def archive_files(directory: Path, month: Month, retention: float) -> list[Path]:
    """The archive files that may hold the month's records, oldest first.

    From the UTC day the month starts on, through the day it ends plus the stream's retention
    (an exporter may move a record that long after it was made), plus one day of margin.
    """
    if not directory.is_dir():
        raise ReportError(f"no audit archive at {directory} (policy [audit] archive)")
    first = month.start.date() - timedelta(days=1)
    last = month.end.date() + timedelta(days=math.ceil(retention / 86_400) + 1)
    chosen: list[Path] = []
    for path in all_archive_files(directory):  # in time order
        try:
            day = date.fromisoformat(day_of(path.name) or "")
        except ValueError:
            continue
        if first <= day <= last:
            chosen.append(path)
    return chosen


def month_records(
    directory: Path, month: Month, retention: float, reading: Reading
) -> Iterator[dict[str, Any]]:
    """Every record of the archive near the month, in file order, each once.

    Outcomes are not filtered by time (an outcome belongs to its attempt, which may be the last
    millisecond of the month); everything else is, by the caller, with ``Month.bounds``.
    """
    reading.files = archive_files(directory, month, retention)
    seen: dict[str, bytearray] = {}  # per chain, one bit per seq: a year fits in megabytes
    for path in reading.files:
        try:
            handle = path.open("rb")
        except OSError as exc:
            raise ReportError(f"cannot read {path}: {exc.strerror or exc}") from None
        with handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    reading.unreadable += 1
                    continue
                if (
                    not isinstance(record, dict)
                    or not isinstance(record.get("at"), str)
                    or not isinstance(record.get("kind"), str)
                ):
                    reading.unreadable += 1
                    continue
                chain, seq = record.get("chain"), record.get("seq")
                if isinstance(chain, str) and isinstance(seq, int) and 0 < seq < 1 << 40:
                    bits = seen.setdefault(chain, bytearray())
                    byte, bit = divmod(seq, 8)
                    if byte >= len(bits):
                        bits.extend(bytes(max(byte + 1 - len(bits), len(bits))))
                    if bits[byte] & (1 << bit):
                        reading.duplicates += 1
                        continue
                    bits[byte] |= 1 << bit
                yield record
