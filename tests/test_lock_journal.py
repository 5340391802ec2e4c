"""The lock journal: what it keeps, how instances' files merge, and what it survives."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lookup_proxy.guard.lockouts import LockInfo
from lookup_proxy.resilience.journal import LockJournal

T = 1_800_000_000.0


def test_a_lock_is_current_until_it_is_lifted(tmp_path: Path) -> None:
    journal = LockJournal(tmp_path, "a")
    journal.locked([LockInfo("mallory", "chain-block", T, None, ("x@2026-01-01",))])
    assert journal.current(T + 1) == [
        LockInfo("mallory", "chain-block", T, None, ("x@2026-01-01",))
    ]
    journal.unlocked("mallory", T + 10)
    assert journal.current(T + 11) == []


def test_a_timed_lock_is_gone_after_its_until(tmp_path: Path) -> None:
    journal = LockJournal(tmp_path, "a")
    journal.locked([LockInfo("bob", "rate", T, T + 60, ())])
    assert [i.employee for i in journal.current(T + 59)] == ["bob"]
    assert journal.current(T + 60) == []


def test_instances_files_merge_by_time(tmp_path: Path) -> None:
    """An unlock on instance b lifts a lock instance a wrote; a later lock on a wins again."""
    a, b = LockJournal(tmp_path, "a"), LockJournal(tmp_path, "b")
    a.locked([LockInfo("mallory", "block", T, None), LockInfo("eve", "block", T, None)])
    b.unlocked("mallory", T + 5)
    assert [i.employee for i in a.current(T + 6)] == ["eve"]
    a.locked([LockInfo("mallory", "manual", T + 7, None)])
    assert sorted(i.employee for i in b.current(T + 8)) == ["eve", "mallory"]
    assert len(list(tmp_path.glob("locks-*.jsonl"))) == 2


def test_a_torn_line_is_skipped_and_counted_not_fatal(tmp_path: Path) -> None:
    journal = LockJournal(tmp_path, "a")
    journal.locked([LockInfo("mallory", "block", T, None)])
    with journal.path.open("ab") as file:
        file.write(b'{"op": "lock", "employee": "eve", "ru')  # the crash came mid-write
    assert [i.employee for i in journal.current(T + 1)] == ["mallory"]
    assert journal.unreadable == 1
    journal.locked([LockInfo("trent", "block", T + 2, None)])  # after the restart
    assert [i.employee for i in journal.current(T + 3)] == ["mallory", "trent"]


def test_an_instance_name_cannot_escape_the_directory(tmp_path: Path) -> None:
    journal = LockJournal(tmp_path, "../../etc/passwd")
    assert journal.path.parent == tmp_path


def test_a_failed_write_is_reported_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[int] = []
    journal = LockJournal(tmp_path, "a", on_error=lambda: errors.append(1))
    journal.path.mkdir()  # the file cannot be opened for writing: as a full or lost volume
    with caplog.at_level(logging.ERROR, "lookup_proxy.journal"):
        journal.locked([LockInfo("mallory", "block", T, None)])
    assert errors == [1]
    [record] = caplog.records
    assert record.getMessage() == "lock journal write failed"
    assert record.exc_info is None
