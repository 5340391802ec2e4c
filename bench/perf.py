"""What a guarded lookup costs next to a bare Python pass-through, end to end over HTTP (issue 12).

Starts the demo backend (``lookup-proxy demo-backend``), a bare aiohttp pass-through written here
(``GET /customers/{number}`` forwarded to the backend: the floor for a Python proxy) and
lookup-proxy (``lookup-proxy serve``: a temporary copy of the shipped policy, open all day, fresh
audit keys, a temporary audit archive), first with ``--store-kind memory``, then with
``--store-kind redis`` on a private redis-server. Each target is driven, in rounds interleaved
(bare, memory, redis, bare, ...), by:

- ``wrk`` at saturation: 32 connections, a Lua script rotating over 4,000 minted employee tokens
  (``BILLING_INQUIRY``) and random numbers of the demo backend's customers, so every lookup is
  allowed and forwarded (the share of allowed answers, 2xx or 404, is printed: a lower one means
  the guard refused and the throughput is not that of guarded lookups);
- an open-loop generator here at a fixed rate (``--rate``, 500 lookups/s; ``--rate 100,500``
  measures each, lowest first): each request's latency runs from its *scheduled* send time, so a
  stall of the target (or of the generator) delays every request scheduled behind it and shows
  in p99 (no coordinated omission). ``p99 added`` subtracts bare's. A rate above 70 % of a
  target's saturation throughput is called out: its latency there is queueing.

Before each measurement every token is used once (the proxy's token cache warm, as in a steady
state where a clerk's token was first seen hours ago), then wrk runs ``--warmup`` seconds. Every
lookup-proxy run starts a fresh process (memory store) or on an emptied Redis, so rate
windows never carry over between rounds. Per target it prints throughput, p50/p99/p99.9, the ratio
to bare, the p99 added at 500/s, the proxy's and the backend's CPU per lookup; for Redis also
guard batches (the proxy's ``lookup_proxy_store_roundtrip_seconds`` count: a decision, an outcome,
the peer tallies; batches asked for in one turn of the event loop share one round trip), script calls and
commands (``INFO commandstats``, commands inside scripts included) and redis-server CPU
(``INFO cpu``) per lookup, from deltas over the saturation phase.

Needs ``wrk`` (Debian: ``apt-get install wrk``) and ``redis-server``. Run from the repository
root: ``python -m bench.perf [--duration 10] [--rounds 3] [--workers 1] [--rate 500]``.
``--workers N`` (N > 1) adds a target: lookup-proxy with the Redis store as ``serve --workers N``
(the memory store stays at one worker: serve refuses more), measured in the same rounds as the
one-worker Redis target, and prints the scaling, N workers over one, in throughput and CPU per
lookup. ``--targets bare,memory`` measures a subset; ``--keep-logs DIR`` keeps the processes'
logs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "config" / "policy.toml"
CONNECTIONS = 32
EMPLOYEES = 4000
NUMBERS = 20_000
REASON = "BILLING_INQUIRY"
BACKEND_SEED = 7  # the demo backend's default: the sampled numbers are its customers
OPEN_LOOP_CONNECTIONS = 256  # under [server] max_connections (500)
TARGETS = ("bare", "memory", "redis")
POOL = "redis-workers"
"""The Redis target as ``serve --workers N`` (added with ``--workers N``, N > 1)."""
WRK_HINT = (
    "wrk not found on PATH: bench/perf drives the targets with it (Debian: apt-get install wrk)"
)


# --- the bare pass-through -------------------------------------------------------------------


def serve_bare(port: int, upstream: str) -> None:
    """The floor: the lookup forwarded as is, the answer read whole and returned, nothing else."""
    import aiohttp
    import uvloop
    from aiohttp import web

    session_key = web.AppKey("session", aiohttp.ClientSession)

    async def customer(request: web.Request) -> web.Response:
        url = f"{upstream}/customers/{request.match_info['number']}"
        async with request.app[session_key].get(url) as answer:
            body = await answer.read()
            content_type = answer.headers.get("Content-Type", "application/json")
            return web.Response(
                status=answer.status, body=body, headers={"Content-Type": content_type}
            )

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/customers/{number}", customer)
        app.router.add_get("/healthz", healthz)
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))  # pool_size
        app[session_key] = session
        await serve_until_sigterm(app, port)
        await session.close()

    uvloop.run(main())


async def serve_until_sigterm(app: Any, port: int) -> None:
    """Serve an aiohttp ``app`` on 127.0.0.1:``port`` until SIGTERM, without an access log."""
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


# --- processes -------------------------------------------------------------------------------


def free_port() -> int:
    from tests.servers import free_port as pick

    return pick()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its living descendants (a pre-fork master's workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        child = int(entry.name)
        children.setdefault(int(fields[1]), []).append(child)
        times[child] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += times.get(current, 0.0)
        todo.extend(children.get(current, []))
    return total


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def cpu(self) -> float:
        return _cpu_seconds(self.popen.pid)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else "(no log)"

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)


def start(
    name: str, argv: Sequence[str], env: dict[str, str], logs: Path, ready: str, cwd: Path = ROOT
) -> Process:
    """``argv`` run in ``cwd`` (so ``python -m lookup_proxy`` is that checkout's), once
    ``ready`` answers 200."""
    log = logs / f"{name}.log"
    with log.open("ab") as sink:
        popen = subprocess.Popen(
            list(argv),
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
        )
    process = Process(name, popen, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise SystemExit(f"{name} exited with {popen.returncode}:\n{process.log_tail()}")
        try:
            with urllib.request.urlopen(ready, timeout=2) as answer:
                if answer.status == 200:
                    return process
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    process.stop()
    raise SystemExit(f"{name} did not answer {ready} within 60 s:\n{process.log_tail()}")


def start_backend(env: dict[str, str], logs: Path) -> tuple[Process, str]:
    """The demo backend (its customers are the numbers ``prepare`` samples) and its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "lookup_proxy", "demo-backend", "--port", str(port),
            "--seed", str(BACKEND_SEED)]  # fmt: skip
    return start("backend", argv, env, logs, f"{url}/healthz"), url


