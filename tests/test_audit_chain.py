"""Hash chaining and signed checkpoints (lookup_proxy/audit/chain.py)."""

from __future__ import annotations

import hashlib

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from lookup_proxy.audit.chain import (
    GENESIS,
    Chain,
    Signer,
    Verifier,
    canonical,
    iso_at,
    key_id_of,
    record_hash,
)
from lookup_proxy.errors import ConfigError

T0 = 1_790_000_000.0


def _lookup(n: int) -> dict[str, object]:
    return {"v": 1, "kind": "lookup", "at": iso_at(T0 + n), "request_id": f"r{n}", "x": None}


def test_canonical_form_is_sorted_json_without_hash_and_sig() -> None:
    record = {"b": 1, "a": [1, "x"], "hash": "h", "sig": "s", "c": None}
    assert canonical(record) == b'{"a":[1,"x"],"b":1,"c":null}'
    assert record_hash(record) == hashlib.sha256(b'{"a":[1,"x"],"b":1,"c":null}').hexdigest()
    # key order of the input never matters
    assert record_hash(dict(reversed(list(record.items())))) == record_hash(record)


def test_iso_at_has_milliseconds_and_z() -> None:
    assert iso_at(0.0) == "1970-01-01T00:00:00.000Z"
    assert iso_at(1_796_283_601.1239) == "2026-12-03T07:40:01.123Z"


def test_link_sets_seq_prev_hash_from_genesis() -> None:
    chain = Chain("proxy-a-1", None, every=100, interval=60)
    first = chain.link(_lookup(1), T0)
    second = chain.link(_lookup(2), T0 + 1)
    assert (first["chain"], first["seq"], first["prev"]) == ("proxy-a-1", 1, GENESIS)
    assert (second["seq"], second["prev"]) == (2, first["hash"])
    for record in (first, second):
        assert record["hash"] == record_hash(record)
        assert record["at"] == iso_at(T0 + int(str(record["request_id"])[1:]))  # untouched
    # the hash survives a JSON round trip in any key order
    reparsed = orjson.loads(orjson.dumps(second))
    assert record_hash(reparsed) == second["hash"]


def test_link_line_is_the_linked_record_encoded_once() -> None:
    """The line a lookup's record is stored as: the same record ``link`` makes, in one chain
    with it, and its hash is what a verifier recomputes from the parsed line."""
    by_dict = Chain("c", None, every=100, interval=60)
    by_line = Chain("c", None, every=100, interval=60)
    for n in (1, 2, 3):
        record = by_dict.link(_lookup(n), T0 + n)
        line = by_line.link_line(_lookup(n), T0 + n)
        parsed = orjson.loads(line)
        assert parsed == record
        assert record_hash(parsed) == parsed["hash"]
        assert line.endswith(b',"hash":"' + str(record["hash"]).encode() + b'"}')
    assert by_line.prev == by_dict.prev and by_line.seq == 3


def test_checkpoint_due_by_count() -> None:
    chain = Chain("c", Signer.generate(), every=3, interval=3600)
    assert not chain.checkpoint_due(T0)  # nothing written yet
    for n in range(2):
        chain.link(_lookup(n), T0)
    assert not chain.checkpoint_due(T0)
    chain.link(_lookup(3), T0)
    assert chain.checkpoint_due(T0)
    chain.checkpoint(T0)
    assert not chain.checkpoint_due(T0 + 10_000)  # sealed, nothing new


def test_checkpoint_due_by_interval_from_oldest_unsealed_record() -> None:
    chain = Chain("c", Signer.generate(), every=1000, interval=60)
    chain.link(_lookup(1), T0)
    chain.link(_lookup(2), T0 + 50)
    assert not chain.checkpoint_due(T0 + 59.9)
    assert chain.checkpoint_due(T0 + 60)
    chain.checkpoint(T0 + 60)
    # a quiet hour, then one record: due 60 s after *it*, not at once
    chain.link(_lookup(3), T0 + 3660)
    assert not chain.checkpoint_due(T0 + 3661)
    assert chain.checkpoint_due(T0 + 3720)


