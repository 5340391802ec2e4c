"""The Grafana dashboard and its provisioning: well-formed, and every query reads only metrics
the proxy or the audit exporter really export (scraped from real registries, not a list kept
by hand), so a renamed metric breaks this test rather than a panel in production."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lookup_proxy.audit.export import ExportMetrics
from tests.harness import policy, running_proxy, token
from tests.promql import PromQLError, metric_names, variable_query_metric_names

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "config" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "lookup-proxy.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"

PROMETHEUS_OWN = frozenset({"up"})
"""Series Prometheus itself writes for every target."""

SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count", ""),
    "gauge": ("",),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}

WATCHED = {
    # traffic, refusals, guard, lockouts and cases
    "lookup_proxy_requests_total",
    "lookup_proxy_refusals_total",
    "lookup_proxy_guard_decisions_total",
    "lookup_proxy_rule_hits_total",
    "lookup_proxy_lockouts_total",
    "lookup_proxy_case_events_total",
    "lookup_proxy_cases_open",
    "lookup_proxy_requests_in_flight",
    # latency
    "lookup_proxy_request_duration_seconds_bucket",
    "lookup_proxy_upstream_duration_seconds_bucket",
    "lookup_proxy_store_roundtrip_seconds_bucket",
    # store health
    "lookup_proxy_store_mode",
    "lookup_proxy_store_errors_total",
    "lookup_proxy_store_recoveries_total",
    # audit
    "lookup_proxy_audit_records_total",
    "lookup_proxy_audit_pending_records",
    "lookup_proxy_audit_write_errors_total",
    "lookup_proxy_audit_export_lag_seconds",
    # policy
    "lookup_proxy_config_reloads_total",
    "lookup_proxy_policy_info",
    "lookup_proxy_build_info",
    "up",
}
"""What ops must be able to see on the dashboard (issue 13)."""


def exported_names(exposition: str) -> set[str]:
    """Series names in a Prometheus text exposition: every sample's name, and for every family
    (also one with no sample yet, a labelled metric never touched) the names its type implies."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return {name for name in names if not name.endswith("_created")}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(DASHBOARD.read_bytes())
    return data


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, also those inside collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel query and template variable."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            yield f"variable ${variable['name']}", text


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """Every series name a proxy (after some traffic) and the audit exporter expose, plus
    Prometheus's own ``up``."""
    import asyncio

    from lookup_proxy.customers import CustomerBase
    from lookup_proxy.demo_backend import build_demo_backend
    from tests.harness import serving

    async def scrape() -> str:
        async with serving(build_demo_backend(CustomerBase())) as backend:
            p = policy(backend)
            headers = {
                "Authorization": f"Bearer {token(p)}",
                "X-Lookup-Reason": "PLAN_CHANGE",
            }
            async with running_proxy(p) as (url, _), aiohttp.ClientSession() as client:
                for number in ("010-2000-0007", "010-2000-0008", "010-2000-0009"):
                    async with client.get(f"{url}/customers/{number}", headers=headers) as r:
                        await r.read()
                async with client.get(f"{url}/customers/010-2000-0007") as r:
                    assert r.status == 401
                async with client.get(f"{url}/metrics") as r:
                    assert r.status == 200
                    return await r.text()

    proxy_text = asyncio.run(scrape())
    exporter = CollectorRegistry()
    ExportMetrics(exporter)
    exporter_text = generate_latest(exporter).decode()
    return exported_names(proxy_text) | exported_names(exporter_text) | PROMETHEUS_OWN


def test_exported_names_come_from_a_real_scrape(exported: set[str]) -> None:
    """The reference set is what /metrics serves, histograms expanded and counters as _total."""
    assert "lookup_proxy_requests_total" in exported
    assert "lookup_proxy_requests" not in exported
    assert {
        "lookup_proxy_request_duration_seconds_bucket",
        "lookup_proxy_request_duration_seconds_sum",
        "lookup_proxy_request_duration_seconds_count",
    } <= exported
    assert "lookup_proxy_request_duration_seconds" not in exported
    assert "lookup_proxy_audit_export_lag_seconds" in exported
    assert "lookup_proxy_store_mode" in exported


def test_dashboard_is_a_provisionable_grafana_dashboard(dashboard: dict[str, Any]) -> None:
    """A dashboard JSON Grafana 10/11 imports as is: fixed uid, schema version, no database id."""
    assert dashboard["uid"] == "lookup-proxy"
    assert dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard.get("id") is None
    assert isinstance(dashboard["panels"], list) and dashboard["panels"]


def test_panels_have_unique_ids_and_titles(dashboard: dict[str, Any]) -> None:
    """Grafana keys panels by id, and people find them by title: neither repeats."""
    ids = [panel["id"] for panel in panels(dashboard)]
    titles = [panel["title"] for panel in panels(dashboard)]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids)), sorted(ids)
    assert all(titles) and len(titles) == len(set(titles)), sorted(titles)


