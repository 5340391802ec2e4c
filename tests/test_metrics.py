"""The metrics a proxy exports stay bounded and leak nothing (lookup_proxy/metrics.py): after a
varied run — found, not found, refused for every kind of reason, locked, admin calls — the
series count does not grow with the number of employees or customers, and no label value holds
an employee id or a customer number."""

from __future__ import annotations

import re

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from lookup_proxy import __version__
from lookup_proxy.customers import CustomerBase
from tests.harness import ROOT, policy, running_proxy, token

BASE = CustomerBase()
FOUND = BASE.find_customers(120)
MISSING = BASE.find_non_customers(120, start="01066660000")

RULES = """
[[rules]]
name = "burst"
kind = "rate"
window = "5m"
limit = 6

[[rules]]
name = "random-typing"
kind = "misses"
window = "1h"
limit = 2
ratio = 0.5
action = "lock"
"""


def series(text: str) -> list[tuple[str, dict[str, str]]]:
    return [
        (sample.name, dict(sample.labels))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


async def traffic(
    client: aiohttp.ClientSession,
    url: str,
    employees: list[str],
    found: list[str],
    mixed: list[str],
    p: object,
) -> None:
    """Every employee: found and missing lookups past the rate limit (refused), a lock by
    misses, a bad reason, a bad number; anonymous requests; an admin listing."""
    for k, employee in enumerate(employees):
        tok = token(p, employee=employee, store=f"S{k % 3}", region="R1")  # type: ignore[arg-type]
        auth = {"Authorization": f"Bearer {tok}"}
        # even: eight customers (the last two over the rate limit); odd: customers and
        # non-customers in turn (locked after the third miss, then refused as locked out)
        mine = found[k * 8 : k * 8 + 8] if k % 2 == 0 else mixed[k * 8 : k * 8 + 8]
        for number in mine:
            async with client.get(
                f"{url}/customers/{number}", headers={**auth, "X-Lookup-Reason": "PLAN_CHANGE"}
            ) as r:
                await r.read()
        async with client.get(
            f"{url}/customers/{found[k]}", headers={**auth, "X-Lookup-Reason": "NOPE"}
        ) as r:
            await r.read()
        async with client.get(
            f"{url}/customers/12{k}", headers={**auth, "X-Lookup-Reason": "PLAN_CHANGE"}
        ) as r:
            await r.read()
    async with client.get(f"{url}/customers/{found[0]}") as r:
        await r.read()
    admin = token(p, employee="SEC1", roles=["security-admin"])  # type: ignore[arg-type]
    async with client.get(f"{url}/admin/locks", headers={"Authorization": f"Bearer {admin}"}) as r:
        assert r.status == 200


async def test_series_stay_bounded_and_no_label_names_a_person_or_a_number(
    backend: str, client: aiohttp.ClientSession
) -> None:
    p = policy(backend, rules=RULES)
    first = [f"E{n:03d}" for n in range(10)]
    second = [f"E{n:03d}" for n in range(10, 20)]
    mixed = [n for pair in zip(FOUND, MISSING, strict=True) for n in pair]
    numbers = FOUND + MISSING
    async with running_proxy(p) as (url, proxy):
        await traffic(client, url, first, FOUND[:80], mixed[:80], p)
        await proxy.guard_idle()
        async with client.get(f"{url}/metrics") as r:
            after_first = series(await r.text())
        await traffic(client, url, second, FOUND[40:120], mixed[80:160], p)
        await proxy.guard_idle()
        async with client.get(f"{url}/metrics") as r:
            after_second = series(await r.text())
    names = {name for name, _ in after_second}
    assert "lookup_proxy_lockouts_total" in names  # the run did lock someone
    refusal_causes = {
        labels["cause"] for name, labels in after_second if name == "lookup_proxy_refusals_total"
    }
    assert {"rate-limited", "locked-out", "unknown-reason", "token-missing"} <= refusal_causes

    # Twice the employees and customers doing the same things: the same series, not more.
    def keys(
        found: list[tuple[str, dict[str, str]]],
    ) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        return {(name, tuple(sorted(labels.items()))) for name, labels in found}

    assert keys(after_second) == keys(after_first)
    assert len(after_second) < 1500
    people = set(first + second + ["SEC1"])
    last4 = {n[-4:] for n in numbers}
    for name, labels in after_second:
        for key, value in labels.items():
            assert value not in people, (name, key, value)
            assert not re.search(r"(?<![0-9a-f])01\d{8,9}(?![0-9a-f])", value), (name, key, value)
            assert not any(number in value for number in numbers), (name, key, value)
            assert value not in last4, (name, key, value)
    [build] = [labels for name, labels in after_second if name == "lookup_proxy_build_info"]
    assert build["version"] == __version__ and build["compiled"] in ("true", "false")


def test_the_readme_catalogue_is_the_one_the_code_makes() -> None:
    """Every metric in the README, with the alerts and panels that use it: regenerate with
    ``python -m tests.metrics_catalogue`` after changing a metric, a rule or a panel."""
    from tests.metrics_catalogue import catalogue

    assert catalogue() in (ROOT / "README.md").read_text(encoding="utf-8"), (
        "README's metrics catalogue is stale: python -m tests.metrics_catalogue"
    )
