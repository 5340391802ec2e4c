"""What the store's Lua interpreter costs Redis per lookup, this version against another.

Records the batches of the shipped policy's ``decide`` and ``learn`` for random lookups of
``--employees`` employees (on the memory store: the same batches whatever runs them), packs them
as the Redis store does (whole batches, about ``CALL_SIZE`` primitives a script call), and runs
them on a private redis-server through each script: the working tree's and the one at
``--against`` (a git revision). Rounds alternate between the scripts on an emptied Redis; the
first half of the calls fills the windows and the second half is measured. Prints per lookup
the script's time inside Redis (``INFO commandstats``, its commands included) and the commands
it ran, min and median over the rounds: on a shared machine only the interleaved comparison
means anything. ``--logs both`` records the batches twice, with rules sharing their logs (as
shipped, ``guard/shared_logs.py``) and keeping their own, and runs each through each script.
``--rates both`` does the same for rate rules counting in buckets (``resolution``, as shipped)
and keeping exact logs; a script from before buckets runs only the latter. The batches carry
the audit records as the proxy's do (each decision its lookup's, each outcome's its own batch;
``--audit off``: none). Run from the
repository root: ``python -m bench.bench_store_script [--against HEAD] [--employees 1000]
[--lookups 8000] [--logs shared|own|both] [--rates coarse|exact|both]``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack
import orjson
from redis.asyncio import Redis

from bench.bench_audit_cost import shipped_open_all_day
from lookup_proxy.audit.trail import stream_key
from lookup_proxy.clock import SystemClock
from lookup_proxy.employee import Employee
from lookup_proxy.guard.decision import Lookup
from lookup_proxy.guard.engine import Guard
from lookup_proxy.guard.memory import MemoryStore
from lookup_proxy.guard.primitives import ADD, ADD_MEMBERS, COUNT, COUNT_IF, MEMBERS, NOTE, Op
from lookup_proxy.guard.redis_store import CALL_SIZE, RedisStore
from lookup_proxy.guard.script_calls import ARITY, SCRIPT, WINDOW_ADDS
from lookup_proxy.policy import Policy, RateRule

ROOT = Path(__file__).resolve().parent.parent
SCRIPT_PATH = "lookup_proxy/guard/primitives.lua"


class Recorder:
    """The memory store, keeping every batch the guard sends it."""

    kind = "memory"

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.numbers_key = self.store.numbers_key
        self.batches: list[list[Op]] = []

    async def execute(self, ops: Sequence[Op]) -> list[Any]:
        self.batches.append(list(ops))
        return await self.store.execute(ops)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def exact_rates(policy: Policy) -> Policy:
    """The policy with every rate rule keeping an exact log (no ``resolution``)."""
    rules = tuple(
        rule.model_copy(update={"resolution": None}) if isinstance(rule, RateRule) else rule
        for rule in policy.rules
    )
    return policy.model_copy(update={"rules": rules})


AUDIT_LOG = stream_key("lp")
AUDIT_KEEP = 7 * 86_400.0


def audit_line(kind: str, index: int) -> str:
    """A record about as long as the proxy's (about 420 bytes of JSON: ids, pseudonym, hashes)."""
    return orjson.dumps(
        {
            "v": 1,
            "kind": kind,
            "at": "2026-12-05T21:47:27.123Z",
            "request_id": f"{index:016x}",
            "employee": "E0001",
            "store": "S001",
            "region": "R1",
            "reason": "BILLING_INQUIRY",
            "decision": "allow",
            "subject": "ab" * 32,
            "key_id": "k1",
            "last4": "1234",
            "policy": "cd" * 16,
            "chain": "host.1234.1796283601000",
            "seq": index,
            "prev": "ef" * 32,
        }
    ).decode()