def store_roundtrips(port: int) -> float:
    """The proxy's count of guard batches sent to its store (one round trip each)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("lookup_proxy_store_roundtrip_seconds_count")
    )


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text: str = answer.read().decode()
    return text


def loop_lag(port: int) -> tuple[int, float, float]:
    """The proxy's event-loop lag samples since it started serving (``loop_lag.py``): how many,
    and the bucket bounds under which the 99th percentile and the longest fell."""
    buckets: list[tuple[float, float]] = []
    for line in _metrics(port).splitlines():
        if line.startswith("lookup_proxy_event_loop_lag_seconds_bucket"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(bound), float(line.rsplit(" ", 1)[1])))
    count = max((c for _, c in buckets), default=0.0)
    p99 = min((b for b, c in buckets if c >= 0.99 * count), default=0.0)
    worst = min((b for b, c in buckets if c >= count), default=0.0)
    return int(count), p99, worst


def gc_pauses(port: int) -> dict[str, tuple[int, float, float]]:
    """Per GC generation since the proxy started serving: (pauses, mean seconds, the bucket
    bound under which the longest fell), from its ``lookup_proxy_gc_pause_seconds``."""
    text = _metrics(port)
    buckets: dict[str, list[tuple[float, float]]] = {}
    counts: dict[str, float] = {}
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("lookup_proxy_gc_pause_seconds"):
            continue
        name, value = line.rsplit(" ", 1)
        generation = name.split('generation="', 1)[1].split('"', 1)[0]
        if "_bucket" in name:
            bound = name.split('le="', 1)[1].split('"', 1)[0]
            buckets.setdefault(generation, []).append((float(bound), float(value)))
        elif name.startswith("lookup_proxy_gc_pause_seconds_count"):
            counts[generation] = float(value)
        elif name.startswith("lookup_proxy_gc_pause_seconds_sum"):
            sums[generation] = float(value)
    found = {}
    for generation, count in sorted(counts.items()):
        worst = min((b for b, c in buckets.get(generation, []) if c >= count), default=0.0)
        found[generation] = (int(count), sums[generation] / count if count else 0.0, worst)
    return found


# --- load ------------------------------------------------------------------------------------


def wrk_script(directory: Path, tokens: Sequence[str], numbers: Sequence[str]) -> Path:
    """Each request: the next employee's token (rotating), a random customer number."""
    quoted = ",\n".join(f'"{t}"' for t in tokens)
    listed = ",".join(f'"{n}"' for n in numbers)
    script = directory / "lookups.lua"
    script.write_text(
        f"""local tokens = {{
{quoted}
}}
local numbers = {{{listed}}}
local reason = "{REASON}"
local threads = {{}}
local counter = 0
statuses = {{}}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  counter = id * 997
  math.randomseed(20211 + id)
end

function request()
  counter = counter + 1
  local headers = {{}}
  headers["Authorization"] = "Bearer " .. tokens[(counter % #tokens) + 1]
  headers["X-Lookup-Reason"] = reason
  return wrk.format("GET", "/customers/" .. numbers[math.random(#numbers)], headers)
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
  local merged = {{}}
  for _, thread in ipairs(threads) do
    local seen = thread:get("statuses")
    if seen then
      for status, count in pairs(seen) do merged[status] = (merged[status] or 0) + count end
    end
  end
  local parts = {{}}
  for status, count in pairs(merged) do
    parts[#parts + 1] = string.format('"%s": %d', status, count)
  end
  io.write(string.format(
    'PERF {{"requests": %d, "duration_us": %d, "errors": %d, "p50_us": %d, "p99_us": %d, '
      .. '"p999_us": %d, "max_us": %d, "statuses": {{%s}}}}\\n',
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max,
    table.concat(parts, ", ")))
end
""",
        encoding="utf-8",
    )
    return script


