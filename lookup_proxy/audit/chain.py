"""Hash chaining and signed checkpoints: what makes the audit archive tamper-evident.

A *chain* is one writer (one proxy process, one CLI invocation). Its records carry ``chain``,
``seq`` (1, 2, 3 ... without gaps) and ``prev`` (the previous record's ``hash``; 64 zeros for
the first), and ``hash`` = SHA-256 of the record's canonical form: its JSON with sorted keys,
without ``hash`` and ``sig``. Editing, removing, inserting or reordering a record breaks a link.

Links alone can be recomputed by whoever rewrites the whole tail, so every ``checkpoint_every``
records or ``checkpoint_interval`` seconds (and when the writer stops: ``final: true``) the chain
appends a *checkpoint*, itself chained, whose ``sig`` is an Ed25519 signature over the ASCII
bytes of its own ``hash``. Without the private key nobody can produce a chain that verifies up to
a checkpoint; records after the last checkpoint (the *unsealed tail*) are only hash-linked.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import time
from collections.abc import Mapping
from typing import Any, Final

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lookup_proxy.errors import ConfigError, ConfigProblem

__all__ = [
    "GENESIS",
    "Chain",
    "Signer",
    "Verifier",
    "canonical",
    "iso_at",
    "key_id_of",
    "record_hash",
]

GENESIS = "0" * 64
"""The ``prev`` of a chain's first record."""

_UNHASHED = ("hash", "sig")


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes a record's hash covers: sorted-key JSON without ``hash`` and ``sig``."""
    return orjson.dumps(
        {key: value for key, value in record.items() if key not in _UNHASHED},
        option=orjson.OPT_SORT_KEYS,
    )


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 hex of the canonical form."""
    return hashlib.sha256(canonical(record)).hexdigest()


_MILLIS: Final = tuple(f".{ms:03d}Z" for ms in range(1000))
"""Each millisecond's tail, made once: formatting it was two thirds of what a record's time
cost (bench/instructions.py: 6,500 → 2,200 instructions a record)."""


def iso_at(now: float) -> str:
    """Seconds since the epoch as the records' ``at``: ``2026-12-03T07:40:01.123Z``."""
    millis = int(now * 1000)
    seconds, ms = divmod(millis, 1000)
    return _second(seconds) + _MILLIS[ms]


@functools.lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    """The formatted second: every record of one second shares it (strftime is most of the
    cost of a record's time, and a busy proxy writes hundreds a second)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """First 16 hex of SHA-256 of the raw public key bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class Signer:
    """An Ed25519 private key that signs checkpoints."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.key_id = key_id_of(private_key.public_key())

    @classmethod
    def generate(cls) -> Signer:
        """A fresh key (tests, and ``private_pem`` to provision one)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, pem: bytes, *, source: str = "<pem>", key: str = "private key") -> Signer:
        try:
            loaded = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise _problem(source, key, "an unencrypted Ed25519 private key (PEM)", exc) from None
        if not isinstance(loaded, Ed25519PrivateKey):
            raise _problem(source, key, "an Ed25519 private key (PEM)", _other_kind(loaded))
        return cls(loaded)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], variable: str) -> Signer:
        """The key in ``environ[variable]``; a ConfigError naming the variable otherwise."""
        value = environ.get(variable, "").strip()
        if not value:
            raise ConfigError(
                [
                    ConfigProblem(
                        "<environment>",
                        variable,
                        "an Ed25519 private key (PEM) to sign audit checkpoints",
                        "unset",
                    )
                ]
            )
        return cls.from_pem(value.encode(), source="<environment>", key=variable)

    def sign(self, data: bytes) -> str:
        """Base64 Ed25519 signature of ``data``."""
        return base64.b64encode(self._key.sign(data)).decode("ascii")

    def public_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def private_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()


