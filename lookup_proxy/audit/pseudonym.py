"""Customer numbers as keyed pseudonyms: the audit trail can answer "who looked up this customer"
without ever holding the number in clear.

A plain hash of a phone number is no pseudonym: there are only a few hundred million mobile
numbers, and hashing them all takes minutes. A keyed HMAC-SHA256 can only be computed (and so
searched) by whoever holds the key, which lives in the environment, never in the archive. Each
record names the key that made its pseudonym (``key_id``), so keys can rotate: new records use
the first key, and a search computes the pseudonym under every key still configured.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from lookup_proxy.errors import ConfigError, ConfigProblem

MIN_SECRET = 32
"""Bytes of secret per key: at least as many as the hash's output is worth."""

_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")


class Pseudonymiser:
    """Turns canonical numbers into pseudonyms under the configured keys (the first is current)."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("at least one key")
        self.key_id = keys[0][0]
        self._pads = [(key_id, *_pads(secret)) for key_id, secret in keys]

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], variable: str) -> Pseudonymiser:
        """The keys in ``variable`` (``id:secret[,id:secret...]``); a ConfigError naming the
        variable when it is unset or malformed."""

        def problem(found: str) -> ConfigError:
            return ConfigError(
                [
                    ConfigProblem(
                        "<environment>",
                        variable,
                        "pseudonym keys 'id:secret[,id:secret...]' (ids: letters, digits . _ -; "
                        f"secrets of at least {MIN_SECRET} bytes; audit.pseudonym_keys_env "
                        "names the variable)",
                        found,
                    )
                ]
            )

        value = environ.get(variable, "")
        if not value.strip():
            raise problem("unset")
        keys: list[tuple[str, bytes]] = []
        for position, item in enumerate(value.split(","), start=1):
            key_id, colon, secret = item.strip().partition(":")
            if not colon or _KEY_ID.fullmatch(key_id) is None:
                raise problem(f"key {position} has no valid 'id:' in front")
            if len(secret.encode()) < MIN_SECRET:
                raise problem(f"key {key_id!r} is shorter than {MIN_SECRET} bytes")
            if any(known == key_id for known, _ in keys):
                raise problem(f"key id {key_id!r} appears twice")
            keys.append((key_id, secret.encode()))
        return cls(keys)

    def subject(self, number: str) -> tuple[str, str]:
        """(pseudonym, key id) of a canonical number under the current key."""
        key_id, inner, outer = self._pads[0]
        return _hmac(inner, outer, number.encode()), key_id

    def subjects(self, number: str) -> list[tuple[str, str]]:
        """The number's pseudonym under every configured key: what a search must look for."""
        message = number.encode()
        return [(_hmac(inner, outer, message), key_id) for key_id, inner, outer in self._pads]


_BLOCK = 64
"""SHA-256's block: HMAC's key pads are one block each."""


def _pads(secret: bytes) -> tuple[Any, Any]:
    """SHA-256 states that have taken a key's inner and outer pads (RFC 2104), made once per key.

    ``hmac.new(secret, number, sha256)`` for each record redid this, and went through the
    ``hmac`` module's Python class: a lookup's pseudonym cost 1.6 µs that way, 0.7 µs copying
    these (the same digest: tests/test_audit_pseudonym.py checks it against ``hmac``)."""
    if len(secret) > _BLOCK:
        secret = hashlib.sha256(secret).digest()
    key = secret.ljust(_BLOCK, b"\0")
    inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in key))
    outer = hashlib.sha256(bytes(byte ^ 0x5C for byte in key))
    return inner, outer


def _hmac(inner: Any, outer: Any, message: bytes) -> str:
    """HMAC-SHA256 of ``message`` as hex, from a key's pads."""
    first = inner.copy()
    first.update(message)
    second = outer.copy()
    second.update(first.digest())
    return str(second.hexdigest())


def last4(number: str) -> str:
    """The last four digits: what a clerk reads back to a customer, too few to find them by."""
    return number[-4:]
