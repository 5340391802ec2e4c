"""The identify step: which tokens become employees, and which are refused and why."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from lookup_proxy.clock import ManualClock
from lookup_proxy.employee import Employee
from lookup_proxy.errors import ConfigError, Refusal
from lookup_proxy.identify import TokenVerifier
from lookup_proxy.policy import Auth, Claims

SECRET = "correct-horse-battery-staple-for-store-terminals"
ENV = {"LOOKUP_PROXY_JWT_SECRET": SECRET}
ISSUER = "https://idp.example.kr"
AUDIENCE = "lookup-proxy"
HS_AUTH = Auth(algorithms=("HS256",), issuer=ISSUER, audience=AUDIENCE, leeway="30s")

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _claims(clock: ManualClock, *, drop: tuple[str, ...] = (), **changes: Any) -> dict[str, Any]:
    now = clock.now()
    claims: dict[str, Any] = {
        "sub": "E1001",
        "store": "S-GANGNAM-03",
        "region": "SEOUL",
        "roles": ["clerk"],
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now) + 3600,
    }
    claims.update(changes)
    for name in drop:
        del claims[name]
    return claims


def _hs(claims: Mapping[str, Any], secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(dict(claims), secret, algorithm=algorithm)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


def _verifier(
    clock: ManualClock, auth: Auth = HS_AUTH, base_dir: Path = Path("."), **environ: str
) -> TokenVerifier:
    return TokenVerifier(auth, base_dir=base_dir, environ=environ or ENV, clock=clock)


def _refusal(verifier: TokenVerifier, header: str | None) -> Refusal:
    with pytest.raises(Refusal) as caught:
        verifier.verify(header)
    refusal = caught.value
    assert refusal.status == 401
    assert refusal.headers["WWW-Authenticate"].startswith("Bearer")
    return refusal


def _rs_verifier(clock: ManualClock, tmp_path: Path, **auth: Any) -> TokenVerifier:
    (tmp_path / "idp.pem").write_bytes(_pem(RSA_KEY))
    policy = Auth(algorithms=("RS256",), public_key_file="idp.pem", issuer=ISSUER, **auth)
    return _verifier(clock, policy, tmp_path)


def _jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "use": "sig"}


def _jwks_verifier(clock: ManualClock, tmp_path: Path) -> TokenVerifier:
    document = {"keys": [_jwk(OTHER_EC_KEY, "2025-01"), _jwk(EC_KEY, "2025-07")]}
    (tmp_path / "jwks.json").write_text(json.dumps(document))
    policy = Auth(algorithms=("ES256",), jwks_file="jwks.json", audience=AUDIENCE)
    return _verifier(clock, policy, tmp_path)


def test_hs256_token_with_custom_claim_names_becomes_employee() -> None:
    """An HS256 token is mapped to an Employee through the policy's claim names."""
    clock = ManualClock()
    auth = Auth(
        algorithms=("HS256",),
        issuer=ISSUER,
        audience=AUDIENCE,
        claims=Claims(employee="emp_no", store="shop", region="area", roles="groups"),
    )
    token = _hs(
        _claims(
            clock,
            drop=("sub", "store", "region", "roles"),
            emp_no="E7",
            shop="S1",
            area="BUSAN",
            groups=["clerk", "corporate-rep"],
        )
    )
    employee = _verifier(clock, auth).verify(f"Bearer {token}")
    assert employee == Employee("E7", "S1", "BUSAN", frozenset({"clerk", "corporate-rep"}))


def test_rs256_token_verified_with_pem_public_key(tmp_path: Path) -> None:
    """An RS256 token signed by the identity provider's key verifies against its PEM file."""
    clock = ManualClock()
    token = jwt.encode(_claims(clock, drop=("aud",)), RSA_KEY, algorithm="RS256")
    employee = _rs_verifier(clock, tmp_path).verify(f"Bearer {token}")
    assert employee == Employee("E1001", "S-GANGNAM-03", "SEOUL", frozenset({"clerk"}))


