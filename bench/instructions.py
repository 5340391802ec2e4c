"""Instructions a lookup: the cost of a guarded lookup counted by valgrind, which a busy or slow
machine does not move.

bench/perf's CPU times move by up to 2x between runs on a shared 2-core VM, with the machine's
speed, so a change worth a few percent cannot be told from noise there. Counted instructions do
not depend on the machine's speed: the same build and workload give the same count to within
about 1 %. This runs each target of bench/perf (the bare aiohttp pass-through, lookup-proxy with
the memory store, with the Redis store) under ``valgrind --tool=callgrind`` with counting off,
sends every employee's token once and ``--warmup`` lookups (so the token and plan caches and
connections are in their steady state), turns counting on (``callgrind_control -i on``), sends
``--lookups`` lookups at concurrency 8 (a different random customer each, all allowed and
forwarded, as in bench/perf), waits a second for the outcomes learnt after the answers, turns
counting off and reads the total. With ``--redis-server`` the Redis target's redis-server runs
under callgrind too, counted over the same lookups.

Printed per target: instructions a lookup (in the proxy process: parsing, the walk, learning, the
audit records, the event loop and system-call entry; not the kernel), the ratio to bare, and
where ``--annotate N`` asks for it the N functions with the most instructions, inclusive
(``callgrind_annotate``), for where a change should go, and where ``--breakdown`` asks for it
the lookup's instructions by the walk's steps (identify, justify, the audit records, decide,
forward, learn: the compiled functions that are those steps, inclusive) and what is left
(aiohttp's server, the event loop, the Redis client, which run interpreted or in C).
``--against CHECKOUT`` measures lookup-proxy as built in another checkout too (``git worktree
add``, then ``python setup.py build_ext --inplace`` there), alternating with this one; the count,
unlike the time, also compares across invocations.

Needs ``valgrind`` (Debian: ``apt-get install valgrind``) and ``redis-server``. Valgrind runs a
process about fifty times slower: 1,000 lookups take about 15 s a target.
``python -m bench.instructions [--targets bare,memory,redis] [--lookups 1000] [--redis-server]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench.perf import (
    REASON,
    ROOT,
    Process,
    free_port,
    policy_copy,
    prepare,
    start,
    start_backend,
)

CONCURRENCY = 8
VALGRIND = ("valgrind", "--tool=callgrind", "--instr-atstart=no")
SETTLE = 1.0
"""Seconds after the last answer for the outcomes learnt after it (counted: they are the
lookup's)."""


async def send(url: str, tokens: Sequence[str], numbers: Sequence[str], first: int, n: int) -> None:
    """``n`` lookups, ``CONCURRENCY`` at a time, each an employee's (rotating) random customer;
    an answer other than 200 stops the run (the count would not be a guarded lookup's)."""
    import aiohttp

    queue = list(range(first, first + n))

    async def worker(session: aiohttp.ClientSession) -> None:
        while queue:
            i = queue.pop()
            headers = {
                "Authorization": f"Bearer {tokens[i % len(tokens)]}",
                "X-Lookup-Reason": REASON,
            }
            number = numbers[(i * 7919) % len(numbers)]
            async with session.get(f"{url}/customers/{number}", headers=headers) as answer:
                await answer.read()
                if answer.status != 200:
                    raise SystemExit(f"lookup {i} answered {answer.status}: not a guarded lookup")

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(CONCURRENCY)))


def counting(pids: Sequence[int], on: bool) -> None:
    for pid in pids:
        subprocess.run(
            ["callgrind_control", "-i", "on" if on else "off", str(pid)],
            capture_output=True,
            check=True,
        )


def total(pid: int, out: Path) -> int:
    """The instructions counted so far in process ``pid``: a dump, then every dump's total."""
    subprocess.run(["callgrind_control", "-d", str(pid)], capture_output=True, check=True)
    counted = 0
    for dump in out.parent.glob(out.name + "*"):
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):  # the dump's (a dump zeroes the counters)
                counted += int(line.split()[1])
                break
    return counted


def measured_dump(out: Path) -> Path:
    dumps = [p for p in out.parent.glob(out.name + ".*") if p.suffix[1:].isdigit()]
    return max(dumps, key=lambda p: int(p.suffix[1:]))  # the measured lookups' dump


def annotate(out: Path, top: int) -> str:
    done = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=99", str(measured_dump(out))],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    start_at = next((i for i, line in enumerate(lines) if "file:function" in line), 0)
    return "\n".join(lines[start_at : start_at + top + 1])


WALK = "CPyDef_app___lookup_Proxy_gen_____mypyc_generator_helper__"
"""The compiled ``Proxy.lookup``: the walk, every part of it called from there."""

