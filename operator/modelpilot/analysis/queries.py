"""Pure PromQL builders for per-revision rollout metrics (Istio, Triton, custom templates).

Every value that ends up inside a label matcher is escaped, so a revision or model name
can never change the shape of a query. Builders return strings; evaluating them is the
provider's job (see ``prometheus.py``).

Units: error rates are fractions (0.01 = 1 %), latencies are milliseconds (Triton's
microsecond counters are divided by 1000), counts are requests over the window.

Why one module (~460 lines): every PromQL string the operator sends is built here, so label escaping
and units are applied uniformly; the observers import the builders they need.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import NamedTuple

from modelpilot.api.spec import parse_duration

# A range: CRD duration string ("1m", "1.5m"), seconds, or timedelta.
Window = str | float | timedelta

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# The CRD accepts Go-style durations ("1.5m", "1h30m"); Prometheus wants integer units.
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000}
_RE2_SPECIAL = set(r"\.+*?()|[]{}^$")
# Deployment pods are <deployment>-<pod-template-hash>-<suffix>; neither part has a dash,
# so revision "v2" never matches the pods of revision "v2-1".
_POD_SUFFIX = "-[a-z0-9]+-[a-z0-9]+"

ISTIO_REQUESTS = "istio_requests_total"
ISTIO_DURATION_BUCKET = "istio_request_duration_milliseconds_bucket"
TRITON_SUCCESS = "nv_inference_request_success"
TRITON_FAILURE = "nv_inference_request_failure"
TRITON_REQUEST_DURATION = "nv_inference_request_duration_us"
TRITON_QUEUE_DURATION = "nv_inference_queue_duration_us"


class TemplateError(ValueError):
    """A custom query template is malformed or names a variable that is unknown or unset."""


@dataclass(frozen=True, slots=True)
class RevisionRef:
    """One revision of a ModelDeployment, as its metrics label it."""

    namespace: str
    name: str
    revision: str
    model: str | None = None

    @property
    def workload(self) -> str:
        """The revision's Deployment name, which Istio reports as ``destination_workload``."""
        return f"{self.name}-{self.revision}"


class IstioMatch(StrEnum):
    """Which Istio labels identify a revision."""

    WORKLOAD = "workload"  # destination_workload="<name>-<revision>"
    VERSION = "version"  # destination_version="<revision>" (the pod's `version` label)
    BOTH = "both"


@dataclass(frozen=True, slots=True)
class IstioSelector:
    """How Istio's standard metrics are filtered to one revision."""

    match: IstioMatch = IstioMatch.WORKLOAD
    # Count each request once, where it is served (Flagger does the same).
    reporter: str | None = "destination"
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TritonLabels:
    """Target label names Prometheus attaches to Triton's metrics; ``None`` disables one.

    The revision label is copied from the pod label ``modelpilot.io/revision`` by the scrape
    config. Without it, pods are matched by name (``<name>-<revision>-...``) instead.
    """

    model: str = "model"
    namespace: str | None = "namespace"
    revision: str | None = "revision"
    pod: str | None = "pod"

    def __post_init__(self) -> None:
        for label in (self.model, self.namespace, self.revision, self.pod):
            if label is not None:
                _check_label_name(label)
        if self.revision is None and self.pod is None:
            raise ValueError("Triton revisions need a revision or a pod label to tell them apart")


class CountQueries(NamedTuple):
    """Queries for a revision's cumulative error and request counts over one window."""

    errors: str
    total: str


def _check_label_name(name: str) -> str:
    if not _LABEL_NAME.fullmatch(name):
        raise ValueError(f"invalid Prometheus label name {name!r}")
    return name


