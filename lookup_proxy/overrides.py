"""Deployment overrides: one policy file serves a laptop, compose and production.

``lookup-proxy serve --store-kind/--upstream-url/--lock-journal/--audit-archive/
--trusted-proxies`` and ``audit export --store-kind`` change these keys of the file's policy,
validated as the file's own keys are; a hot reload applies them again to the new file.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from lookup_proxy.policy import SECONDS_ALLOWED, Policy, Server, Store, Upstream


def with_overrides(
    policy: Policy,
    store_kind: str | None,
    upstream_url: str | None,
    lock_journal: str | None = None,
    audit_archive: str | None = None,
    trusted_proxies: str | None = None,
) -> Policy:
    """Deployment overrides: one policy file serves laptop, compose and production."""
    context = {SECONDS_ALLOWED: True}

    if store_kind is not None or lock_journal is not None:
        data = policy.store.model_dump()
        if store_kind is not None:
            data["kind"] = store_kind
        if lock_journal is not None:
            data["lock_journal"] = str(Path(lock_journal).resolve())
        policy = policy.model_copy(update={"store": Store.model_validate(data, context=context)})
    if upstream_url is not None:
        data = policy.upstream.model_dump()
        data["url"] = upstream_url
        policy = policy.model_copy(
            update={"upstream": Upstream.model_validate(data, context=context)}
        )
    if trusted_proxies is not None:
        data = policy.server.model_dump()
        data["trusted_proxies"] = [n.strip() for n in trusted_proxies.split(",") if n.strip()]
        try:
            server = Server.model_validate(data, context=context)
        except ValidationError as exc:
            raise ValueError(f"--trusted-proxies: {exc.errors()[0]['msg']}") from None
        policy = policy.model_copy(update={"server": server})
    if audit_archive is not None:
        archive = str(Path(audit_archive).resolve())
        policy = policy.model_copy(
            update={"audit": policy.audit.model_copy(update={"archive": archive})}
        )
    return policy
