"""The archive's layout on disk: one append-only JSON-lines file per UTC day of writing.

::

    <archive>/audit-2026-12-03.jsonl   records written that day, one per line, bytes unchanged
    <archive>/.export-position         {"stream": "<last stream id exported>"} (Redis store)
    <archive>/index.sqlite             the search index (``lookup-proxy audit search``)

File names sort in time order, so reading the files in name order reads the archive in the
order it was written.
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
_NAME = re.compile(r"^audit-(\d{4}-\d{2}-\d{2})\.jsonl$")


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
    return sorted(path for path in directory.iterdir() if day_of(path.name) is not None)


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
