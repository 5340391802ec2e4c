"""``audit verify``: every kind of tampering is reported, exactly, at its file and line."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from lookup_proxy.audit.chain import Chain, Signer, Verifier, iso_at, record_hash
from lookup_proxy.audit.verify import verify_archive, verify_files

T0 = 1_796_283_601.0
DAY = "audit-2026-12-03.jsonl"
SIGNER = Signer.generate()
VERIFIER = Verifier.from_signer(SIGNER)


def build(
    chain_id: str, lookups: int, *, every: int = 3, final: bool = True
) -> list[dict[str, object]]:
    """``lookups`` records of one chain, a checkpoint after every ``every``, and a final one."""
    chain = Chain(chain_id, SIGNER, every=every, interval=3600)
    out: list[dict[str, object]] = []
    for i in range(lookups):
        now = T0 + i
        record: dict[str, object] = {
            "v": 1,
            "kind": "lookup",
            "at": iso_at(now),
            "request_id": f"{chain_id}{i + 1}",
            "employee": "E1",
        }
        out.append(chain.link(record, now))
        if chain.checkpoint_due(now):
            out.append(chain.checkpoint(now))
    if final:
        out.append(chain.checkpoint(T0 + lookups, final=True))
    return out


def write(directory: Path, records: list[dict[str, object]], name: str = DAY) -> Path:
    path = directory / name
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def lines(directory: Path) -> list[str]:
    return [str(p) for p in verify_archive(directory, VERIFIER).problems]


def test_an_intact_archive_verifies(tmp_path: Path) -> None:
    a = build("a", 7)  # l1 l2 l3 c4 l5 l6 l7 c8 final c9
    assert [r["kind"] for r in a].count("checkpoint") == 3
    write(tmp_path, a)
    report = verify_archive(tmp_path, VERIFIER)
    assert report.problems == []
    assert report.ok
    assert report.summary() == "1 file(s), 10 record(s), 1 chain(s): 0 error(s), 0 warning(s)"


def test_interleaved_chains_over_several_files_verify(tmp_path: Path) -> None:
    a, b = build("a", 6), build("b", 4)
    mixed = [r for pair in zip(a, b, strict=False) for r in pair] + a[len(b) :]
    write(tmp_path, mixed[:7], "audit-2026-12-03.jsonl")
    write(tmp_path, mixed[7:], "audit-2026-12-04.jsonl")
    report = verify_archive(tmp_path, VERIFIER)
    assert report.problems == []
    assert (report.files, report.chains) == (2, 2)


def test_altered_record_keeping_its_hash(tmp_path: Path) -> None:
    a = build("a", 7)
    a[1] = {**a[1], "employee": "E2"}
    write(tmp_path, a)
    assert lines(tmp_path) == [
        f"{DAY}:2: error: altered: chain a seq 2: hash does not match the content"
    ]


def test_altered_and_rehashed_record_breaks_its_successors_link(tmp_path: Path) -> None:
    a = build("a", 7)
    a[1] = {**a[1], "employee": "E2"}
    a[1]["hash"] = record_hash(a[1])
    write(tmp_path, a)
    assert lines(tmp_path) == [
        f"{DAY}:2: error: altered: chain a seq 2: hash differs from the prev held by seq 3 "
        f"({DAY}:3): altered and re-hashed"
    ]


def test_rewriting_the_whole_chain_after_an_edit_fails_the_signature(tmp_path: Path) -> None:
    a = build("a", 7)
    a[1] = {**a[1], "employee": "E2"}
    prev = str(a[0]["hash"])
    for record in a[1:]:  # the forger re-links everything but cannot re-sign
        record["prev"] = prev
        record["hash"] = prev = record_hash(record)
    write(tmp_path, a)
    assert lines(tmp_path) == [
        f"{DAY}:4: error: bad-signature: chain a seq 4: signature does not verify",
        f"{DAY}:8: error: bad-signature: chain a seq 8: signature does not verify",
        f"{DAY}:10: error: bad-signature: chain a seq 10: signature does not verify",
        f"{DAY}:10: warning: unsealed: chain a seq 10: seqs 1-10 follow the last valid checkpoint",
        f"{DAY}:10: warning: unclosed: chain a seq 10: chain has no final checkpoint "
        "(writer crashed, still running, or its end was removed)",
    ]


def test_removed_record(tmp_path: Path) -> None:
    a = build("a", 7)
    del a[1]
    write(tmp_path, a)
    assert lines(tmp_path) == [f"{DAY}:2: error: removed: chain a seq 3: seq 2 missing before this"]
    report = verify_archive(tmp_path, VERIFIER)
    assert not report.ok


def test_removed_run_of_records(tmp_path: Path) -> None:
    a = build("a", 7)
    del a[1:5]  # l2 l3 c4 l5
    write(tmp_path, a)
    assert lines(tmp_path) == [
        f"{DAY}:2: error: removed: chain a seq 6: seqs 2-5 missing before this"
    ]


def test_inserted_record_claiming_a_taken_seq(tmp_path: Path) -> None:
    a = build("a", 7)
    forged = {**a[1], "employee": "E9", "request_id": "forged"}
    forged["hash"] = record_hash(forged)
    a.insert(2, forged)
    write(tmp_path, a)
    assert lines(tmp_path) == [
        f"{DAY}:3: error: inserted: chain a seq 2: a second, different record with this seq "
        f"(the first is at {DAY}:2)"
    ]


def test_duplicated_record(tmp_path: Path) -> None:
    a = build("a", 7)
    a.insert(5, a[2])
    write(tmp_path, a)
    assert lines(tmp_path) == [
        f"{DAY}:6: error: duplicate: chain a seq 3: a copy of the record at {DAY}:3"
    ]


def test_inserted_garbage_line(tmp_path: Path) -> None:
    a = build("a", 3)
    path = write(tmp_path, a)
    data = path.read_bytes().splitlines(keepends=True)
    data.insert(1, b'{"kind": "lookup", "employee": "E7"}\n')
    data.insert(1, b"hello\n")
    path.write_bytes(b"".join(data))
    assert lines(tmp_path) == [
        f"{DAY}:2: error: altered: not a JSON record",
        f"{DAY}:3: error: altered: chain, seq, prev or hash missing or malformed",
    ]


def test_reordered_lines_are_a_warning_and_a_record_moved_in_the_chain_an_error(
    tmp_path: Path,
) -> None:
    """Swapped lines: the chain read in seq order is intact, so only a warning names them.
    Swapping two records' places in the chain (their seqs, re-hashed without the key) breaks
    the links: an error."""
    a = build("a", 7)
    a[1], a[2] = a[2], a[1]
    write(tmp_path, a)
    assert lines(tmp_path) == [
        f"{DAY}:3: warning: reordered: chain a seq 2: appears after seq 3 ({DAY}:2)"
    ]
    moved = build("a", 7)
    moved[1]["seq"], moved[2]["seq"] = 3, 2  # the second and third events trade places
    for record in moved[1:3]:
        record["hash"] = record_hash(record)
    other = tmp_path / "moved"
    other.mkdir()
    write(other, moved)
    found = lines(other)
    assert found and all(": error: " in line for line in found[:2]), found


def test_a_chain_spread_over_its_writers_file_and_the_exported_file(tmp_path: Path) -> None:
    """While Redis was down the proxy wrote seqs 3-5 to its own file; the exporter wrote the
    rest (and seq 5 twice: the write reached Redis but the answer did not)."""
    a = build("a", 7)
    write(tmp_path, [*a[0:2], a[4], *a[5:]], "audit-2026-12-03.jsonl")
    write(tmp_path, a[2:5], "audit-2026-12-03.a.jsonl")
    assert lines(tmp_path) == [
        "audit-2026-12-03.a.jsonl:3: warning: duplicate: chain a seq 5: the same record is "
        f"also at {DAY}:3 (written through two paths)"
    ]
    assert verify_archive(tmp_path, VERIFIER).ok


def test_bad_signature(tmp_path: Path) -> None:
    a = build("a", 7)
    other = Signer.generate()
    a[3] = {**a[3], "sig": other.sign(str(a[3]["hash"]).encode())}
    write(tmp_path, a)
    assert lines(tmp_path) == [
        f"{DAY}:4: error: bad-signature: chain a seq 4: signature does not verify"
    ]


def test_unsigned_checkpoint_and_wrong_key(tmp_path: Path) -> None:
    a = build("a", 2, every=100)  # l1 l2 final-c3
    a[2] = {**a[2], "sig": None}
    write(tmp_path, a)
    assert (
        lines(tmp_path)[0] == f"{DAY}:3: error: bad-signature: chain a seq 3: checkpoint not signed"
    )
    write(tmp_path, build("a", 2, every=100))
    stranger = Verifier.from_signer(Signer.generate())
    assert [str(p) for p in verify_archive(tmp_path, stranger).errors] == [
        f"{DAY}:3: error: bad-signature: chain a seq 3: signed with key {SIGNER.key_id}, "
        f"verifying with {stranger.key_id}"
    ]


def test_unsealed_tail_and_unclosed_chain_are_warnings(tmp_path: Path) -> None:
    a = build("a", 5, final=False)  # l1 l2 l3 c4 l5 l6: a proxy still running, or crashed
    write(tmp_path, a)
    report = verify_archive(tmp_path, VERIFIER)
    assert [str(p) for p in report.problems] == [
        f"{DAY}:6: warning: unsealed: chain a seq 6: seqs 5-6 follow the last valid checkpoint",
        f"{DAY}:6: warning: unclosed: chain a seq 6: chain has no final checkpoint "
        "(writer crashed, still running, or its end was removed)",
    ]
    assert report.ok


def test_first_records_missing_and_bad_genesis(tmp_path: Path) -> None:
    a = build("a", 7)
    write(tmp_path, a[2:])
    assert lines(tmp_path) == [
        f"{DAY}:1: error: removed: chain a seq 3: seqs 1-2 missing before this"
    ]
    b = build("b", 1)
    b[0] = {**b[0], "prev": "f" * 64}
    b[0]["hash"] = record_hash(b[0])
    write(tmp_path, b)
    assert (
        lines(tmp_path)[0]
        == f"{DAY}:1: error: altered: chain b seq 1: first record's prev is not 64 zeros"
    )


def test_unterminated_last_line(tmp_path: Path) -> None:
    a = build("a", 3)
    path = write(tmp_path, a)
    path.write_bytes(path.read_bytes() + orjson.dumps(build("b", 1)[0])[:30])
    assert lines(tmp_path) == [
        f"{DAY}:6: error: altered: unterminated last line (a write cut short; the exporter's "
        "next round cuts it and writes its records again)"
    ]


def test_small_window_still_sees_duplicates_far_back_as_inserted(tmp_path: Path) -> None:
    a = build("a", 30, every=100)
    path = write(tmp_path, [*a, a[0]])
    report = verify_files([path], VERIFIER, window=5)
    assert [str(p) for p in report.problems] == [
        f"{DAY}:32: error: inserted: chain a seq 1: seq already passed long before "
        "(chain at seq 31); duplicate or inserted"
    ]


@pytest.mark.parametrize("final", [True, False])
def test_report_json(tmp_path: Path, final: bool) -> None:
    write(tmp_path, build("a", 1, final=final))
    report = verify_archive(tmp_path, VERIFIER)
    assert all(
        set(p.as_json()) == {"file", "line", "level", "kind", "chain", "seq", "message"}
        for p in report.problems
    )
    assert len(report.warnings) == (0 if final else 2)


SHIPPED = Path(__file__).resolve().parents[1] / "config" / "policy.toml"


def test_cli_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lookup_proxy.cli import main

    policy = tmp_path / "policy.toml"
    policy.write_text(SHIPPED.read_text(encoding="utf-8"))
    archive = tmp_path / "audit"
    archive.mkdir()
    a = build("a", 7)
    write(archive, a)
    monkeypatch.setenv("LOOKUP_PROXY_AUDIT_SIGNING_KEY", SIGNER.private_pem().decode())
    assert main(["audit", "verify", "--config", str(policy)]) == 0
    assert capsys.readouterr().out == (
        f"{archive}: 1 file(s), 10 record(s), 1 chain(s): 0 error(s), 0 warning(s)\n"
    )
    del a[1]
    write(archive, a)
    assert main(["audit", "verify", "--config", str(policy), "--archive", str(archive)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{DAY}:2: error: removed: chain a seq 3: seq 2 missing before this",
        f"{archive}: 1 file(s), 9 record(s), 1 chain(s): 1 error(s), 0 warning(s)",
    ]
    # a public key file instead of the private key in the environment
    (tmp_path / "audit.pub").write_bytes(SIGNER.public_pem())
    policy.write_text(
        SHIPPED.read_text(encoding="utf-8").replace(
            "[audit]\n", '[audit]\nverify_key = "audit.pub"\n'
        )
    )
    monkeypatch.delenv("LOOKUP_PROXY_AUDIT_SIGNING_KEY")
    assert main(["audit", "verify", "--config", str(policy)]) == 1
    capsys.readouterr()
    (tmp_path / "audit.pub").unlink()
    assert main(["audit", "verify", "--config", str(policy)]) == 2
    assert "cannot read audit.verify_key" in capsys.readouterr().err


def test_cli_verify_without_any_key_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lookup_proxy.cli import main

    policy = tmp_path / "policy.toml"
    policy.write_text(SHIPPED.read_text(encoding="utf-8"))
    monkeypatch.delenv("LOOKUP_PROXY_AUDIT_SIGNING_KEY", raising=False)
    assert main(["audit", "verify", "--config", str(policy)]) == 2
    assert (
        "LOOKUP_PROXY_AUDIT_SIGNING_KEY: expected an Ed25519 private key" in capsys.readouterr().err
    )
