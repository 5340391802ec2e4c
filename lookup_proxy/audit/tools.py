"""Admin records from command-line tools: what security staff do at a shell is audited like
what they do through the admin API.

A tool run is a writer of its own: a short chain in its own archive file
(``audit-<day>.<chain>.jsonl``), sealed with a final signed checkpoint before the command
returns, so ``audit verify`` checks it like any proxy's.
"""

from __future__ import annotations

import asyncio
import getpass
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from lookup_proxy.audit.trail import AuditTrail
from lookup_proxy.clock import SystemClock
from lookup_proxy.metrics import AuditMetrics
from lookup_proxy.policy import Policy, policy_hash


def tool_client() -> str:
    """Where a tool ran: ``cli:<os user>@<host>`` (the audit's "from where")."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


def record_tool_action(
    policy: Policy, base_dir: Path, environ: Mapping[str, str], fields: Mapping[str, Any]
) -> None:
    """Write one ``admin`` record and seal it; raises ConfigError without the audit keys and
    OSError when the archive cannot be written (the tool then fails: no unaudited action)."""

    async def write() -> None:
        trail = AuditTrail.from_policy(
            policy.audit,
            base_dir=base_dir,
            environ=environ,
            clock=SystemClock(),
            policy_hash=policy_hash(policy),
            metrics=AuditMetrics(CollectorRegistry()),
            store=None,
            key_prefix=policy.store.key_prefix,
        )
        trail.write("admin", {"client": tool_client(), **fields})
        if await trail.close():
            raise OSError(f"the audit archive {trail.file.directory} cannot be written")

    asyncio.run(write())
