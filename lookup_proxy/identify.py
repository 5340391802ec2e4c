"""The identify step: the terminal's bearer token in, a verified :class:`Employee` out.

Every later step attributes the lookup to this employee, so anything short of a token this
proxy can fully vouch for is a 401 whose ``detail`` a clerk can act on.

pyjwt checks the signature only. The time claims, issuer, audience and employee claims are
checked here, because pyjwt compares ``exp``/``nbf``/``iat`` with wall time while the proxy's
clock is injected (tests step it; every instance must agree on it), and because a clerk-facing
refusal needs to know *which* check failed.
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from lookup_proxy.clock import Clock
from lookup_proxy.employee import Employee
from lookup_proxy.errors import ConfigError, ConfigProblem, Refusal, unauthenticated
from lookup_proxy.policy import Auth

__all__ = ["TokenVerifier", "hs_secret"]

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

# Some terminals send tokens near the 8 KiB header limit; anything longer is not a sign-in.
_MAX_TOKEN_LENGTH: Final = 8192
_BEARER: Final = "Bearer "
"""The scheme as terminals write it: the fast way to a cached token (any other spelling that
RFC 7235 allows takes the long way, through _bearer)."""
# Claim values become Redis keys, log fields and audit rows; bound them.
_MAX_CLAIM_LENGTH: Final = 256
# RFC 7518 §3.2 asks for an HMAC key at least as long as the hash; pyjwt warns below that.
_HS_MIN_BYTES: Final = {"HS256": 32, "HS384": 48, "HS512": 64}
_EC_CURVES: Final = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1}
_RSA_MIN_BITS: Final = 2048

# pyjwt verifies the signature and nothing else; see the module docstring.
_SIGNATURE_ONLY: Final[jwt.types.Options] = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
    "enforce_minimum_key_length": True,
}

_CALL_HELP = "If this keeps happening, call the help desk."
_MISSING = "You are not signed in. Sign in at the terminal, then try again."
_MALFORMED = (
    f"The terminal's sign-in could not be read. Sign in again at the terminal. {_CALL_HELP}"
)
_INVALID = f"Your sign-in could not be verified. Sign in again at the terminal. {_CALL_HELP}"
_EXPIRED = "Your sign-in has expired. Sign in again at the terminal."
_NOT_YET_VALID = (
    "Your sign-in is not valid yet. Wait a minute, then try again. "
    "If this keeps happening, ask the help desk to check the terminal's clock."
)
_NO_EXPIRY = f"Your sign-in has no expiry time, so it cannot be accepted. {_CALL_HELP}"
_NO_ISSUE_TIME = (
    f"Your sign-in does not say when it was issued, so it cannot be accepted. {_CALL_HELP}"
)
_TOO_LONG = f"Your sign-in is valid for longer than this service allows. {_CALL_HELP}"
_WRONG_ISSUER = f"Your sign-in was issued by a system this service does not trust. {_CALL_HELP}"
_WRONG_AUDIENCE = f"Your sign-in is meant for a different system. {_CALL_HELP}"
_NO_EMPLOYEE = f"Your sign-in does not say who you are. {_CALL_HELP}"
_NO_STORE = f"Your sign-in does not say which store you work at. {_CALL_HELP}"
_BAD_REGION = f"Your sign-in has an unreadable region. {_CALL_HELP}"
_NOT_CANONICAL = (
    "Your sign-in spells your employee id, store or region unusually (spaces around it, or "
    f"look-alike characters such as full-width letters). {_CALL_HELP}"
)
_BAD_ROLES = f"Your sign-in has an unreadable list of roles. {_CALL_HELP}"
_BAD_ACCOUNTS = f"Your sign-in has an unreadable list of business accounts. {_CALL_HELP}"
_BAD_TIMES = f"Your sign-in has unreadable validity times. {_CALL_HELP}"


def hs_secret(auth: Auth, environ: Mapping[str, str]) -> bytes:
    """The shared HMAC secret, refused when short so a guessable secret never signs anything.

    The length needed is the longest any allowed HS algorithm requires, so one secret serves
    the whole allow-list. The value itself never appears in the error.
    """
    strongest = max(
        (a for a in auth.algorithms if a in _HS_MIN_BYTES),
        key=_HS_MIN_BYTES.__getitem__,
        default="HS256",
    )
    needed = _HS_MIN_BYTES[strongest]
    value = environ.get(auth.hs_secret_env)
    secret = value.encode("utf-8") if value is not None else b""
    if len(secret) < needed:
        raise ConfigError(
            [
                ConfigProblem(
                    file="<environment>",
                    key=auth.hs_secret_env,
                    expected=f"a secret of at least {needed} bytes for {strongest} tokens",
                    found="unset" if value is None else f"{len(secret)} bytes",
                )
            ]
        )
    return secret


def _fits(key: PublicKey, algorithm: str) -> bool:
    """Whether ``key`` can verify ``algorithm``; a mismatch is refused, never attempted."""
    if algorithm[:2] in ("RS", "PS"):
        return isinstance(key, rsa.RSAPublicKey)
    curve = _EC_CURVES.get(algorithm)
    return (
        curve is not None
        and isinstance(key, ec.EllipticCurvePublicKey)
        and isinstance(key.curve, curve)
    )


def _key_problem(key: object, auth: Auth) -> str | None:
    """Why ``key`` is unusable for this allow-list, or ``None``."""
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return f"a key of type {type(key).__name__}"
    if not any(_fits(key, a) for a in auth.algorithms):
        return f"a {type(key).__name__} that verifies none of {', '.join(auth.algorithms)}"
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < _RSA_MIN_BITS:
        return f"an RSA key of {key.key_size} bits (at least {_RSA_MIN_BITS} needed)"
    return None


@dataclass(frozen=True, slots=True)
class _JwksKey:
    key: PublicKey
    # A JWK that names its algorithm may be used for that algorithm only (RFC 7517 §4.4).
    algorithm: str | None


@dataclass(frozen=True, slots=True)
class _Verified:
    """A cached verification: the employee, and the clock interval in which it stays valid."""

    employee: Employee
    valid_from: float
    valid_until: float


def _load_pem(path: Path, auth: Auth) -> PublicKey:
    def problem(found: str) -> ConfigError:
        return ConfigError(
            [
                ConfigProblem(
                    file=str(path),
                    key="auth.public_key_file",
                    expected=f"a PEM public key or certificate for {', '.join(auth.algorithms)}",
                    found=found,
                )
            ]
        )

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise problem(f"an unreadable file ({exc.strerror})") from None
    key: object
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = load_pem_public_key(data)
    except ValueError:
        if b"PRIVATE KEY-----" in data:
            raise problem("a private key (give the proxy the public key only)") from None
        raise problem("no readable PEM public key") from None
    why = _key_problem(key, auth)
    if why is not None:
        raise problem(why)
    assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    return key


def _load_jwks(path: Path, auth: Auth) -> dict[str, list[_JwksKey]]:
    """Signing keys by ``kid``; keys the allow-list cannot use are skipped, as IdPs publish many.

    ``jwt.PyJWKSet`` is not used: it drops unusable keys silently and hides each key's own
    ``alg``, and this loader must both honour ``alg`` and say which key is wrong.
    """

    def problem(found: str) -> ConfigError:
        return ConfigError(
            [
                ConfigProblem(
                    file=str(path),
                    key="auth.jwks_file",
                    expected=(
                        'a JSON Web Key Set ({"keys": [...]}) with at least one public key, '
                        f"each with a kid, for {', '.join(auth.algorithms)}"
                    ),
                    found=found,
                )
            ]
        )

    try:
        document = json.loads(path.read_bytes())
    except OSError as exc:
        raise problem(f"an unreadable file ({exc.strerror})") from None
    except ValueError:
        raise problem("a file that is not JSON") from None
    raw_keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(raw_keys, list):
        raise problem('JSON without a "keys" list')
    keys: dict[str, list[_JwksKey]] = {}
    for index, raw in enumerate(raw_keys):
        if not isinstance(raw, dict) or raw.get("use", "sig") != "sig":
            continue
        declared = raw.get("alg")
        if declared is not None and declared not in auth.algorithms:
            continue
        if "d" in raw or (raw.get("kty") == "oct"):
            raise problem(f"key {index}: a private or shared-secret key (publish public keys only)")
        try:
            parsed = jwt.PyJWK(raw).key
        except jwt.PyJWTError:
            continue
        if _key_problem(parsed, auth) is not None:
            continue
        kid = raw.get("kid")
        if not isinstance(kid, str) or not kid:
            raise problem(f"key {index}: no kid, so tokens cannot name it")
        keys.setdefault(kid, []).append(_JwksKey(parsed, declared))
    if not keys:
        raise problem("no public key usable with the allowed algorithms")
    return keys


class TokenVerifier:
    """Turns an ``Authorization`` header into an :class:`Employee`, or refuses with a 401.

    Keys are loaded once, at construction, so a bad key file stops the proxy at start-up
    rather than refusing every clerk later. Verified tokens are cached by their full text
    (a partial match would let a forged suffix ride on a genuine prefix), and a cached token is
    re-checked against the clock on every hit, so the cache never accepts what a fresh
    verification would refuse.
    """

    def __init__(
        self, auth: Auth, *, base_dir: Path, environ: Mapping[str, str], clock: Clock
    ) -> None:
        self._auth = auth
        self._clock = clock
        self._algorithms = frozenset(auth.algorithms)
        self._secret: bytes | None = None
        self._pem: PublicKey | None = None
        self._jwks: dict[str, list[_JwksKey]] | None = None
        if all(a.startswith("HS") for a in auth.algorithms):
            self._secret = hs_secret(auth, environ)
        else:
            if auth.public_key_file is None and auth.jwks_file is None:
                raise ConfigError(
                    [
                        ConfigProblem(
                            file="<policy>",
                            key="auth.public_key_file",
                            expected=(
                                "a PEM public key file or auth.jwks_file for "
                                f"{', '.join(auth.algorithms)} tokens"
                            ),
                            found="neither is set",
                        )
                    ]
                )
            if auth.public_key_file is not None:
                self._pem = _load_pem(base_dir / auth.public_key_file, auth)
            if auth.jwks_file is not None:
                self._jwks = _load_jwks(base_dir / auth.jwks_file, auth)
        self._cache: OrderedDict[str, _Verified] = OrderedDict()

    def verify(self, authorization: str | None) -> Employee:
        """The employee a terminal's ``Authorization`` header vouches for."""
        now = self._clock.now()
        # A header in the form every terminal sends, whose token is cached, passed _bearer when
        # it was cached: its scans (1.5 % of a lookup's instructions) are for tokens not seen yet.
        if authorization is not None and authorization.startswith(_BEARER):
            employee = self._cached(authorization[len(_BEARER) :], now)
            if employee is not None:
                return employee
        token = self._bearer(authorization)
        employee = self._cached(token, now)
        if employee is not None:
            return employee
        # Not cached, or outside its window: verify afresh so the refusal names the right cause.
        self._cache.pop(token, None)
        verified = self._verify(token, now)
        if self._auth.cache_size > 0:
            self._cache[token] = verified
            while len(self._cache) > self._auth.cache_size:
                self._cache.popitem(last=False)
        return verified.employee

    def _cached(self, token: str, now: float) -> Employee | None:
        """The employee of a cached token still inside its window (now the most recently
        used), else None."""
        cached = self._cache.get(token)
        if cached is None or not cached.valid_from <= now < cached.valid_until:
            return None
        self._cache.move_to_end(token)
        return cached.employee

    @staticmethod
    def _bearer(authorization: str | None) -> str:
        if authorization is None or not authorization.strip():
            raise unauthenticated(_MISSING, "token-missing")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if (
            scheme.lower() != "bearer"
            or not token
            or not token.isascii()  # aiohttp hands undecodable bytes on as lone surrogates
            or len(token) > _MAX_TOKEN_LENGTH
            # No whitespace or other control character inside: two scans in C. (A regex for
            # whitespace was 2 % of a lookup's instructions: bench/instructions.py.)
            or not token.isprintable()
            or " " in token
            or token.count(".") != 2
        ):
            raise unauthenticated(_MALFORMED, "token-malformed")
        return token

    def _verify(self, token: str, now: float) -> _Verified:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise unauthenticated(_MALFORMED, "token-malformed") from None
        except jwt.PyJWTError:
            raise unauthenticated(_INVALID, "token-invalid") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self._algorithms:
            raise unauthenticated(_INVALID, "token-invalid")
        claims = self._signed_claims(token, algorithm, header.get("kid"))
        return self._check_claims(claims, now)

    def _candidate_keys(self, algorithm: str, kid: object) -> list[PublicKey | bytes]:
        """Keys that may verify this token; a token never picks a key the policy did not list."""
        if self._secret is not None:
            return [self._secret]
        if isinstance(kid, str) and self._jwks is not None:
            return _usable(self._jwks.get(kid, ()), algorithm)
        if self._pem is not None:
            return [self._pem] if _fits(self._pem, algorithm) else []
        if self._jwks is not None and len(self._jwks) == 1:
            # A lone key needs no kid to be picked out; with several, guessing is refused.
            (only,) = self._jwks.values()
            return _usable(only, algorithm)
        return []

    def _signed_claims(self, token: str, algorithm: str, kid: object) -> dict[str, Any]:
        keys = self._candidate_keys(algorithm, kid)
        if not keys:
            raise unauthenticated(_INVALID, "token-invalid")
        for key in keys:
            try:
                return jwt.decode(token, key, algorithms=[algorithm], options=_SIGNATURE_ONLY)
            except jwt.InvalidSignatureError:
                continue
            except jwt.DecodeError:
                raise unauthenticated(_MALFORMED, "token-malformed") from None
            except jwt.PyJWTError:
                raise unauthenticated(_INVALID, "token-invalid") from None
        raise unauthenticated(_INVALID, "token-invalid")

    def _check_claims(self, claims: dict[str, Any], now: float) -> _Verified:
        auth = self._auth
        leeway = auth.leeway
        if claims.get("exp") is None:
            raise _claims(_NO_EXPIRY)
        if claims.get("iat") is None:
            # Without an issue time a token's lifetime is unknowable: a stolen token minted to
            # live for a year would pass ``max_token_lifetime`` on its last day.
            raise _claims(_NO_ISSUE_TIME)
        exp = _numeric_date(claims["exp"])
        iat = _numeric_date(claims["iat"])
        nbf = _numeric_date(claims.get("nbf"))
        assert exp is not None and iat is not None
        if now >= exp + leeway:
            raise unauthenticated(_EXPIRED, "token-expired")
        if (nbf is not None and nbf > now + leeway) or iat > now + leeway:
            raise unauthenticated(_NOT_YET_VALID, "token-not-yet-valid")
        if exp - iat > auth.max_token_lifetime:
            raise _claims(_TOO_LONG)
        if auth.issuer is not None and claims.get("iss") != auth.issuer:
            raise _claims(_WRONG_ISSUER)
        if auth.audience is not None and not _addressed_to(claims.get("aud"), auth.audience):
            raise _claims(_WRONG_AUDIENCE)

        names = auth.claims
        employee = Employee(
            id=_required_text(claims.get(names.employee), _NO_EMPLOYEE),
            store=_required_text(claims.get(names.store), _NO_STORE),
            region=_region(claims.get(names.region)),
            roles=_roles(claims.get(names.roles)),
            accounts=(
                frozenset() if names.accounts is None else _accounts(claims.get(names.accounts))
            ),
        )
        floors = [iat - leeway]
        if nbf is not None:
            floors.append(nbf - leeway)
        return _Verified(employee, valid_from=max(floors), valid_until=exp + leeway)


