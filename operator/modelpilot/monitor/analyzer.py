"""Periodic evaluation per (model, revision): data drift, prediction drift, quality, concept drift.

All state is derived from the store and rebuilt on start-up, so a restart loses nothing:

* data drift: a :class:`~.windows.HoppingWindow` of streaming profiles per revision, fed by a
  cursor over ``predictions.seq`` (constant memory, never raw rows);
* prediction drift: candidate vs stable outputs, a bounded sample of the newest outputs read at
  evaluation time (outputs are a few columns, unlike inputs);
* performance and label coverage: the newest joined labels over ``window + labelJoinWindow``,
  because labels arrive late (bounded by ``labeled_limit``);
* concept drift: a detector per revision fed by a cursor over ``joins.seq``;
* predicted-class, label-outcome and shadow-pair counters: :class:`Counters`, persisted in the
  store with cursors of their own (they never skip rows and survive restarts unchanged);
* shadow agreement: the candidate's and the stable's answers to the same mirrored requests
  (:mod:`.shadow`), over the newest pairs of the last ``window``.

The stable and candidate revisions come from the runtime revisions file when the service has
one (:meth:`Analyzer.set_revisions`, re-read every evaluation), else from ``stableRevision`` in
the config, else the stable is the active revision seen first.

Not thread-safe: the server calls it from one worker thread only.

Why one module (~800 lines): every evaluation of a (model, revision) reads the same store state in
one pass and advances its cursors together, which is what makes a restart lossless; the statistics
are in `drift/`, `concept` and `shadow`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelpilot.drift import (
    ClassificationMetrics,
    DatasetDriftReport,
    DatasetProfile,
    DriftDiagnosis,
    ProfileConfig,
    ReferenceBuilder,
    RegressionMetrics,
    build_reference_profile,
    classification_metrics,
    detect_drift,
    diagnose_drift,
    performance_change,
    regression_metrics,
)

from .concept import ConceptDetector, error_of
from .config import ModelConfig, MonitorConfig, RuntimeRevisions
from .records import label_key
from .references import DEFAULT_REFERENCE_DIR, ReferenceError, load_static_reference
from .shadow import ShadowComparison, compare, pair_outcome
from .store import ArmKey, CounterKey, JoinRow, RevisionInfo, Store
from .tabular import CATEGORICAL, infer_kinds, input_columns, outcome, output_columns, predicted_classes
from .windows import HoppingWindow, oldest_start

log = logging.getLogger(__name__)

CHUNK = 2000
OUTPUT_SAMPLE = 5000
LABELED_LIMIT = 20_000
MIN_REFERENCE_ROWS = 100
MAX_POLL_ROWS = 200_000
"""Rows streamed per tick at most; when further behind, older rows are skipped (analysis only)."""
REFERENCE_CELLS = 5_000_000
"""Reservoir budget (rows x features) for a stable-window reference: ~40 MiB of floats."""
ACCURACY_MAX_DROP = 0.05
REGRESSION_MAX_RISE = 0.10
MAX_CLASSES = 50
"""Distinct classes counted per (model, revision, output); further classes count as :data:`OTHER_CLASS`."""
OTHER_CLASS = "__other__"
PREDICTED_CLASS_COUNTER = "predicted_class"
LABEL_OUTCOMES_COUNTER = "label_outcomes"
SHADOW_PAIRS_COUNTER = "shadow_pairs"
OUTCOMES = ("correct", "incorrect")
PAIR_OUTCOMES = ("agree", "disagree")


@dataclass(frozen=True, slots=True)
class RevisionEvaluation:
    namespace: str
    model: str
    revision: str
    role: str
    window_rows: int
    data_drift: DatasetDriftReport | None
    prediction_drift: DatasetDriftReport | None
    baseline: str | None
    performance: ClassificationMetrics | RegressionMetrics | None
    predictions: int
    labeled: int
    concept_drift: bool
    concept_detections: int
    diagnosis: DriftDiagnosis | None
    predicted_classes: Mapping[tuple[str, str], int] = field(default_factory=dict)
    """Cumulative predictions per (output, class); see :class:`Counters`."""
    label_outcomes: Mapping[str, int] = field(default_factory=dict)
    """Cumulative joined labels per outcome (``correct``, ``incorrect``); classification only."""
    shadow: ShadowComparison | None = None
    """The candidate's answers vs the stable's on the same requests (last ``window``)."""
    shadow_pairs: Mapping[tuple[str, str], int] = field(default_factory=dict)
    """Cumulative pairs per (baseline, ``agree``/``disagree``); a classifier's candidates only."""

    @property
    def label_coverage(self) -> float | None:
        return self.labeled / self.predictions if self.predictions else None

    def to_dict(self) -> dict[str, Any]:
        performance = None
        if self.performance is not None:
            performance = {
                k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                for k, v in self.performance._asdict().items()
            }
        return {
            "revision": self.revision,
            "role": self.role,
            "window_rows": self.window_rows,
            "data_drift": None if self.data_drift is None else _summary(self.data_drift),
            "prediction_drift": None if self.prediction_drift is None else _summary(self.prediction_drift),
            "baseline": self.baseline,
            "performance": performance,
            "predictions": self.predictions,
            "labeled": self.labeled,
            "label_coverage": self.label_coverage,
            "concept_drift": self.concept_drift,
            "concept_detections": self.concept_detections,
            "diagnosis": None
            if self.diagnosis is None
            else {"kind": str(self.diagnosis.kind), "explanation": self.diagnosis.explanation},
            "shadow": None if self.shadow is None else self.shadow.to_dict(),
            "shadow_pairs_total": _pairs_dict(self.shadow_pairs),
        }