def test_es256_token_picks_its_key_from_jwks_by_kid(tmp_path: Path) -> None:
    """An ES256 token names its JWKS key by kid, and only that key verifies it."""
    clock = ManualClock()
    token = jwt.encode(_claims(clock), EC_KEY, algorithm="ES256", headers={"kid": "2025-07"})
    assert _jwks_verifier(clock, tmp_path).verify(f"Bearer {token}").id == "E1001"


def test_roles_may_be_a_space_separated_string_and_region_may_be_absent() -> None:
    """OAuth-style space-separated roles are accepted, and a token without region has none."""
    clock = ManualClock()
    token = _hs(_claims(clock, drop=("region",), roles="clerk  store-manager"))
    employee = _verifier(clock).verify(f"bearer {token}")
    assert employee.region is None
    assert employee.roles == frozenset({"clerk", "store-manager"})


def test_business_accounts_come_from_their_claim_when_the_policy_names_one() -> None:
    """``[auth.claims] accounts``: a list or a space-separated string; absent means none; a
    token's accounts are ignored when the policy names no claim; a bad one is refused."""
    clock = ManualClock()
    auth = Auth(
        algorithms=("HS256",), issuer=ISSUER, audience=AUDIENCE, claims=Claims(accounts="accts")
    )
    listed = _hs(_claims(clock, accts=["CORP-000001", "CORP-000002"]))
    assert _verifier(clock, auth).verify(f"Bearer {listed}").accounts == {
        "CORP-000001",
        "CORP-000002",
    }
    spaced = _hs(_claims(clock, accts="CORP-000003  CORP-000004"))
    assert _verifier(clock, auth).verify(f"Bearer {spaced}").accounts == {
        "CORP-000003",
        "CORP-000004",
    }
    assert _verifier(clock, auth).verify(f"Bearer {_hs(_claims(clock))}").accounts == frozenset()
    assert _verifier(clock).verify(f"Bearer {listed}").accounts == frozenset()
    with pytest.raises(Refusal) as caught:
        _verifier(clock, auth).verify(f"Bearer {_hs(_claims(clock, accts={'a': 1}))}")
    assert (caught.value.status, caught.value.cause) == (401, "token-claims")
    assert "business accounts" in caught.value.detail


def test_token_without_roles_has_no_roles() -> None:
    """A token without a roles claim grants no roles rather than being refused."""
    clock = ManualClock()
    token = _hs(_claims(clock, drop=("roles",)))
    assert _verifier(clock).verify(f"Bearer {token}").roles == frozenset()


@pytest.mark.parametrize("header", [None, "", "   "])
def test_missing_authorization_refused(header: str | None) -> None:
    """A lookup without a sign-in is refused with a detail telling the clerk to sign in."""
    refusal = _refusal(_verifier(ManualClock()), header)
    assert refusal.cause == "token-missing"
    assert "sign in" in refusal.detail.lower()


@pytest.mark.parametrize("scheme", ["Basic", "Token", "JWT", ""])
def test_scheme_other_than_bearer_refused(scheme: str) -> None:
    """A token sent under any scheme other than Bearer is refused as malformed."""
    clock = ManualClock()
    token = _hs(_claims(clock))
    assert _refusal(_verifier(clock), f"{scheme} {token}".strip()).cause == "token-malformed"


@pytest.mark.parametrize(
    "token",
    [
        "not-a-token",
        "a.b.c",
        "a.b",
        "a.b.c.d",
        "eyJhbGciOiJIUzI1NiJ9.!!!!.sig",
        "Bearer extra",
        "x" * 10_000,
    ],
)
def test_garbage_token_refused_as_malformed(token: str) -> None:
    """Text that is not a compact JWT is refused as malformed, not as a server error."""
    assert _refusal(_verifier(ManualClock()), f"Bearer {token}").cause == "token-malformed"