def escape_label_value(value: str) -> str:
    """Escape a value for a double-quoted PromQL string (backslash, quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_regex(value: str) -> str:
    """Escape RE2 metacharacters so ``value`` matches literally inside ``=~``."""
    return "".join("\\" + char if char in _RE2_SPECIAL else char for char in value)


def label_selector(equal: Mapping[str, str], regex: Mapping[str, str] | None = None) -> str:
    """``{a="x",b=~"y"}`` with names checked and values escaped."""
    parts = [f'{_check_label_name(k)}="{escape_label_value(v)}"' for k, v in equal.items()]
    parts += [f'{_check_label_name(k)}=~"{escape_label_value(v)}"' for k, v in (regex or {}).items()]
    return "{" + ",".join(parts) + "}"


def promql_duration(value: Window) -> str:
    """Normalise a CRD duration ("1.5m"), seconds or timedelta to a PromQL range ("90s")."""
    if isinstance(value, timedelta):
        millis = value.total_seconds() * 1000
    elif isinstance(value, int | float):
        millis = float(value) * 1000
    else:
        millis = (parse_duration(value) or 0.0) * 1000  # raises on anything but the CRD's form
    whole = round(millis)
    if whole <= 0 or abs(whole - millis) > 1e-6:
        raise ValueError(f"duration {value!r} must be a positive whole number of milliseconds")
    for unit in ("h", "m", "s"):
        if whole % _UNIT_MS[unit] == 0:
            return f"{whole // _UNIT_MS[unit]}{unit}"
    return f"{whole}ms"


def _quantile(q: float) -> str:
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    return f"{q:g}"


# --- Istio -----------------------------------------------------------------------------


def istio_selector(
    ref: RevisionRef, selector: IstioSelector = IstioSelector(), *, errors: bool = False
) -> str:
    labels: dict[str, str] = {}
    if selector.reporter is not None:
        labels["reporter"] = selector.reporter
    labels["destination_workload_namespace"] = ref.namespace
    if selector.match in (IstioMatch.WORKLOAD, IstioMatch.BOTH):
        labels["destination_workload"] = ref.workload
    if selector.match in (IstioMatch.VERSION, IstioMatch.BOTH):
        labels["destination_version"] = ref.revision
    labels.update(selector.extra)
    return label_selector(labels, {"response_code": "5.."} if errors else None)


def istio_request_count(ref: RevisionRef, window: Window, selector: IstioSelector = IstioSelector()) -> str:
    """Requests served by the revision over ``window`` (the sample size)."""
    return f"sum(increase({ISTIO_REQUESTS}{istio_selector(ref, selector)}[{promql_duration(window)}]))"


def istio_error_count(ref: RevisionRef, window: Window, selector: IstioSelector = IstioSelector()) -> str:
    """5xx responses over ``window``; 0 (not empty) while the revision serves without errors.

    Istio creates the 5xx series lazily, so ``or 0 * <requests>`` turns "no error series yet"
    into zero while a revision without any traffic still has no data.
    """
    window = promql_duration(window)
    errors = f"sum(increase({ISTIO_REQUESTS}{istio_selector(ref, selector, errors=True)}[{window}]))"
    return f"({errors} or 0 * {istio_request_count(ref, window, selector)})"


def istio_count_queries(
    ref: RevisionRef, window: Window, selector: IstioSelector = IstioSelector()
) -> CountQueries:
    return CountQueries(
        errors=istio_error_count(ref, window, selector), total=istio_request_count(ref, window, selector)
    )


def istio_error_rate(ref: RevisionRef, interval: Window, selector: IstioSelector = IstioSelector()) -> str:
    """Fraction of 5xx responses; NaN (0/0) when the revision had no requests."""
    interval = promql_duration(interval)
    all_requests = f"sum(rate({ISTIO_REQUESTS}{istio_selector(ref, selector)}[{interval}]))"
    errors = f"sum(rate({ISTIO_REQUESTS}{istio_selector(ref, selector, errors=True)}[{interval}]))"
    return f"({errors} or 0 * {all_requests}) / {all_requests}"


def istio_latency_quantile(
    ref: RevisionRef, quantile: float, interval: Window, selector: IstioSelector = IstioSelector()
) -> str:
    """Latency quantile in milliseconds from Istio's request-duration histogram."""
    buckets = f"rate({ISTIO_DURATION_BUCKET}{istio_selector(ref, selector)}[{promql_duration(interval)}])"
    return f"histogram_quantile({_quantile(quantile)}, sum by (le) ({buckets}))"


