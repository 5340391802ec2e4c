"""Prometheus metrics. Labels are policy-defined names only (routes, reasons, rules, causes):
never an employee id or a number, so cardinality stays bounded and metrics leak nothing.

Each application gets its own registry, so several proxies in one process (tests) never share
counters.

``serve --workers N`` runs N processes that must answer one scrape for all of them: the master
sets ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode, chosen when the library
is first imported) before it starts its workers, every value then lives in a file per process,
and :func:`exposition` merges the files of every worker at scrape time. Counters and histograms
add up, and keep the counts of workers that died (a total never goes backwards). A gauge says
how its workers combine (``multiprocess_mode``; the ``live`` modes forget a worker once the
master marks it dead):

- ``livesum`` where each worker holds a share of the whole: requests in flight, audit records
  pending, case signals pending;
- ``livemax`` where every worker reports a flag that a sum would inflate: build and policy info
  (1 for what is in force; two policy hashes at 1 means the workers disagree, which
  PolicyHashMismatch catches) and the store mode (1 if any worker is in that mode, so an alert
  on ``mode="local" == 1`` still fires for one worker out of N);
- ``livemostrecent`` for what is read from the shared store at scrape time: the review queue
  (whichever worker answers the scrape reads it; the others' older readings lose).

Outside that mode the modes change nothing, and each registry is exposed alone as before.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from lookup_proxy.guard.decision import Decision

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
"""Where each worker of ``serve --workers N`` keeps its values (set by the master only)."""


def multiprocess_dir() -> str | None:
    """The directory of multiprocess mode, or None when this process counts alone."""
    return os.environ.get(MULTIPROCESS_DIR) or None


def exposition(registry: CollectorRegistry) -> bytes:
    """The text of one scrape: ``registry`` alone, or every worker of the pool."""
    directory = multiprocess_dir()
    if directory is None:
        return generate_latest(registry)
    from prometheus_client import multiprocess

    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(merged)


_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_STORE_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
)


class Children:
    """A labelled metric's children by label values, each looked up once.

    ``labels()`` takes a lock and builds its key on every call (about 1.5 µs, 2 with keyword
    labels), and a lookup asks for half a dozen; a dict answers in a fifth of that. Only for
    labels of bounded sets (routes, outcomes, reasons, causes, rules), as every label here is.
    """

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class GuardMetrics:
    """What the guard reports: rule hits by action and mode, lockouts, flags, store health."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rule_hits = Counter(
            "lookup_proxy_rule_hits_total",
            "Rules that fired, by rule, kind, action and mode (shadow hits included).",
            ["rule", "kind", "action", "mode"],
            registry=registry,
        )
        self.decisions = Counter(
            "lookup_proxy_guard_decisions_total",
            "Guard decisions: allow, or the refusing rule ('locked' for an existing lockout).",
            ["decision", "rule"],
            registry=registry,
        )
        self.lockouts = Counter(
            "lookup_proxy_lockouts_total",
            "Employees locked out, by the rule that locked them.",
            ["rule"],
            registry=registry,
        )
        self.flags = Counter(
            "lookup_proxy_flags_total",
            "Flags raised for review (flag-action and shadow-mode rules), by rule.",
            ["rule"],
            registry=registry,
        )
        self.store_latency = Histogram(
            "lookup_proxy_store_roundtrip_seconds",
            "Time for one batch of guard primitives against the store.",
            ["store"],
            buckets=_STORE_BUCKETS,
            registry=registry,
        )
        self.store_errors = Counter(
            "lookup_proxy_store_errors_total",
            "Store batches that failed (the lookup is refused with 503).",
            ["store"],
            registry=registry,
        )

        self.decided = Children(self.decisions)
        self.hit = Children(self.rule_hits)
        self.flagged = Children(self.flags)

    def prime(self, rules: Iterable[str]) -> None:
        """Lockout and flag series at 0 for every rule from the start: a counter first seen
        at 1 looks like no increase to Prometheus, so the first lockout would go unalerted."""
        for rule in rules:
            self.lockouts.labels(rule=rule)
            self.flags.labels(rule=rule)

    def observe_decision(self, decision: Decision) -> None:
        for hit in decision.hits:
            self.hit(hit.rule, hit.kind, hit.action, hit.mode).inc()
        for flag in decision.flags:
            self.flagged(flag).inc()
        if decision.allowed:
            self.decided("allow", "").inc()
        else:
            self.decided("deny", decision.rule or "").inc()


