"""Locally minted tokens: accepted by the verifier, refused to mint without a shared secret."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest

from lookup_proxy.clock import ManualClock
from lookup_proxy.employee import Employee
from lookup_proxy.errors import ConfigError, Refusal
from lookup_proxy.identify import TokenVerifier
from lookup_proxy.policy import Auth, Claims
from lookup_proxy.tokens import mint_token

SECRET = "correct-horse-battery-staple-for-store-terminals"
ENV = {"LOOKUP_PROXY_JWT_SECRET": SECRET}
AUTH = Auth(
    algorithms=("HS256",),
    issuer="https://idp.example.kr",
    audience="lookup-proxy",
    claims=Claims(employee="emp_no", store="shop", region="area", roles="groups"),
)


def _verifier(auth: Auth, clock: ManualClock) -> TokenVerifier:
    return TokenVerifier(auth, base_dir=Path("."), environ=ENV, clock=clock)


def test_minted_token_round_trips_through_the_verifier() -> None:
    """A minted token verifies under the same policy and yields the employee it was minted for."""
    clock = ManualClock()
    token = mint_token(
        AUTH,
        ENV,
        employee="E1001",
        store="S-GANGNAM-03",
        region="SEOUL",
        roles=["clerk", "corporate-rep"],
        ttl=3600,
        clock=clock,
    )
    employee = _verifier(AUTH, clock).verify(f"Bearer {token}")
    assert employee == Employee(
        "E1001", "S-GANGNAM-03", "SEOUL", frozenset({"clerk", "corporate-rep"})
    )


def test_minted_token_carries_policy_claims_and_a_fresh_jti() -> None:
    """Claim names, issuer, audience and times follow the policy; each token has its own jti."""
    clock = ManualClock()
    tokens = [
        mint_token(
            AUTH, ENV, employee="E1", store="S1", region=None, roles=[], ttl=900, clock=clock
        )
        for _ in range(2)
    ]
    first, second = (
        jwt.decode(
            t, SECRET, algorithms=["HS256"], audience="lookup-proxy", options={"verify_exp": False}
        )
        for t in tokens
    )
    now = int(clock.now())
    assert first["emp_no"] == "E1"
    assert first["shop"] == "S1"
    assert "area" not in first
    assert first["groups"] == []
    assert first["iss"] == "https://idp.example.kr"
    assert (first["iat"], first["nbf"], first["exp"]) == (now, now, now + 900)
    assert first["jti"] != second["jti"]


def test_minted_token_expires_after_its_ttl() -> None:
    """A minted token is refused once the clock passes its lifetime and the leeway."""
    clock = ManualClock()
    auth = AUTH.model_copy(update={"leeway": 0.0})
    token = mint_token(
        auth, ENV, employee="E1", store="S1", region=None, roles=[], ttl=60, clock=clock
    )
    verifier = _verifier(auth, clock)
    verifier.verify(f"Bearer {token}")
    clock.advance(60)
    with pytest.raises(Refusal) as caught:
        verifier.verify(f"Bearer {token}")
    assert caught.value.cause == "token-expired"


def test_mint_uses_the_first_hs_algorithm_of_the_allow_list() -> None:
    """With HS512 listed first, minted tokens are HS512 and still verify."""
    clock = ManualClock()
    auth = Auth(algorithms=("HS512", "HS256"))
    env = {"LOOKUP_PROXY_JWT_SECRET": SECRET * 2}
    token = mint_token(
        auth, env, employee="E1", store="S1", region=None, roles=[], ttl=60, clock=clock
    )
    assert jwt.get_unverified_header(token)["alg"] == "HS512"
    verifier = TokenVerifier(auth, base_dir=Path("."), environ=env, clock=clock)
    assert verifier.verify(f"Bearer {token}").id == "E1"


def test_mint_refuses_without_a_secret() -> None:
    """Minting without the secret in the environment names the variable that is unset."""
    with pytest.raises(ConfigError) as caught:
        mint_token(
            AUTH,
            {},
            employee="E1",
            store="S1",
            region=None,
            roles=[],
            ttl=60,
            clock=ManualClock(),
        )
    (problem,) = caught.value.problems
    assert (problem.file, problem.key, problem.found) == (
        "<environment>",
        "LOOKUP_PROXY_JWT_SECRET",
        "unset",
    )


def test_mint_refuses_a_short_secret_without_revealing_it() -> None:
    """A short secret is refused by its length, never by its value."""
    short = "short-secret"
    with pytest.raises(ConfigError) as caught:
        mint_token(
            AUTH,
            {"LOOKUP_PROXY_JWT_SECRET": short},
            employee="E1",
            store="S1",
            region=None,
            roles=[],
            ttl=60,
            clock=ManualClock(),
        )
    assert caught.value.problems[0].found == f"{len(short)} bytes"
    assert short not in str(caught.value)


def test_mint_refuses_public_key_policies() -> None:
    """An RS-only policy cannot mint: its private key belongs to the identity provider."""
    auth = Auth(algorithms=("RS256", "ES256"), public_key_file="idp.pem")
    with pytest.raises(ConfigError) as caught:
        mint_token(
            auth,
            ENV,
            employee="E1",
            store="S1",
            region=None,
            roles=[],
            ttl=60,
            clock=ManualClock(),
        )
    (problem,) = caught.value.problems
    assert problem.key == "auth.algorithms"
    assert "identity provider" in problem.expected
    assert problem.found == "RS256, ES256"


@pytest.mark.parametrize("ttl", [0.0, -5.0, 86400.0 + 1])
def test_mint_refuses_a_lifetime_the_verifier_would_refuse(ttl: float) -> None:
    """A ttl that is not positive or exceeds max_token_lifetime is refused up front."""
    with pytest.raises(ValueError, match="max_token_lifetime"):
        mint_token(
            AUTH,
            ENV,
            employee="E1",
            store="S1",
            region=None,
            roles=[],
            ttl=ttl,
            clock=ManualClock(),
        )