# --- Triton ----------------------------------------------------------------------------


def triton_selector(ref: RevisionRef, labels: TritonLabels = TritonLabels()) -> str:
    if ref.model is None:
        raise ValueError("Triton metrics need the model name (RevisionRef.model)")
    equal = {labels.model: ref.model}
    if labels.namespace is not None:
        equal[labels.namespace] = ref.namespace
    if labels.revision is not None:
        equal[labels.revision] = ref.revision
        return label_selector(equal)
    assert labels.pod is not None  # guaranteed by TritonLabels
    return label_selector(equal, {labels.pod: escape_regex(ref.workload) + _POD_SUFFIX})


def _triton_increase(metric: str, ref: RevisionRef, window: str, labels: TritonLabels) -> str:
    return f"sum(increase({metric}{triton_selector(ref, labels)}[{window}]))"


def _triton_failures_or_zero(ref: RevisionRef, window: str, labels: TritonLabels) -> str:
    # Failure series may not exist until the first failure; a loaded model always has success.
    failures = _triton_increase(TRITON_FAILURE, ref, window, labels)
    return f"({failures} or 0 * {_triton_increase(TRITON_SUCCESS, ref, window, labels)})"


def triton_count_queries(
    ref: RevisionRef, window: Window, labels: TritonLabels = TritonLabels()
) -> CountQueries:
    """Failed and total (successful + failed) inference requests over ``window``."""
    window = promql_duration(window)
    failures = _triton_failures_or_zero(ref, window, labels)
    total = f"({_triton_increase(TRITON_SUCCESS, ref, window, labels)} + {failures})"
    return CountQueries(errors=failures, total=total)


def triton_error_rate(ref: RevisionRef, interval: Window, labels: TritonLabels = TritonLabels()) -> str:
    """Failed / all inference requests; NaN when there were none."""
    counts = triton_count_queries(ref, interval, labels)
    return f"{counts.errors} / {counts.total}"


def _triton_average_ms(metric: str, ref: RevisionRef, interval: Window, labels: TritonLabels) -> str:
    interval = promql_duration(interval)
    duration = _triton_increase(metric, ref, interval, labels)
    return f"{duration} / {_triton_increase(TRITON_SUCCESS, ref, interval, labels)} / 1000"


def triton_request_duration_ms(
    ref: RevisionRef, interval: Window, labels: TritonLabels = TritonLabels()
) -> str:
    """Average end-to-end request time per successful request, in milliseconds."""
    return _triton_average_ms(TRITON_REQUEST_DURATION, ref, interval, labels)


def triton_queue_duration_ms(
    ref: RevisionRef, interval: Window, labels: TritonLabels = TritonLabels()
) -> str:
    """Average time a successful request waited in Triton's scheduler queue, in milliseconds."""
    return _triton_average_ms(TRITON_QUEUE_DURATION, ref, interval, labels)


# --- CRD metric names ------------------------------------------------------------------

_LATENCY_QUANTILES = {"latencyP50": 0.5, "latencyP90": 0.9, "latencyP95": 0.95, "latencyP99": 0.99}


def builtin_query(
    metric: str,
    provider: str,
    ref: RevisionRef,
    interval: Window,
    *,
    istio: IstioSelector = IstioSelector(),
    triton: TritonLabels = TritonLabels(),
) -> str:
    """The query for a CRD ``metrics[].metric`` name served by ``provider`` (istio or triton)."""
    if provider == "istio":
        if metric == "errorRate":
            return istio_error_rate(ref, interval, istio)
        if metric in _LATENCY_QUANTILES:
            return istio_latency_quantile(ref, _LATENCY_QUANTILES[metric], interval, istio)
    elif provider == "triton":
        if metric == "errorRate":
            return triton_error_rate(ref, interval, triton)
        if metric == "requestDuration":
            return triton_request_duration_ms(ref, interval, triton)
        if metric == "queueTime":
            return triton_queue_duration_ms(ref, interval, triton)
    raise ValueError(f"metric {metric!r} is not built in for provider {provider!r}")


