"""Running real proxies and backends on real sockets for end-to-end tests.

Not a conftest: tests import what they use, so it is obvious where a server comes from.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from lookup_proxy.app import Proxy, build_app
from lookup_proxy.audit.chain import Signer
from lookup_proxy.clock import Clock, SystemClock
from lookup_proxy.guard.primitives import GuardStore
from lookup_proxy.http_edge import listening
from lookup_proxy.middleware import PROXY
from lookup_proxy.policy import Policy, parse_policy
from lookup_proxy.tokens import mint_token

SECRET = "test-secret-for-hs256-tokens-0123456789"
PSEUDONYM_KEYS = "t1:test-pseudonym-key-0123456789-0123456789"
SIGNER = Signer.generate()
"""The checkpoint signing key of every test proxy (generated per test run)."""
AUDIT_ENV = {
    "LOOKUP_PROXY_PSEUDONYM_KEYS": PSEUDONYM_KEYS,
    "LOOKUP_PROXY_AUDIT_SIGNING_KEY": SIGNER.private_pem().decode("ascii"),
}
"""The audit keys a proxy needs to start (the shipped policy's variable names)."""
KNOWN_NUMBERS_KEY = "test-known-numbers-key-0123456789-0123456789"
ENV = {
    "LOOKUP_PROXY_JWT_SECRET": SECRET,
    "LOOKUP_PROXY_KNOWN_NUMBERS_KEY": KNOWN_NUMBERS_KEY,
    **AUDIT_ENV,
}

GUARD_HEAD = """
[upstream]
url = "http://127.0.0.1:9"

[[routes]]
path = "/customers/{number}"

[auth]
"""
"""The least policy around guard rules, for tests that decide without serving (no upstream)."""

GUARD_REASONS = """
[reasons.BILLING_INQUIRY]
description = "Billing question"

[reasons.NEW_SUBSCRIPTION]
description = "New subscription"

[reasons.CORPORATE_ACCOUNT]
description = "Corporate account lines"
reference_pattern = "CORP-[0-9]{6}"
"""

REASONS = """
[reasons.PLAN_CHANGE]
description = "Changing the customer's plan"

[reasons.BILLING_INQUIRY]
description = "Answering a question about a bill"

[reasons.CORPORATE_ACCOUNT]
description = "Business lines"
reference_pattern = "CORP-[0-9]{6}"
reference_hint = "CORP- followed by 6 digits"

[reasons.FRAUD_REVIEW]
description = "Fraud team review"
roles = ["fraud-analyst"]
"""


def policy_text(
    upstream: str,
    *,
    rules: str = "",
    extra: str = "",
    server: str = "",
    upstream_extra: str = "",
    routes: str = '[[routes]]\npath = "/customers/{number}"\n',
) -> str:
    """A complete policy for tests: HS256 auth, a small reason catalogue, the given rules."""
    return f"""
[server]
admin_role = "security-admin"
{server}

[upstream]
url = "{upstream}"
connect_timeout = "500ms"
read_timeout = "500ms"
total_timeout = "1s"
{upstream_extra}

{routes}

[auth]
algorithms = ["HS256"]
issuer = "store-idp"
audience = "lookup-proxy"

{REASONS}
{extra}
{rules}
"""


def policy(upstream: str, **kwargs: Any) -> Policy:
    return parse_policy(policy_text(upstream, **kwargs), "test-policy.toml")


def token(
    p: Policy,
    employee: str = "E1",
    store: str = "S1",
    region: str | None = "R1",
    roles: Sequence[str] = (),
    ttl: float = 3600.0,
    clock: Clock | None = None,
    accounts: Sequence[str] = (),
) -> str:
    return mint_token(
        p.auth,
        ENV,
        employee=employee,
        store=store,
        region=region,
        roles=roles,
        ttl=ttl,
        clock=clock or SystemClock(),
        accounts=accounts,
    )


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """``app`` on a real socket at 127.0.0.1, behind the same HTTP edge as ``lookup-proxy
    serve`` (a proxy's limits from its policy's ``[server]``); yields its base URL."""
    async with listening(app, "127.0.0.1", 0, shutdown_timeout=1) as listener:
        yield listener.url


@asynccontextmanager
async def running_proxy(
    p: Policy,
    *,
    clock: Clock | None = None,
    store: GuardStore | None = None,
    environ: dict[str, str] | None = None,
    audit_dir: Path | None = None,
) -> AsyncIterator[tuple[str, Proxy]]:
    """A proxy for policy ``p`` on a real socket; yields (base URL, the wired Proxy).

    Its audit archive (``proxy.audit.file.directory``; see :func:`audit_records`) is
    ``audit_dir``, else a fresh directory removed afterwards, unless the policy names an
    absolute one."""
    with tempfile.TemporaryDirectory(prefix="lookup-proxy-audit-") as archive:
        if not Path(p.audit.archive).is_absolute():
            chosen = str(audit_dir) if audit_dir is not None else archive
            p = p.model_copy(update={"audit": p.audit.model_copy(update={"archive": chosen})})
        app = build_app(
            p,
            base_dir=Path("."),
            environ=environ if environ is not None else ENV,
            clock=clock,
            store=store,
        )
        async with serving(app) as url:
            yield url, app[PROXY]


def audit_records(directory: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Every record in an archive directory's files (in file order), or those of one kind."""
    records: list[dict[str, Any]] = []
    for path in sorted(directory.glob("audit-*.jsonl")):
        for line in path.read_bytes().splitlines():
            record = orjson.loads(line)
            if kind is None or record["kind"] == kind:
                records.append(record)
    return records


ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m lookup_proxy ARGS`` as a user runs it: no LOOKUP_PROXY_* leaking in."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LOOKUP_PROXY_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "lookup_proxy", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def simulate(directory: Path, seed: int, employees: int, days: int) -> Path:
    """EVENTS.csv of a simulated chain (bench/simulate.py, classic attackers included) in
    ``directory``; the informed family needs a policy and more staff than these small chains."""
    events = directory / "events.csv"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "simulate.py"),
            *("--seed", str(seed), "--employees", str(employees), "--days", str(days)),
            *("--out", str(events), "--truth", str(directory / "truth.csv")),
            *("--families", "classic"),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return events
