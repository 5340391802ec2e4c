"""Customer access transparency: ``GET /transparency/{number}`` tells a customer (through the
carrier's app backend) when, where and why their record was looked up.

In the 2021 incident the customers paid the same bill and never knew. A customer who sees
"viewed at store S012 for CONTRACT_RENEWAL" on a day they never visited is the whistle-blower
the incident lacked. So the answer names the store, region, time and reason of each lookup
of that number, and never an employee (the customer needs to know *that* it happened; naming the
clerk is security staff's job, not the app's).

Only the app backend may ask, with its own service credential (a secret from the environment,
compared in constant time); a terminal's token is no credential here. Every query is rate
limited across instances (the guard's store) and audited (``transparency`` records, with the
number as its pseudonym). The lookups come from the audit archive: with Redis, once the
exporter has moved them there.
"""

from __future__ import annotations

import asyncio
import hmac
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from lookup_proxy.audit.archive import AuditArchive
from lookup_proxy.audit.chain import iso_at
from lookup_proxy.audit.trail import AuditTrail
from lookup_proxy.clock import Clock
from lookup_proxy.errors import (
    ConfigError,
    ConfigProblem,
    Refusal,
    bad_request,
    guard_unavailable,
    rate_limited,
    unauthenticated,
)
from lookup_proxy.guard.primitives import ADD, GuardStore, StoreUnavailable
from lookup_proxy.numbers import normalise_number
from lookup_proxy.policy import Numbers, Reason, Transparency
from lookup_proxy.request_id import REQUEST_ID

MIN_CREDENTIAL = 32
QUERY_PARAMETERS = frozenset({"since", "until"})


class TransparencyService:
    """Answers transparency queries (see the module docstring)."""

    def __init__(
        self,
        config: Transparency,
        *,
        environ: Mapping[str, str],
        numbers: Numbers,
        reasons: Mapping[str, Reason],
        archive: Path,
        trail: AuditTrail,
        store: GuardStore,
        clock: Clock,
        key_prefix: str,
    ) -> None:
        credential = environ.get(config.credential_env, "")
        if len(credential.encode()) < MIN_CREDENTIAL:
            raise ConfigError(
                [
                    ConfigProblem(
                        "<environment>",
                        config.credential_env,
                        f"the transparency service credential (at least {MIN_CREDENTIAL} "
                        "bytes; transparency.credential_env names the variable)",
                        "unset" if not credential else "too short",
                    )
                ]
            )
        self.config = config
        self._credential = credential.encode()
        self.numbers = numbers
        self.reasons = reasons
        self.archive = archive
        self.trail = trail
        self.store = store
        self.clock = clock
        self._rate_key = f"{key_prefix}:{{transparency}}:queries"

    async def handle(self, request: web.Request) -> web.Response:
        record: dict[str, Any] = {
            "request_id": request[REQUEST_ID],
            "client": request.remote,
            "subject": None,
            "key_id": None,
            "since": None,
            "until": None,
            "count": None,
            "status": 500,
        }
        try:
            self._authenticate(request.headers.get("Authorization"))
            await self._within_rate(request[REQUEST_ID])
            number = normalise_number(request.match_info["number"], self.numbers)
            record.update({k: v for k, v in self.trail.subject(number).items() if k != "last4"})
            since, until = self._period(request.query)
            record["since"], record["until"] = iso_at(since), iso_at(until)
            found = await asyncio.to_thread(
                _search,
                self.archive,
                [subject for subject, _ in self.trail.pseudonyms.subjects(number)],
                datetime.fromtimestamp(since, UTC),
                datetime.fromtimestamp(until, UTC),
                self.config.max_lookups,
            )
            lookups = [self._shown(r) for r in found]
            record["count"], record["status"] = len(lookups), 200
            body = {
                "last4": number[-4:],
                "since": record["since"],
                "until": record["until"],
                "lookups": lookups,
                "complete": len(lookups) < self.config.max_lookups,
            }
            return web.Response(
                body=orjson.dumps(body),
                content_type="application/json",
                headers={"Cache-Control": "no-store"},
            )
        except Refusal as refusal:
            record["status"] = refusal.status
            raise
        finally:
            self.trail.write("transparency", record)

    def _authenticate(self, header: str | None) -> None:
        scheme, _, presented = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), self._credential
        ):
            raise unauthenticated(
                "This service answers the customer app's backend only, with its own credential.",
                "transparency-credential",
            )

    async def _within_rate(self, request_id: str) -> None:
        config = self.config
        now = self.clock.now()
        op = (ADD, self._rate_key, now, request_id, config.window, config.limit + 1, config.limit)
        try:
            [(count, nth, _)] = await self.store.execute([op])
        except StoreUnavailable:
            raise guard_unavailable(
                "Transparency queries are paused: the rate limit cannot be checked."
            ) from None
        if count > config.limit:
            retry = max(1, int((nth or now) + config.window - now) + 1)
            raise rate_limited(
                f"At most {config.limit} transparency queries per "
                f"{int(config.window)} seconds. Try again later.",
                {"Retry-After": str(retry)},
                "transparency",
            )

    def _period(self, query: Mapping[str, str]) -> tuple[float, float]:
        unknown = sorted(set(query) - QUERY_PARAMETERS)
        if unknown:
            raise bad_request(
                f"Unknown query parameter {unknown[0]!r}: only since and until (ISO-8601).",
                "unexpected-query",
            )
        # Records carry milliseconds and ``until`` is exclusive: the default reaches past the
        # current millisecond, so a lookup made in it is listed.
        now = (math.floor(self.clock.now() * 1000) + 1) / 1000
        until = _when(query.get("until"), "until") if "until" in query else now
        since = (
            _when(query.get("since"), "since") if "since" in query else until - self.config.period
        )
        if since >= until:
            raise bad_request("since must be before until.", "bad-period")
        if until - since > self.config.period + 1:
            days = int(self.config.period // 86_400)
            raise bad_request(
                f"A query covers at most {days} days; ask for a shorter period.", "bad-period"
            )
        return since, until

    def _shown(self, record: Mapping[str, Any]) -> dict[str, Any]:
        reason = record.get("reason")
        described = self.reasons.get(reason) if isinstance(reason, str) else None
        return {
            "at": record.get("at"),
            "store": record.get("store"),
            "region": record.get("region"),
            "reason": reason,
            "reason_description": described.description if described is not None else None,
            "shown": record.get("outcome") == "found",
        }


def _when(value: str | None, name: str) -> float:
    try:
        when = datetime.fromisoformat(value or "")
    except ValueError:
        raise bad_request(
            f"{name} must be an ISO-8601 date or time, such as 2026-10-01 or 2026-10-01T09:00:00Z.",
            "bad-period",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _search(
    directory: Path, subjects: list[str], since: datetime, until: datetime, limit: int
) -> list[dict[str, Any]]:
    """One search in a worker thread, on a connection of its own (an SQLite connection belongs
    to the thread that opened it, and queries run concurrently)."""
    with AuditArchive(directory) as archive:
        return archive.search(subjects=subjects, since=since, until=until, limit=limit)
