"""Prometheus metrics of the monitor, on its own registry.

Evaluation results are exposed by a custom collector that renders the latest snapshot at scrape
time, so a revision that stops receiving traffic simply disappears instead of leaving stale
series behind. The predicted-class, label-outcome and shadow-pair counters are rendered the same
way, from the analyzer's persisted :class:`~.analyzer.Counters` as of the snapshot, so they stay
monotone across restarts; the operator's sequential drift, accuracy and agreement tests read them
with ``increase()``. Ingest counters and the label-delay histogram are ordinary prometheus_client
objects on the same registry.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .analyzer import ModelEvaluation, RevisionEvaluation

PREFIX = "modelpilot_monitor_"

FEATURE_DRIFT_SCORE = PREFIX + "feature_drift_score"
FEATURE_DRIFT_PVALUE = PREFIX + "feature_drift_pvalue"
FEATURE_DRIFT_EFFECT = PREFIX + "feature_drift_effect"
FEATURE_DRIFTED = PREFIX + "feature_drifted"
DRIFT_SHARE = PREFIX + "drift_share"
DATASET_DRIFT = PREFIX + "dataset_drift"
PREDICTION_DRIFT_SCORE = PREFIX + "prediction_drift_score"
PREDICTION_DRIFT = PREFIX + "prediction_drift"
PERFORMANCE = PREFIX + "performance"
LABEL_COVERAGE = PREFIX + "label_coverage"
LABELED_PREDICTIONS = PREFIX + "labeled_predictions"
WINDOW_ROWS = PREFIX + "window_rows"
CONCEPT_DRIFT = PREFIX + "concept_drift"
CONCEPT_DRIFT_DETECTIONS = PREFIX + "concept_drift_detections_total"
REVIEW_PENDING = PREFIX + "review_pending"
LAST_EVALUATION = PREFIX + "last_evaluation_timestamp_seconds"
LABEL_DELAY = PREFIX + "label_delay_seconds"
RECORDS = PREFIX + "records_total"
LABELS = PREFIX + "labels_total"
PREDICTED_CLASS = PREFIX + "predicted_class_total"
LABEL_OUTCOMES = PREFIX + "label_outcomes_total"
SHADOW_PAIRS = PREFIX + "shadow_pairs_total"
SHADOW_WINDOW_PAIRS = PREFIX + "shadow_window_pairs"
SHADOW_AGREEMENT = PREFIX + "shadow_agreement"
SHADOW_ABS_DIFF = PREFIX + "shadow_abs_diff"
SHADOW_FEATURE_SEPARATION = PREFIX + "shadow_feature_separation"
DROPPED = PREFIX + "dropped_total"
QUEUE_DEPTH = PREFIX + "queue_depth"
STORE_BYTES = PREFIX + "store_bytes"
STORE_USED_BYTES = PREFIX + "store_used_bytes"
STORE_MAX_BYTES = PREFIX + "store_max_bytes"
RETENTION_DELETED = PREFIX + "retention_deleted_total"

EXPORTED_METRICS: tuple[str, ...] = (
    FEATURE_DRIFT_SCORE,
    FEATURE_DRIFT_PVALUE,
    FEATURE_DRIFT_EFFECT,
    FEATURE_DRIFTED,
    DRIFT_SHARE,
    DATASET_DRIFT,
    PREDICTION_DRIFT_SCORE,
    PREDICTION_DRIFT,
    PERFORMANCE,
    LABEL_COVERAGE,
    LABELED_PREDICTIONS,
    WINDOW_ROWS,
    CONCEPT_DRIFT,
    CONCEPT_DRIFT_DETECTIONS,
    REVIEW_PENDING,
    LAST_EVALUATION,
    LABEL_DELAY,
    RECORDS,
    LABELS,
    PREDICTED_CLASS,
    LABEL_OUTCOMES,
    SHADOW_PAIRS,
    SHADOW_WINDOW_PAIRS,
    SHADOW_AGREEMENT,
    SHADOW_ABS_DIFF,
    SHADOW_FEATURE_SEPARATION,
    DROPPED,
    QUEUE_DEPTH,
    STORE_BYTES,
    STORE_USED_BYTES,
    STORE_MAX_BYTES,
    RETENTION_DELETED,
)
"""Every metric name as PromQL sees it (histogram: the base name of its _bucket/_sum/_count series)."""

REVISION_LABELS = ("namespace", "model", "revision")
FEATURE_LABELS = (*REVISION_LABELS, "feature", "method")
SHADOW_LABELS = (*REVISION_LABELS, "baseline")
RETENTION_REASONS = ("age", "rows", "bytes")
DELAY_BUCKETS = (
    1,
    10,
    60,
    300,
    900,
    1800,
    3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86_400,
    2 * 86_400,
    7 * 86_400,
)
DROP_REASONS = (
    "queue_full",
    "invalid",
    "unknown_model",
    "store_error",
    "label_expired",
    "label_outside_window",
    "review_queue_full",
    "analysis_skipped",
)
PERFORMANCE_FIELDS = {
    "accuracy": "accuracy",
    "f1": "f1",
    "f1_macro": "f1_macro",
    "auc": "roc_auc",
    "mae": "mae",
    "rmse": "rmse",
}


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


class EvaluationCollector(Collector):
    """Renders the analyzer's latest snapshot as gauges at scrape time."""

    def __init__(self, snapshot: Callable[[], Mapping[str, ModelEvaluation]]) -> None:
        self._snapshot = snapshot

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        g = {
            FEATURE_DRIFT_SCORE: GaugeMetricFamily(
                FEATURE_DRIFT_SCORE, "Per-feature drift statistic vs the reference.", labels=FEATURE_LABELS
            ),
            FEATURE_DRIFT_PVALUE: GaugeMetricFamily(
                FEATURE_DRIFT_PVALUE, "Per-feature drift test p-value (ks, chi2).", labels=FEATURE_LABELS
            ),
            FEATURE_DRIFT_EFFECT: GaugeMetricFamily(
                FEATURE_DRIFT_EFFECT,
                "Effect size beside each p-value: KS D (ks), total variation distance (chi2).",
                labels=FEATURE_LABELS,
            ),
            FEATURE_DRIFTED: GaugeMetricFamily(
                FEATURE_DRIFTED,
                "1 when the feature's deciding test flags drift (after FDR).",
                labels=(*REVISION_LABELS, "feature"),
            ),
            DRIFT_SHARE: GaugeMetricFamily(
                DRIFT_SHARE, "Share of tested features that drifted.", labels=REVISION_LABELS
            ),
            DATASET_DRIFT: GaugeMetricFamily(
                DATASET_DRIFT,
                "1 when the dataset drifted (drift share or multivariate).",
                labels=REVISION_LABELS,
            ),
            PREDICTION_DRIFT_SCORE: GaugeMetricFamily(
                PREDICTION_DRIFT_SCORE,
                "Candidate output drift vs the stable revision.",
                labels=(*REVISION_LABELS, "baseline", "output", "method"),
            ),
            PREDICTION_DRIFT: GaugeMetricFamily(
                PREDICTION_DRIFT,
                "1 when the candidate's outputs drifted from the stable's.",
                labels=(*REVISION_LABELS, "baseline"),
            ),
            PERFORMANCE: GaugeMetricFamily(
                PERFORMANCE, "Model quality on joined labels.", labels=(*REVISION_LABELS, "metric")
            ),
            LABEL_COVERAGE: GaugeMetricFamily(
                LABEL_COVERAGE,
                "Share of predictions with a joined label (window + labelJoinWindow).",
                labels=REVISION_LABELS,
            ),
            LABELED_PREDICTIONS: GaugeMetricFamily(
                LABELED_PREDICTIONS,
                "Predictions with a joined label (window + labelJoinWindow).",
                labels=REVISION_LABELS,
            ),
            WINDOW_ROWS: GaugeMetricFamily(
                WINDOW_ROWS, "Rows in the evaluated data-drift window.", labels=REVISION_LABELS
            ),
            CONCEPT_DRIFT: GaugeMetricFamily(
                CONCEPT_DRIFT,
                "1 while a rise of the labelled error rate was detected within the last window.",
                labels=REVISION_LABELS,
            ),
            REVIEW_PENDING: GaugeMetricFamily(
                REVIEW_PENDING, "Predictions waiting for manual review.", labels=("namespace", "model")
            ),
            LAST_EVALUATION: GaugeMetricFamily(
                LAST_EVALUATION, "Unix time of the model's last evaluation.", labels=("namespace", "model")
            ),
            SHADOW_WINDOW_PAIRS: GaugeMetricFamily(
                SHADOW_WINDOW_PAIRS,
                "Requests both the candidate and the baseline (stable) answered, in the sample of the last window.",
                labels=SHADOW_LABELS,
            ),
            SHADOW_AGREEMENT: GaugeMetricFamily(
                SHADOW_AGREEMENT,
                "Share of paired requests on which candidate and baseline predict the same class (last window).",
                labels=SHADOW_LABELS,
            ),
            SHADOW_ABS_DIFF: GaugeMetricFamily(
                SHADOW_ABS_DIFF,
                "Quantiles of |candidate - baseline| over paired requests (regression, last window; quantile "
                "1 is the max).",
                labels=(*SHADOW_LABELS, "quantile"),
            ),
            SHADOW_FEATURE_SEPARATION: GaugeMetricFamily(
                SHADOW_FEATURE_SEPARATION,
                "How concentrated the arms' disagreement is in some values of the feature (total variation "
                "distance, 0..1).",
                labels=(*SHADOW_LABELS, "feature"),
            ),
        }
        c = {
            CONCEPT_DRIFT_DETECTIONS: CounterMetricFamily(
                CONCEPT_DRIFT_DETECTIONS.removesuffix("_total"),
                "Concept-drift detections since start.",
                labels=REVISION_LABELS,
            ),
            PREDICTED_CLASS: CounterMetricFamily(
                PREDICTED_CLASS.removesuffix("_total"),
                "Stored predictions per class-label output and class (first 50 classes, then __other__).",
                labels=(*REVISION_LABELS, "output", "class"),
            ),
            LABEL_OUTCOMES: CounterMetricFamily(
                LABEL_OUTCOMES.removesuffix("_total"),
                "Predictions whose joined label agrees (correct) or not (incorrect), counted once each.",
                labels=(*REVISION_LABELS, "outcome"),
            ),
            SHADOW_PAIRS: CounterMetricFamily(
                SHADOW_PAIRS.removesuffix("_total"),
                "Mirrored requests answered by this candidate and the baseline (stable), by whether the "
                "predicted classes agree; counted once each.",
                labels=(*SHADOW_LABELS, "outcome"),
            ),
        }
        for evaluation in self._snapshot().values():
            model_key = [evaluation.namespace, evaluation.model]
            g[REVIEW_PENDING].add_metric(model_key, evaluation.review_pending)
            g[LAST_EVALUATION].add_metric(model_key, evaluation.evaluated_at)
            for revision in evaluation.revisions:
                self._revision(g, c, revision)
        yield from g.values()
        yield from c.values()

    @staticmethod
    def _revision(
        g: dict[str, GaugeMetricFamily], c: dict[str, CounterMetricFamily], rev: RevisionEvaluation
    ) -> None:
        key = [rev.namespace, rev.model, rev.revision]
        g[WINDOW_ROWS].add_metric(key, rev.window_rows)
        g[CONCEPT_DRIFT].add_metric(key, float(rev.concept_drift))
        c[CONCEPT_DRIFT_DETECTIONS].add_metric(key, rev.concept_detections)
        for (output, value), count in sorted(rev.predicted_classes.items()):
            c[PREDICTED_CLASS].add_metric([*key, output, value], count)
        for name, count in sorted(rev.label_outcomes.items()):
            c[LABEL_OUTCOMES].add_metric([*key, name], count)
        for (baseline, name), count in sorted(rev.shadow_pairs.items()):
            c[SHADOW_PAIRS].add_metric([*key, baseline, name], count)
        shadow = rev.shadow
        if shadow is not None:
            shadow_key = [*key, shadow.baseline]
            g[SHADOW_WINDOW_PAIRS].add_metric(shadow_key, shadow.pairs)
            if _finite(shadow.agreement):
                g[SHADOW_AGREEMENT].add_metric(shadow_key, shadow.agreement)
            for quantile, value in (shadow.abs_diff or {}).items():
                if quantile != "mean" and _finite(value):
                    g[SHADOW_ABS_DIFF].add_metric(
                        [*shadow_key, "1" if quantile == "max" else quantile], value
                    )
            for feature in shadow.features:
                if _finite(feature.separation):
                    g[SHADOW_FEATURE_SEPARATION].add_metric([*shadow_key, feature.name], feature.separation)
        g[LABELED_PREDICTIONS].add_metric(key, rev.labeled)
        if rev.label_coverage is not None:
            g[LABEL_COVERAGE].add_metric(key, rev.label_coverage)
        report = rev.data_drift
        if report is not None and report.status != "inconclusive":
            g[DRIFT_SHARE].add_metric(key, report.drift_share)
            g[DATASET_DRIFT].add_metric(key, float(report.drifted))
        if report is not None:
            for feature in report.features:
                if feature.status == "inconclusive":
                    continue
                g[FEATURE_DRIFTED].add_metric([*key, feature.name], float(feature.drifted))
                for method, result in feature.metrics.items():
                    if _finite(result.statistic):
                        g[FEATURE_DRIFT_SCORE].add_metric([*key, feature.name, method], result.statistic)
                    if result.p_value is not None and _finite(result.p_value):
                        g[FEATURE_DRIFT_PVALUE].add_metric([*key, feature.name, method], result.p_value)
                    if _finite(result.effect):
                        g[FEATURE_DRIFT_EFFECT].add_metric([*key, feature.name, method], result.effect)
        prediction = rev.prediction_drift
        if prediction is not None and rev.baseline is not None and prediction.status != "inconclusive":
            g[PREDICTION_DRIFT].add_metric([*key, rev.baseline], float(prediction.drifted))
            for feature in prediction.features:
                for method, result in feature.metrics.items():
                    if _finite(result.statistic):
                        g[PREDICTION_DRIFT_SCORE].add_metric(
                            [*key, rev.baseline, feature.name, method], result.statistic
                        )
        if rev.performance is not None:
            for metric, attribute in PERFORMANCE_FIELDS.items():
                value = getattr(rev.performance, attribute, None)
                if _finite(value):
                    g[PERFORMANCE].add_metric([*key, metric], value)