class ProxyMetrics:
    """Everything /metrics exposes for one proxy instance."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "lookup_proxy_requests_total",
            "Lookup requests by route, outcome (found, not_found, refused, upstream_error) "
            "and reason code ('none' when missing or unknown).",
            ["route", "outcome", "reason"],
            registry=registry,
        )
        self.refusals = Counter(
            "lookup_proxy_refusals_total",
            "Refused requests by cause (token-expired, missing-reason, rate-limited, ...).",
            ["cause", "status"],
            registry=registry,
        )
        self.request_latency = Histogram(
            "lookup_proxy_request_duration_seconds",
            "Time from request to response, by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.upstream_latency = Histogram(
            "lookup_proxy_upstream_duration_seconds",
            "Time the customer-lookup backend took to answer, by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.upstream_truncated = Counter(
            "lookup_proxy_upstream_truncated_total",
            "Backend answers broken off mid-body (a 502 problem when read whole; the "
            "terminal's connection aborted when streamed), by route.",
            ["route"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "lookup_proxy_requests_in_flight",
            "Lookup requests being handled now.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.build = Gauge(
            "lookup_proxy_build_info",
            "1, labelled with the running version and whether the guard runs compiled.",
            ["version", "compiled"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.gc_pauses = Histogram(
            "lookup_proxy_gc_pause_seconds",
            "Garbage collection pauses, by generation (0 young ... 2 full), timed by "
            "lookup-proxy serve after it froze its start-up objects (gc_tuning.py).",
            ["generation"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
            registry=registry,
        )
        self.loop_lag = Histogram(
            "lookup_proxy_event_loop_lag_seconds",
            "How late the event loop ran a probe due every 0.1 s: what a lookup arriving then "
            "waited for the loop, whatever paused it (loop_lag.py); lookup-proxy serve only.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=registry,
        )
        self.counted = Children(self.requests)
        self.refused = Children(self.refusals)
        self.timed = Children(self.request_latency)
        self.upstream_timed = Children(self.upstream_latency)
        self.guard = GuardMetrics(registry)
        self.store = StoreHealthMetrics(registry)
        self.reloads = PolicyMetrics(registry)
        self.audit = AuditMetrics(registry)
        self.cases = CaseMetrics(registry)
        self.admin_requests = Counter(
            "lookup_proxy_admin_requests_total",
            "Admin API calls, by action (cases.resolve, locks.unlock, ...) and HTTP status.",
            ["action", "status"],
            registry=registry,
        )


class CaseMetrics:
    """The review queue: case transitions, and guard signals waiting for the store."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "lookup_proxy_case_events_total",
            "Case transitions: opened, raised, acknowledged, resolved.",
            ["event"],
            registry=registry,
        )
        self.store_errors = Counter(
            "lookup_proxy_case_store_errors_total",
            "Attempts to write a guard signal to the case book that failed on the store "
            "(the signal is kept and retried).",
            registry=registry,
        )
        self.dropped = Counter(
            "lookup_proxy_case_signals_dropped_total",
            "Guard signals that never reached the case book (an unexpected error, or still "
            "waiting for the store at shutdown).",
            registry=registry,
        )
        for event in ("opened", "raised", "acknowledged", "resolved"):
            self.events.labels(event=event)  # at 0 from the start (see GuardMetrics.prime)
        self.unresolved = Gauge(
            "lookup_proxy_cases_open",
            "Cases waiting for a reviewer, by status (open, acknowledged): the review queue "
            "(read from the shared store at each scrape; every instance reports the same).",
            ["status"],
            multiprocess_mode="livemostrecent",
            registry=registry,
        )
        self.pending = Gauge(
            "lookup_proxy_case_signals_pending",
            "Employees with a guard signal waiting to be written to the case book.",
            multiprocess_mode="livesum",
            registry=registry,
        )