def run_wrk(url: str, script: Path, seconds: float, threads: int) -> dict[str, Any]:
    command = [
        "wrk", f"-t{threads}", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s",
        "--timeout", "5s", "-s", str(script), url,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("PERF "):
            result: dict[str, Any] = json.loads(line[5:])
            return result
    raise SystemExit(f"wrk gave no result (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")


@dataclass
class OpenLoop:
    latencies: list[float] = field(default_factory=list)  # seconds from the scheduled send
    lateness: list[float] = field(default_factory=list)  # generator: actual send - scheduled
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0


async def every_token_once(url: str, tokens: Sequence[str], numbers: Sequence[str]) -> None:
    """One lookup per employee, 32 at a time: every token verified and cached before measuring,
    as in a steady state where each clerk's token was first seen hours ago."""
    import aiohttp

    queue = list(enumerate(tokens))

    async def worker(session: aiohttp.ClientSession) -> None:
        while queue:
            i, token = queue.pop()
            headers = {"Authorization": f"Bearer {token}", "X-Lookup-Reason": REASON}
            async with session.get(
                f"{url}/customers/{numbers[i % len(numbers)]}", headers=headers
            ) as answer:
                await answer.read()

    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(CONNECTIONS)))


async def open_loop(
    url: str, rate: float, seconds: float, tokens: Sequence[str], numbers: Sequence[str], seed: int
) -> OpenLoop:
    """``rate`` lookups a second on a fixed schedule, whatever the answers' latency."""
    import aiohttp

    result = OpenLoop()
    rng = random.Random(seed)
    total = int(rate * seconds)
    plan = [
        (
            f"{url}/customers/{numbers[rng.randrange(len(numbers))]}",
            {
                "Authorization": f"Bearer {tokens[(seed * 997 + i) % len(tokens)]}",
                "X-Lookup-Reason": REASON,
            },
        )
        for i in range(total)
    ]
    connector = aiohttp.TCPConnector(limit=OPEN_LOOP_CONNECTIONS)
    timeout = aiohttp.ClientTimeout(total=10)
    running: set[asyncio.Task[None]] = set()

    async def one(target: str, headers: dict[str, str], scheduled: float) -> None:
        result.lateness.append(time.perf_counter() - scheduled)
        try:
            async with session.get(target, headers=headers) as answer:
                await answer.read()
                result.statuses[answer.status] += 1
        except (aiohttp.ClientError, TimeoutError):
            result.errors += 1
        result.latencies.append(time.perf_counter() - scheduled)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        begin = time.perf_counter() + 0.05
        for i, (target, headers) in enumerate(plan):
            scheduled = begin + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(target, headers, scheduled))
            running.add(task)
            task.add_done_callback(running.discard)
        await asyncio.gather(*running)
    return result


# --- one run ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


Statuses = dict[str, int] | Counter[int]  # wrk's (status as text) or the open loop's


