"""Pseudonyms are HMAC-SHA256 under the configured keys, whatever the key's length; the current
key is the first, and a search gets the number's pseudonym under every key."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from lookup_proxy.audit.pseudonym import Pseudonymiser, last4
from lookup_proxy.errors import ConfigError


@pytest.mark.parametrize("length", [32, 63, 64, 65, 200])
def test_a_pseudonym_is_the_hmac_sha256_of_the_number_under_the_current_key(length: int) -> None:
    """Keys shorter than SHA-256's block are padded and longer ones hashed first (RFC 2104):
    the pads made once per key must give what ``hmac`` gives, at every length around the block."""
    secret = bytes(range(256))[:length]
    other = b"o" * 40
    pseudonyms = Pseudonymiser([("now", secret), ("before", other)])

    for number in ("01012345678", "0101234567", "+821012345678"):
        expected = hmac.new(secret, number.encode(), hashlib.sha256).hexdigest()
        assert pseudonyms.subject(number) == (expected, "now")
        assert pseudonyms.subjects(number) == [
            (expected, "now"),
            (hmac.new(other, number.encode(), hashlib.sha256).hexdigest(), "before"),
        ]


def test_each_number_gets_its_own_pseudonym_and_each_key_its_own() -> None:
    one = Pseudonymiser([("a", b"a" * 32)])
    two = Pseudonymiser([("b", b"b" * 32)])

    assert one.subject("01012345678")[0] != one.subject("01012345679")[0]
    assert one.subject("01012345678")[0] != two.subject("01012345678")[0]
    assert one.subject("01012345678") == one.subject("01012345678")


def test_keys_come_from_the_environment_and_a_bad_value_names_the_variable() -> None:
    keys = Pseudonymiser.from_environ({"KEYS": "k2:" + "x" * 32 + ",k1:" + "y" * 40}, "KEYS")
    assert keys.key_id == "k2"
    assert [key_id for _, key_id in keys.subjects("01012345678")] == ["k2", "k1"]

    with pytest.raises(ConfigError) as short:
        Pseudonymiser.from_environ({"KEYS": "k:short"}, "KEYS")
    assert "KEYS" in str(short.value)
    assert "shorter than 32 bytes" in str(short.value)
    with pytest.raises(ConfigError, match="unset"):
        Pseudonymiser.from_environ({}, "KEYS")


def test_last4_is_what_a_clerk_reads_back() -> None:
    assert last4("01012345678") == "5678"
