"""The alert rules (config/prometheus/alerts.yml): valid for Prometheus, unit-tested with
``promtool test rules`` (tests/prometheus/alerts_test.yml), and written only against metrics
the proxy and the audit exporter export.

promtool comes with Debian's ``prometheus`` package (scripts/test installs it); without it
these tests fail, naming the binary, rather than skip."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from lookup_proxy.audit.export import ExportMetrics
from lookup_proxy.metrics import ProxyMetrics

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = ROOT / "config" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
UNIT_TESTS = ROOT / "tests" / "prometheus" / "alerts_test.yml"
SEVERITIES = {"page", "ticket"}


def binary(name: str) -> str:
    """The path of a Prometheus binary, or the test fails saying which one is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is missing: install Debian's prometheus package "
            "(apt-get install prometheus; scripts/test does it when run as root)",
            pytrace=False,
        )
    return path


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules() -> list[dict[str, Any]]:
    return [rule for group in load(ALERTS)["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def exported_metric_names() -> set[str]:
    """Every sample name the proxy's and the exporter's registries can expose."""
    registries = [ProxyMetrics().registry, CollectorRegistry()]
    ExportMetrics(registries[1])
    suffixes = {
        "counter": ("_total",),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum"),
        "summary": ("_count", "_sum", ""),
    }
    return {
        family.name + suffix
        for registry in registries
        for family in registry.collect()
        for suffix in suffixes[family.type]
    }


def test_the_rules_pass_promtool_check() -> None:
    """``promtool check rules`` accepts the rule file (syntax, PromQL, templates)."""
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_prometheus_config_loads_the_rules() -> None:
    """``promtool check config`` accepts prometheus.yml and the rule files it names."""
    result = promtool("check", "config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alerts.yml" in result.stdout


def test_the_alert_unit_tests_pass() -> None:
    """``promtool test rules``: every expected alert fires with its labels and annotations,
    and none fires where it must not."""
    result = promtool("test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    """Each alert has at least one case where it fires and one where it stays quiet."""
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in load(UNIT_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - firing == set(), "alerts without a firing case"
    assert names - quiet == set(), "alerts without a non-firing case"
    assert (firing | quiet) - names == set(), "unit tests for alerts that do not exist"


def test_every_alert_has_a_severity_a_summary_and_its_runbook() -> None:
    """Labels and annotations every notification relies on; the runbook link is the README's
    ``### Runbook: <AlertName>`` anchor."""
    for rule in alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        assert annotations["runbook"] == f"README.md#runbook-{name.lower()}", name
        assert "for" in rule, f"{name}: say `for: 0m` when an alert should fire at once"


def test_the_rules_use_only_metrics_that_are_exported() -> None:
    """No rule watches a metric the proxy or the exporter does not have (a renamed metric
    would silently never alert), and every job they select is scraped."""
    exported = exported_metric_names() | {"up"}
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    jobs = {job["job_name"] for job in load(CONFIG)["scrape_configs"]}
    for rule in rules():
        expr = rule["expr"]
        names = set(re.findall(r"\b(lookup_proxy_[a-z_]+|up)\b(?=\s*[{\[)]|\s*$|\s)", expr))
        unknown = names - exported - recorded
        assert unknown == set(), f"{rule.get('alert') or rule.get('record')}: {unknown}"
        assert set(re.findall(r'job="([^"]+)"', expr)) <= jobs, expr


def test_the_proxy_and_exporter_jobs_are_scraped() -> None:
    """The compose Prometheus scrapes both proxies and the audit exporter, and loads the rules."""
    config = load(CONFIG)
    targets = {
        job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets == {
        "lookup-proxy": ["proxy-a:8080", "proxy-b:8080"],
        "lookup-proxy-audit-exporter": ["audit-exporter:9109"],
    }
    assert config["rule_files"] == ["alerts.yml"]


def test_every_alert_has_its_runbook_entry_in_the_readme() -> None:
    """The annotation's link leads somewhere: a ``### Runbook: <alert>`` entry per alert (the
    anchor GitHub makes of it is the link's), and no entry for an alert that does not exist."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    entries = set(re.findall(r"^### Runbook: (\w+)$", readme, re.MULTILINE))
    assert entries == {rule["alert"] for rule in alerts()}
    for rule in alerts():
        assert rule["annotations"]["runbook"] == f"README.md#runbook-{rule['alert'].lower()}"
