"""Hot reload: a new policy in force without a restart, or the old one kept whole.

Everything a lookup needs from the policy is built into one immutable :class:`Generation`
(token verifier, reason catalogue, guard, upstream client, trusted proxies, field sets). A
lookup reads the proxy's generation once, at its start, and finishes under it; a reload builds
the next generation completely and then swaps the one reference, so no lookup ever sees half of
each. ``SIGHUP`` (``lookup-proxy serve``) and ``POST /admin/policy/reload`` re-read the file the
proxy was started with (with the same command-line overrides).

What a reload keeps: the store (a rule's counters live under its *name*, so an unchanged rule
keeps counting, and a rule whose limit or window changed keeps its counts under the new
numbers; a renamed rule starts from zero), the store failover, the lock journal, the metrics,
the upstream connection pool and the audit trail.

What only a restart can change (a reload that changes one of them is refused, naming each key,
and nothing is applied): ``[server]`` but ``trusted_proxies`` and ``admin_role`` (the listening
socket and the HTTP edge are set up once), ``[[routes]]`` (aiohttp's router is frozen once the
app runs), ``[store]`` (the store, its circuit breaker and the lock journal are kept),
``[audit]`` (the trail's chain and archive), ``[transparency]`` (its service and route are
built once), ``upstream.pool_size`` (the pool is sized once), and a rule's ``kind`` under the
same name (its counters would be misread: rename it).

Auth key files (``auth.public_key_file``, ``auth.jwks_file``) are read again at every reload:
a policy whose text is unchanged but whose key files changed is reloaded, not "unchanged".
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import orjson

from lookup_proxy.accounts import AccountCheck
from lookup_proxy.clock import Clock
from lookup_proxy.errors import ConfigError, ConfigProblem
from lookup_proxy.forward import TrustedProxies, UpstreamClient
from lookup_proxy.guard import Guard, GuardStore
from lookup_proxy.identify import TokenVerifier
from lookup_proxy.justify import ReasonCatalogue
from lookup_proxy.metrics import ProxyMetrics
from lookup_proxy.minimise import FieldSet, field_sets
from lookup_proxy.policy import (
    Audit,
    Policy,
    Server,
    Store,
    Transparency,
    load_policy,
    policy_hash,
)
from lookup_proxy.resilience.journal import LockJournal

if TYPE_CHECKING:
    from lookup_proxy.app import Proxy

log = logging.getLogger("lookup_proxy.reload")

RELOADABLE_SERVER_KEYS = frozenset({"trusted_proxies", "admin_role"})
"""The ``[server]`` keys a reload may change; every other one needs a restart."""

Result = Literal["reloaded", "unchanged", "error"]


@dataclass(frozen=True, slots=True, eq=False)
class Generation:
    """Everything built from one policy; never changed once built (a reload makes a new one)."""

    number: int
    policy: Policy
    hash: str
    keys: str
    """Digest of the auth key files as they were read (a changed key file is a change)."""
    verifier: TokenVerifier
    catalogue: ReasonCatalogue
    guard: Guard
    upstream: UpstreamClient
    trusted: TrustedProxies
    not_found: frozenset[int]
    fields: Mapping[str, FieldSet]
    """Reason code → its field allow-list, for the reasons that have one."""
    accounts: Mapping[str, AccountCheck]
    """Reason code → the check of its found records' business account ([accounts])."""


@dataclass(frozen=True, slots=True)
class Reloaded:
    """What a reload did: ``reloaded``, ``unchanged`` or ``error`` (the old policy kept)."""

    result: Result
    hash: str
    """The hash of the policy in force afterwards."""
    previous: str
    problems: tuple[ConfigProblem, ...] = ()
    changed: tuple[str, ...] = field(default=())
    """Top-level sections whose values changed."""


def key_digest(policy: Policy, base_dir: Path) -> str:
    """SHA-256 over the auth key files the policy names (missing files count as absent)."""
    digest = hashlib.sha256()
    for name in (policy.auth.public_key_file, policy.auth.jwks_file):
        digest.update(b"\x00")
        if name is not None:
            try:
                digest.update((base_dir / name).read_bytes())
            except OSError:
                digest.update(b"\x01missing")
    return digest.hexdigest()