def test_panels_fit_the_grid_without_overlapping(dashboard: dict[str, Any]) -> None:
    """Every panel lies within the 24-column grid, and no two cover the same cell."""
    taken: dict[tuple[int, int], str] = {}
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["y"] >= 0
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[x, y]!r}"
                taken[x, y] = panel["title"]


def test_every_query_uses_the_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    """Panels and variables name the Prometheus datasource by the uid provisioning gives it."""
    provisioned = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    prometheus = [d for d in provisioned if d["type"] == "prometheus"]
    assert len(prometheus) == 1
    uid = prometheus[0]["uid"]
    assert prometheus[0]["url"] == "http://prometheus:9090"  # the compose service
    used = [v["datasource"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        used.append(panel["datasource"])
        used.extend(target["datasource"] for target in panel["targets"])
    assert used and all(d == {"type": "prometheus", "uid": uid} for d in used), used


def test_every_query_reads_only_metrics_that_are_exported(
    dashboard: dict[str, Any], exported: set[str]
) -> None:
    """Each metric name in each panel query and variable is one the proxy or the exporter
    serves (or Prometheus's own ``up``)."""
    unknown = {
        where: sorted(names - exported)
        for where, expr in expressions(dashboard)
        if (names := variable_query_metric_names(expr)) - exported
    }
    assert not unknown


def test_every_query_reads_some_metric(dashboard: dict[str, Any]) -> None:
    """No query the tokenizer finds nothing in (which would check nothing)."""
    empty = [
        where for where, expr in expressions(dashboard) if not variable_query_metric_names(expr)
    ]
    assert not empty


def test_dashboard_shows_what_ops_must_watch(dashboard: dict[str, Any]) -> None:
    """Traffic, refusals, guard, lockouts and cases, latency, store health, audit and policy."""
    used = set().union(*(variable_query_metric_names(expr) for _, expr in expressions(dashboard)))
    assert not WATCHED - used, sorted(WATCHED - used)
    rows = {panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"}
    assert {"Traffic", "Refusals", "Guard", "Lockouts and cases", "Latency"} <= rows
    assert {"Store health", "Audit trail", "Policy and build"} <= rows


def test_shadow_mode_hits_have_their_own_panel(dashboard: dict[str, Any]) -> None:
    """Rules in shadow mode are read before they are enforced: a panel selects mode="shadow"."""
    assert any(
        'mode="shadow"' in target["expr"]
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    )


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        (
            'sum by (route, outcome) (rate(lookup_proxy_requests_total{instance=~"$instance"}'
            "[$__rate_interval]))",
            {"lookup_proxy_requests_total"},
        ),
        (
            "histogram_quantile(0.99, sum without (instance) (rate(a_bucket[5m])))",
            {"a_bucket"},
        ),
        ("sum(rate(x_sum[1h30m])) / sum(rate(x_count[1h30m])) > 0.25", {"x_sum", "x_count"}),
        ("a * on (job) group_left (version) b offset 5m", {"a", "b"}),
        ("max_over_time(g[1h:5m] @ end()) > bool 1e-3 or vector(0)", {"g"}),
        ('count(count by (hash) (info{hash!~"by|sum(x)"}))', {"info"}),
        ("sum(rate(a[5m])) by (le) unless b", {"a", "b"}),
        ("-inf < c and nan != c", {"c"}),
        ("ns:recorded_rule:rate5m", {"ns:recorded_rule:rate5m"}),
        ("0x1F + .5 + 3", set()),
    ],
)
def test_promql_tokenizer_finds_metric_names(expr: str, names: set[str]) -> None:
    """Metric names, never functions, keywords, label names, label values or durations."""
    assert metric_names(expr) == names


def test_promql_tokenizer_refuses_what_it_cannot_check() -> None:
    """A selector by __name__ or an unbalanced expression is an error, not an empty set."""
    with pytest.raises(PromQLError):
        metric_names('{__name__=~"lookup_proxy_.*"}')
    with pytest.raises(PromQLError):
        metric_names("sum(rate(a{b=")


def test_variable_queries_are_read_like_grafana() -> None:
    """label_values(selector, label): the selector's metric, never the label."""
    assert variable_query_metric_names("label_values(m{job='x'}, instance)") == {"m"}
    assert variable_query_metric_names("label_values(instance)") == set()
    assert variable_query_metric_names("query_result(topk(3, y))") == {"y"}


GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$instance": ".+"}
"""What Grafana substitutes before the query reaches Prometheus (values of the right kind)."""


def test_every_panel_query_is_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """Prometheus's own parser (``promtool check rules``, Debian's prometheus package) accepts
    every panel query once Grafana's variables are substituted."""
    assert shutil.which("promtool"), "promtool is missing: apt-get install prometheus"
    rules = []
    for n, (where, expr) in enumerate(expressions(dashboard)):
        if where.startswith("variable"):
            continue  # label_values(…) is Grafana's, not PromQL
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"{where}: a variable this test does not know: {expr}"
        rules.append({"record": f"dashboard:query_{n}", "expr": expr})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
