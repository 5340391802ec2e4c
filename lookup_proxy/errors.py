"""Every way the proxy can say no, and every way a policy file can be wrong.

::

    LookupProxyError
    ├── ConfigError            a policy file is unusable; lists every problem found
    └── Refusal                a lookup is refused; rendered as RFC 9457 problem+json
        ├── Unauthenticated       401  token missing, forged, expired, wrong issuer/audience
        ├── BadRequest            400  reason missing/unknown, bad reference, unparseable number
        ├── NotPermitted          403  role may not use the reason; path is not a lookup route
        ├── LockedOut             403  employee is locked out by the guard
        ├── RateLimited           429  a rate rule refused; carries Retry-After, RateLimit
        ├── GuardDenied           403  an enumeration rule refused this lookup
        ├── GuardUnavailable      503  the store behind the guard cannot be reached
        ├── AuditUnavailable      503  the lookup's audit record cannot be made durable
        ├── UpstreamUnavailable   502  the customer-lookup backend refused or broke the connection
        ├── UpstreamError         502  the backend answered 5xx (its body is logged, not relayed)
        └── UpstreamTimeout       504  the customer-lookup backend did not answer in time

A refusal's ``detail`` is read by a clerk at a store terminal: short, plain, and says what to do.
Its ``cause`` is a stable machine name used in metrics and logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

PROBLEM_BASE = "urn:lookup-proxy:problem:"


class LookupProxyError(Exception):
    """Base of everything this package raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong in a policy file."""

    file: str
    key: str
    expected: str
    found: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: expected {self.expected}; found {self.found}"


class ConfigError(LookupProxyError):
    """A policy file that cannot be used; carries every problem found, not just the first."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(eq=False)
class Refusal(LookupProxyError):
    """A lookup the proxy will not serve."""

    detail: str
    status: int = 400
    cause: str = "refused"
    title: str = "Lookup refused"
    headers: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.detail)

    @property
    def type_uri(self) -> str:
        return PROBLEM_BASE + self.cause


def unauthenticated(detail: str, cause: str = "unauthenticated") -> Refusal:
    """401: the terminal must sign in again; the header tells clients which scheme."""
    return Refusal(
        detail,
        status=401,
        cause=cause,
        title="Sign-in required",
        headers={"WWW-Authenticate": 'Bearer realm="lookup-proxy"'},
    )


def bad_request(detail: str, cause: str, extra: Mapping[str, object] | None = None) -> Refusal:
    """400: something the clerk typed or chose is missing or wrong."""
    return Refusal(
        detail,
        status=400,
        cause=cause,
        title="Lookup request incomplete or invalid",
        extra=extra or {},
    )


def body_too_large(detail: str) -> Refusal:
    """413: a request body over the proxy's ``client_max_size`` is never read on, nor sent."""
    return Refusal(detail, status=413, cause="body-too-large", title="Request body too large")


def not_permitted(detail: str, cause: str = "not-permitted") -> Refusal:
    """403: the request is understood and will not be served to this employee."""
    return Refusal(detail, status=403, cause=cause, title="Not permitted")


def locked_out(detail: str, until: float | None, rule: str) -> Refusal:
    """403 for an employee the guard has locked out, naming the rule that locked them."""
    extra: dict[str, object] = {"rule": rule}
    if until is not None:
        extra["locked_until"] = until
    return Refusal(detail, status=403, cause="locked-out", title="Locked out", extra=extra)


def rate_limited(detail: str, headers: Mapping[str, str], rule: str) -> Refusal:
    """429 with the retry headers a terminal can show as a countdown."""
    return Refusal(
        detail,
        status=429,
        cause="rate-limited",
        title="Too many lookups",
        headers=headers,
        extra={"rule": rule},
    )


def guard_denied(detail: str, rule: str) -> Refusal:
    """403 for a lookup an enumeration rule refused."""
    return Refusal(
        detail, status=403, cause="guard-denied", title="Lookup refused", extra={"rule": rule}
    )


def _paused(detail: str, cause: str) -> Refusal:
    """503 with Retry-After: the lookup is not served now, and the terminal may try again."""
    return Refusal(
        detail,
        status=503,
        cause=cause,
        title="Lookup service temporarily unavailable",
        headers={"Retry-After": "5"},
    )


def guard_unavailable(detail: str) -> Refusal:
    """503: never let a lookup through unguarded because the counters are out of reach."""
    return _paused(detail, "guard-unavailable")


def audit_unavailable(detail: str) -> Refusal:
    """503: a lookup whose audit record cannot be made durable is not forwarded."""
    return _paused(detail, "audit-unavailable")


def upstream_unavailable(detail: str) -> Refusal:
    """502: the backend refused, reset or garbled the exchange."""
    return Refusal(detail, status=502, cause="upstream-unavailable", title="Customer system error")


def upstream_error(detail: str, upstream_status: int) -> Refusal:
    """502 in place of a backend's 5xx, whose body may show internals the clerk must not see."""
    return Refusal(
        detail,
        status=502,
        cause="upstream-error",
        title="Customer system error",
        extra={"upstream_status": upstream_status},
    )


def upstream_timeout(detail: str) -> Refusal:
    """504: the backend did not answer within the configured timeouts."""
    return Refusal(detail, status=504, cause="upstream-timeout", title="Customer system too slow")