@pytest.mark.parametrize("inside", [" ", "\t", "\x0b", "\x1f", "\x00", "\x7f"])
def test_a_token_with_whitespace_or_a_control_character_inside_is_malformed(inside: str) -> None:
    """A valid token with a space, tab, other ASCII whitespace or a control character inside
    is refused as malformed before any signature is checked."""
    clock = ManualClock()
    token = _hs(_claims(clock))
    assert _verifier(clock).verify(f"Bearer {token}").id  # the token itself is good
    cut = len(token) // 2
    spoiled = f"Bearer {token[:cut]}{inside}{token[cut:]}"
    assert _refusal(_verifier(clock), spoiled).cause == "token-malformed"


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_unsigned_alg_none_token_refused(alg: str) -> None:
    """A token declaring alg none (any spelling) and carrying no signature is refused."""
    clock = ManualClock()
    token = _unsigned({"alg": alg, "typ": "JWT"}, _claims(clock)) + "."
    assert _refusal(_verifier(clock), f"Bearer {token}").cause == "token-invalid"


def test_algorithm_outside_allow_list_refused() -> None:
    """A correctly signed HS512 token is refused when the policy allows HS256 only."""
    clock = ManualClock()
    long_secret = SECRET * 2
    token = _hs(_claims(clock), secret=long_secret, algorithm="HS512")
    refusal = _refusal(_verifier(clock, LOOKUP_PROXY_JWT_SECRET=long_secret), f"Bearer {token}")
    assert refusal.cause == "token-invalid"


