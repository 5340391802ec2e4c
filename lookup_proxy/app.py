"""The aiohttp application: wires identify → justify → target → guard → forward → learn → record.

Every step lives in its own module; this one only routes requests through them, turns refusals
into problem responses, and owns the start-up and shutdown of shared resources.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from lookup_proxy import __version__
from lookup_proxy.accounts import LEARNED_AS_FOUND
from lookup_proxy.admin import add_admin_routes
from lookup_proxy.admin.policy import add_policy_routes
from lookup_proxy.audit.trail import AuditTrail, AuditUnavailable
from lookup_proxy.cases import CaseBook, CaseRaiser, Signal
from lookup_proxy.cases.book import rules_of
from lookup_proxy.clock import Clock, SystemClock
from lookup_proxy.console import add_console_routes
from lookup_proxy.errors import (
    Refusal,
    audit_unavailable,
)
from lookup_proxy.forward import TrustedProxies, UpstreamClient
from lookup_proxy.guard import Guard, Lookup
from lookup_proxy.guard.decision import Decision
from lookup_proxy.guard.primitives import GuardStore, StoreUnavailable
from lookup_proxy.guard.redis_store import RedisStore
from lookup_proxy.identify import TokenVerifier
from lookup_proxy.metrics import ProxyMetrics, exposition
from lookup_proxy.middleware import PROXY, Handler, problems, server_header
from lookup_proxy.native import compiled_modules
from lookup_proxy.numbers import mask, normalise_number
from lookup_proxy.policy import Policy, Route
from lookup_proxy.problems import problem_response
from lookup_proxy.record import LookupRecord, Recorder
from lookup_proxy.reload import Generation, Reloader
from lookup_proxy.request_id import REQUEST_ID
from lookup_proxy.request_shape import check_framing, lookup_target
from lookup_proxy.resilience.fallback import Failover
from lookup_proxy.resilience.journal import LockJournal
from lookup_proxy.resilience.recovery import reassert_locks
from lookup_proxy.stores import open_store
from lookup_proxy.transparency import TransparencyService

log = logging.getLogger("lookup_proxy.app")


class Proxy:
    """The wired parts of one proxy instance; stored on the app under ``PROXY``."""

    def __init__(
        self,
        policy: Policy,
        *,
        base_dir: Path,
        environ: Mapping[str, str],
        clock: Clock,
        store: GuardStore | None,
        policy_file: Path | None = None,
        prepare: Callable[[Policy], Policy] | None = None,
    ) -> None:
        self.clock = clock
        self.metrics = ProxyMetrics()
        self.store = store if store is not None else open_store(policy.store, environ)
        self.journal: LockJournal | None = None
        if policy.store.lock_journal is not None:
            self.journal = LockJournal(
                base_dir / policy.store.lock_journal,
                on_error=self.metrics.store.journal_errors.inc,
            )
        self.reloader = Reloader(
            self,
            base_dir=base_dir,
            environ=environ,
            clock=clock,
            policy_file=policy_file,
            prepare=prepare,
        )
        self.generation: Generation = self.reloader.first(policy)
        """The policy in force and what is built from it; a lookup reads it once (reload.py)."""
        if isinstance(self.store, RedisStore):
            self.store.on_restart = self._reassert
        self.failover = Failover(policy, self.guard, clock, self.metrics, self.journal)
        self.base_dir = base_dir
        self.environ = environ
        self._watching: asyncio.Task[None] | None = None
        shared = self.store if isinstance(self.store, RedisStore) else None
        self.audit = AuditTrail.from_policy(
            policy.audit,
            base_dir=base_dir,
            environ=environ,
            clock=clock,
            policy_hash=self.generation.hash,
            metrics=self.metrics.audit,
            store=shared,
            key_prefix=policy.store.key_prefix,
        )
        if shared is not None:
            # Each lookup's record rides its decision's batch (see lookup_proxy/audit/trail.py).
            # A reload's guard inherits both (reload.py); [audit] only changes with a restart.
            self.guard.audit_log = self.audit.stream
            self.guard.audit_keep = policy.audit.stream_retention
        self.audit.store_up = lambda: self.failover.mode == "shared"
        self.cases = CaseBook(self.store, policy.store.key_prefix, clock)
        self.raiser = CaseRaiser(self.cases, self.audit, self.metrics.cases)
        self.transparency: TransparencyService | None = None
        if policy.transparency.enabled:
            self.transparency = TransparencyService(
                policy.transparency,
                environ=environ,
                numbers=policy.numbers,
                reasons=policy.reasons,
                archive=base_dir / policy.audit.archive,
                trail=self.audit,
                store=self.store,
                clock=clock,
                key_prefix=policy.store.key_prefix,
            )
        self.recorder = Recorder(self.metrics, self.audit)
        self._learning: set[asyncio.Task[None]] = set()
        self.draining = False
        """Set when serving stops (lookup_proxy/serving): /readyz says not ready from then on."""
        self.lookup_routes: set[web.AbstractRoute] = set()
        """Routes whose walk checks the request's shape itself, so the refusal is audited."""

    # The current generation's parts, for what is not one lookup (recovery, the edge, tests).

    @property
    def policy(self) -> Policy:
        return self.generation.policy

    @property
    def guard(self) -> Guard:
        return self.generation.guard

    @property
    def verifier(self) -> TokenVerifier:
        return self.generation.verifier

    @property
    def trusted(self) -> TrustedProxies:
        return self.generation.trusted

    @property
    def upstream(self) -> UpstreamClient:
        return self.generation.upstream

    # -- the walk ----------------------------------------------------------------------------

    def lookup_handler(self, route: Route, label: str) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self.lookup(request, route, label)

        return handle

    async def lookup(self, request: web.Request, route: Route, label: str) -> web.StreamResponse:
        started = time.perf_counter()
        generation = self.generation  # once: the lookup finishes under the policy it began with
        request_id: str = request[REQUEST_ID]
        client, forwarded_for = generation.trusted.client_chain(
            request.remote, request.headers.get("X-Forwarded-For")
        )
        entry = LookupRecord(request_id, label, client, started)
        self.metrics.in_flight.inc()
        try:
            check_framing(request)  # shape: nothing the route does not declare
            raw_number, target = lookup_target(request, route)
            entry.raw_number = raw_number
            employee = generation.verifier.verify(request.headers.get("Authorization"))
            entry.employee, entry.store, entry.region = employee.id, employee.store, employee.region
            justification = generation.catalogue.justify(  # justify
                employee,
                request.headers.get("X-Lookup-Reason"),
                request.headers.get("X-Lookup-Reference"),
            )
            entry.reason, entry.reference = justification.reason, justification.reference
            number = entry.number = normalise_number(raw_number, generation.policy.numbers)
            attempt = self.audit.lookup(entry.attempt(), number)  # names generation's hash
            in_batch = generation.guard.audit_log is not None
            written = None if in_batch else self._stage_attempt(entry, attempt)
            lookup = Lookup(
                request_id,
                employee,
                justification.reason,
                number,
                attempt.decode() if in_batch else None,
            )
            try:
                decision, guard = await self.failover.decide(lookup, generation.guard)  # guard
            except Refusal:
                if not entry.attempted:  # its batch did not run: the record goes the slow way
                    self.audit.deliver("lookup", attempt)
                    entry.attempted = True
                raise
            if not entry.attempted:
                if guard.audit_log is not None:
                    self.audit.stored_in_batch("lookup")
                    entry.attempted = True
                else:  # decided locally while Redis is out: the archive file, before forwarding
                    written = self._stage_attempt(entry, attempt)
            entry.flags, entry.rule = decision.flags, decision.rule
            entry.locked = tuple(employee_id for employee_id, _ in decision.locked)
            if decision.flags or decision.locked:
                self._signal(employee.id, employee.store, employee.region, decision)
            if decision.refusal is not None:
                # Answered, not raised: the decision holds the refusal, so a raised one's
                # traceback would tie this frame and everything it holds into a cycle that
                # only the garbage collector frees. Under a flood of refusals (an attacker
                # hammering after a rate limit) those cycles made young collections of 30-40 ms,
                # and a middle one of a quarter second, at 500 refusals a second.
                return self._refused(entry, decision.refusal, request_id)
            if written is not None:
                await self._attempt_written(written)
            entry.decision = "allow"
            upstream_started = time.perf_counter()
            fields = generation.fields.get(justification.reason)
            entry.fields = None if fields is None else fields.name
            try:
                forwarded = await generation.upstream.forward(  # forward
                    request,
                    target,
                    employee,
                    justification,
                    request_id,
                    forwarded_for,
                    {"X-Request-Id": request_id, **decision.headers},
                    fields,
                    generation.accounts.get(justification.reason),
                )
            except Refusal as refusal:
                withheld = LEARNED_AS_FOUND.get(refusal.cause)
                if withheld is not None:  # a record withheld for its account: still an outcome
                    # learn (lookup_proxy/accounts.py)
                    self._learn(guard, lookup, found=withheld, withheld=True)
                raise
            self.metrics.upstream_timed(label).observe(time.perf_counter() - upstream_started)
            entry.status = entry.upstream_status = forwarded.status
            if 200 <= forwarded.status < 300:
                entry.outcome = "found"
                self._learn(guard, lookup, found=True)  # learn
            elif forwarded.status in generation.not_found:
                entry.outcome = "not_found"
                self._learn(guard, lookup, found=False)
            else:
                entry.outcome = "upstream_status"
            if not forwarded.complete:
                entry.outcome = "upstream_error"
            if forwarded.truncated:
                self.metrics.upstream_truncated.labels(label).inc()
            return forwarded.response
        except Refusal as refusal:
            return self._refused(entry, refusal, request_id)
        finally:
            self.metrics.in_flight.dec()
            duration = time.perf_counter() - started
            self.recorder.record(entry, duration, generation.policy.numbers)  # record

    @staticmethod
    def _refused(entry: LookupRecord, refusal: Refusal, request_id: str) -> web.Response:
        """The refusal's problem answer, noted in the lookup's record."""
        entry.cause, entry.status = refusal.cause, refusal.status
        upstream_status = refusal.extra.get("upstream_status")
        if isinstance(upstream_status, int):
            entry.upstream_status = upstream_status
        entry.outcome = "upstream_error" if refusal.status in (502, 504) else "refused"
        return problem_response(refusal, request_id)

    def _signal(self, employee_id: str, store: str, region: str | None, decision: Decision) -> None:
        """Hand a flagging or locking decision to the review queue (written in the
        background; see :mod:`lookup_proxy.cases.raiser`)."""
        locking = dict(decision.locked)
        own = locking.pop(employee_id, None)
        if decision.flags or own is not None:
            rules = rules_of(decision.flags, own)
            self.raiser.signal(Signal(employee_id, rules, own is not None, store, region))
        for other, rule in locking.items():
            self.raiser.signal(Signal(other, (rule,), True))

    def _stage_attempt(self, entry: LookupRecord, attempt: bytes) -> asyncio.Future[None]:
        """The lookup's record on its way to the archive with this turn's others; the lookup
        waits for it (:meth:`_attempt_written`) before it is forwarded. Kept whatever happens:
        a record no sink takes now is retried, never dropped."""
        entry.attempted = True
        return self.audit.stage("lookup", attempt)

    @staticmethod
    async def _attempt_written(written: asyncio.Future[None]) -> None:
        """Go no further than the lookup's record."""
        try:
            await written
        except AuditUnavailable:
            raise audit_unavailable(
                "Customer lookups are paused because they cannot be recorded right now. "
                "Try again in a few seconds; if it persists, call the help desk."
            ) from None

    def _learn(self, guard: Guard, lookup: Lookup, *, found: bool, withheld: bool = False) -> None:
        """Teach the guard that decided the outcome, after the terminal has its answer."""
        task = asyncio.get_running_loop().create_task(
            self._learn_now(guard, lookup, found, withheld)
        )
        self._learning.add(task)
        task.add_done_callback(self._learning.discard)

    async def guard_idle(self) -> None:
        """Wait until every outcome learnt so far is stored (tests, shutdown, the demo)."""
        while self._learning:
            await asyncio.wait(set(self._learning))

    async def _learn_now(self, guard: Guard, lookup: Lookup, found: bool, withheld: bool) -> None:
        try:
            locked = await self.failover.learn(guard, lookup, found, withheld)
        except (Refusal, StoreUnavailable):
            log.warning(
                "outcome not recorded: store unavailable",
                extra={"request_id": lookup.request_id, "number": mask(lookup.number)},
            )
            return
        employee = lookup.employee
        for employee_id, rule in locked:  # a peer rule that locks, or an escalation
            self.raiser.signal(Signal(employee_id, (rule,), True, employee.store, employee.region))

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, _app: web.Application) -> None:
        self.metrics.build.labels(
            version=__version__, compiled="true" if compiled_modules() else "false"
        ).set(1)
        await self.upstream.start()
        self.audit.start()
        if isinstance(self.store, RedisStore):
            # Its first batch re-asserts the journal (on_restart "start"); the watch notices a
            # Redis emptied without a restart.
            self._watching = asyncio.get_running_loop().create_task(self._watch(self.store))
        else:
            await self._reassert("start")  # a proxy restart always empties the memory store
        if self.journal is None:
            log.warning(
                "no lock journal configured ([store] lock_journal): lockouts do not survive "
                "a store that loses its state",
                extra={"store": self.store.kind},
            )

    async def _reassert(self, found: str) -> None:
        await reassert_locks(self.guard, self.journal, self.metrics.store, found)

    async def _watch(self, store: RedisStore) -> None:
        while True:
            with contextlib.suppress(StoreUnavailable):
                await store.verify()
            await asyncio.sleep(self.policy.store.check_interval)

    async def stop(self, _app: web.Application) -> None:
        if self._learning:
            await asyncio.wait(self._learning, timeout=5)
        await self.raiser.close(grace=5)
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching
        await self.failover.close()
        await self.upstream.close()
        await self.audit.close()  # after the last lookup, before the store it writes to
        await self.store.close()

    # -- service endpoints -------------------------------------------------------------------

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"}, dumps=_dumps)

    async def readyz(self, _request: web.Request) -> web.Response:
        checks: dict[str, str] = {"policy": "loaded"}
        if self.draining:  # whatever else holds, a balancer should send no more
            checks["serving"] = "draining"
        try:
            await asyncio.wait_for(self.store.ping(), self.policy.store.timeout * 4)
            checks["store"] = "ok"
        except (StoreUnavailable, TimeoutError):
            checks["store"] = "unreachable"
        checks["upstream"] = "ok" if await self.upstream.reachable() else "unreachable"
        # Guarding from the embedded store is degraded but safe: keep taking traffic.
        local = self.failover.mode == "local"
        ready = all(v in ("ok", "loaded") or (k == "store" and local) for k, v in checks.items())
        return web.json_response(
            {
                "status": "ready" if ready else "not ready",
                "checks": checks,
                "store_mode": self.failover.mode,
            },
            status=200 if ready else 503,
            dumps=_dumps,
        )

    async def metrics_endpoint(self, _request: web.Request) -> web.Response:
        await self._count_cases()
        body = exposition(self.metrics.registry)  # one worker's, or the whole pool's
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def _count_cases(self) -> None:
        """The review queue's length for the scrape; a store out of reach keeps the last."""
        try:
            cases = await asyncio.wait_for(
                self.cases.cases("all"), self.generation.policy.store.timeout * 4
            )
        except (StoreUnavailable, TimeoutError):
            return
        gauge = self.metrics.cases.unresolved
        for status in ("open", "acknowledged"):
            gauge.labels(status=status).set(sum(1 for c in cases if c.status == status))

    def refused(self, request: web.Request, refusal: Refusal) -> web.Response:
        """A refusal outside the lookup walk (which records its own): counted, logged, no
        traceback, since every one of them is an expected condition."""
        self.metrics.refused(refusal.cause, str(refusal.status)).inc()
        log.warning(
            "refused",
            extra={
                "request_id": request[REQUEST_ID],
                "method": request.method,
                "cause": refusal.cause,
                "status": refusal.status,
            },
        )
        return problem_response(refusal, request[REQUEST_ID])


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def build_app(
    policy: Policy,
    *,
    base_dir: Path,
    environ: Mapping[str, str],
    clock: Clock | None = None,
    store: GuardStore | None = None,
    policy_file: Path | None = None,
    prepare: Callable[[Policy], Policy] | None = None,
) -> web.Application:
    """A ready-to-run proxy for ``policy``; raises ConfigError for missing secrets or keys.
    ``policy_file`` (with ``prepare``, the overrides ``policy`` was made with) is what a reload
    re-reads."""
    proxy = Proxy(
        policy,
        base_dir=base_dir,
        environ=environ,
        clock=clock or SystemClock(),
        store=store,
        policy_file=policy_file,
        prepare=prepare,
    )
    app = web.Application(middlewares=[problems], client_max_size=64 * 1024)
    app[PROXY] = proxy
    app.on_response_prepare.append(server_header)
    app.on_startup.append(proxy.start)
    app.on_cleanup.append(proxy.stop)
    app.router.add_get("/healthz", proxy.healthz)
    app.router.add_get("/readyz", proxy.readyz)
    app.router.add_get("/metrics", proxy.metrics_endpoint)
    add_admin_routes(app, proxy)
    add_console_routes(app)
    add_policy_routes(app, proxy)
    if proxy.transparency is not None:
        app.router.add_get("/transparency/{number}", proxy.transparency.handle)
    for route in policy.routes:
        label = f"{route.method} {route.path}"
        added = app.router.add_route(route.method, route.path, proxy.lookup_handler(route, label))
        proxy.lookup_routes.add(added)
    # No catch-all: the router's 404 (no such route) becomes a 403 route-not-allowed, its 405
    # (a route, another method) a 405 problem with Allow; see lookup_proxy/middleware.py.
    return app
