"""Who this process is, for what two writers must never share: an audit chain and its archive
file, a lock journal file.

The host name says which machine; ``serve --workers N`` runs N processes on one machine, each
appending to its own chain and its own journal file (two writers of one chain would fork it, two
appenders of one file could interleave a line). The process id already tells them apart, but it
says nothing to someone reading an archive directory, and a restarted worker gets a new one; the
worker index does (``host-w0``, ``host-w1``: one name per place in the pool). The pid stays in
both identities, so a worker restarted into the same place still starts a chain and file of its
own.
"""

from __future__ import annotations

import re
import socket

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")

_worker: int | None = None


def become_worker(index: int) -> None:
    """Called once by a ``serve --workers`` worker process, before anything takes a name."""
    global _worker
    _worker = index


def host_name() -> str:
    """The machine's name, safe in a file name, with ``-w<index>`` in a worker of a pool."""
    host = _UNSAFE.sub("-", socket.gethostname())[:40] or "host"
    return host if _worker is None else f"{host}-w{_worker}"
