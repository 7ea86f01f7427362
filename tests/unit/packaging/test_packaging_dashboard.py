"""dashboards/modelpilot.json: every PromQL names only metrics something really exports, and parses."""

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

from modelpilot.controller import metrics as opmetrics

REPO = Path(__file__).resolve().parents[3]
DASHBOARD = json.loads((REPO / "dashboards" / "modelpilot.json").read_text())
DRIFT_ROW = "Drift and model quality (monitor)"

TRITON = {
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_queue_duration_us",
    "nv_inference_request_duration_us",
    "nv_inference_count",
    "nv_gpu_utilization",
}
ISTIO = {"istio_requests_total", "istio_request_duration_milliseconds_bucket"}
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


def operator_metrics() -> set[str]:
    """Names as exposed on /metrics, read from the operator's own registry (counters gain _total)."""
    names = set()
    for family in opmetrics.REGISTRY.collect():
        suffix = {
            "counter": ["_total"],
            "histogram": ["_bucket", "_sum", "_count"],
            "summary": ["_sum", "_count"],
        }
        names.update(family.name + s for s in suffix.get(family.type, [""]))
    return names


def capture_metrics() -> set[str]:
    try:
        from modelpilot.capture import EXPORTED_METRICS
    except ImportError:
        return set()
    return set(EXPORTED_METRICS)


def monitor_metrics() -> set[str] | None:
    try:
        from modelpilot.monitor.exporter import EXPORTED_METRICS
    except ImportError:
        return None
    # Histograms are listed by base name; PromQL sees their _bucket/_sum/_count series.
    return {name + suffix for name in EXPORTED_METRICS for suffix in ("", "_bucket", "_sum", "_count")}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords or labels."""
    s = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", "", s)
    s = re.sub(r"\[[^\]]*\]", "", s)
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", s)
    s = re.sub(r"\$\{?\w+\}?", "", s)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", s):
        name, call = m.groups()
        if not call and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def panels(items: list[dict[str, Any]] | None = None, row: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(row title, panel) for every panel, rows' nested panels included."""
    current = row
    for panel in DASHBOARD["panels"] if items is None else items:
        if panel["type"] == "row":
            current = panel["title"]
            yield from panels(panel.get("panels") or [], current)
        else:
            yield current, panel


def exprs(include_drift: bool = True) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for panel targets, annotations and variable queries."""
    for row, panel in panels():
        if row == DRIFT_ROW and not include_drift:
            continue
        for target in panel["targets"]:
            yield f"{row} / {panel['title']}", target["expr"]
    for ann in DASHBOARD["annotations"]["list"]:
        if "expr" in ann:
            yield f"annotation {ann['name']}", ann["expr"]
    for var in DASHBOARD["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
            assert m, f"variable {var['name']}: {query}"
            yield f"variable {var['name']}", m.group(1)


def test_metric_name_extraction():
    assert metric_names(
        "histogram_quantile(0.99, sum by (le, destination_workload) "
        '(rate(istio_request_duration_milliseconds_bucket{a=~"x|y"}[$__rate_interval])))'
    ) == {"istio_request_duration_milliseconds_bucket"}
    assert metric_names("sum(rate(a_total[1m])) by (x) / on(x) group_left(y) b * 1e-9 > bool 0") == {
        "a_total",
        "b",
    }
    assert metric_names('topk(10, m{l="sum(x)"}) unless n offset 5m') == {"m", "n"}


def test_operator_registry_exports_the_documented_metrics():
    assert {
        "modelpilot_rollout_phase",
        "modelpilot_canary_weight",
        "modelpilot_rollout_step",
        "modelpilot_analysis_checks_total",
        "modelpilot_analysis_value",
        "modelpilot_rollout_events_total",
        "modelpilot_api_writes_total",
        "modelpilot_reconcile_total",
    } <= operator_metrics()


def test_every_expr_names_only_exported_metrics():
    allowed = operator_metrics() | capture_metrics() | TRITON | ISTIO
    monitor = monitor_metrics()
    unknown = {}
    for where, expr in exprs(include_drift=monitor is not None):
        extra = metric_names(expr) - allowed - (monitor or set())
        if extra:
            unknown[where] = sorted(extra)
    assert not unknown, f"metrics nothing exports: {unknown}"


def test_drift_panels_use_the_monitor_exporter_metrics():
    monitor = monitor_metrics()
    if monitor is None:
        pytest.skip("modelpilot.monitor.exporter.EXPORTED_METRICS does not exist yet")
    used = set().union(*(metric_names(e) for w, e in exprs() if w.startswith(DRIFT_ROW)))
    assert used & monitor, "the drift row shows no monitor metric"
    assert not used - monitor - operator_metrics(), sorted(used - monitor - operator_metrics())


def test_dashboard_covers_rollouts_drift_and_triton():
    used = set().union(*(metric_names(e) for _, e in exprs()))
    assert {
        "modelpilot_rollout_phase",
        "modelpilot_canary_weight",
        "modelpilot_analysis_value",
        "modelpilot_rollout_events_total",
    } <= used
    assert {
        "nv_inference_queue_duration_us",
        "nv_inference_request_success",
        "nv_inference_request_failure",
    } <= used
    assert {p["title"] for p in DASHBOARD["panels"] if p["type"] == "row"} >= {
        "Rollouts",
        "Triton serving",
        DRIFT_ROW,
    }
    assert any(row == DRIFT_ROW for row, _ in panels())


def test_layout_is_valid_grafana():
    ids = [p["id"] for _, p in panels()] + [p["id"] for p in DASHBOARD["panels"] if p["type"] == "row"]
    assert len(ids) == len(set(ids))
    for _, panel in panels():
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
    names = [v["name"] for v in DASHBOARD["templating"]["list"]]
    assert names[0] == "datasource"
    for _, expr in exprs():
        for var in re.findall(r"\$(\w+)", expr):
            assert var.startswith("__") or var in names, f"undefined variable ${var} in {expr}"


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed"
)
def test_every_expr_parses_with_promtool(tmp_path):
    """Grafana variables substituted, each expression becomes a recording rule that promtool checks."""
    subst = {
        "$__rate_interval": "1m",
        "$__range": "1h",
        "$namespace": ".*",
        "$deployment": ".*",
        "$model": ".*",
    }
    rules = []
    for i, (_, expr) in enumerate(exprs()):
        for var, value in subst.items():
            expr = expr.replace(var, value)
        rules.append({"record": f"dashboard:expr_{i}", "expr": expr})
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{len(rules)} rules found" in out.stdout