def _pairs_dict(pairs: Mapping[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    result: dict[str, dict[str, int]] = {}
    for (baseline, outcome_name), count in sorted(pairs.items()):
        result.setdefault(baseline, {})[outcome_name] = count
    return result


@dataclass(frozen=True, slots=True)
class ModelEvaluation:
    namespace: str
    model: str
    evaluated_at: float
    stable: str | None
    reference_source: str | None
    reference_revision: str | None
    reference_error: str | None
    revisions: tuple[RevisionEvaluation, ...]
    review_pending: int = 0
    candidate: str | None = None
    """The candidate named by the runtime revisions file, if any."""

    def revision(self, name: str) -> RevisionEvaluation:
        for revision in self.revisions:
            if revision.revision == name:
                return revision
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "model": self.model,
            "evaluated_at": self.evaluated_at,
            "stable": self.stable,
            "candidate": self.candidate,
            "reference": {
                "source": self.reference_source,
                "revision": self.reference_revision,
                "error": self.reference_error,
            },
            "revisions": [revision.to_dict() for revision in self.revisions],
            "review_pending": self.review_pending,
        }


def _summary(report: DatasetDriftReport) -> dict[str, Any]:
    data = report.to_dict()
    keys = (
        "name",
        "status",
        "method",
        "statistic",
        "p_value_adjusted",
        "effect",
        "min_effect",
        "drifted",
        "n_current",
    )
    data["features"] = [{k: feature[k] for k in keys} for feature in data["features"]]
    return data


@dataclass(slots=True)
class _ModelState:
    config: ModelConfig
    reference: DatasetProfile | None = None
    reference_source: str | None = None
    reference_revision: str | None = None
    reference_error: str | None = None
    kinds: dict[str, str] = field(default_factory=dict)
    windows: dict[str, HoppingWindow] = field(default_factory=dict)
    detectors: dict[str, ConceptDetector] = field(default_factory=dict)

    def set_reference(self, profile: DatasetProfile, source: str, revision: str | None = None) -> None:
        self.reference, self.reference_source, self.reference_revision = profile, source, revision
        self.reference_error = None
        self.kinds = {name: profile_kind.kind for name, profile_kind in profile.features.items()}
        self.windows.clear()


OnJoin = Callable[[ModelConfig, JoinRow], None]


class Counters:
    """Cumulative per-revision counts of predicted classes, label outcomes and shadow pairs
    (classification).

    For every stored prediction of a classification model, each class-label output
    (:func:`~.tabular.predicted_classes`) counts one for its class; the first
    :data:`MAX_CLASSES` classes of a (model, revision, output) are counted by name, later ones
    as :data:`OTHER_CLASS`. For every joined label, the prediction counts one ``correct`` or
    ``incorrect`` (:func:`~.concept.error_of`), once per prediction: the label it has when the
    counter first reads its join (usually its first label). A label that later supersedes it
    (a higher-priority source, or the same label posted again) creates a new join row, which is
    skipped because ``counted_outcomes`` already marks the prediction.

    Why a cursor of its own over ``predictions.seq`` and ``joins.seq`` rather than the ingest
    path or the analysis cursors: the analysis cursors skip rows under backlog
    (:data:`MAX_POLL_ROWS`) and restart at the end of the table, and the ingest path knows
    neither the model's task nor, for a label, whether its prediction was counted already.
    Counting here reads each committed row once in seq order (the single writer commits seqs in
    order) and stores the new values together with the cursor in one transaction, so every row
    is counted exactly once even across crashes and restarts, and a restart resumes at the
    counted values: the counters never go down, so Prometheus's ``increase()`` sees no reset
    (a reset rebuilt from fewer rows after retention would count the whole history again).
    Rows of models that are not configured, or regression models, are passed over for good.

    Shadow pairs are counted in the same pass over ``predictions.seq``: when the cursor reads an
    arm of a request whose other arm (stable vs candidate) has a smaller seq, the pair is
    complete and counts one ``agree`` or ``disagree`` for the candidate revision with the stable
    as ``baseline``, so each pair counts exactly once, when its later arm is read, and is stored
    with the cursor in the same transaction. The stable is the one in force when the pair is
    counted (usually within one evaluation of its later arm); a pair where neither arm is the
    stable, or while no stable is known, is not counted.
    """

    def __init__(
        self, config: MonitorConfig, store: Store, *, chunk: int = CHUNK, max_classes: int = MAX_CLASSES
    ) -> None:
        self.config = config
        self.store = store
        self.chunk = chunk
        self.max_classes = max_classes
        self.values: dict[tuple[str, str, str], dict[tuple[str, ...], int]] = {}
        self.classes: dict[tuple[str, str, str], set[str]] = {}
        self.prediction_cursor = 0
        self.join_cursor = 0
        self.loaded = False

    def load(self) -> None:
        """Resume from the values and cursors persisted in the store."""
        self.loaded = True
        values, cursors = self.store.load_counters()
        self.values.clear()
        self.classes.clear()
        self._apply(values)
        self.prediction_cursor = cursors.get(PREDICTED_CLASS_COUNTER, 0)
        self.join_cursor = cursors.get(LABEL_OUTCOMES_COUNTER, 0)

    def _apply(self, values: Mapping[CounterKey, int]) -> None:
        for (name, model, revision, labels), value in values.items():
            self.values.setdefault((name, model, revision), {})[labels] = value
            if name == PREDICTED_CLASS_COUNTER and labels[1] != OTHER_CLASS:
                self.classes.setdefault((model, revision, labels[0]), set()).add(labels[1])

    def _current(self, key: CounterKey, pending: Mapping[CounterKey, int]) -> int:
        if key in pending:
            return pending[key]
        name, model, revision, labels = key
        return self.values.get((name, model, revision), {}).get(labels, 0)

    def _classifier(self, model: str) -> ModelConfig | None:
        config = self.config.models.get(model)
        return config if config is not None and config.task == "classification" else None

    def poll(self, stable: Mapping[str, str | None] | None = None) -> int:
        """Count every prediction and join committed since the cursors; returns rows read.

        ``stable`` is each model's stable revision now, the baseline of the shadow pairs.
        """
        if not self.loaded:
            self.load()
        stable = stable or {}
        read = 0
        while True:
            rows = self.store.outputs_after(self.prediction_cursor, self.chunk)
            if not rows:
                break
            pending: dict[CounterKey, int] = {}
            new_classes: dict[tuple[str, str, str], set[str]] = {}
            for _, model, revision, _, outputs in rows:
                if self._classifier(model) is None:
                    continue
                for output, value in predicted_classes(json.loads(outputs)).items():
                    series = (model, revision, output)
                    known, new = self.classes.get(series, set()), new_classes.setdefault(series, set())
                    if value not in known and value not in new:
                        if len(known) + len(new) >= self.max_classes:
                            value = OTHER_CLASS
                        else:
                            new.add(value)
                    key = (PREDICTED_CLASS_COUNTER, model, revision, (output, value))
                    pending[key] = self._current(key, pending) + 1
            self._count_pairs(rows, stable, pending)
            self.store.save_counters(pending, {PREDICTED_CLASS_COUNTER: rows[-1][0]})
            self._apply(pending)
            self.prediction_cursor = rows[-1][0]
            read += len(rows)
        while True:
            joins = self.store.joins_after(self.join_cursor, self.chunk)
            if not joins:
                break
            counted = self.store.counted_among([(row.model, row.request_id, row.revision) for row in joins])
            pending = {}
            marks: list[ArmKey] = []
            for row in joins:
                model = self._classifier(row.model)
                arm = (row.model, row.request_id, row.revision)
                if model is None or arm in counted:
                    continue
                predicted, _ = outcome(row.outputs, model.outputs, model.task)
                error = error_of(predicted, row.label, model.task)
                if error is None:
                    continue
                result = "incorrect" if error else "correct"
                key = (LABEL_OUTCOMES_COUNTER, row.model, row.revision, (result,))
                pending[key] = self._current(key, pending) + 1
                counted.add(arm)
                marks.append(arm)
            self.store.save_counters(pending, {LABEL_OUTCOMES_COUNTER: joins[-1].seq}, marks)
            self._apply(pending)
            self.join_cursor = joins[-1].seq
            read += len(joins)
        return read

    def _count_pairs(
        self,
        rows: Sequence[tuple[int, str, str, str, str]],
        stable: Mapping[str, str | None],
        pending: dict[CounterKey, int],
    ) -> None:
        """Count the pairs these arms complete (the other arm has a smaller seq) into ``pending``."""
        by_model: dict[str, list[tuple[int, str, str, str]]] = {}
        for seq, model, revision, request_id, outputs in rows:
            if self._classifier(model) is not None and stable.get(model):
                by_model.setdefault(model, []).append((seq, revision, request_id, outputs))
        for model, arms in by_model.items():
            config, baseline = self.config.models[model], stable[model]
            stored: dict[str, list[tuple[int, str, str]]] = {}
            for seq, request_id, revision, outputs in self.store.arms_of(model, [a[2] for a in arms]):
                stored.setdefault(request_id, []).append((seq, revision, outputs))
            for seq, revision, request_id, outputs in arms:
                earlier = [arm for arm in stored.get(request_id, ()) if arm[0] < seq]
                if revision == baseline:
                    pairs = [
                        (other, other_outputs, outputs)
                        for _, other, other_outputs in earlier
                        if other != baseline
                    ]
                else:
                    pairs = [(revision, outputs, base) for _, other, base in earlier if other == baseline][:1]
                for candidate, candidate_outputs, baseline_outputs in pairs:
                    result = pair_outcome(json.loads(candidate_outputs), json.loads(baseline_outputs), config)
                    if result is None:
                        continue
                    key = (SHADOW_PAIRS_COUNTER, model, candidate, (str(baseline), result))
                    pending[key] = self._current(key, pending) + 1

    def pairs(self, model: str, revision: str, baseline: str | None) -> dict[tuple[str, str], int]:
        """(baseline, ``agree``/``disagree``) → pairs counted for a classifier's candidate; both
        outcomes of the current ``baseline`` are present (from 0), so ``increase()`` sees the start."""
        if self._classifier(model) is None:
            return {}
        values = self.values.get((SHADOW_PAIRS_COUNTER, model, revision), {})
        result = {(labels[0], labels[1]): count for labels, count in values.items()}
        if baseline is not None and baseline != revision:
            for name in PAIR_OUTCOMES:
                result.setdefault((baseline, name), 0)
        return result

    def predicted(self, model: str, revision: str) -> dict[tuple[str, str], int]:
        """(output, class) → predictions counted, for one revision (a copy)."""
        values = self.values.get((PREDICTED_CLASS_COUNTER, model, revision), {})
        return {(output, value): count for (output, value), count in values.items()}

    def outcomes(self, model: str, revision: str) -> dict[str, int]:
        """``correct``/``incorrect`` → predictions counted (both present) for a classifier's revision."""
        if self._classifier(model) is None:
            return {}
        values = self.values.get((LABEL_OUTCOMES_COUNTER, model, revision), {})
        return {name: values.get((name,), 0) for name in OUTCOMES}


class Analyzer:
    def __init__(
        self,
        config: MonitorConfig,
        store: Store,
        *,
        reference_dir: str | Path = DEFAULT_REFERENCE_DIR,
        clock: Callable[[], float] = time.time,
        on_join: OnJoin | None = None,
        chunk: int = CHUNK,
        output_sample: int = OUTPUT_SAMPLE,
        labeled_limit: int = LABELED_LIMIT,
        max_poll_rows: int = MAX_POLL_ROWS,
    ) -> None:
        self.config = config
        self.store = store
        self.reference_dir = reference_dir
        self.clock = clock
        self.on_join = on_join
        self.chunk = chunk
        self.output_sample = output_sample
        self.labeled_limit = labeled_limit
        self.max_poll_rows = max_poll_rows
        self.skipped_rows = 0
        self.models = {name: _ModelState(model) for name, model in config.models.items()}
        self.prediction_cursor = 0
        self.join_cursor = 0
        self.counters = Counters(config, store, chunk=chunk)
        self.snapshot: Mapping[str, ModelEvaluation] = {}
        self.started = False
        self.runtime: Mapping[str, RuntimeRevisions] = {}

    def set_revisions(self, revisions: Mapping[str, RuntimeRevisions]) -> None:
        """The stable/candidate revisions in force now (from the runtime file); used from the next poll."""
        self.runtime = dict(revisions)

    # ------------------------------------------------------------- lifecycle

    def start(self, now: float | None = None) -> None:
        """Load references and rebuild windows and detectors from the store (after a restart)."""
        now = self.clock() if now is None else now
        self.prediction_cursor = self.store.max_prediction_seq()
        self.join_cursor = self.store.max_join_seq()
        self.counters.load()
        for state in self.models.values():
            self._load_reference(state)
            if state.reference is not None:
                self._replay_windows(state, now)
            self._replay_joins(state, now)
        self.started = True

    def _load_reference(self, state: _ModelState) -> None:
        model = state.config
        try:
            profile = load_static_reference(model, self.reference_dir)
        except ReferenceError as error:
            log.warning("monitor: model %s: %s", model.name, error)
            state.reference_error = str(error)
            return
        if profile is not None:
            state.set_reference(profile, model.reference.mode or "profile")
            return
        if model.reference.stable_window is not None:
            stored = self.store.load_reference(model.name)
            if stored is not None:
                revision, _, data = stored
                state.set_reference(DatasetProfile.from_dict(data), "stable_window", revision)

    def _replay_windows(self, state: _ModelState, now: float) -> None:
        """Refill the windows of one model from the stored rows they cover."""
        state.windows.clear()
        after: tuple[float, int] | None = None
        since = oldest_start(now, state.config.window)
        while True:
            rows = self.store.predictions_since(
                state.config.name, since, self.chunk, after=after, upto=self.prediction_cursor
            )
            self._route(rows, now)
            if len(rows) < self.chunk:
                break
            after = (rows[-1][3], rows[-1][0])

    def _replay_joins(self, state: _ModelState, now: float) -> None:
        state.detectors.clear()
        since = now - state.config.window - state.config.label_join_window
        after = 0
        while True:
            rows = self.store.joins_after(
                after, self.chunk, upto=self.join_cursor, since=since, model=state.config.name
            )
            self._feed_joins(rows, live=False)
            if len(rows) < self.chunk:
                break
            after = rows[-1].seq

    # ----------------------------------------------------------------- input

    def poll(self, now: float | None = None) -> int:
        """Consume new predictions and joins since the cursors; returns rows consumed.

        The counters are fed first, from their own cursors, so the skip-ahead below never
        costs them a row.
        """
        now = self.clock() if now is None else now
        self.counters.poll(
            {name: self._stable(state.config, self._active(name, now)) for name, state in self.models.items()}
        )
        for state in self.models.values():
            for window in state.windows.values():
                window.rotate(now)
        behind = self.store.max_prediction_seq() - self.prediction_cursor
        if behind > self.max_poll_rows:
            # Analysis cannot keep up with ingest: stay current rather than fall ever further
            # behind. The skipped rows are stored and served; only the drift windows miss them.
            log.warning("monitor: analysis %d rows behind, skipping %d", behind, behind - self.max_poll_rows)
            self.skipped_rows += behind - self.max_poll_rows
            self.prediction_cursor += behind - self.max_poll_rows
        consumed = 0
        while True:
            rows = self.store.predictions_after(self.prediction_cursor, self.chunk)
            if not rows:
                break
            self._route(rows, now)
            self.prediction_cursor = rows[-1][0]
            consumed += len(rows)
        while True:
            joins = self.store.joins_after(self.join_cursor, self.chunk)
            if not joins:
                break
            self._feed_joins(joins, live=True)
            self.join_cursor = joins[-1].seq
            consumed += len(joins)
        return consumed

    def _route(self, rows: Sequence[tuple[int, str, str, float, str]], now: float) -> None:
        groups: dict[tuple[str, str], list[tuple[float, str]]] = {}
        for _, model, revision, ts, inputs in rows:
            state = self.models.get(model)
            if state is not None and state.reference is not None:
                groups.setdefault((model, revision), []).append((ts, inputs))
        for (model, revision), items in groups.items():
            state = self.models[model]
            window = state.windows.get(revision)
            if window is None:
                window = state.windows[revision] = HoppingWindow(state.reference, state.config.window, now)  # type: ignore[arg-type]
            timestamps = np.fromiter((ts for ts, _ in items), np.float64, len(items))
            if not (timestamps >= window.start).any():
                continue
            parsed = [json.loads(inputs) for _, inputs in items]
            window.update(input_columns(parsed, state.kinds), timestamps)

    def _feed_joins(self, rows: Sequence[JoinRow], *, live: bool) -> None:
        for row in rows:
            state = self.models.get(row.model)
            if state is None:
                continue
            model = state.config
            if live and self.on_join is not None:
                self.on_join(model, row)
            predicted, _ = outcome(row.outputs, model.outputs, model.task)
            error = error_of(predicted, row.label, model.task)
            if error is None:
                continue
            detector = state.detectors.get(row.revision)
            if detector is None:
                detector = state.detectors[row.revision] = ConceptDetector(model.concept_detector)
            detector.update(error, row.pred_ts + row.delay)

    # ------------------------------------------------------------ evaluation

    def evaluate(self, now: float | None = None) -> Mapping[str, ModelEvaluation]:
        """Poll, then evaluate every configured model; the result also replaces :attr:`snapshot`."""
        now = self.clock() if now is None else now
        if not self.started:
            self.start(now)
        self.poll(now)
        snapshot: dict[str, ModelEvaluation] = {}
        for name, state in self.models.items():
            try:
                snapshot[name] = self._evaluate_model(state, now)
            except Exception:  # one model's failure must not blind the others
                log.exception("monitor: evaluating model %s failed", name)
        self.snapshot = snapshot
        return snapshot

    def _active(self, model: str, now: float) -> list[RevisionInfo]:
        window = self.config.models[model].window
        return [info for info in self.store.revisions(model) if info.last_seen >= now - window]

    def _stable(self, model: ModelConfig, active: Sequence[RevisionInfo]) -> str | None:
        """The runtime or configured stable revision, else the active revision seen first (it
        predates any canary); None when that revision is not active."""
        names = [info.revision for info in active]
        runtime = self.runtime.get(model.name)
        declared = runtime.stable if runtime is not None and runtime.stable else model.stable_revision
        if declared is not None:
            return declared if declared in names else None
        return min(active, key=lambda info: (info.first_seen, info.revision)).revision if active else None

    def _evaluate_model(self, state: _ModelState, now: float) -> ModelEvaluation:
        model = state.config
        active = self._active(model.name, now)
        stable = self._stable(model, active)
        if model.reference.stable_window is not None and stable is not None:
            info = next(info for info in active if info.revision == stable)
            self._maybe_build_stable_reference(state, info, now)
        active_names = {info.revision for info in active}
        for revision in list(state.windows):
            if revision not in active_names:
                del state.windows[revision]
        for revision in list(state.detectors):
            if revision not in active_names:
                del state.detectors[revision]
        drift_config = model.thresholds.drift_config()
        baseline = self._output_baseline(model, stable, now)
        stable_performance = self._performance(model, stable, now) if stable is not None else None
        evaluations = []
        for info in sorted(active, key=lambda i: (i.revision != stable, i.first_seen, i.revision)):
            revision = info.revision
            window = state.windows.get(revision)
            data_drift = None
            if state.reference is not None and window is not None:
                data_drift = detect_drift(state.reference, window.current(), drift_config)
            prediction_drift = None
            if baseline is not None and revision != stable:
                columns, _ = output_columns(
                    self.store.recent_outputs(model.name, revision, now - model.window, self.output_sample),
                    baseline[1],
                )
                prediction_drift = detect_drift(baseline[0], columns, drift_config)
            performance = (
                stable_performance if revision == stable else self._performance(model, revision, now)
            )
            total, labeled = self.store.coverage(
                model.name, revision, now - model.window - model.label_join_window
            )
            shadow = None
            if stable is not None and revision != stable:
                rows = self.store.shadow_pairs(
                    model.name, stable, revision, now - model.window, self.output_sample
                )
                shadow = compare(rows, model, stable) if rows else None
            detector = state.detectors.get(revision)
            concept = detector is not None and detector.active(now, model.window)
            degraded = concept or (revision != stable and _degraded(model, stable_performance, performance))
            evaluations.append(
                RevisionEvaluation(
                    namespace=model.namespace,
                    model=model.name,
                    revision=revision,
                    role="stable" if revision == stable else "candidate",
                    window_rows=window.current().n_rows if window is not None else 0,
                    data_drift=data_drift,
                    prediction_drift=prediction_drift,
                    baseline=stable if prediction_drift is not None else None,
                    performance=performance,
                    predictions=total,
                    labeled=labeled,
                    concept_drift=concept,
                    concept_detections=detector.detections if detector is not None else 0,
                    diagnosis=diagnose_drift(data_drift if data_drift is not None else False, degraded),
                    predicted_classes=self.counters.predicted(model.name, revision),
                    label_outcomes=self.counters.outcomes(model.name, revision),
                    shadow=shadow,
                    shadow_pairs=self.counters.pairs(model.name, revision, stable),
                )
            )
        return ModelEvaluation(
            namespace=model.namespace,
            model=model.name,
            evaluated_at=now,
            stable=stable,
            reference_source=state.reference_source,
            reference_revision=state.reference_revision,
            reference_error=state.reference_error,
            revisions=tuple(evaluations),
            review_pending=self.store.pending_review_count(model.name),
            candidate=runtime.candidate if (runtime := self.runtime.get(model.name)) is not None else None,
        )

    def _output_baseline(
        self, model: ModelConfig, stable: str | None, now: float
    ) -> tuple[DatasetProfile, dict[str, str]] | None:
        """The stable revision's recent outputs, profiled, with the column kinds to reuse."""
        if stable is None:
            return None
        outputs = self.store.recent_outputs(model.name, stable, now - model.window, self.output_sample)
        if not outputs:
            return None
        columns, kinds = output_columns(outputs)
        if not columns:
            return None
        categorical = [name for name, kind in kinds.items() if kind == CATEGORICAL]
        profile = build_reference_profile(columns, categorical=categorical, config=ProfileConfig(pca=False))
        return profile, kinds

    def _performance(
        self, model: ModelConfig, revision: str, now: float
    ) -> ClassificationMetrics | RegressionMetrics | None:
        rows = self.store.labeled_outcomes(
            model.name, revision, now - model.window - model.label_join_window, self.labeled_limit
        )
        return quality(rows, model)

    def _maybe_build_stable_reference(self, state: _ModelState, stable: RevisionInfo, now: float) -> None:
        """Build the reference from ``stableWindow`` of the stable revision's traffic, once per stable revision."""
        model = state.config
        span = model.reference.stable_window or 0.0
        if state.reference is not None and state.reference_revision == stable.revision:
            return
        if now - stable.first_seen < span:
            return
        kinds: dict[str, str] | None = None
        builder: ReferenceBuilder | None = None
        after = 0
        while True:
            rows = self.store.inputs_between(model.name, stable.revision, now - span, self.chunk, after)
            if not rows:
                break
            parsed = [json.loads(inputs) for _, inputs in rows]
            if kinds is None:
                kinds = {f.name: f.type for f in model.features} if model.features else infer_kinds(parsed)
                reservoir = int(min(20_000, max(1000, REFERENCE_CELLS // max(1, len(kinds)))))
                categorical = [name for name, kind in kinds.items() if kind == CATEGORICAL]
                builder = ReferenceBuilder(categorical=categorical, reservoir_size=reservoir)
            assert builder is not None
            builder.update(input_columns(parsed, kinds))
            after = rows[-1][0]
        if builder is None or builder.n_rows < MIN_REFERENCE_ROWS:
            return
        profile = builder.build()
        self.store.save_reference(model.name, stable.revision, profile.to_dict())
        log.info(
            "monitor: model %s: reference built from %d rows of revision %s",
            model.name,
            builder.n_rows,
            stable.revision,
        )
        state.set_reference(profile, "stable_window", stable.revision)
        self._replay_windows(state, now)


def quality(
    rows: Sequence[tuple[Mapping[str, Any], Any]], model: ModelConfig
) -> ClassificationMetrics | RegressionMetrics | None:
    """Accuracy/F1/AUC or MAE/RMSE over (outputs, label) pairs; None without usable pairs."""
    predicted, truth, scores = [], [], []
    for outputs, label in rows:
        prediction, score = outcome(outputs, model.outputs, model.task)
        if prediction is None:
            continue
        if model.task == "regression":
            if isinstance(label, bool) or not isinstance(label, int | float):
                continue
            truth.append(float(label))
        else:
            truth.append(label_key(label))
        predicted.append(prediction)
        scores.append(math.nan if score is None else score)
    if not predicted:
        return None
    if model.task == "regression":
        return regression_metrics(np.asarray(truth), np.asarray(predicted, dtype=np.float64))
    score_array = np.asarray(scores, dtype=np.float64)
    return classification_metrics(
        np.asarray(truth, dtype=object).astype(str),
        np.asarray(predicted, dtype=object).astype(str),
        score_array if np.isfinite(score_array).any() else None,
        positive_label=model.outputs.positive_label,
    )


def _degraded(
    model: ModelConfig,
    stable: ClassificationMetrics | RegressionMetrics | None,
    candidate: ClassificationMetrics | RegressionMetrics | None,
    min_pairs: int = 30,
) -> bool:
    """Candidate quality below the stable's by more than the tolerance (both with enough labels)."""
    if stable is None or candidate is None or stable.n < min_pairs or candidate.n < min_pairs:
        return False
    if model.task == "regression":
        baseline = float(stable.mae)  # type: ignore[union-attr]
        return performance_change(
            stable, candidate, metric="mae", max_drop=REGRESSION_MAX_RISE * baseline
        ).degraded
    return performance_change(stable, candidate, metric="accuracy", max_drop=ACCURACY_MAX_DROP).degraded