class MonitorMetrics:
    """The registry served on /metrics: ingest instruments plus the evaluation collector."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.records = Counter(
            RECORDS.removesuffix("_total"),
            "Prediction records stored.",
            REVISION_LABELS,
            registry=self.registry,
        )
        self.labels = Counter(
            LABELS.removesuffix("_total"), "Labels stored, by source.", ("source",), registry=self.registry
        )
        self.dropped = Counter(
            DROPPED.removesuffix("_total"),
            "Records or labels not stored, by reason.",
            ("reason",),
            registry=self.registry,
        )
        self.queue = Gauge(QUEUE_DEPTH, "Write batches waiting for the database.", registry=self.registry)
        self.label_delay = Histogram(
            LABEL_DELAY,
            "Label timestamp minus prediction timestamp, at join.",
            ("namespace", "model", "source"),
            buckets=DELAY_BUCKETS,
            registry=self.registry,
        )
        for reason in DROP_REASONS:
            self.dropped.labels(reason)
        self.store_bytes = Gauge(
            STORE_BYTES, "Bytes the database takes on its volume (file plus WAL).", registry=self.registry
        )
        self.store_used_bytes = Gauge(
            STORE_USED_BYTES,
            "Bytes of the database's live pages (what retention.maxBytes bounds), as of the last evaluation.",
            registry=self.registry,
        )
        self.store_max_bytes = Gauge(
            STORE_MAX_BYTES, "retention.maxBytes: the bound on the live bytes.", registry=self.registry
        )
        self.retention_deleted = Counter(
            RETENTION_DELETED.removesuffix("_total"),
            "Predictions deleted by retention, by bound (age, rows, bytes).",
            ("reason",),
            registry=self.registry,
        )
        for reason in RETENTION_REASONS:
            self.retention_deleted.labels(reason)

    def watch_store(
        self, disk_bytes: Callable[[], float], used_bytes: Callable[[], float], max_bytes: float
    ) -> None:
        self.store_bytes.set_function(disk_bytes)
        self.store_used_bytes.set_function(used_bytes)
        self.store_max_bytes.set(max_bytes)

    def watch_evaluations(self, snapshot: Callable[[], Mapping[str, ModelEvaluation]]) -> None:
        self.registry.register(EvaluationCollector(snapshot))

    def watch_queue(self, depth: Callable[[], float]) -> None:
        self.queue.set_function(depth)
