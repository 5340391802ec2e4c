"""A real Prometheus (Debian's binary) scrapes two running proxies on one Redis, with the real
alert rules loaded: the proxies' series arrive from both instances and an enumeration that gets
an employee locked out raises EnumerationLockout — read back through Prometheus's HTTP API,
not from a parse of /metrics.

The Prometheus config is the compose one (config/prometheus/prometheus.yml) pointed at the test
proxies with 1 s intervals; the rules are config/prometheus/alerts.yml with every ``for:``
shortened to 1 s (the same expressions, so the test waits seconds, not minutes)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import aiohttp
import yaml
import yarl

from lookup_proxy.customers import CustomerBase
from tests.harness import ENV, policy, running_proxy, token
from tests.servers import free_port
from tests.test_alerts import ALERTS, CONFIG, alerts, binary
from tests.test_guarded_lookups import LOCKING

BASE = CustomerBase()
FOUND = BASE.find_customers(6)
MISSES = BASE.find_non_customers(8, start="01055550000")

WAIT = 25.0
"""Seconds to wait for Prometheus to start, and again for it to see what the test did."""

FOR = re.compile(r"^(?P<indent>\s+for:\s*)\S+\s*$", re.MULTILINE)

T = TypeVar("T")


def quick_rules(text: str) -> str:
    """The real rule file with every ``for:`` duration cut to 1 s; nothing else changes."""
    quick, count = FOR.subn(r"\g<indent>1s", text)
    assert count == len(alerts()), "every alert must say its `for:` on one line"
    return quick


def scrape_config(targets: list[str]) -> dict[str, Any]:
    """The compose Prometheus config, scraping ``targets`` as job lookup-proxy every second
    (the audit exporter does not run here, so its job is left out)."""
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    config["global"] = {
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "evaluation_interval": "1s",
    }
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == "lookup-proxy"]
    assert len(jobs) == 1, "config/prometheus/prometheus.yml must have the lookup-proxy job"
    jobs[0]["static_configs"] = [{"targets": targets}]
    config["scrape_configs"] = jobs
    return config


def prepare(directory: Path, targets: list[str]) -> BinaryIO:
    """Write the config and the quick rules into ``directory``; the log file, opened."""
    directory.mkdir()
    (directory / "alerts.yml").write_text(quick_rules(ALERTS.read_text(encoding="utf-8")))
    (directory / "prometheus.yml").write_text(yaml.safe_dump(scrape_config(targets)))
    return (directory / "prometheus.log").open("wb")


def tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-3000:]


@asynccontextmanager
async def prometheus(directory: Path, targets: list[str]) -> AsyncIterator[str]:
    """Debian's Prometheus on a free port, scraping ``targets`` with the (quick) alert rules,
    its TSDB in ``directory``; yields its base URL and stops it with SIGTERM."""
    executable = binary("prometheus")
    port = free_port()
    log_path = directory / "prometheus.log"
    with prepare(directory, targets) as log:
        process = await asyncio.create_subprocess_exec(
            executable,
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=log,
            stderr=log,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as session:

                async def ready() -> bool | None:
                    if process.returncode is not None:
                        raise AssertionError(f"prometheus exited:\n{tail(log_path)}")
                    with suppress(aiohttp.ClientError):
                        async with session.get(url + "/-/ready") as response:
                            return response.status == 200 or None
                    return None

                await eventually(ready, "Prometheus to be ready", log_path)
            yield url
        finally:
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 10)
                except TimeoutError:
                    process.kill()
                    await process.wait()
    assert process.returncode == 0, f"prometheus did not stop cleanly:\n{tail(log_path)}"


async def eventually(
    probe: Callable[[], Awaitable[T | None]], what: str, log_path: Path | None = None
) -> T:
    """Poll ``probe`` until it returns something other than None, for at most WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while True:
        result = await probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            log = tail(log_path) if log_path is not None else ""
            raise AssertionError(f"waited {WAIT:.0f}s for {what}; Prometheus log tail:\n{log}")
        await asyncio.sleep(0.25)


async def api(client: aiohttp.ClientSession, prom: str, path: str, **params: str) -> Any:
    async with client.get(yarl.URL(prom + path).with_query(params)) as response:
        body = await response.json()
    assert body["status"] == "success", body
    return body["data"]


def lookup_headers(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}", "X-Lookup-Reason": "PLAN_CHANGE"}


