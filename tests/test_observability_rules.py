"""The shipped alert rules, Prometheus config and Grafana dashboard: valid, tested, and
querying only metrics that ``recharge/metrics.py`` exports, with labels those metrics have.

promtool comes from Debian's ``prometheus`` package; ``scripts/ensure_promtool.sh`` (run by
the Makefile's test set-up) installs it. Without it these tests fail rather than skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from recharge import metrics

ROOT = Path(__file__).resolve().parent.parent
PROM_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "recharge.json"
OPERATIONS = ROOT / "docs" / "OPERATIONS.md"

# Series Prometheus itself adds to every target; no exporter declares them.
BUILTIN_SERIES = {"up": frozenset({"job", "instance"})}
# Labels the scrape attaches to every series.
TARGET_LABELS = frozenset({"job", "instance"})

_KEYWORDS = frozenset(
    "and or unless by without on ignoring group_left group_right offset bool inf nan".split()
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_TOKEN = re.compile(r"\d[\w.]*|[A-Za-z_:][\w:]*")


def promql_selectors(expr: str) -> list[tuple[str, frozenset[str]]]:
    """Every metric a PromQL expression reads, with the label names its matchers use.

    Not a full parser: enough for the expressions we ship (selectors, functions,
    aggregations with by/without, binary operators with on/ignoring, ranges, offsets, and
    Grafana's ``$variables``). Function and aggregation names are told apart by the ``(``
    that follows them.
    """
    text = re.sub(r"\$\{?\w+\}?", "", _STRING.sub('""', expr))
    labels_of: dict[str, set[str]] = {}
    for name, body in _SELECTOR.findall(text):
        if name and name not in _KEYWORDS:
            labels_of.setdefault(name, set()).update(_MATCHER.findall(body))
    text = _SELECTOR.sub(lambda m: (m.group(1) or "") + " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    found: list[tuple[str, frozenset[str]]] = []
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if token[0].isdigit() or token.lower() in _KEYWORDS:
            continue
        if re.match(r"\s*\(", text[match.end():]):  # a function or an aggregation
            continue
        found.append((token, frozenset(labels_of.get(token, ()))))
    return found


def exported_series() -> dict[str, frozenset[str]]:
    """Series name → label names, for every metric defined in ``recharge.metrics``."""
    series: dict[str, frozenset[str]] = dict(BUILTIN_SERIES)
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        name = value._name
        labels = frozenset(value._labelnames) | TARGET_LABELS
        if isinstance(value, Counter):
            series[name + "_total"] = labels
        elif isinstance(value, Histogram):
            series[name + "_bucket"] = labels | {"le"}
            series[name + "_sum"] = labels
            series[name + "_count"] = labels
        elif isinstance(value, Gauge):
            series[name] = labels
        else:  # a new metric type: teach this test about its series first
            raise AssertionError(f"unhandled metric type for {name}: {type(value).__name__}")
    return series


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM_DIR / "alerts.yml").read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and templating query of the dashboard."""
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))

    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            yield from walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                yield f"panel {panel['title']!r} {target['refId']}", target["expr"]

    yield from walk(board["panels"])
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        inner = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query)
        yield f"variable {variable['name']}", inner.group(1) if inner else query


def unknown_references(where: str, expr: str, exported: dict[str, frozenset[str]]) -> list[str]:
    problems = []
    selectors = promql_selectors(expr)
    if not selectors:
        problems.append(f"{where}: no metric found in {expr!r}")
    for name, labels in selectors:
        if name not in exported:
            problems.append(f"{where}: {name} is not exported by recharge/metrics.py")
        elif not labels <= exported[name]:
            problems.append(f"{where}: {name} has no label(s) {sorted(labels - exported[name])}")
    return problems


def promtool() -> str:
    path = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    assert path, "promtool is missing: run scripts/ensure_promtool.sh (Debian's prometheus package)"
    return path


# --- the extractor itself, so the coverage tests below cannot pass by finding nothing