def _allowed(status: str | int) -> bool:
    """A lookup the guard let through: the backend's 2xx (found) or 404 (not found)."""
    return 200 <= int(status) < 300 or int(status) == 404


def allowed_share(statuses: Statuses, errors: int) -> float:
    total = sum(statuses.values()) + errors
    allowed = sum(n for s, n in statuses.items() if _allowed(s))
    return allowed / total if total else 0.0


def refused(statuses: Statuses, errors: int) -> str:
    """The answers that were not allowed lookups, e.g. ``503×120, socket errors×3``."""
    named = sorted((str(s), n) for s, n in statuses.items())
    parts = [f"{s}×{n}" for s, n in named if not _allowed(s)]
    if errors:
        parts.append(f"socket errors×{errors}")
    return ", ".join(parts)


def redis_counters(client: Any) -> tuple[float, Counter[str]]:
    """(redis-server CPU seconds, calls per command) so far, INFO's own calls left out."""
    cpu = client.info("cpu")
    stats = client.info("commandstats")
    calls: Counter[str] = Counter()
    for name, values in stats.items():
        command = name.removeprefix("cmdstat_")
        if not command.startswith("info"):
            calls[command] = int(values["calls"])
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), calls


class RedisProbe:
    """Deltas of redis-server CPU, its commands and the proxy's guard batches."""

    def __init__(self, url: str, proxy_port: int) -> None:
        import redis

        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.proxy_port = proxy_port
        self.cpu, self.calls = redis_counters(self.client)
        self.trips = store_roundtrips(proxy_port)

    def per_lookup(self, lookups: int) -> dict[str, Any]:
        cpu, calls = redis_counters(self.client)
        trips = store_roundtrips(self.proxy_port)
        self.client.close()
        delta = calls - self.calls
        scripts = sum(n for c, n in delta.items() if c.startswith(("eval", "fcall")))
        return {
            "trips": (trips - self.trips) / lookups,
            "scripts": scripts / lookups,
            "commands": sum(delta.values()) / lookups,
            "cpu_us": (cpu - self.cpu) / lookups * 1e6,
            "top": {c: n / lookups for c, n in delta.most_common(8)},
        }


@dataclass
class Round:
    target: str
    rate: float  # saturation lookups/s
    wrk: dict[str, Any]
    proxy_cpu_us: float
    backend_cpu_us: float
    open: dict[float, OpenLoop]  # by rate
    redis: dict[str, Any] | None = None
    gc: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    """GC pauses by generation over the round (lookup-proxy only): count, mean, worst bound."""
    lag: tuple[int, float, float] | None = None
    """Event-loop lag samples over the round (lookup-proxy only): count, p99 and longest bound."""


@dataclass
class Setup:
    args: argparse.Namespace
    directory: Path
    env: dict[str, str]
    tokens: list[str]
    numbers: list[str]
    script: Path
    backend: Process
    backend_url: str
    bare_port: int
    redis: Any = None  # tests.servers.RedisServer
    workers: int = 1


def policy_copy(directory: Path, shipped: Path = SHIPPED) -> Path:
    """The shipped policy, open around the clock (as tests/test_cli.py's ``open_all_day``);
    ``shipped``: another checkout's, for its own build (``bench/instructions.py --against``)."""
    text = shipped.read_text(encoding="utf-8")
    opening = 'open = "09:30"\nclose = "21:30"'
    if opening not in text:
        raise SystemExit("the shipped [hours] changed; update bench/perf.py's policy_copy")
    copy = directory / "policy.toml"
    copy.write_text(text.replace(opening, 'open = "00:00"\nclose = "24:00"'), encoding="utf-8")
    return copy


@contextlib.contextmanager
def target_process(setup: Setup, target: str, round_: int) -> Iterator[tuple[int, Process | None]]:
    if target == "bare":
        yield setup.bare_port, None
        return
    port = free_port()
    archive = setup.directory / f"audit-{target}-{round_}"
    kind = "redis" if target.startswith("redis") else target
    argv = [
        sys.executable, "-m", "lookup_proxy", "serve",
        "--config", str(setup.directory / "policy.toml"),
        "--port", str(port),
        "--upstream-url", setup.backend_url,
        "--store-kind", kind,
        "--audit-archive", str(archive),
    ]  # fmt: skip
    if target == POOL:
        argv += ["--workers", str(setup.workers)]
    if kind == "redis":
        import redis

        client = redis.Redis.from_url(setup.redis.url)
        client.flushall()  # fresh windows every round, as the memory store's fresh process
        client.close()
    process = start(
        f"proxy-{target}-{round_}",
        argv,
        setup.env,
        setup.directory,
        f"http://127.0.0.1:{port}/readyz",
    )
    try:
        yield port, process
    finally:
        process.stop()


