"""The admin API's view of the audit archive: evidence for cases, activity and search.

The archive's search (``lookup_proxy.audit.archive.AuditArchive``) and the pseudonymiser
(``lookup_proxy.audit.pseudonym.Pseudonymiser``) are separate pieces of issue 11; this module is
the one place the admin API reaches them, imported when first used. Until the archive exists in
this build, searches find nothing (an empty list, logged once) rather than failing the case
pages; a number search without pseudonym keys is refused, because the clear number must never be
what is searched for.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from lookup_proxy.errors import Refusal

if TYPE_CHECKING:
    from lookup_proxy.app import Proxy
    from lookup_proxy.cases import Case

log = logging.getLogger("lookup_proxy.admin")

EVIDENCE_BEFORE: Final = timedelta(days=1)
"""How far before a case opened its evidence reaches (the lookups that led to the flag)."""

EVIDENCE_AFTER: Final = timedelta(hours=1)
EVIDENCE_LIMIT: Final = 200

_missing_said: set[str] = set()


def _module(name: str) -> Any | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        if name not in _missing_said:
            _missing_said.add(name)
            log.warning("audit module not in this build", extra={"audit_module": name})
        return None


def _archive(proxy: Proxy) -> Any | None:
    module = _module("lookup_proxy.audit.archive")
    if module is None:
        return None
    return module.AuditArchive(proxy.base_dir / proxy.policy.audit.archive)


async def search_lookups(proxy: Proxy, **criteria: Any) -> list[dict[str, Any]]:
    """``AuditArchive.search(**criteria)`` off the event loop; ``[]`` without an archive."""
    archive = _archive(proxy)
    if archive is None:
        return []
    found: list[dict[str, Any]] = await asyncio.to_thread(archive.search, **criteria)
    return found


async def case_evidence(proxy: Proxy, case: Case) -> list[dict[str, Any]]:
    """The employee's audit lookups around the case, newest first."""
    since = datetime.fromtimestamp(case.opened_at, UTC) - EVIDENCE_BEFORE
    until = datetime.fromtimestamp(case.updated_at, UTC) + EVIDENCE_AFTER
    if case.status != "resolved":
        until = max(until, datetime.fromtimestamp(proxy.clock.now(), UTC))
    return await search_lookups(
        proxy, employee=case.employee, since=since, until=until, limit=EVIDENCE_LIMIT
    )


def subjects(proxy: Proxy, number: str) -> list[tuple[str, str]]:
    """The number's pseudonyms under every configured key (search after a key rotation)."""
    module = _module("lookup_proxy.audit.pseudonym")
    variable = proxy.policy.audit.pseudonym_keys_env
    if module is None or not proxy.environ.get(variable):
        raise Refusal(
            "Searching by customer number needs the pseudonym keys "
            f"(environment variable {variable}); ask the operators to configure them.",
            status=503,
            cause="number-search-unavailable",
            title="Number search unavailable",
        )
    pseudonymiser = module.Pseudonymiser.from_environ(proxy.environ, variable)
    found: list[tuple[str, str]] = pseudonymiser.subjects(number)
    return found
