"""What ``serve`` was asked for, as one value a worker process can be handed.

A worker is a fresh interpreter (see :mod:`.master`), so it cannot be handed the parsed policy's
``prepare`` closure; it gets these options and loads the policy file the way the master did, and
every hot reload applies the same overrides again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lookup_proxy.overrides import with_overrides
from lookup_proxy.policy import Policy, load_policy

DRAIN_MARGIN = 1.0
"""Seconds past the upstream's total timeout: a lookup let through just before SIGTERM has its
whole upstream time, and its answer and audit record, before the drain gives up on it."""


@dataclass(frozen=True, slots=True)
class ServeOptions:
    config: str
    host: str | None = None
    port: int | None = None
    store_kind: str | None = None
    upstream_url: str | None = None
    lock_journal: str | None = None
    audit_archive: str | None = None
    trusted_proxies: str | None = None
    with_demo_backend: bool = False
    log_level: str = "INFO"
    workers: int = 1
    drain_timeout: float | None = None

    @property
    def policy_path(self) -> Path:
        return Path(self.config)

    def prepare(self, loaded: Policy) -> Policy:
        """The command line's overrides on a policy (at start and on every reload)."""
        return with_overrides(
            loaded,
            self.store_kind,
            self.upstream_url,
            self.lock_journal,
            self.audit_archive,
            self.trusted_proxies,
        )

    def load(self) -> Policy:
        return self.prepare(load_policy(self.config))

    def address(self, policy: Policy) -> tuple[str, int]:
        return (
            self.host or policy.server.host,
            policy.server.port if self.port is None else self.port,
        )

    def drain(self, policy: Policy) -> float:
        """Seconds in-flight requests get after SIGTERM: ``--drain-timeout``, else the longer of
        ``[server] shutdown_timeout`` and the upstream's total timeout plus a margin."""
        if self.drain_timeout is not None:
            return self.drain_timeout
        return max(policy.server.shutdown_timeout, policy.upstream.total_timeout + DRAIN_MARGIN)
