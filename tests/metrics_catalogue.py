"""The README's metrics catalogue, made from the code: every metric the proxy and the audit
exporter export, its type, labels and meaning (the metric's own help text), and which alerts
(config/prometheus/alerts.yml, through the recording rules they read) and dashboard panels
(config/grafana/dashboards/lookup-proxy.json) use it.

``tests/test_metrics.py`` checks the README holds exactly this table; after changing a metric,
an alert or a panel, print the new one with ``python -m tests.metrics_catalogue``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from lookup_proxy.audit.export import ExportMetrics
from lookup_proxy.metrics import ProxyMetrics
from tests.promql import metric_names

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "config" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "config" / "grafana" / "dashboards" / "lookup-proxy.json"
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
BEGIN = "<!-- metrics catalogue: python -m tests.metrics_catalogue -->"
END = "<!-- end of metrics catalogue -->"


def families() -> list[tuple[str, str, list[str], str, str]]:
    """(name, type, labels, help, exported by) of every metric, proxy first."""
    exporter = CollectorRegistry()
    ExportMetrics(exporter)
    found = []
    for registry, source in ((ProxyMetrics().registry, "proxy"), (exporter, "exporter")):
        for family in registry.collect():
            labels: list[str] = []
            for metric in registry._names_to_collectors.values():  # labels even with no sample
                if getattr(metric, "_name", None) == family.name:
                    labels = list(getattr(metric, "_labelnames", ()))
            found.append((family.name, family.type, labels, family.documentation, source))
    return sorted(found, key=lambda f: (f[4] != "proxy", f[0]))


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alert_users() -> dict[str, set[str]]:
    """Sample name → the alerts that read it, directly or through a recording rule."""
    recorded: dict[str, set[str]] = {}
    for rule in _rules():
        if "record" in rule:
            reads = metric_names(rule["expr"])
            recorded[rule["record"]] = set().union(*(recorded.get(n, {n}) for n in reads))
    users: dict[str, set[str]] = {}
    for rule in _rules():
        if "alert" in rule:
            for name in metric_names(rule["expr"]):
                for sample in recorded.get(name, {name}):
                    users.setdefault(sample, set()).add(rule["alert"])
    return users


def panel_users() -> dict[str, set[str]]:
    """Sample name → the titles of the dashboard panels whose queries read it."""
    users: dict[str, set[str]] = {}
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            for name in metric_names(target.get("expr", "")):
                users.setdefault(name, set()).add(panel["title"])
    return users


def catalogue() -> str:
    alerts, panels = alert_users(), panel_users()
    lines = [
        BEGIN,
        "| metric | type | labels | meaning | alerts | dashboard panels |",
        "|---|---|---|---|---|---|",
    ]
    for name, kind, labels, help_text, source in families():
        samples = {name + suffix for suffix in SUFFIXES[kind]}
        used_by_alerts = sorted(set().union(*(alerts.get(s, set()) for s in samples)))
        used_by_panels = sorted(set().union(*(panels.get(s, set()) for s in samples)))
        shown = name + ("_total" if kind == "counter" else "")
        where = " (exporter)" if source == "exporter" else ""
        lines.append(
            f"| `{shown}`{where} | {kind} | {', '.join(f'`{label}`' for label in labels)} | "
            f"{help_text.replace('|', '/')} | {', '.join(used_by_alerts) or '-'} | "
            f"{', '.join(used_by_panels) or '-'} |"
        )
    lines.append(END)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(catalogue(), end="")
