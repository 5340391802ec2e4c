"""``lookup-proxy serve --workers N`` as operators run it: a master and its workers as real
processes on one real port, one real Redis, real signals; and the drain on SIGTERM (also for a
single process)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson
import pytest
import redis
from aiohttp import web

from lookup_proxy.audit.export import records_of
from lookup_proxy.audit.trail import new_chain_id, stream_key
from lookup_proxy.cases.book import CaseBook
from lookup_proxy.cases.model import Signal
from lookup_proxy.clock import SystemClock
from lookup_proxy.customers import CustomerBase
from lookup_proxy.demo_backend import build_demo_backend
from lookup_proxy.guard.redis_store import RedisStore
from lookup_proxy.metrics import ProxyMetrics
from lookup_proxy.policy import load_policy
from lookup_proxy.resilience.journal import LockJournal
from tests.harness import ENV, ROOT, policy, run_cli, running_proxy, serving, token
from tests.servers import free_port
from tests.test_cli import SHIPPED, open_all_day

T = TypeVar("T")

START_WITHIN = 30.0
"""Seconds a pool may take to start on a loaded 2-core machine (it takes 2-4)."""


class Pool:
    """A ``serve`` process (a master, or a single process) and its JSON log."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for raw in self.log.read_bytes().splitlines():
            try:
                found.append(orjson.loads(raw))
            except orjson.JSONDecodeError:
                continue  # stderr of a crash would show in tail(), not here
        return found

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def serving(self) -> dict[int | None, int]:
        """The pid now serving in each place (the last "serving" line of each worker)."""
        return {line["worker"]: line["pid"] for line in self.lines() if line["event"] == "serving"}

    def events(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["event"] == event]


@contextmanager
def started(
    config: Path, upstream: str, redis_url: str, directory: Path, *extra: str
) -> Iterator[Pool]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKUP_PROXY_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(ENV)
    env["LOOKUP_PROXY_REDIS_URL"] = redis_url
    log = directory / f"serve-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lookup_proxy",
                "serve",
                *("--config", str(config), "--port", str(port)),
                *("--upstream-url", upstream, "--store-kind", "redis"),
                *("--audit-archive", str(directory / "audit")),
                *extra,
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=ROOT,
        )
    pool = Pool(process, f"http://127.0.0.1:{port}", log)
    try:
        yield pool
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


async def until(check: Callable[[], Awaitable[T | None]], what: str, pool: Pool) -> T:
    """Poll ``check`` until it returns something (bounded: START_WITHIN)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_WITHIN
    while True:
        found = await check()
        if found is not None:
            return found
        if loop.time() > deadline:
            raise AssertionError(f"{what} never happened:\n{pool.tail()}")
        await asyncio.sleep(0.1)


async def serving_all(pool: Pool, workers: int) -> None:
    async def up() -> bool | None:
        if pool.process.poll() is not None:
            raise AssertionError(f"serve exited with {pool.process.returncode}:\n{pool.tail()}")
        return True if len(pool.serving()) == workers else None

    await until(up, f"{workers} worker(s) serving", pool)


@asynccontextmanager
async def fresh_connections() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that opens a new connection per request: the kernel spreads each over the
    workers (a kept-alive connection would stay with one)."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


def clerks(config: Path, count: int) -> list[tuple[str, str]]:
    """(token, customer number) pairs: a different clerk and customer for each lookup, so no
    rule of the shipped policy refuses any of them."""
    p = load_policy(str(config))
    numbers = CustomerBase().sample_customers(count, random.Random(12))
    return [(token(p, f"E{n}", f"S{n}"), numbers[n]) for n in range(count)]


async def look_up(
    session: aiohttp.ClientSession, url: str, clerk: tuple[str, str]
) -> tuple[int, str, bytes]:
    tok, number = clerk
    async with session.get(
        f"{url}/customers/{number}",
        headers={"Authorization": f"Bearer {tok}", "X-Lookup-Reason": "BILLING_INQUIRY"},
    ) as answer:
        return answer.status, answer.headers["X-Request-Id"], await answer.read()


async def scrape(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """One scrape's samples, by name with labels (``name{a="b"}``)."""
    async with session.get(f"{url}/metrics") as answer:
        assert answer.status == 200
        text = await answer.text()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def total(samples: dict[str, float], name: str) -> float:
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


