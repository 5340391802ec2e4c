"""``lookup-proxy demo``: the whole product in one command, no Redis, no setup.

It starts the synthetic backend and a real proxy (memory store) on local ports, then plays a
time-compressed stretch of a store's day through real HTTP: a few honest clerks serving a queue
(repeat lookups, families, typos, walk-ins) and one clerk typing numbers at random. The view shows
what each clerk gets, until the enumerator is locked out while the others carry on.

The guard runs on a compressed clock, so an hour of rules happens in a couple of real minutes
with exactly the policy code that runs in production.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import aiohttp

from lookup_proxy.app import build_app
from lookup_proxy.audit.keys import new_keys
from lookup_proxy.customers import CustomerBase
from lookup_proxy.demo_backend import build_demo_backend
from lookup_proxy.http_edge import listening
from lookup_proxy.numbers import mask
from lookup_proxy.policy import Policy, Store
from lookup_proxy.tokens import mint_token

EVERYDAY_REASONS = (
    "NEW_SUBSCRIPTION",
    "CONTRACT_RENEWAL",
    "PLAN_CHANGE",
    "BILLING_INQUIRY",
    "DEVICE_SUPPORT",
)


class CompressedClock:
    """Simulated time running ``speed`` times faster than the wall clock."""

    def __init__(self, speed: float, start: float | None = None) -> None:
        self.speed = speed
        self.start = time.time() if start is None else start
        self._origin = time.monotonic()

    def now(self) -> float:
        return self.start + (time.monotonic() - self._origin) * self.speed

    def elapsed(self) -> float:
        """Simulated seconds since the demo began."""
        return self.now() - self.start

    async def sleep(self, simulated_seconds: float) -> None:
        await asyncio.sleep(max(simulated_seconds, 0.0) / self.speed)


def _opening_time(policy: Policy) -> float:
    """Half an hour after opening time today, store time: the demo's store is open whenever it
    is run (an ``hours`` rule refuses lookups while a store is shut)."""
    offset = policy.hours.utc_offset
    local = time.time() + offset
    return local - local % 86_400 - offset + policy.hours.open + 1800


@dataclass
class Clerk:
    """One terminal in the demo and what it has been answered so far."""

    name: str
    employee: str
    honest: bool
    lookups: int = 0
    found: int = 0
    not_found: int = 0
    refused: int = 0
    last: str = "-"
    locked_at: float | None = None
    locked_by: str | None = None
    lookups_before_lock: int = 0
    found_before_lock: int = 0
    refusals: dict[str, int] = field(default_factory=dict)


def _written(number: str, rng: random.Random) -> str:
    """The same number the way different clerks type it."""
    style = rng.random()
    if style < 0.45:
        return number
    if style < 0.8:
        return f"{number[:3]}-{number[3:7]}-{number[7:]}"
    if style < 0.9:
        return f"{number[:3]} {number[3:7]} {number[7:]}"
    return f"+82{number[1:]}"


def _typo(number: str, rng: random.Random) -> str:
    position = rng.randrange(3, len(number))
    digit = rng.choice([d for d in "0123456789" if d != number[position]])
    return number[:position] + digit + number[position + 1 :]


class Demo:
    """Runs the scripted traffic against a live proxy and keeps the view up to date."""

    def __init__(
        self,
        policy: Policy,
        *,
        speed: float,
        minutes: float,
        seed: int,
        out: TextIO,
        live: bool,
    ) -> None:
        self.policy = policy.model_copy(update={"store": Store(kind="memory")})
        self.audit_dir = Path(tempfile.mkdtemp(prefix="lookup-proxy-demo-audit-"))
        """The demo's audit archive: a fresh directory (its keys are gone with the process)."""
        self.policy = self.policy.model_copy(
            update={"audit": policy.audit.model_copy(update={"archive": str(self.audit_dir)})}
        )
        self.clock = CompressedClock(speed, _opening_time(policy))
        self.minutes = minutes
        self.rng = random.Random(seed)
        self.base = CustomerBase()
        self.out = out
        self.live = live
        self.environ = {
            policy.auth.hs_secret_env: secrets.token_urlsafe(48),
            **new_keys(policy),
        }
        self.clerks = [
            Clerk("Kim Minji", "E1001", honest=True),
            Clerk("Lee Junho", "E1002", honest=True),
            Clerk("Choi Yuna", "E1003", honest=True),
            Clerk("Park Dohyun", "E1666", honest=False),
        ]
        self.events: list[str] = []
        self.url = ""
        self.done = asyncio.Event()

    # -- traffic -----------------------------------------------------------------------------

    def token(self, clerk: Clerk) -> str:
        return mint_token(
            self.policy.auth,
            self.environ,
            employee=clerk.employee,
            store="S012",
            region="R03",
            roles=["clerk"],
            ttl=min(8 * 3600.0, self.policy.auth.max_token_lifetime),
            clock=self.clock,
        )

    async def lookup(
        self, session: aiohttp.ClientSession, clerk: Clerk, token: str, typed: str, reason: str
    ) -> int:
        headers = {"Authorization": f"Bearer {token}", "X-Lookup-Reason": reason}
        async with session.get(f"{self.url}/customers/{typed}", headers=headers) as response:
            status = response.status
            body = await response.json(content_type=None)
        clerk.lookups += 1
        shown = mask("".join(c for c in typed if c.isdigit())[-11:])
        if status == 200:
            clerk.found += 1
            clerk.last = f"200 found      {shown}"
        elif status == 404:
            clerk.not_found += 1
            clerk.last = f"404 not found  {shown}"
        else:
            cause = str(body.get("type", "")).rsplit(":", 1)[-1]
            clerk.refused += 1
            clerk.refusals[cause] = clerk.refusals.get(cause, 0) + 1
            clerk.last = f"{status} {cause}"
            if cause == "locked-out" and clerk.locked_at is None:
                self._locked(clerk, str(body.get("rule", "")) or "an earlier lookup")
        if clerk.locked_at is None:
            clerk.lookups_before_lock = clerk.lookups
            clerk.found_before_lock = clerk.found
        self.render()
        return status

    def _locked(self, clerk: Clerk, rule: str) -> None:
        clerk.locked_at = self.clock.elapsed()
        clerk.locked_by = rule
        self.events.append(
            f"{self._time(clerk.locked_at)}  {clerk.name} ({clerk.employee}) LOCKED OUT "
            f"after {clerk.lookups} lookups"
        )

    async def honest_clerk(self, session: aiohttp.ClientSession, clerk: Clerk) -> None:
        rng = random.Random(self.rng.random())
        token = self.token(clerk)
        regulars = self.base.sample_customers(40, rng)
        await self.clock.sleep(rng.uniform(10, 90))
        while not self.done.is_set():
            reason = rng.choice(EVERYDAY_REASONS)
            visit = rng.random()
            if visit < 0.1:  # a walk-in from another carrier: not a customer
                walk_in = self.base.sample_non_customers(1, rng)[0]
                await self.lookup(session, clerk, token, _written(walk_in, rng), "NEW_SUBSCRIPTION")
            elif visit < 0.22:  # a family: several unrelated numbers
                for member in rng.sample(regulars, rng.randint(2, 3)):
                    await self.lookup(session, clerk, token, _written(member, rng), reason)
                    await self.clock.sleep(rng.uniform(20, 60))
            else:
                customer = rng.choice(regulars)
                if rng.random() < 0.15:  # a mistyped digit, retyped within seconds
                    await self.lookup(
                        session, clerk, token, _written(_typo(customer, rng), rng), reason
                    )
                    await self.clock.sleep(rng.uniform(4, 12))
                for _ in range(rng.choice((1, 1, 2, 3))):  # looked up again during the visit
                    await self.lookup(session, clerk, token, _written(customer, rng), reason)
                    await self.clock.sleep(rng.uniform(30, 180))
            await self.clock.sleep(rng.uniform(60, 240))

    async def random_typist(self, session: aiohttp.ClientSession, clerk: Clerk) -> None:
        rng = random.Random(self.rng.random())
        token = self.token(clerk)
        await self.clock.sleep(rng.uniform(120, 180))
        self.events.append(
            f"{self._time(self.clock.elapsed())}  {clerk.name} starts typing numbers"
        )
        while not self.done.is_set():
            number = "010" + str(rng.randrange(10**8)).zfill(8)
            await self.lookup(
                session, clerk, token, _written(number, rng), rng.choice(EVERYDAY_REASONS)
            )
            await self.clock.sleep(rng.uniform(8, 25))

    async def referee(self) -> None:
        """Ends the demo once the others have worked on for a while after the typist's lockout."""
        limit = self.minutes * 60
        typist = self.clerks[-1]
        while True:
            elapsed = self.clock.elapsed()
            if elapsed >= limit:
                break
            if typist.locked_at is not None and elapsed - typist.locked_at >= min(600, limit / 3):
                break
            await asyncio.sleep(0.05)
        self.done.set()

    # -- view --------------------------------------------------------------------------------

    def _time(self, elapsed: float) -> str:
        local = time.gmtime(self.clock.start + elapsed + self.policy.hours.utc_offset)
        return time.strftime("%H:%M:%S", local)

    def render(self, final: bool = False) -> None:
        if not self.live and not final:
            return
        lines = [
            f"lookup-proxy demo — proxy {self.url}   simulated {self._time(self.clock.elapsed())} "
            f"(×{self.clock.speed:g})",
            "",
            f"  {'clerk':<24}{'lookups':>8}{'found':>7}{'missing':>8}{'refused':>8}   last answer",
        ]
        for clerk in self.clerks:
            state = "  LOCKED" if clerk.locked_at is not None else ""
            lines.append(
                f"  {clerk.name + ' (' + clerk.employee + ')':<24}{clerk.lookups:>8}"
                f"{clerk.found:>7}{clerk.not_found:>8}{clerk.refused:>8}   {clerk.last}{state}"
            )
        lines.append("")
        lines.extend(f"  {event}" for event in self.events[-6:])
        if self.live:  # redraw in place, the final frame included
            self.out.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
        else:
            self.out.write("\n".join(lines) + "\n")
        self.out.flush()

    def summary(self) -> list[str]:
        typist = self.clerks[-1]
        honest = [c for c in self.clerks if c.honest]
        lines = ["", "Summary"]
        if typist.locked_at is not None:
            lines.append(
                f"  {typist.name} typed {typist.lookups_before_lock} numbers before being locked "
                f"out by rule '{typist.locked_by}' after {typist.locked_at / 60:.0f} simulated "
                f"minutes; {typist.found_before_lock} customer records were shown, "
                f"{typist.lookups - typist.lookups_before_lock} further attempts refused."
            )
        else:
            lines.append(f"  {typist.name} was NOT locked out within {self.minutes:g} minutes.")
        refused = sum(c.refused for c in honest)
        lines.append(
            f"  Honest clerks: {sum(c.lookups for c in honest)} lookups, "
            f"{sum(c.found for c in honest)} found, {refused} refused."
        )
        lines.append(f"  Audit trail (every lookup, chained and signed): {self.audit_dir}")
        return lines

    # -- running -----------------------------------------------------------------------------

    async def run(self, hold: bool = False) -> bool:
        async with listening(build_demo_backend(self.base), "127.0.0.1", 0) as backend:
            await self._run_proxy(backend.port, hold)
        return self.clerks[-1].locked_at is not None

    async def _run_proxy(self, backend_port: int, hold: bool) -> None:
        policy = self.policy.model_copy(
            update={
                "upstream": self.policy.upstream.model_copy(
                    update={"url": f"http://127.0.0.1:{backend_port}"}
                )
            }
        )
        app = build_app(policy, base_dir=Path("."), environ=self.environ, clock=self.clock)
        async with listening(app, "127.0.0.1", self.port, shutdown_timeout=1) as proxy:
            self.url = proxy.url
            async with aiohttp.ClientSession() as session:
                tasks = [
                    asyncio.create_task(
                        self.honest_clerk(session, c)
                        if c.honest
                        else self.random_typist(session, c)
                    )
                    for c in self.clerks
                ]
                await self.referee()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            self.render(final=True)
            for line in self.summary():
                print(line, file=self.out)
            if hold:
                await self._hold()

    port = 0

    async def _hold(self) -> None:
        clerk = Clerk("You", "E2001", honest=True)
        lasts = min(8 * 3600.0, self.policy.auth.max_token_lifetime) / self.clock.speed
        print(
            "\nThe proxy keeps running (Ctrl-C to stop), still on the demo's fast clock: this "
            f"token lasts about {lasts / 60:.0f} real minutes. Try it:\n"
            f"  curl -i -H 'Authorization: Bearer {self.token(clerk)}' \\\n"
            f"       -H 'X-Lookup-Reason: BILLING_INQUIRY' {self.url}/customers/"
            f"{self.base.find_customers(1)[0]}",
            file=self.out,
        )
        self.out.flush()
        await asyncio.Event().wait()


def run_demo(
    policy: Policy,
    *,
    speed: float = 30.0,
    minutes: float = 40.0,
    seed: int = 2021,
    port: int = 0,
    hold: bool = False,
    live: bool | None = None,
    out: TextIO = sys.stdout,
) -> bool:
    """Play the demo; True when the enumerator was locked out."""
    demo = Demo(
        policy,
        speed=speed,
        minutes=minutes,
        seed=seed,
        out=out,
        live=out.isatty() if live is None else live,
    )
    demo.port = port
    try:
        import uvloop

        return uvloop.run(demo.run(hold=hold))
    except KeyboardInterrupt:
        return demo.clerks[-1].locked_at is not None