PARTS: tuple[tuple[str, bool, tuple[str, ...]], ...] = (
    # (part, whether the walk calls it, the compiled functions whose inclusive counts are it)
    ("identify (the token)", True, ("CPyDef_identify___TokenVerifier___verify",)),
    (
        "the request's shape (framing, target)",
        True,
        ("CPyDef_request_shape___check_framing", "CPyDef_request_shape___lookup_target"),
    ),
    ("justify (the reason)", True, ("CPyDef_justify___ReasonCatalogue___justify",)),
    (
        "the attempt's audit record (made, staged)",
        True,
        ("CPyDef_trail___AuditTrail___lookup", "CPyDef_app___Proxy____stage_attempt"),
    ),
    (
        "guard: decide",
        True,
        ("CPyDef_fallback___decide_Failover_gen_____mypyc_generator_helper__",),
    ),
    (
        "forward (request to the backend)",
        True,
        ("CPyDef_forward___forward_UpstreamClient_gen_____mypyc_generator_helper__",),
    ),
    (
        "forward (the backend's answer read)",
        False,
        ("CPyPy_exchange___Connection___data_received",),
    ),
    ("guard: learn (its task made)", True, ("CPyDef_app___Proxy____learn",)),
    ("guard: learn", False, ("CPyDef_app____learn_now_Proxy_gen_____mypyc_generator_helper__",)),
    ("the outcome's audit record", True, ("CPyDef_record___Recorder___record",)),
    (
        "the audit records written (a turn's together)",
        False,
        ("CPyDef_trail____flush_soon_AuditTrail_gen_____mypyc_generator_helper__",),
    ),
)


def inclusive_costs(dump: Path) -> dict[str, int]:
    """Each function's inclusive instructions in ``dump``, its pieces in other files (code
    inlined from headers, which callgrind_annotate lists apart) added up."""
    done = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", "--auto=no", str(dump)],
        capture_output=True,
        text=True,
        check=False,
    )
    pieces: dict[tuple[str, str], int] = {}
    for line in done.stdout.splitlines():
        count, _, rest = line.strip().partition(" ")
        if not count[:1].isdigit() or "(" not in rest:
            continue
        where = rest.split(")", 1)[1].strip().split(" [", 1)[0]
        file, _, name = where.rpartition(":")
        # One function's piece can be listed twice, under an absolute and a relative path.
        piece = (Path(file).name, name)
        pieces[piece] = max(pieces.get(piece, 0), int(count.replace(",", "")))
    costs: dict[str, int] = {}
    for (_, name), count in pieces.items():
        costs[name] = costs.get(name, 0) + count
    return costs


def breakdown(out: Path, lookups: int, total_per_lookup: float) -> str:
    """Where a lookup's instructions go, by the compiled functions that are the walk's steps
    (mypyc's names: a pure-Python build has none, and its rows say so)."""
    costs = inclusive_costs(measured_dump(out))
    walk = costs.get(WALK)
    if walk is None:
        return "  (no compiled Proxy.lookup in the profile: a pure-Python build has no breakdown)"
    rows: list[tuple[str, float]] = []
    inside = outside = 0
    for part, in_walk, names in PARTS:
        counted = sum(costs.get(name, 0) for name in names)
        rows.append((part, counted / lookups))
        if in_walk:
            inside += counted
        else:
            outside += counted
    rows.append(
        ("the walk's own (app.py: metrics, records' fields, answers)", (walk - inside) / lookups)
    )
    rest = total_per_lookup - (walk + outside) / lookups
    rows.append(("aiohttp's server, the event loop, the store's client, the rest", rest))
    lines = ["| part | instructions a lookup | share |", "|---|---:|---:|"]
    lines += [f"| {part} | {n:,.0f} | {n / total_per_lookup:.1%} |" for part, n in rows]
    return "\n".join(lines)


@contextlib.contextmanager
def target(args: argparse.Namespace, kind: str, tree: Path, directory: Path, env: dict[str, str],
           backend_url: str) -> Iterator[tuple[str, Process, Path, list[tuple[int, Path]]]]:  # fmt: skip
    """The target's process under callgrind, run from checkout ``tree`` (and, for Redis, its
    redis-server, counted or not)."""
    port = free_port()
    run = f"{kind}-{len(list(directory.glob('callgrind-*.out')))}"
    out = directory / f"callgrind-{run}.out"
    wrapped = [*VALGRIND, f"--callgrind-out-file={out}"]
    others: list[tuple[int, Path]] = []
    server = None
    env = dict(env)
    if kind == "bare":
        argv = [sys.executable, "-m", "bench.perf", "--serve-bare", str(port),
                "--upstream", backend_url]  # fmt: skip
        ready = f"http://127.0.0.1:{port}/healthz"
    else:
        argv = [
            sys.executable, "-m", "lookup_proxy", "serve",
            "--config", str(policy_copy(directory, tree / "config" / "policy.toml")),
            "--port", str(port),
            "--upstream-url", backend_url,
            "--store-kind", kind,
            "--audit-archive", str(directory / f"audit-{kind}"),
        ]  # fmt: skip
        ready = f"http://127.0.0.1:{port}/readyz"
        if kind == "redis":
            from tests.servers import start_redis

            server_out = directory / f"server-{run}.out"
            wrapper = (*VALGRIND, f"--callgrind-out-file={server_out}") if args.redis_server else ()
            server = start_redis(directory / f"redis-{run}", wrapper=wrapper, wait=60)
            env["LOOKUP_PROXY_REDIS_URL"] = server.url
            if args.redis_server:
                others.append((server.process.pid, server_out))
    process = start(run, [*wrapped, *argv], env, directory, ready, cwd=tree)
    try:
        yield f"http://127.0.0.1:{port}", process, out, others
    finally:
        process.stop()
        if server is not None:
            server.stop()


