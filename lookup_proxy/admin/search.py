"""The admin API's view of the audit archive: evidence for cases, activity and search.

One place where admin routes reach the archive (``lookup_proxy.audit.archive``): each search
opens the archive's index in a worker thread and closes it there (an SQLite connection belongs
to the thread that made it), so a slow search never holds up the event loop. Numbers are
searched for by their pseudonyms under every configured key (the trail's), never in clear.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from lookup_proxy.audit.archive import AuditArchive

if TYPE_CHECKING:
    from lookup_proxy.app import Proxy
    from lookup_proxy.cases import Case

EVIDENCE_BEFORE: Final = timedelta(days=1)
"""How far before a case opened its evidence reaches (the lookups that led to the flag)."""

EVIDENCE_AFTER: Final = timedelta(hours=1)
EVIDENCE_LIMIT: Final = 200


def _search(directory: Any, criteria: dict[str, Any]) -> list[dict[str, Any]]:
    with AuditArchive(directory) as archive:
        return archive.search(**criteria)


async def search_lookups(proxy: Proxy, **criteria: Any) -> list[dict[str, Any]]:
    """``AuditArchive.search(**criteria)`` over the policy's archive, off the event loop."""
    directory = proxy.base_dir / proxy.policy.audit.archive
    return await asyncio.to_thread(_search, directory, criteria)


async def case_evidence(proxy: Proxy, case: Case) -> list[dict[str, Any]]:
    """The employee's audit lookups around the case, newest first."""
    since = datetime.fromtimestamp(case.opened_at, UTC) - EVIDENCE_BEFORE
    until = datetime.fromtimestamp(case.updated_at, UTC) + EVIDENCE_AFTER
    if case.status != "resolved":
        until = max(until, datetime.fromtimestamp(proxy.clock.now(), UTC) + EVIDENCE_AFTER)
    return await search_lookups(
        proxy, employee=case.employee, since=since, until=until, limit=EVIDENCE_LIMIT
    )


def subjects(proxy: Proxy, number: str) -> list[str]:
    """The canonical number's pseudonyms under every configured key (search after rotation)."""
    return [subject for subject, _ in proxy.audit.pseudonyms.subjects(number)]