def audit_stream(redis_url: str) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(redis_url)
    try:
        return [
            orjson.loads(raw)
            for _, fields in client.xrange(stream_key("lp"))
            for raw in records_of(fields[b"r"])
        ]
    finally:
        client.close()


@pytest.fixture
async def backend() -> AsyncIterator[str]:
    async with serving(build_demo_backend(CustomerBase())) as url:
        yield url


async def test_two_workers_share_one_port_and_one_scrape_shows_them_both(
    tmp_path: Path, fresh_redis: str, backend: str
) -> None:
    """Lookups on fresh connections reach both workers (each its own audit chain); one scrape
    of either worker counts every lookup of both exactly once; what every worker reports
    alike (build, policy, store mode, the review queue read from Redis) is not multiplied."""
    config = open_all_day(tmp_path)
    lookups = clerks(config, 24)
    with started(config, backend, fresh_redis, tmp_path, "--workers", "2") as pool:
        await serving_all(pool, 2)
        book_store = RedisStore.from_url(fresh_redis, cluster=False, timeout=2)
        try:
            await CaseBook(book_store, "lp", SystemClock()).signal(
                Signal("E900", ("burst",), False, "S9", "R1")
            )
        finally:
            await book_store.close()
        async with fresh_connections() as session:
            answers = [await look_up(session, pool.url, clerk) for clerk in lookups]
            assert {status for status, _, _ in answers} <= {200, 404}, answers
            scrapes = [await scrape(session, pool.url) for _ in range(4)]

    chains = {r["chain"] for r in audit_stream(fresh_redis) if r["kind"] == "lookup"}
    assert len(chains) == 2, chains  # both workers answered, each on its own chain
    assert {chain.split(".")[0].rsplit("-", 1)[1] for chain in chains} == {"w0", "w1"}
    for samples in scrapes:  # whichever worker answered the scrape
        assert total(samples, "lookup_proxy_requests_total") == len(lookups)
        assert total(samples, "lookup_proxy_requests_in_flight") == 0
        assert total(samples, "lookup_proxy_build_info") == 1
        assert samples['lookup_proxy_store_mode{mode="shared"}'] == 1
        assert samples['lookup_proxy_store_mode{mode="local"}'] == 0
        assert [v for k, v in samples.items() if k.startswith("lookup_proxy_policy_info")] == [1]
        assert samples['lookup_proxy_cases_open{status="open"}'] == 1
    assert pool.process.returncode == 0, pool.tail()


def in_force(samples: dict[str, float]) -> list[str]:
    return [k for k, v in samples.items() if k.startswith("lookup_proxy_policy_info") and v == 1]


async def test_sighup_reloads_the_policy_in_every_worker(
    tmp_path: Path, fresh_redis: str, backend: str
) -> None:
    """SIGHUP to the master: both workers re-read the file (two successful reloads in one
    scrape) and one new policy hash is in force, the old one at 0."""
    config = open_all_day(tmp_path)
    with started(config, backend, fresh_redis, tmp_path, "--workers", "2") as pool:
        await serving_all(pool, 2)
        async with fresh_connections() as session:
            before = await scrape(session, pool.url)
            (old,) = [k for k, v in before.items() if k.startswith("lookup_proxy_policy_info")]
            text = config.read_text()
            described = 'description = "Signing up a new line or customer"'
            assert described in text, "the shipped policy changed; update this test"
            config.write_text(text.replace(described, 'description = "A new line"'))
            pool.process.send_signal(signal.SIGHUP)

            async def reloaded() -> dict[str, float] | None:
                # A scrape reads each worker's files one after another, not as one snapshot: a
                # worker that reloads between the reads of its gauge file and its counter file
                # is counted reloaded with its old hash still shown. The next scrape agrees.
                samples = await scrape(session, pool.url)
                done = samples['lookup_proxy_config_reloads_total{result="ok"}'] == 2
                return samples if done and len(in_force(samples)) == 1 else None

            after = await until(reloaded, "both workers reloading, one policy in force", pool)
    assert in_force(after) != [old]
    assert after[old] == 0
    assert after['lookup_proxy_config_reloads_total{result="error"}'] == 0