async def record(
    employees: int,
    lookups: int,
    seed: int,
    shared_logs: bool = True,
    coarse: bool = True,
    audit: bool = True,
) -> list[list[Op]]:
    """The batches of ``lookups`` decisions and their outcomes (90 % found); with
    ``shared_logs=False`` as rules keeping their own logs would send them, with
    ``coarse=False`` as rate rules keeping exact logs would. With ``audit`` (as the proxy
    runs), each decision carries its lookup's record and each outcome's record follows as the
    trail's own batch."""
    recorder = Recorder()
    policy = shipped_open_all_day() if coarse else exact_rates(shipped_open_all_day())
    clock = SystemClock()
    guard = Guard(policy, recorder, clock, shared_logs=shared_logs)
    guard._in_process = None  # send tuples, as to Redis
    if audit:
        guard.audit_log, guard.audit_keep = AUDIT_LOG, AUDIT_KEEP
    rng = random.Random(seed)
    people = [
        Employee(f"E{n:04d}", f"S{n % 40:03d}", f"R{n % 6}", frozenset({"clerk"}))
        for n in range(employees)
    ]
    for index in range(lookups):
        employee = people[rng.randrange(employees)]
        number = f"010{rng.randrange(10**8):08d}"
        record = audit_line("lookup", 2 * index) if audit else None
        lookup = Lookup(f"r{index}", employee, "BILLING_INQUIRY", number, record)
        if (await guard.decide(lookup)).allowed:
            await guard.learn(lookup, rng.random() < 0.9)
            if audit:
                outcome = audit_line("outcome", 2 * index + 1)
                recorder.batches.append([("append", AUDIT_LOG, outcome, clock.now(), AUDIT_KEEP)])
    return recorder.batches


def before_add_members(ops: list[Op]) -> list[Op]:
    """``ops`` as the engine sent them before ``add_members`` and ``note``: an add and a read
    of its members, and adds whose count went unread."""
    sent: list[Op] = []
    for op in ops:
        if op[0] == ADD_MEMBERS:
            sent += [(ADD, *op[1:]), (MEMBERS, op[1], op[2] - op[4])]
        elif op[0] == NOTE:
            sent.append((ADD, *op[1:], 0))
        else:
            sent.append(op)
    return sent


SECONDS_AT = {
    ADD: (0, 2),
    ADD_MEMBERS: (0, 2),
    NOTE: (0, 2),
    COUNT: (0,),
    COUNT_IF: (0,),
    MEMBERS: (0,),
}
"""Where a primitive's arguments (after the key) hold a time or a window."""


def in_seconds_argv(ops: list[Op], argv: list[Any]) -> list[Any]:
    """A script call's arguments as the store sent them before window scores were kept in
    milliseconds (``script_calls.millis``): those times and windows in seconds, as the guard
    gave them (full double precision, which is what Redis then formatted and parsed)."""
    out: list[Any] = []
    at = 0
    for op in ops:
        code = op[0]
        arity = ARITY[code] + (2 if code in WINDOW_ADDS else 0)
        args = argv[at + 1 : at + 1 + arity]
        for position in SECONDS_AT.get(code, ()):
            args[position] = op[2 + position]
        out += [code, *args]
        at += 1 + arity
    return out


def calls_of(batches: list[list[Op]], script: str) -> list[tuple[list[str], bytes]]:
    """Script calls as the Redis store sends them to ``script``: keys, and one array of
    arguments (MessagePack, or JSON for a script from before it). A script of today's format gets what ``RedisStore._encode`` makes (one proxy
    process, every call run: the add flags, ``count_if``); one from before both, the older
    format (no flags, a count for each ``count_if``). A script from before ``add_members``
    gets the primitives the engine sent then (:func:`before_add_members`); one from before
    window scores in milliseconds, the times in seconds (:func:`in_seconds_argv`)."""
    if "'add_members'" not in script:
        batches = [before_add_members(batch) for batch in batches]
    if "'count_if'" in script:
        store = RedisStore(Redis(), timeout=1.0)

        in_seconds = "3600000" not in script  # before window scores in milliseconds

        def encode(ops: list[Op]) -> tuple[list[str], bytes]:
            [group], refreshed, _ = store._encode(ops)
            store._slots.refreshed(refreshed)
            argv = in_seconds_argv(ops, group.argv) if in_seconds else group.argv
            if "cmsgpack" not in script:  # before MessagePack arguments
                return group.keys, orjson.dumps(argv)
            if in_seconds:
                return group.keys, msgpack.packb(argv)
            return group.keys, group.payload

    elif "stepped" in script:
        raise SystemExit(
            "that script has the add flags but not count_if (a revision between 67840b0 and "
            "4d865b5): compare against 4d865b5 or later, or 58d5311 or earlier"
        )
    else:

        def encode(ops: list[Op]) -> tuple[list[str], bytes]:
            argv: list[Any] = []
            for op in ops:
                if op[0] == COUNT_IF:
                    op = (COUNT, op[1], op[2])  # what the engine sent before count_if
                argv.append(op[0])
                argv.extend(op[2:])
            return [op[1] for op in ops], orjson.dumps(argv)

    calls: list[tuple[list[str], bytes]] = []
    chunk: list[Op] = []
    for batch in batches:
        chunk.extend(batch)
        if len(chunk) >= CALL_SIZE:
            calls.append(encode(chunk))
            chunk = []
    if chunk:
        calls.append(encode(chunk))
    return calls