def test_checkpoint_is_linked_and_signed_over_its_hash() -> None:
    signer = Signer.generate()
    chain = Chain("c", signer, every=2, interval=60)
    chain.link(_lookup(1), T0)
    last = chain.link(_lookup(2), T0)
    point = chain.checkpoint(T0 + 1.5, final=True)
    assert point["kind"] == "checkpoint"
    assert point["v"] == 1
    assert point["at"] == "2026-09-21T14:13:21.500Z"
    assert point["final"] is True
    assert point["key_id"] == signer.key_id
    assert (point["seq"], point["prev"]) == (3, last["hash"])
    assert point["hash"] == record_hash(point)  # sig is not covered
    verifier = Verifier.from_signer(signer)
    assert verifier.verify(str(point["hash"]).encode(), str(point["sig"]))
    assert verifier.verify_checkpoint(point)
    assert verifier.verify_checkpoint(orjson.loads(orjson.dumps(point)))
    assert chain.unsealed == 0


def test_forged_or_foreign_signatures_fail() -> None:
    signer, other = Signer.generate(), Signer.generate()
    chain = Chain("c", signer, every=1, interval=60)
    chain.link(_lookup(1), T0)
    point = chain.checkpoint(T0)
    verifier = Verifier.from_pem(signer.public_pem())
    assert verifier.key_id == signer.key_id
    assert not Verifier.from_signer(other).verify_checkpoint(point)
    assert not verifier.verify_checkpoint({**point, "sig": other.sign(str(point["hash"]).encode())})
    assert not verifier.verify_checkpoint({**point, "sig": "not base64!"})
    assert not verifier.verify_checkpoint({**point, "sig": None})
    # re-hashing an altered checkpoint does not help: the signature is over the old hash
    altered = {**point, "final": True}
    altered["hash"] = record_hash(altered)
    assert not verifier.verify_checkpoint(altered)


def test_unsigned_chain_writes_checkpoints_without_sig() -> None:
    chain = Chain("c", None, every=1, interval=60)
    chain.link(_lookup(1), T0)
    point = chain.checkpoint(T0)
    assert point["sig"] is None
    assert point["key_id"] is None


def test_key_id_is_sha256_of_raw_public_key() -> None:
    signer = Signer.generate()
    raw = signer.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert signer.key_id == hashlib.sha256(raw).hexdigest()[:16] == key_id_of(signer.public_key)


def test_signer_from_environ() -> None:
    signer = Signer.generate()
    loaded = Signer.from_environ({"K": signer.private_pem().decode()}, "K")
    assert loaded.key_id == signer.key_id
    assert loaded.public_pem() == signer.public_pem()


def test_signer_from_environ_missing_names_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        Signer.from_environ({}, "LOOKUP_PROXY_AUDIT_SIGNING_KEY")
    assert str(caught.value) == (
        "<environment>: LOOKUP_PROXY_AUDIT_SIGNING_KEY: expected an Ed25519 private key (PEM) "
        "to sign audit checkpoints; found unset"
    )


def test_signer_from_environ_garbage_or_wrong_kind_names_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        Signer.from_environ({"K": "hello"}, "K")
    [problem] = caught.value.problems
    assert (problem.file, problem.key) == ("<environment>", "K")
    assert problem.expected == "an unencrypted Ed25519 private key (PEM)"

    ec_pem = generate_private_key(SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ConfigError) as caught:
        Signer.from_environ({"K": ec_pem.decode()}, "K")
    [problem] = caught.value.problems
    assert problem.key == "K"
    assert problem.expected == "an Ed25519 private key (PEM)"
    assert problem.found == "a key of another type (ECPrivateKey)"


def test_verifier_from_pem_refuses_private_or_garbage() -> None:
    with pytest.raises(ConfigError) as caught:
        Verifier.from_pem(b"nope", source="keys/audit.pub")
    [problem] = caught.value.problems
    assert (problem.file, problem.key) == ("keys/audit.pub", "audit.verify_key")
