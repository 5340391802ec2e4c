"""Employee tokens minted locally (``lookup-proxy token``) for development and load tests.

Only shared-secret (HS*) policies can mint: with a public-key policy the private key belongs to
the identity provider, and the proxy must never hold it.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping, Sequence

import jwt

from lookup_proxy.clock import Clock
from lookup_proxy.errors import ConfigError, ConfigProblem
from lookup_proxy.identify import hs_secret
from lookup_proxy.policy import Auth

__all__ = ["mint_token"]


def mint_token(
    auth: Auth,
    environ: Mapping[str, str],
    *,
    employee: str,
    store: str,
    region: str | None,
    roles: Sequence[str],
    ttl: float,
    clock: Clock,
    accounts: Sequence[str] = (),
) -> str:
    """A token the :class:`~lookup_proxy.identify.TokenVerifier` for ``auth`` accepts.

    It carries everything the verifier checks (``iss``/``aud`` when the policy names them,
    ``iat``/``nbf``/``exp``), so a minted token exercises the same path as a real one.
    """
    algorithm = next((a for a in auth.algorithms if a.startswith("HS")), None)
    if algorithm is None:
        raise ConfigError(
            [
                ConfigProblem(
                    file="<policy>",
                    key="auth.algorithms",
                    expected=(
                        "an HS256, HS384 or HS512 algorithm: minting is for local development "
                        "with a shared secret; production tokens come from the identity provider"
                    ),
                    found=", ".join(auth.algorithms),
                )
            ]
        )
    secret = hs_secret(auth, environ)
    if not (1 <= ttl <= auth.max_token_lifetime):
        raise ValueError(
            f"a lifetime of at least 1s and at most auth.max_token_lifetime "
            f"({auth.max_token_lifetime:g}s), not {ttl:g}s: the proxy would refuse the token"
        )
    if not employee.strip() or not store.strip():
        raise ValueError("an employee id and a store, both non-empty")

    # Whole seconds: RFC 7519 allows fractions, but not every consumer does. The lifetime is
    # rounded down so it never exceeds ``ttl``.
    now = math.floor(clock.now())
    names = auth.claims
    claims: dict[str, object] = {
        names.employee: employee,
        names.store: store,
        names.roles: list(roles),
        "iat": now,
        "nbf": now,
        "exp": now + math.floor(ttl),
        "jti": secrets.token_urlsafe(16),
    }
    if region is not None:
        claims[names.region] = region
    if names.accounts is not None:
        claims[names.accounts] = list(accounts)
    elif accounts:
        raise ValueError("business accounts need an [auth.claims] accounts claim to go in")
    if auth.issuer is not None:
        claims["iss"] = auth.issuer
    if auth.audience is not None:
        claims["aud"] = auth.audience
    return jwt.encode(claims, secret, algorithm=algorithm)