def test_extractor_finds_metrics_and_labels_but_not_functions_or_grouping_labels() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, stage) (rate(recharge_dd_stage_duration_seconds_bucket'
        '{job="recharge", instance=~"$instance"}[$__rate_interval]))) > 0.25 and on(instance) '
        'max(recharge_loads_loading offset 5m) > 1e3 unless absent(up{job="recharge"})'
    )
    assert promql_selectors(expr) == [
        ("recharge_dd_stage_duration_seconds_bucket", frozenset({"job", "instance"})),
        ("recharge_loads_loading", frozenset()),
        ("up", frozenset({"job"})),
    ]


def test_extractor_reports_an_unexported_metric_and_an_unknown_label() -> None:
    exported = exported_series()
    problems = unknown_references(
        "probe", 'rate(recharge_no_such_thing_total[5m]) + recharge_recharges_total{card_no="1"}', exported
    )
    assert problems == [
        "probe: recharge_no_such_thing_total is not exported by recharge/metrics.py",
        "probe: recharge_recharges_total has no label(s) ['card_no']",
    ]


def test_bare_histogram_name_is_not_a_queryable_series() -> None:
    exported = exported_series()
    assert "recharge_dd_stage_duration_seconds_bucket" in exported
    assert "recharge_dd_stage_duration_seconds" not in exported
    assert "recharge_dd_frames_total" in exported


# --- the shipped files


def test_every_alert_expression_queries_exported_metrics_with_their_labels() -> None:
    exported = exported_series()
    problems = [
        p for rule in alert_rules() for p in unknown_references(rule["alert"], rule["expr"], exported)
    ]
    assert problems == []


def test_every_dashboard_query_names_exported_metrics_with_their_labels() -> None:
    exported = exported_series()
    queries = list(dashboard_queries())
    assert len(queries) >= 20
    problems = [p for where, expr in queries for p in unknown_references(where, expr, exported)]
    assert problems == []


def test_dashboard_covers_every_interface_and_resource() -> None:
    read = {name for _, expr in dashboard_queries() for name, _ in promql_selectors(expr)}
    for needed in (
        "recharge_dd_frames_total", "recharge_dd_stage_duration_seconds_bucket",
        "recharge_http_requests_total", "recharge_http_request_duration_seconds_bucket",
        "recharge_order_api_requests_total", "recharge_kkt_trades_total", "recharge_sms_requests_total",
        "recharge_db_pool_connections", "recharge_db_pool_waiting", "recharge_event_loop_lag_seconds_bucket",
        "recharge_dd_connections_active", "recharge_dd_connections_refused_total", "recharge_busy_answers_total",
    ):
        assert needed in read, needed


def test_dashboard_panels_have_unique_ids_and_use_the_datasource_variable() -> None:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]


def test_every_alert_has_a_firing_unit_test_severity_and_runbook() -> None:
    tests = yaml.safe_load((PROM_DIR / "alerts_test.yml").read_text(encoding="utf-8"))
    fired = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    runbooks = OPERATIONS.read_text(encoding="utf-8") if OPERATIONS.exists() else ""
    for rule in alert_rules():
        name = rule["alert"]
        assert name in fired, f"{name} has no promtool case where it fires"
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert f'<a id="{anchor}"></a>' in runbooks, f"{name}: no runbook anchor {anchor} in docs/OPERATIONS.md"


def test_promtool_alert_unit_tests_pass() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", "alerts_test.yml"],
        cwd=PROM_DIR, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_accepts_the_prometheus_config_and_its_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "config", "prometheus.yml"],
        cwd=PROM_DIR, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", sorted((ROOT / "deploy" / "grafana" / "provisioning").rglob("*.yml")))
def test_grafana_provisioning_files_are_valid(path: Path) -> None:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert doc["apiVersion"] == 1
    assert doc.get("datasources") or doc.get("providers")


def test_every_exported_metric_is_documented_in_the_operations_guide() -> None:
    guide = OPERATIONS.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(recharge_\w+)` \|", guide, flags=re.MULTILINE))
    names = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            names.add(value._name + ("_total" if isinstance(value, Counter) else ""))
    assert names - documented == set(), "add these to the metrics table of docs/OPERATIONS.md"