def build_generation(
    policy: Policy,
    *,
    number: int,
    base_dir: Path,
    environ: Mapping[str, str],
    clock: Clock,
    store: GuardStore,
    metrics: ProxyMetrics,
    journal: LockJournal | None,
    previous: Generation | None,
) -> Generation:
    """Every policy-derived part, built from scratch on the shared store, metrics and pool;
    raises ConfigError (a missing secret or key) before anything is in force."""
    credential = None
    if policy.upstream.credential_env is not None:
        credential = environ.get(policy.upstream.credential_env)
        if not credential:
            raise ConfigError(
                [
                    ConfigProblem(
                        "<environment>",
                        policy.upstream.credential_env,
                        "the upstream credential (upstream.credential_env names it)",
                        "unset",
                    )
                ]
            )
    verifier = TokenVerifier(policy.auth, base_dir=base_dir, environ=environ, clock=clock)
    guard = Guard(policy, store, clock, metrics.guard)
    guard.lockouts.recorder = journal
    metrics.guard.prime(
        [check.rule.name for check in guard.checks]
        + [peer.rule.name for peer in guard.peer_checks]
        + [guard.escalation.name, "manual"]  # Guard.lock's rule for a lock by hand
    )
    upstream = UpstreamClient(
        policy.upstream,
        credential,
        sharing=None if previous is None else previous.upstream,
        body_timeout=policy.server.header_timeout,
    )
    return Generation(
        number=number,
        policy=policy,
        hash=policy_hash(policy),
        keys=key_digest(policy, base_dir),
        verifier=verifier,
        catalogue=ReasonCatalogue(policy.reasons, policy.auth.claims.accounts is not None),
        guard=guard,
        upstream=upstream,
        trusted=TrustedProxies(policy.server.trusted_proxies),
        not_found=frozenset(policy.upstream.not_found_statuses),
        fields=field_sets({code: r.fields for code, r in policy.reasons.items()}),
        accounts=policy.account_checks(),
    )


def _shown(value: object) -> str:
    text = orjson.dumps(value, default=str).decode()
    return text if len(text) <= 120 else text[:117] + "..."


def restart_only_changes(file: str, running: Policy, new: Policy) -> list[ConfigProblem]:
    """Each key ``new`` changes that cannot take effect without a restart (see the module
    docstring), as a problem naming the running value."""
    problems: list[ConfigProblem] = []

    def differs(key: str, old: object, now: object) -> None:
        if old != now:
            problems.append(
                ConfigProblem(
                    file,
                    key,
                    f"the running value {_shown(old)} (this key takes effect only when the "
                    "proxy restarts)",
                    _shown(now),
                )
            )

    for name in Server.model_fields:
        if name not in RELOADABLE_SERVER_KEYS:
            differs(f"server.{name}", getattr(running.server, name), getattr(new.server, name))
    if running.routes != new.routes:
        differs(
            "routes",
            [r.model_dump(mode="json") for r in running.routes],
            [r.model_dump(mode="json") for r in new.routes],
        )
    for section, model in (("store", Store), ("audit", Audit), ("transparency", Transparency)):
        for name in model.model_fields:
            differs(
                f"{section}.{name}",
                getattr(getattr(running, section), name),
                getattr(getattr(new, section), name),
            )
    differs("upstream.pool_size", running.upstream.pool_size, new.upstream.pool_size)
    kinds = {rule.name: rule.kind for rule in running.rules}
    for index, rule in enumerate(new.rules):
        old_kind = kinds.get(rule.name)
        if old_kind is not None and old_kind != rule.kind:
            problems.append(
                ConfigProblem(
                    file,
                    f"rules[{index}].kind",
                    f"{old_kind!r} as running for the rule named {rule.name!r} (its counters "
                    "would be read as another kind: give the rule a new name)",
                    repr(rule.kind),
                )
            )
    return problems


def changed_sections(running: Policy, new: Policy) -> tuple[str, ...]:
    return tuple(
        name for name in Policy.model_fields if getattr(running, name) != getattr(new, name)
    )