def measure(setup: Setup, target: str, round_: int, bare: Process) -> Round:
    args = setup.args
    with target_process(setup, target, round_) as (port, process):
        url = f"http://127.0.0.1:{port}"
        proxy = process or bare
        runner = _loop_runner()
        runner(every_token_once(url, setup.tokens, setup.numbers))  # the token cache
        if args.warmup > 0:  # connections, script load, allocator: a steady state
            run_wrk(url, setup.script, args.warmup, args.wrk_threads)
        probe = RedisProbe(setup.redis.url, port) if target.startswith("redis") else None
        cpu, backend_cpu = proxy.cpu, setup.backend.cpu
        wrk = run_wrk(url, setup.script, args.duration, args.wrk_threads)
        cpu, backend_cpu = proxy.cpu - cpu, setup.backend.cpu - backend_cpu
        done = wrk["requests"]
        redis_stats = probe.per_lookup(done) if probe is not None else None
        opened: dict[float, OpenLoop] = {}
        for n, rate in enumerate(args.rate):
            time.sleep(0.5)  # outcomes learnt after the last answers settle
            seed = (round_ * 31 + n) * 7
            opened[rate] = runner(
                open_loop(url, rate, args.duration, setup.tokens, setup.numbers, seed)
            )
        pauses = gc_pauses(port) if process is not None else {}
        lag = loop_lag(port) if process is not None else None
    rate = done / (wrk["duration_us"] / 1e6)
    return Round(
        target,
        rate,
        wrk,
        cpu / done * 1e6,
        backend_cpu / done * 1e6,
        opened,
        redis_stats,
        pauses,
        lag,
    )


def round_line(result: Round, round_: int) -> str:
    wrk = result.wrk
    line = (
        f"round {round_ + 1} {result.target:<6} {result.rate:8,.0f} lookups/s "
        f"(allowed {allowed_share(wrk['statuses'], wrk['errors']):.1%}), "
        f"proxy {result.proxy_cpu_us:.0f} µs CPU/lookup"
    )
    for rate, opened in result.open.items():
        line += (
            f"; at {rate:g}/s p99 {ms(percentile(opened.latencies, 99))} ms "
            f"(allowed {allowed_share(opened.statuses, opened.errors):.1%})"
        )
    phases = [("saturation", wrk["statuses"], wrk["errors"])]
    phases += [(f"{r:g}/s", o.statuses, o.errors) for r, o in result.open.items()]
    for phase, statuses, errors in phases:
        if refused(statuses, errors):
            line += f"\n    not allowed at {phase}: {refused(statuses, errors)}"
    for rate in result.open:
        if rate > 0.7 * result.rate:
            line += (
                f"\n    {rate:g}/s is {rate / result.rate:.0%} of this target's saturation "
                "throughput here: its latency at that rate is mostly queueing"
            )
    return line


def _loop_runner() -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run
    return uvloop.run