async def measure(
    client: Redis, script: str, calls: list[tuple[list[str], bytes]], lookups: int
) -> tuple[float, float]:
    """Script µs and commands per lookup over the second half of the calls."""
    await client.flushall()
    sha = await client.script_load(script)
    half = len(calls) // 2
    for keys, payload in calls[:half]:
        await client.evalsha(sha, len(keys), *keys, payload)
    await client.config_resetstat()
    for keys, payload in calls[half:]:
        await client.evalsha(sha, len(keys), *keys, payload)
    stats = await client.info("commandstats")
    measured = lookups * (len(calls) - half) / len(calls)
    usec = stats["cmdstat_evalsha"]["usec"]
    commands = sum(
        value["calls"]
        for name, value in stats.items()
        if name not in ("cmdstat_evalsha", "cmdstat_config", "cmdstat_info")
    )
    return usec / measured, commands / measured


async def run(port: int, scripts: dict[str, str], args: argparse.Namespace) -> None:
    logs = {"shared logs": True, "own logs": False}
    if args.logs != "both":
        logs = {f"{args.logs} logs": args.logs == "shared"}
    rates = {"coarse rates": True, "exact rates": False}
    if args.rates != "both":
        rates = {f"{args.rates} rates": args.rates == "coarse"}
    recorded = {
        f"{log}, {rate}": await record(
            args.employees, args.lookups, args.seed, shared, coarse, args.audit == "on"
        )
        for log, shared in logs.items()
        for rate, coarse in rates.items()
    }
    client = Redis(port=port)
    # A script from before the tick primitive cannot run coarse rates' batches.
    variants = {
        f"{name}, {layout}": (script, calls_of(batches, script))
        for name, script in scripts.items()
        for layout, batches in recorded.items()
        if "coarse" not in layout or "'tick'" in script
    }
    rows: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (script, calls) in variants.items():
            rows[name].append(await measure(client, script, calls, args.lookups))
    await client.aclose()
    print(
        f"{args.lookups} lookups of {args.employees} employees, "
        f"{' / '.join(str(len(calls)) for _, calls in variants.values())} script calls, "
        f"{args.rounds} rounds interleaved"
    )
    print("| script | Redis µs/lookup (min) | (median) | commands/lookup |")
    print("|---|---:|---:|---:|")
    for name, figures in rows.items():
        times = [usec for usec, _ in figures]
        print(
            f"| {name} | {min(times):.0f} | {statistics.median(times):.0f} | {figures[0][1]:.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="HEAD", help="a git revision (default HEAD)")
    parser.add_argument("--employees", type=int, default=1000)
    parser.add_argument("--lookups", type=int, default=8000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--audit",
        choices=("on", "off"),
        default="on",
        help="the lookups' and outcomes' audit records in the batches, as the proxy sends them",
    )
    layouts = {
        "logs": ("shared", "own", "rules sharing their logs (as shipped), keeping their own"),
        "rates": (
            "coarse",
            "exact",
            "rate rules counting in buckets where the policy gives a resolution (as shipped), "
            "keeping exact logs",
        ),
    }
    for name, (shipped, other, what) in layouts.items():
        parser.add_argument(
            f"--{name}",
            choices=(shipped, other, "both"),
            default=shipped,
            help=f"record batches with {what}, or both (each script runs each)",
        )
    args = parser.parse_args()
    other = subprocess.run(
        ["git", "show", f"{args.against}:{SCRIPT_PATH}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    scripts = {f"at {args.against}": other, "working tree": SCRIPT}
    from tests.servers import start_redis

    with tempfile.TemporaryDirectory() as work:
        server = start_redis(Path(work))
        try:
            asyncio.run(run(server.port, scripts, args))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