def test_hs256_token_keyed_with_the_public_key_refused(tmp_path: Path) -> None:
    """Key confusion fails: an HS256 token using the RSA public key PEM as secret is refused."""
    clock = ManualClock()
    verifier = _rs_verifier(clock, tmp_path)
    signing_input = _unsigned({"alg": "HS256", "typ": "JWT"}, _claims(clock, drop=("aud",)))
    mac = hmac.new(_pem(RSA_KEY), signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{_b64(mac)}"
    assert _refusal(verifier, f"Bearer {token}").cause == "token-invalid"


def test_rs256_token_presented_as_ps256_refused(tmp_path: Path) -> None:
    """Changing the header's algorithm to another RSA family member does not get past the list."""
    clock = ManualClock()
    token = jwt.encode(_claims(clock, drop=("aud",)), RSA_KEY, algorithm="RS256")
    _, payload, signature = token.split(".")
    forged_header = _b64(json.dumps({"alg": "PS256", "typ": "JWT"}).encode())
    forged = f"{forged_header}.{payload}.{signature}"
    assert _refusal(_rs_verifier(clock, tmp_path), f"Bearer {forged}").cause == "token-invalid"


def test_tampered_payload_refused() -> None:
    """A genuine signature over a payload whose store was changed afterwards is refused."""
    clock = ManualClock()
    header, _, signature = _hs(_claims(clock)).split(".")
    forged_payload = _b64(json.dumps(_claims(clock, store="S-OTHER")).encode())
    token = f"{header}.{forged_payload}.{signature}"
    assert _refusal(_verifier(clock), f"Bearer {token}").cause == "token-invalid"


def test_token_signed_with_another_secret_refused() -> None:
    """An HS256 token signed with a secret other than the proxy's is refused."""
    clock = ManualClock()
    token = _hs(_claims(clock), secret="an-attacker-chosen-secret-of-good-length")
    assert _refusal(_verifier(clock), f"Bearer {token}").cause == "token-invalid"


def test_token_signed_with_another_rsa_key_refused(tmp_path: Path) -> None:
    """An RS256 token signed by a key other than the identity provider's is refused."""
    clock = ManualClock()
    token = jwt.encode(_claims(clock, drop=("aud",)), OTHER_RSA_KEY, algorithm="RS256")
    assert _refusal(_rs_verifier(clock, tmp_path), f"Bearer {token}").cause == "token-invalid"


def test_token_naming_unknown_kid_refused(tmp_path: Path) -> None:
    """A token whose kid is not in the JWKS is refused, even if signed by a listed key."""
    clock = ManualClock()
    token = jwt.encode(_claims(clock), EC_KEY, algorithm="ES256", headers={"kid": "2099-01"})
    assert _refusal(_jwks_verifier(clock, tmp_path), f"Bearer {token}").cause == "token-invalid"


def test_token_naming_the_wrong_kid_refused(tmp_path: Path) -> None:
    """A token signed by one JWKS key but naming another is refused."""
    clock = ManualClock()
    token = jwt.encode(_claims(clock), EC_KEY, algorithm="ES256", headers={"kid": "2025-01"})
    assert _refusal(_jwks_verifier(clock, tmp_path), f"Bearer {token}").cause == "token-invalid"


def test_token_without_kid_refused_when_jwks_has_several_keys(tmp_path: Path) -> None:
    """With several keys published, a token must say which one signed it."""
    clock = ManualClock()
    token = jwt.encode(_claims(clock), EC_KEY, algorithm="ES256")
    assert _refusal(_jwks_verifier(clock, tmp_path), f"Bearer {token}").cause == "token-invalid"


def test_expired_token_refused() -> None:
    """A token past its exp plus leeway is refused with a detail telling the clerk to sign in."""
    clock = ManualClock()
    token = _hs(_claims(clock, exp=int(clock.now()) - 31))
    refusal = _refusal(_verifier(clock), f"Bearer {token}")
    assert refusal.cause == "token-expired"
    assert refusal.detail == "Your sign-in has expired. Sign in again at the terminal."


def test_expired_token_within_leeway_accepted() -> None:
    """A token expired by less than the policy's leeway is still accepted."""
    clock = ManualClock()
    token = _hs(_claims(clock, exp=int(clock.now()) - 29))
    assert _verifier(clock).verify(f"Bearer {token}").id == "E1001"


def test_expiry_is_judged_by_the_injected_clock() -> None:
    """A token long expired by wall time is accepted when the injected clock says it is valid."""
    clock = ManualClock(start=1_000_000_000.0)
    assert _verifier(clock).verify(f"Bearer {_hs(_claims(clock))}").id == "E1001"


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_token_from_the_future_refused(claim: str) -> None:
    """A token whose nbf or iat lies beyond the leeway in the future is not valid yet."""
    clock = ManualClock()
    future = int(clock.now()) + 120
    claims = _claims(clock, exp=future + 600)
    claims[claim] = future
    token = _hs(claims)
    assert _refusal(_verifier(clock), f"Bearer {token}").cause == "token-not-yet-valid"


def test_token_living_longer_than_policy_allows_refused() -> None:
    """A token issued for longer than auth.max_token_lifetime is refused."""
    clock = ManualClock()
    auth = HS_AUTH.model_copy(update={"max_token_lifetime": 8 * 3600.0})
    token = _hs(_claims(clock, exp=int(clock.now()) + 8 * 3600 + 1))
    assert _refusal(_verifier(clock, auth), f"Bearer {token}").cause == "token-claims"


@pytest.mark.parametrize("iat", ["<drop>", None])
def test_a_token_without_an_issue_time_is_refused(iat: object) -> None:
    """Without iat a token's lifetime is unknowable, so it is refused even when short-lived."""
    clock = ManualClock()
    claims = _claims(clock, drop=("iat",)) if iat == "<drop>" else _claims(clock, iat=iat)
    refusal = _refusal(_verifier(clock), f"Bearer {_hs(claims)}")
    assert (refusal.status, refusal.cause) == (401, "token-claims")
    assert "when it was issued" in refusal.detail


@pytest.mark.parametrize("issuer", ["https://evil.example", "<drop>"])
def test_wrong_or_missing_issuer_refused(issuer: str) -> None:
    """A token from another issuer, or naming none, is refused when the policy names one."""
    clock = ManualClock()
    claims = _claims(clock, drop=("iss",)) if issuer == "<drop>" else _claims(clock, iss=issuer)
    assert _refusal(_verifier(clock), f"Bearer {_hs(claims)}").cause == "token-claims"


@pytest.mark.parametrize("audience", ["billing-portal", ["billing-portal"], None, 7])
def test_wrong_or_missing_audience_refused(audience: object) -> None:
    """A token meant for another service, or for none, is refused when the policy names one."""
    clock = ManualClock()
    token = _hs(_claims(clock, aud=audience))
    assert _refusal(_verifier(clock), f"Bearer {token}").cause == "token-claims"


def test_audience_list_including_proxy_accepted() -> None:
    """A token addressed to several services including this proxy is accepted."""
    clock = ManualClock()
    token = _hs(_claims(clock, aud=["billing-portal", AUDIENCE]))
    assert _verifier(clock).verify(f"Bearer {token}").id == "E1001"


def test_token_without_exp_refused() -> None:
    """A token that never expires is refused, since a stolen one would work forever."""
    clock = ManualClock()
    token = _hs(_claims(clock, drop=("exp",)))
    assert _refusal(_verifier(clock), f"Bearer {token}").cause == "token-claims"


@pytest.mark.parametrize("exp", ["tomorrow", True, float("nan"), float("inf")])
def test_unreadable_exp_refused(exp: object) -> None:
    """An exp that is not a finite number is refused; NaN would otherwise pass every check."""
    clock = ManualClock()
    token = _hs(_claims(clock, exp=exp))
    assert _refusal(_verifier(clock), f"Bearer {token}").cause == "token-claims"


@pytest.mark.parametrize("claim", ["sub", "store"])
@pytest.mark.parametrize("value", ["<drop>", "", "   ", 42, None, ["E1"], "E1\nforged log line"])
def test_missing_or_unusable_employee_or_store_refused(claim: str, value: object) -> None:
    """Employee and store must be non-empty printable strings, or the lookup has no owner."""
    clock = ManualClock()
    claims = _claims(clock, drop=(claim,))
    if value != "<drop>":
        claims[claim] = value
    refusal = _refusal(_verifier(clock), f"Bearer {_hs(claims)}")
    assert refusal.cause == "token-claims"


@pytest.mark.parametrize("claim", ["sub", "store", "region"])
@pytest.mark.parametrize("value", [" E1", "E1 ", "\uff251", "E\u00b9", "E\ufb01"])
def test_an_identifier_spelt_unusually_is_refused(claim: str, value: str) -> None:
    """Employee, store and region key the guard's counters exactly as they come, so a
    spelling with spaces around it or look-alike characters (full-width, a superscript, a
    ligature: anything NFKC would change) would be another employee, store or region with
    counters of its own: refused, telling the clerk why; the ordinary spelling passes."""
    clock = ManualClock()
    claims = _claims(clock)
    claims[claim] = value
    refusal = _refusal(_verifier(clock), f"Bearer {_hs(claims)}")
    assert refusal.cause == "token-claims" and "unusually" in refusal.detail
    claims[claim] = "E1" if claim == "sub" else "강남-01"
    employee = _verifier(clock).verify(f"Bearer {_hs(claims)}")
    assert {"sub": employee.id, "store": employee.store, "region": employee.region}[claim] == (
        claims[claim]
    )


@pytest.mark.parametrize("roles", [5, {"clerk": True}, ["clerk", 3], [["clerk"]]])
def test_roles_of_the_wrong_type_refused(roles: object) -> None:
    """A roles claim that is neither a list of strings nor a string is refused."""
    clock = ManualClock()
    token = _hs(_claims(clock, roles=roles))
    assert _refusal(_verifier(clock), f"Bearer {token}").cause == "token-claims"


def test_region_of_the_wrong_type_refused() -> None:
    """A region that is present but not text is refused rather than silently dropped."""
    clock = ManualClock()
    token = _hs(_claims(clock, region=12))
    assert _refusal(_verifier(clock), f"Bearer {token}").cause == "token-claims"


def test_refusal_never_echoes_the_token() -> None:
    """Neither the detail nor the exception text contains the token that was refused."""
    clock = ManualClock()
    token = _hs(_claims(clock, exp=int(clock.now()) - 3600))
    refusal = _refusal(_verifier(clock), f"Bearer {token}")
    for part in token.split("."):
        assert part not in refusal.detail
        assert part not in str(refusal)
        assert part not in repr(refusal)


def test_cached_token_refused_once_the_clock_passes_its_exp() -> None:
    """A token served from the cache is still refused as soon as it expires."""
    clock = ManualClock()
    auth = HS_AUTH.model_copy(update={"leeway": 0.0})
    verifier = _verifier(clock, auth)
    header = f"Bearer {_hs(_claims(clock, exp=int(clock.now()) + 60))}"
    first = verifier.verify(header)
    clock.advance(59)
    assert verifier.verify(header) is first
    clock.advance(1)
    assert _refusal(verifier, header).cause == "token-expired"


def test_cached_token_honours_leeway_like_a_fresh_one() -> None:
    """The cache accepts a token exactly as long as a fresh verification would."""
    clock = ManualClock()
    verifier = _verifier(clock)
    header = f"Bearer {_hs(_claims(clock, exp=int(clock.now()) + 60))}"
    verifier.verify(header)
    clock.advance(60 + 29)
    assert verifier.verify(header).id == "E1001"
    clock.advance(1)
    assert _refusal(verifier, header).cause == "token-expired"


def test_token_differing_from_a_cached_one_is_verified_afresh() -> None:
    """A token altered inside its signature is refused although the genuine one is cached."""
    clock = ManualClock()
    verifier = _verifier(clock)
    token = _hs(_claims(clock))
    verifier.verify(f"Bearer {token}")
    head, payload, signature = token.split(".")
    flipped = ("A" if signature[5] != "A" else "B").join([signature[:5], signature[6:]])
    forged = f"{head}.{payload}.{flipped}"
    assert _refusal(verifier, f"Bearer {forged}").cause == "token-invalid"


def test_a_cached_token_is_judged_the_same_however_the_header_spells_it() -> None:
    """The cache's short way is for ``Bearer <token>`` exactly; any other spelling RFC 7235
    allows still finds the cached employee, and a cached token with something malformed around
    or inside it is still refused as malformed."""
    clock = ManualClock()
    verifier = _verifier(clock)
    token = _hs(_claims(clock))
    first = verifier.verify(f"Bearer {token}")
    for spelling in (
        f"bearer {token}",
        f"BEARER  {token}",
        f"  Bearer {token}\t",
        f"Bearer {token} ",
    ):
        assert verifier.verify(spelling) is first
    for broken in (f"Bearer {token}\x00", f"Bearer {token[:10]}\n{token[10:]}", f"Token {token}"):
        assert _refusal(verifier, broken).cause == "token-malformed"
    assert verifier.verify(f"Bearer {token}") is first


def test_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    """With cache_size 2, a third token evicts whichever cached token was used longest ago."""
    clock = ManualClock()
    verifier = _verifier(clock, HS_AUTH.model_copy(update={"cache_size": 2}))
    a, b, c = (f"Bearer {_hs(_claims(clock, sub=who))}" for who in ("A", "B", "C"))
    first_a = verifier.verify(a)
    first_b = verifier.verify(b)
    assert verifier.verify(a) is first_a
    verifier.verify(c)
    assert verifier.verify(a) is first_a
    again_b = verifier.verify(b)
    assert again_b == first_b
    assert again_b is not first_b


def test_cache_size_zero_disables_the_cache() -> None:
    """With cache_size 0 every request is verified afresh."""
    clock = ManualClock()
    verifier = _verifier(clock, HS_AUTH.model_copy(update={"cache_size": 0}))
    header = f"Bearer {_hs(_claims(clock))}"
    assert verifier.verify(header) is not verifier.verify(header)


def test_missing_secret_refused_naming_the_variable() -> None:
    """An HS policy without its secret in the environment refuses to start."""
    with pytest.raises(ConfigError) as caught:
        TokenVerifier(HS_AUTH, base_dir=Path("."), environ={}, clock=ManualClock())
    (problem,) = caught.value.problems
    assert (problem.file, problem.key, problem.found) == (
        "<environment>",
        "LOOKUP_PROXY_JWT_SECRET",
        "unset",
    )
    assert problem.expected == "a secret of at least 32 bytes for HS256 tokens"


def test_short_secret_refused_without_revealing_it() -> None:
    """A guessable secret is refused by length, and the error never contains its value."""
    short = "hunter2-but-longer"
    with pytest.raises(ConfigError) as caught:
        _verifier(ManualClock(), LOOKUP_PROXY_JWT_SECRET=short)
    (problem,) = caught.value.problems
    assert problem.found == f"{len(short)} bytes"
    assert short not in str(caught.value)


def test_hs512_needs_a_64_byte_secret() -> None:
    """The secret must be as long as the strongest allowed HS algorithm's hash."""
    auth = Auth(algorithms=("HS256", "HS512"), hs_secret_env="TERMINAL_SECRET")
    with pytest.raises(ConfigError) as caught:
        _verifier(ManualClock(), auth, TERMINAL_SECRET="x" * 48)
    (problem,) = caught.value.problems
    assert problem.key == "TERMINAL_SECRET"
    assert problem.expected == "a secret of at least 64 bytes for HS512 tokens"


def test_public_key_policy_without_key_file_refused() -> None:
    """An RS256 policy that names neither a PEM nor a JWKS file refuses to start."""
    with pytest.raises(ConfigError) as caught:
        _verifier(ManualClock(), Auth(algorithms=("RS256",)))
    assert caught.value.problems[0].key == "auth.public_key_file"


def test_missing_public_key_file_refused_naming_the_key(tmp_path: Path) -> None:
    """A public_key_file that does not exist is a ConfigError naming auth.public_key_file."""
    auth = Auth(algorithms=("RS256",), public_key_file="keys/missing.pem")
    with pytest.raises(ConfigError) as caught:
        _verifier(ManualClock(), auth, tmp_path)
    (problem,) = caught.value.problems
    assert problem.key == "auth.public_key_file"
    assert problem.file == str(tmp_path / "keys" / "missing.pem")
    assert "unreadable" in problem.found


@pytest.mark.parametrize(
    ("content", "found"),
    [
        (b"not a key", "no readable PEM public key"),
        (
            RSA_KEY.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            "a private key",
        ),
        (_pem(EC_KEY), "verifies none of RS256"),
        (_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)), "1024 bits"),
    ],
)
def test_unusable_public_key_file_refused(tmp_path: Path, content: bytes, found: str) -> None:
    """Garbage, a private key, a key of the wrong type or a weak RSA key stop start-up."""
    (tmp_path / "idp.pem").write_bytes(content)
    auth = Auth(algorithms=("RS256",), public_key_file="idp.pem")
    with pytest.raises(ConfigError) as caught:
        _verifier(ManualClock(), auth, tmp_path)
    (problem,) = caught.value.problems
    assert problem.key == "auth.public_key_file"
    assert found in problem.found


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        '{"keys": "none"}',
        '{"keys": []}',
        json.dumps({"keys": [{k: v for k, v in _jwk(EC_KEY, "x").items() if k != "kid"}]}),
    ],
)
def test_unusable_jwks_file_refused(tmp_path: Path, content: str) -> None:
    """A JWKS that is not JSON, has no usable keys, or has keys without kid stops start-up."""
    (tmp_path / "jwks.json").write_text(content)
    auth = Auth(algorithms=("ES256",), jwks_file="jwks.json")
    with pytest.raises(ConfigError) as caught:
        _verifier(ManualClock(), auth, tmp_path)
    assert caught.value.problems[0].key == "auth.jwks_file"


def test_jwks_key_declaring_another_algorithm_is_not_used(tmp_path: Path) -> None:
    """A JWK whose own alg is ES384 is not used for an ES256 token, even with a matching kid."""
    clock = ManualClock()
    document = {"keys": [{**_jwk(EC_KEY, "k"), "alg": "ES384"}, _jwk(OTHER_EC_KEY, "other")]}
    (tmp_path / "jwks.json").write_text(json.dumps(document))
    auth = Auth(algorithms=("ES256", "ES384"), jwks_file="jwks.json")
    verifier = _verifier(clock, auth, tmp_path)
    token = jwt.encode(
        _claims(clock, drop=("aud",)), EC_KEY, algorithm="ES256", headers={"kid": "k"}
    )
    assert _refusal(verifier, f"Bearer {token}").cause == "token-invalid"
