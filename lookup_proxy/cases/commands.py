"""``lookup-proxy cases|locks|unlock``: the review queue and lockouts from a shell.

They talk to the store the policy configures, as the running proxies do, and act as a named
reviewer (``--as``): each invocation writes one ``admin`` audit record, as an admin API call
does. The memory store lives inside each proxy process, so with it there is nothing here to
talk to: the command says so and points at the admin API.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from lookup_proxy.admin.inputs import CASE_ID, EMPLOYEE_ID, NOTE_MAX
from lookup_proxy.audit.tools import tool_client
from lookup_proxy.audit.trail import AuditTrail
from lookup_proxy.cases.audit import case_record
from lookup_proxy.cases.book import CaseBook, CaseClosed, CaseNotFound
from lookup_proxy.cases.model import Case, iso
from lookup_proxy.clock import SystemClock
from lookup_proxy.errors import Refusal
from lookup_proxy.guard import Guard
from lookup_proxy.guard.primitives import GuardStore, StoreUnavailable
from lookup_proxy.guard.redis_store import RedisStore
from lookup_proxy.metrics import AuditMetrics
from lookup_proxy.policy import Policy, policy_hash
from lookup_proxy.stores import open_store

EXIT_FAILED = 1
EXIT_USAGE = 2


class CommandFailed(Exception):
    """A plain error line for the user, and the exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class Session:
    """One invocation: the store, the guard and the case book, and its audit record."""

    def __init__(
        self, policy: Policy, policy_path: Path, actor: str, environ: Mapping[str, str]
    ) -> None:
        if EMPLOYEE_ID.fullmatch(actor) is None:
            raise CommandFailed(f"--as {actor!r} is not an employee id", EXIT_USAGE)
        if policy.store.kind == "memory":
            raise CommandFailed(
                "the policy's store is 'memory': cases and locks live inside each running "
                "proxy, not anywhere this command can reach. Use the admin API "
                "(/admin/cases, /admin/locks) of the proxy, or a shared store "
                "([store] kind = 'redis').",
                EXIT_USAGE,
            )
        self.actor = actor
        self.policy = policy
        self.store: GuardStore = open_store(policy.store, environ, learning=False)
        clock = SystemClock()
        self.guard = Guard(policy, self.store, clock)
        if policy.store.lock_journal is not None:
            from lookup_proxy.resilience.journal import LockJournal

            # An unlock must reach the journal too, or the next restart would re-assert it.
            self.guard.lockouts.recorder = LockJournal(
                policy_path.parent / policy.store.lock_journal
            )
        self.book = CaseBook(self.store, policy.store.key_prefix, clock)
        # One chain per invocation (contract-11), into the stream the proxies write to.
        self.audit = AuditTrail.from_policy(
            policy.audit,
            base_dir=policy_path.parent,
            environ=environ,
            clock=clock,
            policy_hash=policy_hash(policy),
            metrics=AuditMetrics(CollectorRegistry()),
            store=self.store if isinstance(self.store, RedisStore) else None,
            key_prefix=policy.store.key_prefix,
        )

    def record(self, action: str, target: str | None, note: str | None, code: int) -> None:
        self.audit.write(
            "admin",
            {
                "request_id": None,
                "employee": self.actor,
                "client": tool_client(),
                "action": action,
                "target": target,
                "note": note,
                "status": code,
                "query": None,
            },
        )


async def run(
    session: Session, action: str, target: str | None, note: str | None, work: Any
) -> None:
    """Run ``work(session)``; every outcome is one audit record with its exit code."""
    code = EXIT_FAILED
    try:
        await work(session)
        code = 0
    except (StoreUnavailable, Refusal) as exc:
        raise CommandFailed(f"the store cannot be reached ({exc})") from None
    except CommandFailed as failed:
        code = failed.code
        raise
    finally:
        session.record(action, target, note, code)
        await session.audit.close()  # the record and the chain's final checkpoint, durable
        await session.store.close()


def check_case_id(case_id: str) -> str:
    if CASE_ID.fullmatch(case_id) is None:
        raise CommandFailed(f"{case_id!r} is not a case id (employee~number)", EXIT_USAGE)
    return case_id


def check_note(note: str | None, *, required: bool) -> str | None:
    if note is not None and len(note) > NOTE_MAX:
        raise CommandFailed(f"--note is longer than {NOTE_MAX} characters", EXIT_USAGE)
    if required and (note is None or not note.strip()):
        raise CommandFailed("--note is required: say what you found", EXIT_USAGE)
    return note


def case_line(case: Case) -> str:
    rules = ",".join(case.rules)
    locked = " locked" if case.locked else ""
    return (
        f"{case.id}\t{case.status}\t{case.employee}\t{case.store or '-'}\t"
        f"{iso(case.opened_at)}\t{rules}{locked}\traised {case.raised}"
    )


def show(case: Case, as_json: bool) -> None:
    if as_json:
        print(json.dumps(case.as_json(), indent=2))
        return
    print(case_line(case))
    for event in case.events:
        who = event.by or "guard"
        extra = f" {','.join(event.rules)}" if event.rules else ""
        note = f": {event.note}" if event.note else ""
        print(f"  {iso(event.at)}  {event.event} by {who}{extra}{note}")
    if case.resolution:
        print(f"  resolution: {case.resolution}")


async def list_cases(session: Session, status: str, as_json: bool) -> None:
    cases = await session.book.cases(status)
    if as_json:
        print(json.dumps({"cases": [c.as_json() for c in cases]}, indent=2))
    else:
        for case in cases:
            print(case_line(case))


async def show_case(session: Session, case_id: str, as_json: bool) -> None:
    try:
        show(await session.book.case(case_id), as_json)
    except CaseNotFound:
        raise CommandFailed(f"no case {case_id}") from None


async def review(
    session: Session,
    case_id: str,
    note: str | None,
    resolution: str | None,
    unlock: bool,
    as_json: bool,
) -> None:
    try:
        if resolution is None:
            case = await session.book.acknowledge(case_id, session.actor, note)
            event = "acknowledged"
        else:
            case = await session.book.resolve(case_id, session.actor, note, resolution)
            event = "resolved"
    except CaseNotFound:
        raise CommandFailed(f"no case {case_id}") from None
    except CaseClosed:
        raise CommandFailed(f"case {case_id} is already resolved") from None
    session.audit.write("case", case_record(case, event, by=session.actor, note=note))
    if unlock:
        await session.guard.unlock(case.employee)
    show(case, as_json)


async def list_locks(session: Session, as_json: bool) -> None:
    locks = await session.guard.locked_employees()
    if as_json:
        print(json.dumps({"locks": [vars(lock) for lock in locks]}, indent=2, default=list))
        return
    for lock in locks:
        until = "until unlocked" if lock.until is None else f"until {iso(lock.until)}"
        print(f"{lock.employee}\t{lock.rule}\tsince {iso(lock.at)}\t{until}")


async def unlock(session: Session, employee: str) -> None:
    if EMPLOYEE_ID.fullmatch(employee) is None:
        raise CommandFailed(f"{employee!r} is not an employee id", EXIT_USAGE)
    removed = await session.guard.unlock(employee)
    print(f"{employee}: {'unlocked' if removed else 'was not locked'}")
