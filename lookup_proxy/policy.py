"""The policy file security staff edit: schema, loading, and errors that name file and key.

The schema is strict on purpose (unknown keys, wrong types and duplicate keys are errors) because a
misspelt rule key that is silently ignored is a hole nobody sees. Secrets never live in the file:
it names the environment variables that hold them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from lookup_proxy.accounts import Access, AccountCheck, account_checks, check_account_path
from lookup_proxy.durations import parse_duration
from lookup_proxy.errors import ConfigError, ConfigProblem
from lookup_proxy.minimise import check_path
from lookup_proxy.proxy_headers import NEVER_FORWARDED


def _duration(value: object, info: ValidationInfo) -> object:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if info.context and info.context.get(SECONDS_ALLOWED):
        return value  # re-validating a policy this process already parsed
    raise ValueError("a duration with a unit such as '90s', '15m', '1h' or '7d', not a bare number")


SECONDS_ALLOWED = "seconds-allowed"
"""Validation context key: durations already converted to seconds (overrides, copies)."""


Duration = Annotated[float, BeforeValidator(_duration), Field(gt=0)]
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]
ReasonCode = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{0,39}$")]
HeaderName = Annotated[str, Field(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")]
FieldPath = Annotated[str, AfterValidator(check_path)]
"""A path into the backend's JSON answer (lookup_proxy/minimise.py has the syntax)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Server(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    trusted_proxies: tuple[str, ...] = ()
    admin_role: str = "security-admin"
    shutdown_timeout: Duration = 10.0
    # The HTTP edge (lookup_proxy/http_edge.py): what one connection may hold, and for how long.
    header_timeout: Duration = 10.0
    keepalive_timeout: Duration = 5.0
    max_request_line: int = Field(4096, ge=256, le=65_536)
    max_header_size: int = Field(8190, ge=256, le=65_536)
    max_headers: int = Field(64, ge=8, le=1024)
    max_connections: int = Field(500, ge=1, le=1_000_000)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"IP addresses or CIDR networks such as '10.0.0.0/8', not {item!r}"
                ) from None
        return value