def measure(args: argparse.Namespace, kind: str, tree: Path, directory: Path, env: dict[str, str],
            backend_url: str, tokens: list[str], numbers: list[str]) -> dict[str, float]:  # fmt: skip
    with target(args, kind, tree, directory, env, backend_url) as (url, process, out, others):
        asyncio.run(send(url, tokens, numbers, 0, len(tokens)))  # every token once
        asyncio.run(send(url, tokens, numbers, len(tokens), args.warmup))
        pids = [process.popen.pid, *(pid for pid, _ in others)]
        before = {pid: total(pid, path) for pid, path in [(pids[0], out), *others]}
        counting(pids, True)
        asyncio.run(send(url, tokens, numbers, len(tokens) + args.warmup, args.lookups))
        time.sleep(SETTLE)
        counting(pids, False)
        counts = {pid: total(pid, path) - before[pid] for pid, path in [(pids[0], out), *others]}
        result = {"proxy": counts[pids[0]] / args.lookups}
        for pid, _ in others:
            result["redis-server"] = counts[pid] / args.lookups
        if args.annotate:
            print(f"\n{kind}: the {args.annotate} functions with the most instructions, inclusive")
            print(annotate(out, args.annotate), flush=True)
        if args.breakdown and kind != "bare":
            print(f"\n{kind}: where a lookup's instructions go ({tree})")
            print(breakdown(out, args.lookups, result["proxy"]), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="bare,memory,redis")
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--employees", type=int, default=1000)
    parser.add_argument("--redis-server", action="store_true")
    parser.add_argument("--annotate", type=int, default=0, metavar="N")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="where a lookup's instructions go: the walk's steps, learning, the audit records' "
        "writing, and what is left (aiohttp's server, the loop, the store's client)",
    )
    parser.add_argument("--keep", type=Path, metavar="DIR", help="copy the callgrind files here")
    parser.add_argument(
        "--against",
        type=Path,
        metavar="CHECKOUT",
        help="also measure lookup-proxy as built in another checkout (its compiled modules "
        "built in place), alternating with this one: two builds compared in one invocation",
    )
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install valgrind")
    kinds = args.targets.split(",")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as name:
        directory = Path(name)
        setup = argparse.Namespace(employees=args.employees)
        tokens, numbers, env = prepare(setup, directory)
        backend, backend_url = start_backend(env, directory)
        trees = [("", ROOT)] + ([(" (against)", args.against.resolve())] if args.against else [])
        try:
            for kind in kinds:
                for suffix, tree in trees if kind != "bare" else trees[:1]:
                    label = kind + suffix
                    result = measure(args, kind, tree, directory, env, backend_url, tokens, numbers)
                    results[label] = result
                    server = result.get("redis-server")
                    print(f"{label:18} {result['proxy']:11,.0f} instructions a lookup"
                          + ("" if server is None else f", redis-server {server:11,.0f}"),
                          flush=True)  # fmt: skip
        finally:
            backend.stop()
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                for counted in [*directory.glob("callgrind-*"), *directory.glob("server-*")]:
                    shutil.copy(counted, args.keep / counted.name)
    bare = results.get("bare", {}).get("proxy")
    print(
        f"\n{args.lookups} lookups a target, {args.employees} employees, concurrency {CONCURRENCY}"
    )
    print(
        "\n| target | instructions a lookup | × bare | redis-server a lookup |\n|---|---:|---:|---:|"
    )
    for kind, result in results.items():
        ratio = f"{bare / result['proxy']:.2f}" if bare else "—"
        server = result.get("redis-server")
        print(f"| {kind} | {result['proxy']:,.0f} | {ratio} | "
              f"{'—' if server is None else f'{server:,.0f}'} |")  # fmt: skip


if __name__ == "__main__":
    main()