def _usable(keys: Iterable[_JwksKey], algorithm: str) -> list[PublicKey | bytes]:
    return [k.key for k in keys if k.algorithm in (None, algorithm) and _fits(k.key, algorithm)]


def _claims(detail: str) -> Refusal:
    return unauthenticated(detail, "token-claims")


def _numeric_date(value: object) -> float | None:
    """RFC 7519 NumericDate; NaN is refused because it compares false with every deadline."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _claims(_BAD_TIMES)
    try:
        number = float(value)
    except OverflowError:
        raise _claims(_BAD_TIMES) from None
    if not math.isfinite(number):
        raise _claims(_BAD_TIMES)
    return number


def _addressed_to(aud: object, audience: str) -> bool:
    if isinstance(aud, str):
        return aud == audience
    return isinstance(aud, list) and audience in aud and all(isinstance(a, str) for a in aud)


def _text(value: object) -> str | None:
    """A claim usable as an identifier: printable text of sane length, or ``None``."""
    if (
        isinstance(value, str)
        and value.strip()
        and len(value) <= _MAX_CLAIM_LENGTH
        and value.isprintable()
    ):
        return value
    return None


def _required_text(value: object, detail: str) -> str:
    text = _text(value)
    if text is None:
        raise _claims(detail)
    return _canonical(text)


def _canonical(text: str) -> str:
    """``text`` when it is an identifier spelt one way only: the guard counts employees,
    stores and regions by these strings exactly, so ``E7 `` or a full-width ``Ｅ7`` would be
    another employee than ``E7``, with counters of their own. An identity provider that lets a
    sign-in choose among such spellings would hand an insider fresh counters; refused (a 401),
    never folded, since folding would merge what the provider keeps apart. Case is the
    provider's to keep stable (README: "What the guard takes on trust")."""
    if text != text.strip() or unicodedata.normalize("NFKC", text) != text:
        raise _claims(_NOT_CANONICAL)
    return text


def _region(value: object) -> str | None:
    if value is None or value == "":
        return None
    text = _text(value)
    if text is None:
        raise _claims(_BAD_REGION)
    return _canonical(text)


def _roles(value: object) -> frozenset[str]:
    """Roles as a JSON list or an OAuth-style space-separated string; absent means none."""
    return _names(value, _BAD_ROLES)


def _accounts(value: object) -> frozenset[str]:
    """Business accounts (references) as the roles are given; absent means none."""
    return _names(value, _BAD_ACCOUNTS)


def _names(value: object, bad: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        items: list[object] = list(value.split())
    elif isinstance(value, list):
        items = value
    else:
        raise _claims(bad)
    names: set[str] = set()
    for item in items:
        if not isinstance(item, str) or len(item) > _MAX_CLAIM_LENGTH or not item.isprintable():
            raise _claims(bad)
        if item.strip():
            names.add(item.strip())
    return frozenset(names)