def count_queries(
    provider: str,
    ref: RevisionRef,
    window: Window,
    *,
    istio: IstioSelector = IstioSelector(),
    triton: TritonLabels = TritonLabels(),
) -> CountQueries:
    """Error/total count queries for the sequential error-rate test."""
    if provider == "istio":
        return istio_count_queries(ref, window, istio)
    if provider == "triton":
        return triton_count_queries(ref, window, triton)
    raise ValueError(f"provider {provider!r} has no request counts")


# --- Load (adaptive fallback) ------------------------------------------------------------


def triton_queue_p95_ms(ref: RevisionRef, labels: TritonLabels = TritonLabels()) -> str:
    """The revision's Triton queue p95 in ms, from the summary Triton exports with summary_latencies."""
    selector = triton_selector(ref, labels)[:-1] + ',quantile="0.95"}'
    return f"max(nv_inference_queue_summary_us{selector}) / 1000"


def service_request_rate(namespace: str, name: str, window: Window = 60) -> str:
    """Requests/s to every revision of a ModelDeployment, as Istio counts them where they are served."""
    selector = label_selector(
        {
            "reporter": "destination",
            "destination_service_name": name,
            "destination_workload_namespace": namespace,
        }
    )
    return f"sum(rate(istio_requests_total{selector}[{promql_duration(window)}]))"


# --- Monitor (drift and quality) -------------------------------------------------------

MONITOR_PREFIX = "modelpilot_monitor_"
MONITOR_METRICS = ("predictionDrift", "dataDriftShare", "accuracy", "f1", "auc", "mae", "rmse")


def _monitor_selector(ref: RevisionRef, extra: Mapping[str, str] | None = None) -> str:
    # The monitor labels series by ModelDeployment name (`model`) and revision.
    return label_selector(
        {"namespace": ref.namespace, "model": ref.name, "revision": ref.revision, **(extra or {})}
    )


def monitor_query(metric: str, ref: RevisionRef, *, method: str = "psi", output: str | None = None) -> str:
    """The monitor's latest value for a revision: drift scores, drift share, or a quality metric."""
    if metric == "predictionDrift":
        extra = {"method": method, **({"output": output} if output else {})}
        return f"max({MONITOR_PREFIX}prediction_drift_score{_monitor_selector(ref, extra)})"
    if metric == "dataDriftShare":
        return f"max({MONITOR_PREFIX}drift_share{_monitor_selector(ref)})"
    if metric in ("accuracy", "f1", "auc", "mae", "rmse"):
        return f"max({MONITOR_PREFIX}performance{_monitor_selector(ref, {'metric': metric})})"
    raise ValueError(f"metric {metric!r} is not served by the monitor; known: {', '.join(MONITOR_METRICS)}")


PREDICTED_CLASS = MONITOR_PREFIX + "predicted_class_total"
LABEL_OUTCOMES = MONITOR_PREFIX + "label_outcomes_total"


def monitor_counted_since(series: str, by: str, window: Window) -> str:
    """How much a monitor counter grew over ``window``, exactly: now minus its value ``window`` ago.

    Not ``increase()``: that extrapolates to the window's edges, and the monitor's counters move in
    batches (once per evaluation), so ``increase()`` over a step read the batch's slope past the last
    scrape and overcounted by about 10 %, letting a ``minSamples`` floor pass on fewer samples. The
    monitor persists its counters and they never go down (``monitor.analyzer.Counters``), so the
    plain difference is exact; a series born inside the window counts from 0, and a lost monitor
    volume (the one way a counter drops) gives no negative counts (``clamp_min``): it undercounts.
    """
    now = f"sum by ({by}) ({series})"
    then = f"sum by ({by}) ({series} offset {promql_duration(window)})"
    return f"clamp_min({now} - ({then} or 0 * {now}), 0)"