class Upstream(_Section):
    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$")]
    connect_timeout: Duration = 1.0
    read_timeout: Duration = 3.0
    total_timeout: Duration = 5.0
    pool_size: int = Field(100, ge=1, le=10_000)
    not_found_statuses: tuple[int, ...] = (404,)
    credential_env: str | None = None
    credential_header: str = "Authorization"
    forward_headers: tuple[HeaderName, ...] = ("Accept", "Accept-Language", "Content-Type")
    """The terminal's headers the backend may see; everything else a terminal sends stops here
    (a header the backend reads but the guard never judged is a way around the guard)."""
    max_filtered_body: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)
    """Largest answer (bytes) trimmed for a reason with ``fields``; a larger one is refused."""

    @field_validator("forward_headers")
    @classmethod
    def _not_ours(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name.lower() in NEVER_FORWARDED:
                raise ValueError(
                    f"headers the proxy may pass on from a terminal; {name!r} is hop-by-hop or "
                    "one the proxy sets itself"
                )
        return value


class Route(_Section):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    path: Annotated[str, Field(pattern=r"^/\S*$")]
    number_from: Literal["path", "query"] = "path"
    number_param: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = "number"


class Numbers(_Section):
    country_code: Annotated[str, Field(pattern=r"^\d{1,3}$")] = "82"
    mobile_prefixes: tuple[Annotated[str, Field(pattern=r"^0\d{2}$")], ...] = (
        "010",
        "011",
        "016",
        "017",
        "018",
        "019",
    )
    max_input_length: int = Field(32, ge=11, le=256)


class Claims(_Section):
    employee: str = "sub"
    store: str = "store"
    region: str = "region"
    roles: str = "roles"
    accounts: str | None = None
    """The claim listing the business accounts (references) the employee works: a reason with
    ``accounts = "own"`` then takes only those references. Unset: any reference that fits."""


Algorithm = Literal["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]


class Auth(_Section):
    algorithms: tuple[Algorithm, ...] = ("HS256",)
    hs_secret_env: str = "LOOKUP_PROXY_JWT_SECRET"
    public_key_file: str | None = None
    jwks_file: str | None = None
    issuer: str | None = None
    audience: str | None = None
    leeway: Annotated[float, BeforeValidator(_duration), Field(ge=0)] = 30.0
    max_token_lifetime: Duration = 86400.0
    cache_size: int = Field(10_000, ge=0, le=1_000_000)
    claims: Claims = Claims()

    @field_validator("algorithms")
    @classmethod
    def _one_family(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one algorithm")
        families = {alg[:2] for alg in value}
        if "HS" in families and len(families) > 1:
            raise ValueError(
                "either shared-secret (HS*) or public-key (RS*/ES*/PS*) algorithms, not both: "
                "mixing them allows key-confusion forgeries"
            )
        return value


class Reason(_Section):
    description: str
    reference_pattern: str | None = None
    reference_hint: str | None = None
    roles: tuple[str, ...] | None = None
    limits: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    fields: tuple[FieldPath, ...] | None = None
    """The fields of the backend's JSON answer a lookup for this reason may see (everything
    else is removed); unset, the answer passes untouched (lookup_proxy/minimise.py)."""
    accounts: Access | None = None
    """With ``[accounts]``: which business customers' lines a lookup for this reason sees:
    those of the account its reference names (``own``), ``none`` (unset) or ``any``
    (lookup_proxy/accounts.py)."""

    @field_validator("reference_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"a valid regular expression ({exc})") from None
        return value

    @field_validator("accounts")
    @classmethod
    def _own_needs_a_reference(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value == "own" and info.data.get("reference_pattern") is None:
            raise ValueError(
                "'none' or 'any' for a reason without a reference_pattern ('own' compares the "
                "record's account with the lookup's reference)"
            )
        return value

    @field_validator("limits")
    @classmethod
    def _windows(cls, value: dict[str, int]) -> dict[str, int]:
        for window in value:
            parse_duration(window)
        return value


class Accounts(_Section):
    field: Annotated[str, AfterValidator(check_account_path)]
    """Where the backend's found record names the business account it is a line of (a dotted
    path to one value, e.g. ``account.reference``); absent or empty: not a business line."""


class Store(_Section):
    kind: Literal["memory", "redis"] = "memory"
    url_env: str = "LOOKUP_PROXY_REDIS_URL"
    known_numbers_key_env: str = "LOOKUP_PROXY_KNOWN_NUMBERS_KEY"
    """The environment variable holding the secret that keys the employees' filters of known
    numbers (guard/known_numbers.py): required with Redis, the same in every instance; a
    memory store makes its own."""
    cluster: bool = False
    timeout: Duration = 0.25
    key_prefix: Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,16}$")] = "lp"
    on_unavailable: Literal["refuse", "local"] = "refuse"
    """What a lookup meets while Redis cannot be reached: a 503, or the embedded store."""
    local_limit_share: float = Field(0.5, gt=0.0, le=1.0)
    """In ``local`` mode every count limit is this share of the policy's (rounded down, at
    least 1): each instance counts alone, so an employee spread over N instances gets N
    times it. Set it to 1/N of your instances or less."""
    breaker_failures: int = Field(2, ge=1, le=100)
    """Consecutive store failures that open the circuit (no more waits on a dead Redis)."""
    retry_interval: Duration = 1.0
    """While the circuit is open, how often one probe asks whether Redis is back."""
    check_interval: Duration = 2.0
    """How often the marker key is checked, to notice a Redis emptied without a restart."""
    lock_journal: str | None = None
    """Directory for the lock journal (relative to the policy file), shared by every
    instance: locks re-asserted from it survive a Redis or proxy restart that lost them."""
    memory_max_keys: int = Field(2_000_000, ge=1000)


class _Rule(_Section):
    name: Name
    scope: Literal["employee", "store", "region", "chain"] = "employee"
    window: Duration
    limit: int = Field(ge=0)
    action: Literal["deny", "lock", "flag"] = "deny"
    mode: Literal["enforce", "shadow"] = "enforce"
    reasons: tuple[ReasonCode, ...] | None = None
    exempt_reasons: tuple[ReasonCode, ...] = ()
    exempt_roles: tuple[str, ...] = ()
    description: str = ""
    evidence: Name | None = None
    """What this rule's flags witness, for escalation (unset: the rule's own name). Rules that
    name one evidence re-test the same signal (the same misses against the same peers, at
    another window or with another test); their flags on one day count as one flag-day, and
    as one rule towards ``min_rules``: two readings of one signal are not two witnesses."""


class RateRule(_Rule):
    kind: Literal["rate"]
    resolution: Duration | None = None
    """Unset: an exact log of attempts (capped at ``limit`` + 1). Set: counters in buckets of
    this width, two Redis commands a lookup instead of four or five; the window is then
    counted from the start of the bucket it begins in (up to ``resolution`` more, never less:
    a limit binds up to one bucket sooner) and Retry-After is rounded up to a bucket's end."""


class DistinctRule(_Rule):
    kind: Literal["distinct"]


class SequentialRule(_Rule):
    kind: Literal["sequential"]
    distance: int = Field(20, ge=1, le=1_000_000)


class BlockRule(_Rule):
    kind: Literal["block"]
    block_digits: int = Field(7, ge=4, le=10)
    member_min: int = Field(2, ge=1)


class MissesRule(_Rule):
    kind: Literal["misses"]
    ratio: float = Field(0.0, ge=0.0, le=1.0)
    typo_window: Duration = 60.0
    typo_limit: int = Field(6, ge=0)
    """Misses forgiven as typos per ``typo_budget``; past it a miss counts, typo or not."""
    flag_limit: int | None = Field(None, ge=0)
    """An early warning: more misses than this (but not more than ``limit``) raise a flag
    under the rule's name, so a prober staying just under the limit is seen (and escalated)."""
    typo_repeat: int = Field(2, ge=1, le=8)
    """How often one found number may forgive a miss per ``typo_budget``: a clerk mistypes a
    customer's number again later in the visit, but a farmer retypes the same one all day."""
    typo_share: float = Field(0.0, ge=0.0, le=1.0)
    """With a share above 0, forgiveness is also capped at ``typo_floor`` plus this share of the
    numbers the employee looked up in ``typo_budget`` (one more window per rule)."""
    typo_floor: int = Field(5, ge=0)
    typo_budget: Duration = 86_400.0
    """How long a forgiveness is remembered: the cap's window, and how long a found number that
    forgave a miss cannot forgive another (a retype is of a customer met for the first time)."""
    typo_returning_limit: int | None = Field(None, ge=0)
    """Misses forgiven per ``typo_budget`` by a *returning* customer's number: one the employee
    had met before the visit (first looked up more than ``typo_visit`` before the retype, or
    not in the log of numbers new to them at all). The customer at the counter is mostly met
    for the first time that visit; a farmer who has read the policy retypes customers they
    know from earlier days. Unset: no such cap. A first meeting is dated by the rule's log of
    found numbers new to the employee (with a ``ratio``), else by the log of its new numbers
    that ``typo_share`` counts (kept for this alone without one)."""
    typo_visit: Duration = 1800.0
    """How long after a customer was first met a retype of them is still of that visit."""
    walk_in_reasons: tuple[ReasonCode, ...] = ()
    """Reasons whose misses are walk-ins, not probes (someone who is not a customer yet, at
    the counter): the rule leaves them uncounted, as ``exempt_reasons`` would, unless a found
    number corrects one as a typo. A miss retyped seconds later to a customer one digit away is
    no walk-in: the rule forgives it within its typo budgets, and counts it past them. (Exempt,
    such misses were forgiven only by rules of every reason with day budgets: typo farming
    under the exempt reason.) Otherwise the rule counts these reasons' lookups like any other."""


class HoursRule(_Rule):
    """Lookups outside the store's opening hours (``[hours]``), counted like a rate."""

    kind: Literal["hours"]
    limit: int = Field(0, ge=0)


class PeerRule(_Rule):
    """An employee's share of misses (or their number of lookups) compared with their peers'
    over the window."""

    kind: Literal["peer"]
    metric: Literal["misses", "typos", "all-misses", "lookups"] = "misses"
    """``misses``: numbers not found (typos forgiven left out); ``typos``: misses forgiven as
    typos, which an insider farming typo forgiveness piles up; ``all-misses``: both, every
    number not found, forgiven or not: an insider who spends the typo budget and the misses'
    headroom at once stays under each rule of one, not under their sum. ``lookups``: a count,
    not a share: the employee's lookups over the last closed bucket (yesterday) against the
    peers' median that day (``window`` is two buckets: that one and the open one); an insider
    with a list of real customers misses nothing, so no share of misses sees them: what bounds
    them is how many they can look up beside a colleague's day's work."""
    limit: int = Field(0, ge=0)
    """Excess over what the peers' median predicts that is tolerated (misses, typos; for
    ``lookups``, lookups)."""
    peers: Literal["store", "region", "chain"] = "store"
    bucket: Duration = 86_400.0
    min_peers: int = Field(3, ge=1)
    min_outcomes: int = Field(20, ge=1)
    """Numbers a peer must have looked up in the window to count as one (a share of a few
    numbers is no baseline). The employee judged needs none once most of the group has
    it (before that, in a window's first days, no one below it is judged): a floor there spared
    insiders who do little honest work of their own (until 2026-12-06)."""
    spread: float = Field(4.0, gt=0)
    """How many deviations (chance, widened by the peers' 1.4826 x MAD) the excess must pass."""
    min_spread: float = Field(0.02, ge=0.0, le=1.0)
    """How far above the peers' median share the employee's share must also be (shares only:
    ``lookups`` has ``min_ratio``)."""
    min_count: int = Field(0, ge=0)
    """A fixed floor: the metric must also be above this count (``window`` test only)."""
    min_share: float = Field(0.0, ge=0.0, le=1.0)
    """A fixed floor: the employee's share must also reach this (``window`` test only). A
    rule with a floor is a fixed threshold the peers can lift where every clerk of the group
    is above it (a region whose stores serve few regulars, so more of each clerk's new
    numbers are walk-ins), never lower; with too few peers the floors alone decide."""
    test: Literal["window", "cusum"] = "window"
    """``window``: the window's counts added up against the peers' (``spread``, ``limit``,
    ``min_spread``); ``cusum``: Page's sequential test, day by day, for a rise of ``rate`` a
    bucket (``threshold``): it flags a prober who starts mid-window days sooner."""
    rate: float = Field(3.0, gt=0)
    """``cusum``: the rise the test looks for, in the metric per bucket (misses a day)."""
    threshold: float = Field(8.0, gt=0)
    """``cusum``: the log-likelihood ratio (nats) past which the rise is taken as real."""
    min_ratio: float = Field(1.0, ge=1.0)
    """``lookups`` only: the employee's count must also reach this many times the peers'
    median (a busy honest clerk's day reaches about twice it)."""
    action: Literal["flag", "lock"] = "flag"
    fallback: Literal["chain"] | None = None
    """Where an employee is compared when their group is too small to be a baseline: fewer
    than ``min_peers`` other members with numbers in the window (a region of two small
    stores), or no group (a token without a region): ``chain``, every clerk of the chain
    (``window`` test only). A group with members enough, too few of them yet past
    ``min_outcomes`` (the first days of a window), is young, not small: it is not replaced.
    Unset: the rule says nothing where the group is small but its fixed floors, and an
    insider whose region is small probes under those alone."""


Rule = Annotated[
    RateRule | DistinctRule | SequentialRule | BlockRule | MissesRule | HoursRule | PeerRule,
    Field(discriminator="kind"),
]


_CLOCK_TIME = re.compile(r"^([01][0-9]|2[0-4]):([0-5][0-9])$")
_OFFSET = re.compile(r"^([+-])([01][0-9]|2[0-3]):([0-5][0-9])$")


def _clock_time(value: object) -> object:
    if not isinstance(value, str):
        return value
    match = _CLOCK_TIME.match(value)
    if match is None or (match.group(1) == "24" and match.group(2) != "00"):
        raise ValueError(f"a time of day such as '09:30' (00:00-24:00), not {value!r}")
    return int(match.group(1)) * 3600 + int(match.group(2)) * 60


def _offset(value: object) -> object:
    if not isinstance(value, str):
        return value
    match = _OFFSET.match(value)
    if match is None:
        raise ValueError(f"a UTC offset such as '+09:00', not {value!r}")
    seconds = int(match.group(2)) * 3600 + int(match.group(3)) * 60
    return -seconds if match.group(1) == "-" else seconds


ClockTime = Annotated[int, BeforeValidator(_clock_time), Field(ge=0, le=86_400)]


class OpeningHours(_Section):
    """When lookups make sense: a store's opening hours, as seconds of the local day."""

    open: ClockTime
    close: ClockTime


class Hours(_Section):
    """Opening hours for the ``hours`` rules: a default, and stores that differ."""

    utc_offset: Annotated[int, BeforeValidator(_offset)] = 9 * 3600
    open: ClockTime = 9 * 3600
    close: ClockTime = 22 * 3600
    stores: dict[str, OpeningHours] = {}


class Escalation(_Section):
    """Repeated flags lead to a lock: ``limit`` flag-days (``rule@day``) are tolerated in
    ``window``; one more locks the employee out, naming the flags behind it."""

    enabled: bool = True
    window: Duration = 14 * 86_400.0
    limit: int = Field(2, ge=0)
    min_rules: int = Field(1, ge=1)
    """Different rules the flag-days must come from (rules naming one ``evidence`` count once)."""
    one_rule_limit: int | None = Field(None, ge=0)
    """Flag-days of any one rule (or one ``evidence``) tolerated in ``window`` whatever the
    others say (unset: no such limit): a rule that flags an employee day after day is not
    chance either."""
    one_rule_limits: dict[Name, Annotated[int, Field(ge=0)]] = {}
    """``one_rule_limit`` for one rule or evidence: witnesses differ in how often chance
    alone flags an honest clerk day after day (typo rates differ between clerks far more
    than the share of walk-ins does)."""
    name: Name = "escalation"


def _lock_duration(value: object, info: ValidationInfo) -> object:
    if value == "until-unlocked" or value is None:
        return None
    try:
        return _duration(value, info)
    except ValueError:
        raise ValueError("a duration such as '8h', or 'until-unlocked'") from None


class Lockout(_Section):
    duration: Annotated[Annotated[float, Field(gt=0)] | None, BeforeValidator(_lock_duration)] = (
        8 * 3600.0
    )
    contact: str = "your store manager or Security Operations"


class Audit(_Section):
    """The audit trail (lookup_proxy/audit/): where it lives, who can read it, how it is sealed."""

    archive: str = "audit"
    """Directory of the long-term archive (JSON-lines files and their search index), relative
    to the policy file. With the memory store the proxy writes it directly; with Redis the
    exporter (``lookup-proxy audit export``) moves the stream into it."""
    pseudonym_keys_env: HeaderName = "LOOKUP_PROXY_PSEUDONYM_KEYS"
    """Environment variable holding ``id:secret[,id:secret...]``: HMAC-SHA256 keys that turn a
    customer number into its pseudonym. The first signs new records; the others (older keys)
    are only used to search records made before a rotation."""
    signing_key_env: HeaderName = "LOOKUP_PROXY_AUDIT_SIGNING_KEY"
    """Environment variable holding the Ed25519 private key (PEM) that signs checkpoints."""
    verify_key: str | None = None
    """Ed25519 public key (PEM file, relative to the policy file) ``audit verify`` checks
    checkpoint signatures with; unset: derived from the signing key in the environment."""
    checkpoint_every: int = Field(1000, ge=1, le=1_000_000)
    """Records of one chain between two signed checkpoints (at most)."""
    checkpoint_interval: Duration = 60.0
    """Longest time between two signed checkpoints of a chain that wrote anything."""
    stream_retention: Duration = 7 * 86_400.0
    """With Redis: records older than this are trimmed from the stream (exported or not)."""
    fsync_interval: Duration = 1.0
    """With the memory store: the archive file is flushed on every record and fsynced at
    least this often."""


class Transparency(_Section):
    """``GET /transparency/{number}`` for the carrier's customer app backend (README:
    "Customer access transparency"). Off unless configured: it answers with its own service
    credential only, never a terminal's token."""

    enabled: bool = False
    credential_env: HeaderName = "LOOKUP_PROXY_TRANSPARENCY_TOKEN"
    """Environment variable holding the service credential (a bearer secret, >= 32 bytes)."""
    limit: int = Field(120, ge=1, le=1_000_000)
    """Queries allowed per ``window`` across every instance (shared store)."""
    window: Duration = 60.0
    period: Duration = 365 * 86_400.0
    """The longest period one query may cover (and the default: the last ``period``)."""
    max_lookups: int = Field(500, ge=1, le=10_000)
    """Lookups listed at most per answer (newest first)."""


class Policy(_Section):
    server: Server = Server()
    upstream: Upstream
    routes: tuple[Route, ...] = Field(min_length=1)
    numbers: Numbers = Numbers()
    auth: Auth
    reasons: dict[ReasonCode, Reason] = Field(min_length=1)
    accounts: Accounts | None = None
    store: Store = Store()
    rules: tuple[Rule, ...] = ()
    lockout: Lockout = Lockout()
    hours: Hours = Hours()
    escalation: Escalation = Escalation()
    transparency: Transparency = Transparency()
    audit: Audit = Audit()

    def account_checks(self) -> dict[str, AccountCheck]:
        """Reason code → the check of its found records, for every reason that does not see
        any account's lines (``none`` unless the reason says; nothing without ``[accounts]``):
        the live proxy's (``reload``) and replay's, from one place."""
        if self.accounts is None:
            return {}
        access = {code: r.accounts or "none" for code, r in self.reasons.items()}
        return account_checks(self.accounts.field, access)

    def witnesses(self) -> dict[str, str]:
        """Each rule's witness for escalation: its ``evidence``, or its own name."""
        return {rule.name: rule.evidence or rule.name for rule in self.rules}


_EXPECTATIONS = {
    "missing": "this key to be present",
    "extra_forbidden": "no such key here (check the spelling against the README)",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "tuple_type": "a list",
    "list_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "too_short": "at least one entry",
}


def _key(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1] = f"{parts[-1]}[{item}]" if parts else f"[{item}]"
        elif (
            item in {"rate", "distinct", "sequential", "block", "misses", "hours", "peer"}
            and parts
            and parts[-1].startswith("rules[")
        ):
            continue  # the union tag pydantic inserts; security staff never wrote it
        else:
            parts.append(str(item))
    return ".".join(parts) or "(top level)"


def _found(value: object) -> str:
    if isinstance(value, dict):
        return "a table"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _problems_from_validation(file: str, error: ValidationError) -> Iterator[ConfigProblem]:
    for item in error.errors(include_url=False):
        kind = item["type"]
        if kind in _EXPECTATIONS:
            expected = _EXPECTATIONS[kind]
        else:
            expected = (
                str(item["msg"]).removeprefix("Value error, ").removeprefix("Input should be ")
            )
        found = "nothing" if kind == "missing" else _found(item.get("input"))
        yield ConfigProblem(file, _key(tuple(item["loc"])), expected, found)


GUARD_KEY_NAMES = ("lock", "peer-flags", "known-numbers")
"""Names of an employee's keys the guard keeps besides the rules' (the lockout, the peer
marks, the numbers the employee has met): a rule of one of these names would share a key with
them (a distinct rule named ``lock`` would count in the lockout's key). The escalation's name is
checked on its own (``escalation.name``)."""


def _cross_checks(file: str, policy: Policy) -> Iterator[ConfigProblem]:
    """Consistency between sections, which a per-field schema cannot see."""
    codes = set(policy.reasons)
    if policy.accounts is None:
        for code, reason in policy.reasons.items():
            if reason.accounts is not None:
                yield ConfigProblem(
                    file,
                    f"reasons.{code}.accounts",
                    "an [accounts] section naming where records name their account (field)",
                    repr(reason.accounts),
                )
    for index, route in enumerate(policy.routes):
        placeholder = "{" + route.number_param + "}"
        if route.number_from == "path" and placeholder not in route.path:
            yield ConfigProblem(
                file,
                f"routes[{index}].path",
                f"a path containing {placeholder} (number_from = 'path')",
                repr(route.path),
            )
        # The backend's URL is rebuilt from the validated number alone, so a route may not
        # take anything else from the path.
        others = route.path.replace(placeholder, "", 1 if route.number_from == "path" else 0)
        if "{" in others or "}" in others:
            yield ConfigProblem(
                file,
                f"routes[{index}].path",
                "no placeholder but the number's own (the proxy forwards only what it checked)",
                repr(route.path),
            )
    seen: set[str] = set()
    for index, rule in enumerate(policy.rules):
        if rule.name in seen:
            yield ConfigProblem(
                file, f"rules[{index}].name", "a name no other rule has", repr(rule.name)
            )
        if rule.name in GUARD_KEY_NAMES:
            yield ConfigProblem(
                file,
                f"rules[{index}].name",
                f"a name the guard does not keep state under ({', '.join(GUARD_KEY_NAMES)})",
                repr(rule.name),
            )
        seen.add(rule.name)
        for field_name in ("reasons", "exempt_reasons", "walk_in_reasons"):
            for code in getattr(rule, field_name, None) or ():
                if code not in codes:
                    yield ConfigProblem(
                        file,
                        f"rules[{index}].{field_name}",
                        "reason codes defined under [reasons]",
                        repr(code),
                    )
        if rule.kind == "peer" and rule.scope != "employee":
            yield ConfigProblem(
                file,
                f"rules[{index}].scope",
                "'employee' (a peer rule judges one employee; `peers` names the group)",
                repr(rule.scope),
            )
        resolution = getattr(rule, "resolution", None)
        if resolution is not None and not rule.window / 1000 <= resolution <= rule.window / 2:
            yield ConfigProblem(
                file,
                f"rules[{index}].resolution",
                f"between a thousandth and half of the window ({rule.window:g}s): at least two "
                f"buckets, at most a thousand",
                f"{resolution:g}s",
            )
        for code in getattr(rule, "walk_in_reasons", ()):
            if code in rule.exempt_reasons or (
                rule.reasons is not None and code not in rule.reasons
            ):
                yield ConfigProblem(
                    file,
                    f"rules[{index}].walk_in_reasons",
                    "reasons the rule counts (not in exempt_reasons, and in reasons if set): a "
                    "walk-in reason is counted but for its uncorrected misses",
                    repr(code),
                )
        if rule.kind == "peer" and rule.test == "cusum":
            for floor in ("min_count", "min_share"):
                if getattr(rule, floor):
                    yield ConfigProblem(
                        file,
                        f"rules[{index}].{floor}",
                        "0 with test = 'cusum' (the floors bound the window's counts)",
                        repr(getattr(rule, floor)),
                    )
        if rule.kind == "peer" and rule.metric == "lookups":
            for key, unwanted, expectation in (
                (
                    "window",
                    rule.window != 2 * rule.bucket,
                    f"two buckets ({2 * rule.bucket:g}s) with metric = 'lookups': the last "
                    "closed bucket is judged, while the open one goes on",
                ),
                ("test", rule.test == "cusum", "'window' with metric = 'lookups'"),
                ("min_share", rule.min_share > 0, "0 with metric = 'lookups' (a count)"),
            ):
                if unwanted:
                    yield ConfigProblem(
                        file, f"rules[{index}].{key}", expectation, repr(getattr(rule, key))
                    )
        elif rule.kind == "peer" and rule.min_ratio != 1.0:
            yield ConfigProblem(
                file,
                f"rules[{index}].min_ratio",
                "1 (unset) but with metric = 'lookups' (a ratio of counts)",
                repr(rule.min_ratio),
            )
        if rule.kind == "peer" and rule.fallback is not None:
            why = ""
            if rule.peers == "chain":
                why = "the chain is every peer there is"
            elif rule.test == "cusum":
                why = "a day without enough peers is no evidence"
            if why:
                yield ConfigProblem(
                    file,
                    f"rules[{index}].fallback",
                    f"unset with peers = {rule.peers!r} and test = {rule.test!r} ({why})",
                    repr(rule.fallback),
                )
        if rule.kind == "misses" and rule.limit < 1 and rule.ratio == 0:
            yield ConfigProblem(
                file, f"rules[{index}].limit", "at least 1 or a ratio above 0", repr(rule.limit)
            )
    evidence_of = policy.witnesses()
    for index, rule in enumerate(policy.rules):
        named = rule.evidence
        if named is not None and named in evidence_of and evidence_of[named] != named:
            yield ConfigProblem(
                file,
                f"rules[{index}].evidence",
                f"an evidence name of its own, or a rule whose evidence is its own name "
                f"(rule {named!r} counts as evidence {evidence_of[named]!r})",
                repr(named),
            )
    evidences = set(evidence_of.values())
    for name in policy.escalation.one_rule_limits:
        if name not in evidences:
            yield ConfigProblem(
                file,
                f"escalation.one_rule_limits.{name}",
                "a witness escalation counts: an `evidence` rules name, or the name of a rule "
                "that names no other evidence",
                repr(name),
            )
    if policy.escalation.name in seen:
        yield ConfigProblem(
            file, "escalation.name", "a name no rule has", repr(policy.escalation.name)
        )
    if policy.server.keepalive_timeout > policy.server.header_timeout:
        yield ConfigProblem(
            file,
            "server.keepalive_timeout",
            "at most server.header_timeout (an idle connection is one whose next request has "
            "not begun, so the header deadline closes it anyway)",
            f"{policy.server.keepalive_timeout:g}s",
        )
    opening = [("hours", policy.hours.open, policy.hours.close)]
    opening += [(f"hours.stores.{k}", v.open, v.close) for k, v in policy.hours.stores.items()]
    for key, opens, closes in opening:
        if opens >= closes:
            yield ConfigProblem(
                file, f"{key}.close", "a closing time after the opening time", repr(closes)
            )
    families = {alg[:2] for alg in policy.auth.algorithms}
    if families - {"HS"} and not (policy.auth.public_key_file or policy.auth.jwks_file):
        yield ConfigProblem(
            file,
            "auth.public_key_file",
            "a PEM public key file or auth.jwks_file for public-key algorithms",
            "neither",
        )
    base = Path(file).parent
    for key in ("public_key_file", "jwks_file"):
        value = getattr(policy.auth, key)
        if value and not (base / value).is_file():
            yield ConfigProblem(file, f"auth.{key}", "a readable file", repr(value))


def parse_policy(text: str, file: str = "<policy>") -> Policy:
    """A validated policy from TOML text; raises ConfigError listing every problem."""
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            [ConfigProblem(file, "(syntax)", "valid TOML without duplicate keys", str(exc))]
        ) from None
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(list(_problems_from_validation(file, exc))) from None
    problems = list(_cross_checks(file, policy))
    if problems:
        raise ConfigError(problems)
    return policy


def policy_hash(policy: Policy) -> str:
    """A short fingerprint of the effective policy (every key, defaults included): what the
    audit records, the metrics and the admin API name the policy by."""
    canonical = orjson.dumps(policy.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:16]


def load_policy(path: str | Path) -> Policy:
    """A validated policy from a file; relative key files resolve next to it."""
    location = Path(path)
    try:
        text = location.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [
                ConfigProblem(
                    str(location), "(file)", "a readable policy file", exc.strerror or str(exc)
                )
            ]
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(
            [ConfigProblem(str(location), "(file)", "UTF-8 text", "undecodable bytes")]
        ) from None
    return parse_policy(text, str(location))