async def test_a_killed_worker_is_replaced_and_its_counts_stay(
    tmp_path: Path, fresh_redis: str, backend: str
) -> None:
    """SIGKILL to a worker: the master logs it and starts another in its place, which serves;
    the dead worker's lookups still count in the scrape (a counter never goes backwards)."""
    config = open_all_day(tmp_path)
    lookups = clerks(config, 12)
    with started(config, backend, fresh_redis, tmp_path, "--workers", "2") as pool:
        await serving_all(pool, 2)
        async with fresh_connections() as session:
            for clerk in lookups[:6]:
                await look_up(session, pool.url, clerk)
            victim = pool.serving()[0]
            os.kill(victim, signal.SIGKILL)

            async def replaced() -> int | None:
                pid = pool.serving()[0]
                return pid if pid != victim else None

            await until(replaced, "worker 0 replaced", pool)
            for clerk in lookups[6:]:
                status, _, _ = await look_up(session, pool.url, clerk)
                assert status in (200, 404)
            samples = await scrape(session, pool.url)
    (died,) = pool.events("worker died; starting another")
    assert (died["worker"], died["pid"], died["exit_code"]) == (0, victim, -signal.SIGKILL)
    assert total(samples, "lookup_proxy_requests_total") == len(lookups)
    assert total(samples, "lookup_proxy_requests_in_flight") == 0


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_lets_every_lookup_in_flight_finish_and_refuses_new_connections(
    tmp_path: Path, fresh_redis: str, workers: int
) -> None:
    """Lookups held at a slow backend when SIGTERM arrives: the port refuses new connections at
    once, every held lookup gets its real answer once the backend gives it, every one has its
    attempt and outcome records in the trail, and serve exits 0."""
    held = 6
    arrived = 0
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        nonlocal arrived
        arrived += 1
        await release.wait()
        return web.json_response({"name": "Kim", "number": request.match_info["number"]})

    upstream = web.Application()
    upstream.router.add_get("/customers/{number}", slow)
    config = open_all_day(tmp_path)
    lookups = clerks(config, held)
    async with serving(upstream) as upstream_url:
        extra = ("--workers", str(workers))
        with started(config, upstream_url, fresh_redis, tmp_path, *extra) as pool:
            await serving_all(pool, workers)
            port = int(pool.url.rsplit(":", 1)[1])
            async with fresh_connections() as session:
                flying = [
                    asyncio.create_task(look_up(session, pool.url, clerk)) for clerk in lookups
                ]

                async def all_held() -> bool | None:
                    return True if arrived == held else None

                await until(all_held, "every lookup reaching the backend", pool)
                pool.process.send_signal(signal.SIGTERM)

                async def refused() -> bool | None:
                    try:
                        _, writer = await asyncio.open_connection("127.0.0.1", port)
                    except ConnectionRefusedError:
                        return True
                    writer.close()
                    return None

                await until(refused, "new connections refused", pool)
                assert not any(task.done() for task in flying)
                release.set()
                answers = await asyncio.gather(*flying)
            code = await asyncio.to_thread(pool.process.wait, START_WITHIN)
    assert code == 0, pool.tail()
    for status, _, body in answers:
        assert status == 200 and orjson.loads(body)["name"] == "Kim"
    records = audit_stream(fresh_redis)
    answered = {request_id for _, request_id, _ in answers}
    assert answered <= {r["request_id"] for r in records if r["kind"] == "lookup"}
    outcomes = {r["of"]: r for r in records if r["kind"] == "outcome"}
    assert answered <= set(outcomes)
    assert {outcomes[request_id]["status"] for request_id in answered} == {200}
    assert sum(r["kind"] == "checkpoint" and r.get("final") is True for r in records) == workers
    assert len(pool.events("draining: no new connections; requests in flight finish")) == workers


