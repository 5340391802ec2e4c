"""Fresh audit keys: what ``lookup-proxy audit keygen`` prints for provisioning, and what the
demo and tests run with (keys that never leave the process)."""

from __future__ import annotations

import secrets

from lookup_proxy.audit.chain import Signer
from lookup_proxy.policy import Audit


def new_keys(config: Audit, key_id: str = "k1") -> dict[str, str]:
    """Environment variables for a new pseudonym key and a new checkpoint signing key."""
    return {
        config.pseudonym_keys_env: f"{key_id}:{secrets.token_urlsafe(48)}",
        config.signing_key_env: Signer.generate().private_pem().decode("ascii"),
    }