class Verifier:
    """An Ed25519 public key that checks checkpoint signatures."""

    def __init__(self, public_key: Ed25519PublicKey) -> None:
        self._key = public_key
        self.key_id = key_id_of(public_key)

    @classmethod
    def from_pem(
        cls, pem: bytes, *, source: str = "<pem>", key: str = "audit.verify_key"
    ) -> Verifier:
        try:
            loaded = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError) as exc:
            raise _problem(source, key, "an Ed25519 public key (PEM)", exc) from None
        if not isinstance(loaded, Ed25519PublicKey):
            raise _problem(source, key, "an Ed25519 public key (PEM)", _other_kind(loaded))
        return cls(loaded)

    @classmethod
    def from_signer(cls, signer: Signer) -> Verifier:
        return cls(signer.public_key)

    def verify(self, data: bytes, sig: str) -> bool:
        """Whether ``sig`` (base64) is this key's signature of ``data``."""
        try:
            raw = base64.b64decode(sig.encode("ascii"), validate=True)
            self._key.verify(raw, data)
        except (InvalidSignature, binascii.Error, ValueError, UnicodeEncodeError):
            return False
        return True

    def verify_checkpoint(self, record: Mapping[str, Any]) -> bool:
        """A checkpoint's ``sig`` is this key's over its ``hash`` and its hash is right."""
        sig, digest = record.get("sig"), record.get("hash")
        if not isinstance(sig, str) or not isinstance(digest, str):
            return False
        if record_hash(record) != digest:
            return False
        return self.verify(digest.encode("ascii"), sig)


def _other_kind(key: object) -> str:
    return f"a key of another type ({type(key).__name__.lstrip('_')})"


def _problem(source: str, key: str, expected: str, found: object) -> ConfigError:
    text = str(found).splitlines()[0] if str(found) else type(found).__name__
    return ConfigError([ConfigProblem(source, key, expected, text)])


class Chain:
    """One writer's chain: links each record to the previous one and seals it periodically.

    ``now`` is wall-clock seconds since the epoch (the project's ``Clock``); ``checkpoint``
    uses it for the checkpoint's ``at``. Not thread-safe: one chain belongs to one writer.
    """

    def __init__(
        self, chain_id: str, signer: Signer | None, *, every: int, interval: float
    ) -> None:
        if every < 1:
            raise ValueError("checkpoint every must be at least 1 record")
        self.chain_id = chain_id
        self.signer = signer
        self.every = every
        self.interval = interval
        self.seq = 0
        self.prev = GENESIS
        self._unsealed = 0
        self._first_unsealed_at: float | None = None

    @property
    def unsealed(self) -> int:
        """Records linked since the last checkpoint."""
        return self._unsealed

    def link(self, record: dict[str, object], now: float) -> dict[str, object]:
        """Set ``chain``, ``seq``, ``prev`` and ``hash`` on ``record`` (in place) and return it.

        ``at`` and every other field must already be final: the hash covers them.
        """
        self._link(record, now)
        return record

    def link_line(self, record: dict[str, object], now: float) -> bytes:
        """:meth:`link`, and the record's line: its canonical JSON with ``hash`` appended.

        A lookup writes two records; encoding each once for its hash and again for its line was
        a tenth of what the audit trail cost the proxy. The line's keys are sorted, ``hash``
        last: the same JSON object, and what a verifier recomputes is the bytes before it.
        """
        body = self._link(record, now)
        return body[:-1] + b',"hash":"' + str(record["hash"]).encode() + b'"}'

    def _link(self, record: dict[str, object], now: float) -> bytes:
        """Link ``record``; its canonical bytes."""
        self.seq += 1
        record["chain"] = self.chain_id
        record["seq"] = self.seq
        record["prev"] = self.prev
        record.pop("sig", None)
        record.pop("hash", None)
        body = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)  # canonical(): nothing to drop
        digest = hashlib.sha256(body).hexdigest()
        record["hash"] = digest
        self.prev = digest
        if record.get("kind") == "checkpoint":
            self._unsealed = 0
            self._first_unsealed_at = None
        else:
            if self._unsealed == 0:
                self._first_unsealed_at = now
            self._unsealed += 1
        return body

    def checkpoint_due(self, now: float) -> bool:
        """``every`` records since the last checkpoint, or the oldest unsealed one is
        ``interval`` seconds old. Never due while nothing was written since the last."""
        if self._unsealed == 0:
            return False
        if self._unsealed >= self.every:
            return True
        first = self._first_unsealed_at
        return first is not None and now - first >= self.interval

    def checkpoint(self, now: float, *, final: bool = False) -> dict[str, object]:
        """A linked checkpoint record, signed when the chain has a signer (else ``sig: null``,
        which ``audit verify`` reports)."""
        record: dict[str, object] = {
            "v": 1,
            "kind": "checkpoint",
            "at": iso_at(now),
            "key_id": self.signer.key_id if self.signer is not None else None,
            "final": final,
        }
        self.link(record, now)
        digest = record["hash"]
        assert isinstance(digest, str)
        record["sig"] = self.signer.sign(digest.encode("ascii")) if self.signer else None
        return record