class AuditMetrics:
    """Where audit records went, and any that are waiting or could not be written."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.records = Counter(
            "lookup_proxy_audit_records_total",
            "Audit records made durable, by kind (lookup, outcome, admin, case, transparency, "
            "checkpoint) and sink (stream: Redis; file: the archive directory).",
            ["kind", "sink"],
            registry=registry,
        )
        self.recorded = Children(self.records)
        """``records`` by (kind, sink): every lookup counts one or two records."""
        self.write_errors = Counter(
            "lookup_proxy_audit_write_errors_total",
            "Failed attempts to make audit records durable, by sink (records are kept and "
            "retried, a failed sync of the archive file is tried again at the next interval; a "
            "lookup whose own record cannot be written is refused).",
            ["sink"],
            registry=registry,
        )
        self.pending = Gauge(
            "lookup_proxy_audit_pending_records",
            "Audit records made but not yet durable (waiting for the next flush).",
            multiprocess_mode="livesum",
            registry=registry,
        )


class StoreHealthMetrics:
    """The store-down mode and what kept guard state through restarts and outages."""

    MODES = ("shared", "local", "refusing")

    def __init__(self, registry: CollectorRegistry) -> None:
        self.mode = Gauge(
            "lookup_proxy_store_mode",
            "1 for the mode lookups are guarded in now: shared (Redis), local (embedded store "
            "while Redis is unreachable) or refusing (503 while Redis is unreachable).",
            ["mode"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.transitions = Counter(
            "lookup_proxy_store_mode_transitions_total",
            "Changes of store mode, by the mode entered.",
            ["mode"],
            registry=registry,
        )
        self.recoveries = Counter(
            "lookup_proxy_store_recoveries_total",
            "Times the guard's state was checked and locks re-asserted, by what was found: "
            "start, restarted (data kept), empty (restarted without data), flushed, back "
            "(after an outage), outage (a local store loaded for an outage).",
            ["found"],
            registry=registry,
        )
        self.locks_restored = Counter(
            "lookup_proxy_locks_restored_total",
            "Locks written back from the lock journal into a store that may have lost them.",
            registry=registry,
        )
        self.journal_errors = Counter(
            "lookup_proxy_lock_journal_errors_total",
            "Lock journal writes that failed (disk full, volume gone): those locks live only "
            "in the store.",
            registry=registry,
        )
        for mode in self.MODES:
            self.mode.labels(mode=mode).set(1 if mode == "shared" else 0)

    def entered(self, mode: str) -> None:
        for each in self.MODES:
            self.mode.labels(mode=each).set(1 if each == mode else 0)
        self.transitions.labels(mode=mode).inc()


class PolicyMetrics:
    """The policy in force (by hash) and how reloads went (lookup_proxy/reload.py)."""

    RESULTS = ("ok", "unchanged", "error")

    def __init__(self, registry: CollectorRegistry) -> None:
        self.reloads = Counter(
            "lookup_proxy_config_reloads_total",
            "Policy reloads (SIGHUP or the admin API), by result: ok (a new policy in force), "
            "unchanged (same hash), error (refused; the running policy stays).",
            ["result"],
            registry=registry,
        )
        self.info = Gauge(
            "lookup_proxy_policy_info",
            "1 for the hash of the policy in force (policy_hash: 16 hex of SHA-256).",
            ["hash"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        for result in self.RESULTS:
            self.reloads.labels(result=result)

    def count(self, result: str) -> None:
        self.reloads.labels(result=result).inc()

    def active(self, policy_hash: str, previous: str | None) -> None:
        """Show ``policy_hash``; the previous hash's series is removed (set to 0 in
        multiprocess mode, which cannot remove a series from a worker's file)."""
        if previous is not None and previous != policy_hash:
            if multiprocess_dir() is None:
                self.info.remove(previous)
            else:
                self.info.labels(hash=previous).set(0)
        self.info.labels(hash=policy_hash).set(1)