def monitor_class_counts(ref: RevisionRef, window: Window, *, output: str | None = None) -> str:
    """Predictions per (output, class) over ``window``: the counts behind the prediction-drift test."""
    selector = _monitor_selector(ref, {"output": output} if output else None)
    return monitor_counted_since(f"{PREDICTED_CLASS}{selector}", "output, class", window)


def monitor_label_outcomes(ref: RevisionRef, window: Window) -> str:
    """Joined labels per outcome (correct, incorrect) over ``window``: the counts behind accuracy."""
    return monitor_counted_since(f"{LABEL_OUTCOMES}{_monitor_selector(ref)}", "outcome", window)


SHADOW_PAIRS = MONITOR_PREFIX + "shadow_pairs_total"


def monitor_shadow_pairs(ref: RevisionRef, baseline: RevisionRef, window: Window) -> str:
    """Paired shadow answers per outcome (agree, disagree) of candidate ``ref`` against ``baseline``."""
    selector = _monitor_selector(ref, {"baseline": baseline.revision})
    return monitor_counted_since(f"{SHADOW_PAIRS}{selector}", "outcome", window)


def monitor_evaluation_age(ref: RevisionRef) -> str:
    """How old the monitor's last evaluation of the model was when Prometheus last scraped it (s).

    Measured at the scrape, so the scrape interval does not count against the monitor.
    """
    series = f"{MONITOR_PREFIX}last_evaluation_timestamp_seconds" + label_selector(
        {"namespace": ref.namespace, "model": ref.name}
    )
    return f"max(timestamp({series}) - {series})"


def monitor_sample_query(metric: str, ref: RevisionRef) -> str:
    """How many rows stand behind a monitor value: stored outputs, window rows, or joined labels."""
    if metric == "predictionDrift":
        return f"max({MONITOR_PREFIX}records_total{_monitor_selector(ref)})"
    if metric == "dataDriftShare":
        return f"max({MONITOR_PREFIX}window_rows{_monitor_selector(ref)})"
    return f"max({MONITOR_PREFIX}labeled_predictions{_monitor_selector(ref)})"


# --- Custom templates ------------------------------------------------------------------

TEMPLATE_VARIABLES = ("name", "namespace", "revision", "workload", "model", "interval")
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


def template_variables(ref: RevisionRef, interval: Window) -> dict[str, str | None]:
    return {
        "name": ref.name,
        "namespace": ref.namespace,
        "revision": ref.revision,
        "workload": ref.workload,
        "model": ref.model,
        "interval": promql_duration(interval),
    }


def render_template(template: str, variables: Mapping[str, str | None]) -> str:
    """Substitute ``{{var}}`` placeholders, escaping values as PromQL label values.

    Unknown or unset variables and stray ``{{`` raise ``TemplateError`` instead of sending
    a broken query to Prometheus.
    """

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in variables:
            known = ", ".join(sorted(variables))
            raise TemplateError(f"unknown template variable {{{{{key}}}}}; known: {known}")
        value = variables[key]
        if value is None:
            raise TemplateError(f"template variable {{{{{key}}}}} has no value for this revision")
        return escape_label_value(value)

    rendered, leftovers = [], []
    position = 0
    for match in _PLACEHOLDER.finditer(template):
        leftovers.append(template[position : match.start()])
        rendered.append(template[position : match.start()] + substitute(match))
        position = match.end()
    leftovers.append(template[position:])
    if any("{{" in part or "}}" in part for part in leftovers):
        raise TemplateError("malformed placeholder: use {{variable}}")
    return "".join(rendered) + template[position:]


def render_for_revision(template: str, ref: RevisionRef, interval: Window) -> str:
    """Render a custom metric query for one revision."""
    return render_template(template, template_variables(ref, interval))
