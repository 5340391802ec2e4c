"""Fresh secrets: what ``lookup-proxy audit keygen`` prints for provisioning, and what the demo
and tests run with (keys that never leave the process): the audit trail's pseudonym and
checkpoint-signing keys, and the key of the guard's filters of known numbers, which the audit
command prints too so that one command provisions every secret an instance needs."""

from __future__ import annotations

import secrets

from lookup_proxy.audit.chain import Signer
from lookup_proxy.policy import Policy


def new_keys(policy: Policy, key_id: str = "k1") -> dict[str, str]:
    """Environment variables for a new pseudonym key, a new checkpoint signing key and a new
    known-numbers key."""
    return {
        policy.audit.pseudonym_keys_env: f"{key_id}:{secrets.token_urlsafe(48)}",
        policy.audit.signing_key_env: Signer.generate().private_pem().decode("ascii"),
        policy.store.known_numbers_key_env: secrets.token_urlsafe(48),
    }