# --- report ----------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def open_loop_table(by: dict[str, list[Round]], names: dict[str, str], rate: float) -> None:
    pooled = {t: [x for r in rs for x in r.open[rate].latencies] for t, rs in by.items()}
    rounds = {t: [percentile(r.open[rate].latencies, 99) for r in rs] for t, rs in by.items()}
    p99 = {t: statistics.median(v) for t, v in rounds.items()}
    print()
    print(
        f"Open loop at {rate:g}/s: latency from each request's scheduled send time, all rounds "
        "pooled, but p99 is the median of the rounds' p99 (each round in brackets: one round "
        "hit by a neighbour's burst moves it less); `p99 added` is the target's less bare's; "
        "`send late` is how far behind schedule the generator itself sent (in the latency)."
    )
    print()
    print(
        "| target | requests | allowed | p50 ms | p99 ms | p99.9 ms | max ms | p99 added ms | send late p99 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t, rs in by.items():
        lat = pooled[t]
        statuses: Counter[int] = Counter()
        for r in rs:
            statuses.update(r.open[rate].statuses)
        errors = sum(r.open[rate].errors for r in rs)
        late = [x for r in rs for x in r.open[rate].lateness]
        added = f"{(p99[t] - p99['bare']) * 1000:+.2f}" if "bare" in p99 else "—"
        print(
            f"| {names[t]} | {len(lat)} | {allowed_share(statuses, errors):.1%} | "
            f"{ms(percentile(lat, 50))} | {ms(p99[t])} ({', '.join(ms(x) for x in rounds[t])}) | "
            f"{ms(percentile(lat, 99.9))} | "
            f"{ms(max(lat))} | {added} | {ms(percentile(late, 99))} |"
        )


def gc_table(by: dict[str, list[Round]], names: dict[str, str]) -> None:
    """GC pauses per generation in each lookup-proxy round (serve freezes its start-up objects
    and raises the thresholds: gc_tuning.py), and the event loop's lag over it (loop_lag.py:
    every pause, the collector's or not)."""
    rows = [(t, n, r) for t, rs in by.items() for n, r in enumerate(rs, 1) if r.gc]
    if not rows:
        return
    print()
    print("GC pauses over each round (saturation and open loop), by generation: count, mean, ")
    print("and the bucket the longest fell under.")
    print()
    print("Event-loop lag (loop_lag.py: how late a probe due every 0.1 s ran, whatever paused the")
    print("loop): samples, and the bucket under which their 99th percentile and the longest fell.")
    print()
    print("| target | round | gen 0 | gen 1 | gen 2 | event-loop lag |")
    print("|---|---:|---|---|---|---|")
    for t, n, r in rows:
        cells = []
        for generation in ("0", "1", "2"):
            count, mean, worst = r.gc.get(generation, (0, 0.0, 0.0))
            cells.append(f"{count} × {mean * 1000:.2f} ms, ≤ {worst * 1000:g} ms" if count else "0")
        if r.lag is not None:
            samples, p99, longest = r.lag
            cells.append(f"{samples}: p99 ≤ {p99 * 1000:g} ms, longest ≤ {longest * 1000:g} ms")
        else:
            cells.append("-")
        print(f"| {names[t]} | {n} | {' | '.join(cells)} |")


def report(rounds: list[Round], setup: Setup, started: str, load_before: str, speed: float) -> None:
    args = setup.args
    by: dict[str, list[Round]] = {t: [r for r in rounds if r.target == t] for t in args.targets}
    names = {
        "bare": "bare aiohttp pass-through",
        "memory": "lookup-proxy, memory store",
        "redis": "lookup-proxy, Redis store",
        POOL: f"lookup-proxy, Redis store, {setup.workers} workers",
    }
    rate = {t: statistics.median(r.rate for r in rs) for t, rs in by.items()}

    print()
    print(
        f"## bench/perf — {started}, {args.rounds} round(s) interleaved, {args.duration:g} s per "
        f"phase, {setup.workers} worker(s)"
    )
    print()
    print(
        f"Saturation: wrk -t{args.wrk_threads} -c{CONNECTIONS}, {len(setup.tokens)} employee tokens "
        f"rotating, random customer numbers, {REASON}; median lookups/s of the rounds (each round "
        "in brackets); latency from wrk (closed loop). CPU per lookup of the proxy process and of "
        "the demo backend; `× bare (CPU)` is bare's proxy CPU per lookup over the target's (what "
        "the throughput ratio would be if the proxy had its cores to itself)."
    )
    print()
    print(
        "| target | lookups/s | × bare | allowed | p50 ms | p99 ms | p99.9 ms | proxy CPU/lookup | × bare (CPU) | backend CPU/lookup |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    cpu = {t: statistics.median(r.proxy_cpu_us for r in rs) for t, rs in by.items()}
    for t, rs in by.items():
        statuses: Counter[str] = Counter()
        for r in rs:
            statuses.update(r.wrk["statuses"])
        errors = sum(r.wrk["errors"] for r in rs)
        each = ", ".join(f"{r.rate:,.0f}" for r in rs)
        ratio = f"{rate[t] / rate['bare']:.2f}" if "bare" in rate else "—"
        print(
            f"| {names[t]} | {rate[t]:,.0f} ({each}) | {ratio} | "
            f"{allowed_share(statuses, errors):.1%} | "
            f"{statistics.median(r.wrk['p50_us'] for r in rs) / 1000:.2f} | "
            f"{statistics.median(r.wrk['p99_us'] for r in rs) / 1000:.2f} | "
            f"{statistics.median(r.wrk['p999_us'] for r in rs) / 1000:.2f} | "
            f"{cpu[t]:.0f} µs | "
            f"{(cpu['bare'] / cpu[t]) if 'bare' in cpu else math.nan:.2f} | "
            f"{statistics.median(r.backend_cpu_us for r in rs):.0f} µs |"
        )
    for rate_ in args.rate:
        open_loop_table(by, names, rate_)
    gc_table(by, names)
    if POOL in by and "redis" in by:
        scaling(by, rate, cpu, setup.workers)
    for redis_target in [t for t in by if t.startswith("redis")]:
        rs = by[redis_target]
        print()
        print(
            f"Redis, per lookup over the saturation phase, {names[redis_target]} "
            "(median of the rounds):"
        )
        print()
        trips = statistics.median(r.redis["trips"] for r in rs if r.redis)
        scripts = statistics.median(r.redis["scripts"] for r in rs if r.redis)
        commands = statistics.median(r.redis["commands"] for r in rs if r.redis)
        cpu_us = statistics.median(r.redis["cpu_us"] for r in rs if r.redis)
        top: Counter[str] = Counter()
        for r in rs:
            if r.redis:
                top.update({c: v / len(rs) for c, v in r.redis["top"].items()})
        print(
            "| guard batches | script calls | commands (incl. inside scripts) | redis-server CPU | one Redis core ≈ |"
        )
        print("|---:|---:|---:|---:|---:|")
        print(
            f"| {trips:.2f} | {scripts:.2f} | {commands:.1f} | {cpu_us:.0f} µs | "
            f"{1e6 / cpu_us:,.0f} lookups/s |"
        )
        print()
        print(
            "Most frequent commands per lookup: "
            + ", ".join(f"{c} {v:.1f}" for c, v in top.most_common(8))
        )
    print()
    print(
        f"Machine: {os.cpu_count()} CPUs ({platform.machine()}), Python {platform.python_version()}, "
        f"guard {'compiled (mypyc)' if _compiled() else 'pure Python'}, load average "
        f"{load_before} before, {_load()} after; speed index {speed:.2f} s before, "
        f"{speed_index():.2f} s after (10 M Python additions, lower is faster); wrk, "
        "backend, proxy, redis-server and the open-loop generator all share the machine."
    )


def scaling(
    by: dict[str, list[Round]], rate: dict[str, float], cpu: dict[str, float], workers: int
) -> None:
    """N workers over one, Redis store, same rounds: throughput (what the cores allow) and
    CPU per lookup (what running N costs: a flat line means the workers do not get in each
    other's way)."""
    one, pool = rate["redis"], rate[POOL]
    each = ", ".join(f"{p.rate / o.rate:.2f}" for o, p in zip(by["redis"], by[POOL], strict=False))
    print()
    print(f"Scaling, Redis store: {workers} workers over 1 (same rounds, wrk -c{CONNECTIONS}):")
    print()
    print("| workers | lookups/s | × 1 worker | proxy CPU/lookup | cores busy |")
    print("|---:|---:|---:|---:|---:|")
    for n, target in ((1, "redis"), (workers, POOL)):
        print(
            f"| {n} | {rate[target]:,.0f} | {rate[target] / one:.2f} | {cpu[target]:.0f} µs | "
            f"{rate[target] * cpu[target] / 1e6:.2f} |"
        )
    print()
    print(
        f"{workers} workers gave {pool / one:.2f}× one worker's lookups/s (per round: {each}); "
        f"{os.cpu_count()} CPUs here, shared with wrk, the backend and redis-server."
    )


def _compiled() -> bool:
    import lookup_proxy.guard.engine as engine

    return not str(engine.__file__).endswith(".py")


def speed_index() -> float:
    """Seconds for a fixed pure-Python loop (10 M additions): how fast this machine ran Python
    just then, to compare runs across machines and moments (lower is faster)."""
    began, total = time.perf_counter(), 0
    for i in range(10_000_000):
        total += i
    return time.perf_counter() - began


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- main ------------------------------------------------------------------------------------


def prepare(
    args: argparse.Namespace, directory: Path
) -> tuple[list[str], list[str], dict[str, str]]:
    from lookup_proxy.audit.keys import new_keys
    from lookup_proxy.clock import SystemClock
    from lookup_proxy.customers import CustomerBase
    from lookup_proxy.policy import load_policy
    from lookup_proxy.tokens import mint_token

    policy = load_policy(str(policy_copy(directory)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKUP_PROXY_")}
    env["LOOKUP_PROXY_JWT_SECRET"] = secrets.token_urlsafe(48)
    env.update(new_keys(policy))
    clock = SystemClock()
    tokens = [
        mint_token(
            policy.auth,
            env,
            employee=f"E{n:05d}",
            store=f"S{n // 10:04d}",
            region=f"R{n % 6}",
            roles=["clerk"],
            ttl=min(policy.auth.max_token_lifetime, 8 * 3600),
            clock=clock,
        )
        for n in range(args.employees)
    ]
    numbers = CustomerBase(BACKEND_SEED).sample_customers(NUMBERS, random.Random(2021))
    return tokens, numbers, env


def run(args: argparse.Namespace) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit(WRK_HINT)
    workers = args.workers
    if workers > 1 and "redis" in args.targets and POOL not in args.targets:
        args.targets.insert(args.targets.index("redis") + 1, POOL)
    started = time.strftime("%Y-%m-%d %H:%M")
    load_before, speed = _load(), speed_index()
    with tempfile.TemporaryDirectory(prefix="bench-perf-") as name:
        directory = Path(name)
        tokens, numbers, env = prepare(args, directory)
        script = wrk_script(directory, tokens, numbers)
        bare_port = free_port()
        backend, backend_url = start_backend(env, directory)
        processes = [backend]
        server = None
        try:
            bare = start(
                "bare",
                [sys.executable, "-m", "bench.perf", "--serve-bare", str(bare_port),
                 "--upstream", backend_url],
                env, directory, f"http://127.0.0.1:{bare_port}/healthz",
            )  # fmt: skip
            processes.append(bare)
            if any(t.startswith("redis") for t in args.targets):
                from tests.servers import start_redis

                server = start_redis(directory / "redis")
                env["LOOKUP_PROXY_REDIS_URL"] = server.url
            setup = Setup(
                args, directory, env, tokens, numbers, script, backend, backend_url, bare_port,
                server, workers,
            )  # fmt: skip
            rounds: list[Round] = []
            for round_ in range(args.rounds):
                for target in args.targets:
                    result = measure(setup, target, round_, bare)
                    rounds.append(result)
                    print(round_line(result, round_), flush=True)
            report(rounds, setup, started, load_before, speed)
        finally:
            for process in reversed(processes):
                process.stop()
            if server is not None:
                server.stop()
            if args.keep_logs:
                kept = Path(args.keep_logs)
                kept.mkdir(parents=True, exist_ok=True)
                for log in directory.glob("*.log"):
                    shutil.copy(log, kept / log.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="also measure the Redis store as serve --workers N, and print the scaling",
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk before measuring")
    parser.add_argument(
        "--rate",
        type=lambda s: [float(r) for r in s.split(",") if r],
        default=[500.0],
        help="open-loop lookups/s; several comma-separated rates are measured in turn, lowest "
        "first (an overloaded phase can leave the proxy's store circuit open for the next)",
    )
    parser.add_argument("--keep-logs", default=None, metavar="DIR", help="copy process logs here")
    parser.add_argument("--employees", type=int, default=EMPLOYEES, help="tokens to rotate over")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument(
        "--targets",
        type=lambda s: [t for t in s.split(",") if t],
        default=list(TARGETS),
        help="comma-separated, of bare,memory,redis (--workers N adds redis-workers)",
    )
    parser.add_argument("--serve-bare", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare is not None:
        serve_bare(args.serve_bare, args.upstream)
        return
    unknown = set(args.targets) - {*TARGETS, POOL}
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; choose from {', '.join(TARGETS)}")
    args.rate = sorted(set(args.rate))
    run(args)


if __name__ == "__main__":
    main()