async def test_readyz_says_not_ready_while_draining(tmp_path: Path) -> None:
    """Whatever still reaches /readyz during the drain hears 503 "draining"."""
    async with serving(build_demo_backend(CustomerBase())) as backend_url:
        p = policy(backend_url)
        async with running_proxy(p) as (url, proxy), aiohttp.ClientSession() as session:
            async with session.get(f"{url}/readyz") as answer:
                assert answer.status == 200
            proxy.draining = True
            async with session.get(f"{url}/readyz") as answer:
                assert answer.status == 503
                assert (await answer.json())["checks"]["serving"] == "draining"


def test_workers_with_the_memory_store_are_refused(tmp_path: Path) -> None:
    """Each worker would count alone: every limit multiplied by N. Refused, naming the option
    and the store kind, before any worker starts."""
    result = run_cli(
        "serve", "--config", str(SHIPPED), "--port", str(free_port()), "--workers", "2", env=ENV
    )
    assert result.returncode == 2, result.stderr
    assert "configuration error:" in result.stderr and "Traceback" not in result.stderr
    assert f'{SHIPPED}: store.kind: expected "redis" with --workers 2' in result.stderr
    assert 'found "memory"' in result.stderr
    demo = run_cli(
        "serve",
        *("--config", str(SHIPPED), "--store-kind", "redis", "--workers", "2"),
        "--with-demo-backend",
        env=ENV,
    )
    assert demo.returncode == 2
    assert "--with-demo-backend" in demo.stderr and "lookup-proxy demo-backend" in demo.stderr


def test_a_configuration_error_in_the_workers_is_reported_once(
    tmp_path: Path, fresh_redis: str
) -> None:
    """A missing secret stops every worker at start: the master says so once, as any
    configuration error (no traceback), and exits 2 instead of restarting them for ever."""
    result = run_cli(
        "serve",
        *("--config", str(SHIPPED), "--port", str(free_port())),
        *("--store-kind", "redis", "--workers", "2"),
        env={k: v for k, v in ENV.items() if k != "LOOKUP_PROXY_JWT_SECRET"}
        | {"LOOKUP_PROXY_REDIS_URL": fresh_redis},
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("configuration error:") == 1, result.stderr
    assert result.stderr.count("LOOKUP_PROXY_JWT_SECRET") == 1
    assert "Traceback" not in result.stderr + result.stdout


def test_each_worker_writes_its_own_chain_and_journal_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers of one host never share an audit chain or a lock journal file, even with
    one pid (a worker restarted into its place, or pid namespaces): the index is in the name."""
    import lookup_proxy.instance as instance

    names = []
    for index in (0, 1):
        monkeypatch.setattr(instance, "_worker", index)
        names.append((new_chain_id(1.0), LockJournal(tmp_path).path.name))
    (chain0, journal0), (chain1, journal1) = names
    assert chain0 != chain1 and journal0 != journal1
    assert "-w0." in chain0 and "-w1." in chain1
    assert "-w0-" in journal0 and "-w1-" in journal1


def test_every_gauge_says_how_workers_combine() -> None:
    """A gauge without a multiprocess mode would show one series per worker pid ('all'):
    every gauge of the proxy chooses (lookup_proxy/metrics.py says which and why)."""
    from prometheus_client import Gauge

    metrics = ProxyMetrics()
    gauges = [c for c in metrics.registry._collector_to_names if isinstance(c, Gauge)]
    assert gauges
    modes = {c._name: c._multiprocess_mode for c in gauges}
    assert all(mode.startswith("live") and mode != "liveall" for mode in modes.values()), modes