async def test_prometheus_scrapes_two_proxies_and_raises_the_lockout_alert(
    backend: str, client: aiohttp.ClientSession, fresh_redis: str, tmp_path: Path
) -> None:
    """Both instances' series reach Prometheus, with every request counted, and an employee
    locked out for typing numbers that are not customers makes EnumerationLockout go
    pending or firing for the rule that locked them; no instance is reported down."""
    p = policy(backend, rules=LOCKING, extra='[store]\nkind = "redis"\n')
    environ = {**ENV, "LOOKUP_PROXY_REDIS_URL": fresh_redis}
    clerk, prober = token(p, employee="E100"), token(p, employee="E666")
    async with (
        running_proxy(p, environ=environ) as (first, proxy_a),
        running_proxy(p, environ=environ) as (second, proxy_b),
    ):
        proxies = [(first, proxy_a), (second, proxy_b)]
        instances = sorted(f"{yarl.URL(url).host}:{yarl.URL(url).port}" for url, _ in proxies)
        async with prometheus(tmp_path / "prometheus", instances) as prom:
            log_path = tmp_path / "prometheus" / "prometheus.log"

            async def both_up() -> bool | None:
                up = await api(client, prom, "/api/v1/query", query='up{job="lookup-proxy"} == 1')
                seen = sorted(sample["metric"]["instance"] for sample in up["result"])
                return True if seen == instances else None

            # Scraped before any lockout: the lockout counter is then a series born at 1,
            # as in production, which increase() alone would never see.
            await eventually(both_up, f"both proxies {instances} scraped and up", log_path)
            sent = 0
            for index, number in enumerate(FOUND):  # honest lookups on both instances
                url, _ = proxies[index % 2]
                async with client.get(
                    f"{url}/customers/{number}", headers=lookup_headers(clerk)
                ) as r:
                    assert r.status == 200
                    sent += 1
            async with client.get(f"{first}/customers/{FOUND[0]}") as r:  # no token
                assert r.status == 401
                sent += 1
            statuses = []
            for index, number in enumerate(MISSES):  # the enumerator, over both instances
                url, proxy = proxies[index % 2]
                async with client.get(
                    f"{url}/customers/{number}", headers=lookup_headers(prober)
                ) as r:
                    statuses.append(r.status)
                    sent += 1
                await proxy.guard_idle()
            assert statuses == [404] * 4 + [403] * 4

            async def every_request_counted() -> list[dict[str, Any]] | None:
                result = await api(
                    client,
                    prom,
                    "/api/v1/query",
                    query='sum by (instance) (lookup_proxy_requests_total{job="lookup-proxy"})',
                )
                seen = sorted(sample["metric"]["instance"] for sample in result["result"])
                total = sum(float(sample["value"][1]) for sample in result["result"])
                return result["result"] if seen == instances and total == sent else None

            await eventually(
                every_request_counted,
                f"lookup_proxy_requests_total from {instances} adding up to {sent}",
                log_path,
            )

            async def lockout_alert() -> dict[str, Any] | None:
                data = await api(client, prom, "/api/v1/alerts")
                for alert in data["alerts"]:
                    if alert["labels"]["alertname"] == "EnumerationLockout":
                        return dict(alert)
                return None

            alert = await eventually(
                lockout_alert,
                "EnumerationLockout to go pending or firing",
                log_path,
            )
            assert alert["state"] in ("pending", "firing")
            assert alert["labels"] == {
                "alertname": "EnumerationLockout",
                "rule": "random-typing",
                "severity": "ticket",
                "service": "lookup-proxy",
            }
            assert alert["annotations"]["runbook"] == "README.md#runbook-enumerationlockout"

            up = await api(client, prom, "/api/v1/query", query='up{job="lookup-proxy"}')
            assert sorted(
                (sample["metric"]["instance"], sample["value"][1]) for sample in up["result"]
            ) == [(instance, "1") for instance in instances]
            locked = await api(
                client, prom, "/api/v1/query", query="sum(lookup_proxy_lockouts_total)"
            )
            assert [sample["value"][1] for sample in locked["result"]] == ["1"]
            loaded = await api(client, prom, "/api/v1/rules", type="alert")
            names = {rule["name"] for group in loaded["groups"] for rule in group["rules"]}
            assert names == {rule["alert"] for rule in alerts()}
            raised = {
                alert["labels"]["alertname"]
                for alert in (await api(client, prom, "/api/v1/alerts"))["alerts"]
            }
            assert "LookupProxyDown" not in raised
