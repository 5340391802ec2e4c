"""``lookup-proxy audit verify``: is the archive what the writers wrote?

The archive's day files are read in order, line by line, and every chain is checked:

- each record's ``hash`` against its content (``altered``);
- each ``prev`` against the hash of the record before it in seq order (``altered``: a record
  edited and re-hashed breaks the link its successor holds);
- seqs without gaps from 1 (``removed``), each seq once (``duplicate``: the same record twice;
  ``inserted``: a different record claiming a seq already taken), in file order
  (``reordered``, a warning: a seq that turns up after a higher one of its chain in the same
  file — the chain is judged in seq order, so moving a line changes nothing it proves, while
  moving a record's place *in the chain* means changing its seq or prev, which breaks a hash
  or a link; and concurrent lookups can reach the Redis stream slightly out of seq order);
- every checkpoint's Ed25519 signature over its hash (``bad-signature``).

A chain's records may be spread over several files (a proxy writes its own file while Redis
cannot take its records, the exporter writes the rest): across files, seqs may interleave and an
identical copy of a record (a write that reached both) is only a ``duplicate`` warning.

Warnings, not errors: records after a chain's last valid checkpoint (``unsealed``: they are only
hash-linked, so whoever rewrites the tail could recompute them — the live chain of a running
proxy always has one), and a chain without a final checkpoint (``unclosed``: its writer
crashed, or is still running, or its tail was removed).

Memory stays bounded on a year of archive: per chain, the hashes of the last ``window`` seqs
(a duplicate or a link further back than that is reported without the other record's place).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from lookup_proxy.audit.chain import GENESIS, Verifier, record_hash
from lookup_proxy.audit.files import archive_files

__all__ = ["Problem", "Report", "verify_archive", "verify_files"]

Level = Literal["error", "warning"]
WINDOW = 50_000
_IDLE_WINDOW = 1_000


@dataclass(frozen=True, order=True)
class Problem:
    """One finding, at a file and line (1-based)."""

    file_index: int
    line: int
    level: Level = field(compare=False)
    kind: str = field(compare=False)
    file: str = field(compare=False)
    chain: str | None = field(compare=False)
    seq: int | None = field(compare=False)
    message: str = field(compare=False)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        what = f"chain {self.chain} seq {self.seq}: " if self.chain is not None else ""
        return f"{where}: {self.level}: {self.kind}: {what}{self.message}"

    def as_json(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "level": self.level,
            "kind": self.kind,
            "chain": self.chain,
            "seq": self.seq,
            "message": self.message,
        }


@dataclass
class Report:
    problems: list[Problem]
    files: int
    records: int
    chains: int

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        return (
            f"{self.files} file(s), {self.records} record(s), {self.chains} chain(s): "
            f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)"
        )


@dataclass(frozen=True)
class _Where:
    file_index: int
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class _Seen:
    hash: str
    prev: str
    where: _Where


@dataclass
class _Chain:
    name: str
    window: OrderedDict[int, _Seen] = field(default_factory=OrderedDict)
    top: int = 0
    top_where: _Where | None = None
    missing: list[tuple[int, int, _Where]] = field(default_factory=list)
    """Gaps ``[lo, hi]`` not yet filled, with where each was noticed."""
    sealed: int = 0
    closed: _Where | None = None
    last_file: int = -1

    def take_missing(self, seq: int) -> bool:
        for index, (lo, hi, where) in enumerate(self.missing):
            if lo <= seq <= hi:
                parts = [(lo, seq - 1, where), (seq + 1, hi, where)]
                self.missing[index : index + 1] = [(a, b, w) for a, b, w in parts if a <= b]
                return True
        return False

    def remember(self, seq: int, seen: _Seen, limit: int) -> None:
        self.window[seq] = seen
        while len(self.window) > limit:
            self.window.popitem(last=False)


class _Checker:
    def __init__(self, verifier: Verifier | None, window: int) -> None:
        self.verifier = verifier
        self.window = window
        self.chains: dict[str, _Chain] = {}
        self.problems: list[Problem] = []
        self.records = 0

    def report(
        self, where: _Where, level: Level, kind: str, chain: str | None, seq: int | None, msg: str
    ) -> None:
        self.problems.append(
            Problem(where.file_index, where.line, level, kind, where.file, chain, seq, msg)
        )

    def line(self, where: _Where, raw: bytes) -> None:
        try:
            record: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.report(where, "error", "altered", None, None, "not a JSON record")
            return
        if not isinstance(record, dict):
            self.report(where, "error", "altered", None, None, "not a JSON object")
            return
        name, seq, digest, prev = (record.get(k) for k in ("chain", "seq", "hash", "prev"))
        if (
            not isinstance(name, str)
            or not isinstance(seq, int)
            or isinstance(seq, bool)
            or seq < 1
            or not isinstance(digest, str)
            or not isinstance(prev, str)
        ):
            self.report(
                where,
                "error",
                "altered",
                None,
                None,
                "chain, seq, prev or hash missing or malformed",
            )
            return
        self.records += 1
        chain = self.chains.get(name)
        if chain is None:
            chain = self.chains[name] = _Chain(name)
        chain.last_file = where.file_index
        if record_hash(record) != digest:
            self.report(where, "error", "altered", name, seq, "hash does not match the content")
        known = chain.window.get(seq)
        if known is not None:
            if known.hash == digest and known.where.file != where.file:
                self.report(
                    where,
                    "warning",
                    "duplicate",
                    name,
                    seq,
                    f"the same record is also at {known.where} (written through two paths)",
                )
            elif known.hash == digest:
                self.report(
                    where, "error", "duplicate", name, seq, f"a copy of the record at {known.where}"
                )
            else:
                self.report(
                    where,
                    "error",
                    "inserted",
                    name,
                    seq,
                    f"a second, different record with this seq (the first is at {known.where})",
                )
            return
        if seq <= chain.top and not chain.take_missing(seq):
            self.report(
                where,
                "error",
                "inserted",
                name,
                seq,
                f"seq already passed long before (chain at seq {chain.top}); duplicate or inserted",
            )
            return
        if seq < chain.top and chain.top_where is not None and chain.top_where.file == where.file:
            self.report(
                where,
                "warning",
                "reordered",
                name,
                seq,
                f"appears after seq {chain.top} ({chain.top_where})",
            )
        elif seq > chain.top + 1:
            chain.missing.append((chain.top + 1, seq - 1, where))
        if seq > chain.top:
            chain.top, chain.top_where = seq, where
        self._links(chain, seq, digest, prev, where)
        chain.remember(seq, _Seen(digest, prev, where), self.window)
        if record.get("kind") == "checkpoint":
            self._checkpoint(chain, seq, record, where)

    def _links(self, chain: _Chain, seq: int, digest: str, prev: str, where: _Where) -> None:
        before = chain.window.get(seq - 1)
        if seq == 1 and prev != GENESIS:
            self.report(
                where, "error", "altered", chain.name, seq, "first record's prev is not 64 zeros"
            )
        elif before is not None and before.hash != prev:
            self.report(
                before.where,
                "error",
                "altered",
                chain.name,
                seq - 1,
                f"hash differs from the prev held by seq {seq} ({where}): altered and re-hashed",
            )
        after = chain.window.get(seq + 1)
        if after is not None and after.prev != digest:
            self.report(
                where,
                "error",
                "altered",
                chain.name,
                seq,
                f"hash differs from the prev held by seq {seq + 1} ({after.where}): "
                "altered and re-hashed",
            )

    def _checkpoint(self, chain: _Chain, seq: int, record: dict[str, Any], where: _Where) -> None:
        verifier = self.verifier
        if record.get("sig") is None:
            self.report(where, "error", "bad-signature", chain.name, seq, "checkpoint not signed")
            return
        if verifier is None:
            self.report(
                where, "error", "bad-signature", chain.name, seq, "no key to verify it with"
            )
            return
        if not verifier.verify_checkpoint(record):
            key_id = record.get("key_id")
            why = (
                f"signed with key {key_id}, verifying with {verifier.key_id}"
                if key_id != verifier.key_id
                else "signature does not verify"
            )
            self.report(where, "error", "bad-signature", chain.name, seq, why)
            return
        chain.sealed = max(chain.sealed, seq)
        if record.get("final") is True:
            chain.closed = where

    def end_of_file(self, file_index: int) -> None:
        for chain in self.chains.values():
            if chain.last_file < file_index - 1 or chain.closed is not None:
                while len(chain.window) > _IDLE_WINDOW:
                    chain.window.popitem(last=False)

    def finish(self) -> None:
        for chain in self.chains.values():
            for lo, hi, where in chain.missing:
                seqs = f"seq {lo}" if lo == hi else f"seqs {lo}-{hi}"
                self.report(
                    where, "error", "removed", chain.name, hi + 1, f"{seqs} missing before this"
                )
            assert chain.top_where is not None
            if chain.sealed < chain.top:
                first = chain.sealed + 1
                self.report(
                    chain.top_where,
                    "warning",
                    "unsealed",
                    chain.name,
                    chain.top,
                    f"seqs {first}-{chain.top} follow the last valid checkpoint"
                    if first < chain.top
                    else "follows the last valid checkpoint",
                )
            if chain.closed is None:
                self.report(
                    chain.top_where,
                    "warning",
                    "unclosed",
                    chain.name,
                    chain.top,
                    "chain has no final checkpoint (writer crashed, still running, "
                    "or its end was removed)",
                )


def _parses(raw: bytes) -> bool:
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return True


def verify_files(
    paths: Iterable[Path], verifier: Verifier | None, *, window: int = WINDOW
) -> Report:
    """Check the given archive files, in the order given."""
    checker = _Checker(verifier, window)
    files = 0
    for index, path in enumerate(paths):
        files += 1
        with path.open("rb") as lines:
            for number, raw in enumerate(lines, start=1):
                where = _Where(index, path.name, number)
                if not raw.endswith(b"\n") and not _parses(raw):
                    checker.report(
                        where,
                        "error",
                        "altered",
                        None,
                        None,
                        "unterminated last line (a write cut short; the exporter's next "
                        "round cuts it and writes its records again)",
                    )
                    continue
                checker.line(where, raw)
        checker.end_of_file(index)
    checker.finish()
    return Report(sorted(checker.problems), files, checker.records, len(checker.chains))


def verify_archive(directory: Path, verifier: Verifier | None) -> Report:
    """Check every day file of an archive directory."""
    return verify_files(archive_files(directory), verifier)