class Reloader:
    """Re-reads the proxy's policy file and swaps in a new generation, or keeps the old one."""

    def __init__(
        self,
        proxy: Proxy,
        *,
        base_dir: Path,
        environ: Mapping[str, str],
        clock: Clock,
        policy_file: Path | None,
        prepare: Callable[[Policy], Policy] | None,
    ) -> None:
        self._proxy = proxy
        self._base_dir = base_dir
        self._environ = environ
        self._clock = clock
        self.policy_file = policy_file
        self._prepare = prepare

    def _build(self, policy: Policy, previous: Generation | None) -> Generation:
        proxy = self._proxy
        generation = build_generation(
            policy,
            number=1 if previous is None else previous.number + 1,
            base_dir=self._base_dir,
            environ=self._environ,
            clock=self._clock,
            store=proxy.store,
            metrics=proxy.metrics,
            journal=proxy.journal,
            previous=previous,
        )
        if previous is not None:
            # Lookup records ride the decision's batch on the same stream ([audit] and [store]
            # only change with a restart).
            generation.guard.audit_log = previous.guard.audit_log
            generation.guard.audit_keep = previous.guard.audit_keep
        return generation

    def first(self, policy: Policy) -> Generation:
        """The generation the proxy starts with (its hash shown by the info gauge)."""
        generation = self._build(policy, None)
        self._proxy.metrics.reloads.active(generation.hash, None)
        return generation

    def reload(self, trigger: str) -> Reloaded:
        """Load, check and swap in the policy file; never raises for a bad file. ``trigger``
        (``sighup``, ``admin:<employee>``) is logged."""
        proxy = self._proxy
        running = proxy.generation
        try:
            if self.policy_file is None:
                raise ConfigError(
                    [
                        ConfigProblem(
                            "(none)",
                            "(file)",
                            "a proxy started from a policy file (lookup-proxy serve --config)",
                            "a proxy built from a policy in memory",
                        )
                    ]
                )
            file = str(self.policy_file)
            policy = load_policy(self.policy_file)
            if self._prepare is not None:
                try:
                    policy = self._prepare(policy)
                except ValueError as exc:  # an override that no longer fits the file
                    raise ConfigError(
                        [
                            ConfigProblem(
                                file,
                                "(command-line overrides)",
                                "a file the serve command's overrides apply to",
                                str(exc).splitlines()[0],
                            )
                        ]
                    ) from None
            problems = restart_only_changes(file, running.policy, policy)
            if problems:
                raise ConfigError(problems)
            new_hash = policy_hash(policy)
            if new_hash == running.hash and key_digest(policy, self._base_dir) == running.keys:
                proxy.metrics.reloads.count("unchanged")
                log.info(
                    "policy reload: unchanged",
                    extra={"trigger": trigger, "hash": running.hash, "file": file},
                )
                return Reloaded("unchanged", running.hash, running.hash)
            generation = self._build(policy, running)
        except ConfigError as exc:
            proxy.metrics.reloads.count("error")
            for problem in exc.problems:
                log.error(
                    "policy reload refused: the running policy stays in force",
                    extra={
                        "trigger": trigger,
                        "hash": running.hash,
                        "file": problem.file,
                        "key": problem.key,
                        "expected": problem.expected,
                        "found": problem.found,
                    },
                )
            return Reloaded("error", running.hash, running.hash, tuple(exc.problems))
        # The swap: lookups from now on read this generation. A lookup reads it and makes its
        # audit record without yielding to the loop, so the record names the policy it ran under.
        proxy.generation = generation
        proxy.audit.policy_hash = generation.hash
        proxy.failover.adopt(generation.policy, generation.guard)
        # The policy shown first, then the count: a scrape (another worker's, in multiprocess
        # mode, reads these files at any moment) that sees the reload counted sees its policy.
        proxy.metrics.reloads.active(generation.hash, running.hash)
        proxy.metrics.reloads.count("ok")
        changed = changed_sections(running.policy, generation.policy)
        log.warning(
            "policy reloaded",
            extra={
                "trigger": trigger,
                "hash": generation.hash,
                "previous": running.hash,
                "generation": generation.number,
                "changed": list(changed),
                "file": file,
            },
        )
        return Reloaded("reloaded", generation.hash, running.hash, changed=changed)

    def on_signal(self) -> None:
        """SIGHUP: reload, log (done by :meth:`reload`) and audit with no actor."""
        done = self.reload("sighup")
        self._proxy.audit.write(
            "admin",
            {
                "request_id": None,
                "employee": None,
                "client": None,
                "action": "policy.reload",
                "target": None,
                "note": f"SIGHUP {done.result}: {done.previous} -> {done.hash}",
                "status": 2 if done.result == "error" else 0,
                "query": None,
            },
        )
