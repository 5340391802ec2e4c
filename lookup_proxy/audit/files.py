"""The archive's layout on disk: one append-only JSON-lines file per UTC day of writing.

::

    <archive>/audit-2026-12-03.jsonl   records the exporter wrote that day (from the stream)
    <archive>/audit-2026-12-03.<chain>.jsonl
                                       records one proxy wrote itself that day (memory store,
                                       or while Redis could not take them)
    <archive>/.export-position         {"stream": "<last stream id exported>"} (Redis store)
    <archive>/index.sqlite             the search index (``lookup-proxy audit search``)

Every line is one record, bytes as written. ``archive_files`` lists the day files in time
order (a day's exported file first, then that day's writer files).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

__all__ = [
    "INDEX_FILE",
    "POSITION_FILE",
    "archive_files",
    "archive_name",
    "day_of",
    "fsync_directory",
    "write_all",
    "write_atomically",
]

POSITION_FILE = ".export-position"
INDEX_FILE = "index.sqlite"
_NAME = re.compile(r"^audit-(\d{4}-\d{2}-\d{2})(\.[A-Za-z0-9][A-Za-z0-9._-]*)?\.jsonl$")


def archive_name(now: float) -> str:
    """The file records written at ``now`` (seconds since the epoch) go to."""
    return time.strftime("audit-%Y-%m-%d.jsonl", time.gmtime(now))


def day_of(name: str) -> str | None:
    """``YYYY-MM-DD`` of an archive file name, or None for any other file."""
    match = _NAME.match(name)
    return match.group(1) if match else None


def archive_files(directory: Path) -> list[Path]:
    """The archive's day files in time order (other files in the directory are ignored)."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _NAME.match(path.name)
        if match is not None and path.is_file():
            found.append((match.group(1), match.group(2) is not None, path.name, path))
    return [path for *_, path in sorted(found)]


def fsync_directory(directory: Path) -> None:
    """Make a new or renamed entry in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a short write is not an error)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: a reader (or a crash) sees the old or the new, whole."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_directory(path.parent)
