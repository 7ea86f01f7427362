"""The monitor's configuration: one file per namespace, one entry per monitored ModelDeployment.

The operator renders it into a ConfigMap from each ModelDeployment's ``spec.monitoring`` with
:func:`config_from_spec`; keys stay camelCase like the CR so the two read alike. Defaults
are documented (with reasons) in docs/monitor.md.

One bad entry degrades only its own model: :func:`parse_config` skips a model entry it cannot
serve and records why (:attr:`MonitorConfig.skipped`, shown in ``/v1/status``), so one CR can
never take the namespace's shared monitor down. The stable and candidate revisions, which change
on every promotion, live in a separate file (:func:`load_revisions`) that the monitor re-reads
at run time, so a promotion restarts nothing.

Why one module (~570 lines): `parse_config` and `config_from_spec` must agree field by field (the
validator runs the same parser on the CR), so they are kept side by side.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from modelpilot.api.spec import parse_duration

from .heuristics import HeuristicRule, parse_rules
from .records import label_key

if TYPE_CHECKING:
    from modelpilot.drift import DriftConfig

Task = Literal["classification", "regression"]
TASKS = ("classification", "regression")
FEATURE_TYPES = ("numeric", "categorical")
CONCEPT_DETECTORS = ("adwin", "pageHinkley")

DEFAULT_SAMPLE_RATE = 0.1  # the CRD default; applied by the capture proxy, not here
DEFAULT_REVIEW_SAMPLE_RATE = 0.0
DEFAULT_LABEL_JOIN_WINDOW = "24h"
DEFAULT_WINDOW = "1h"
DEFAULT_MAX_ROWS = 1_000_000
DEFAULT_MAX_AGE = "168h"
DEFAULT_QUEUE_SIZE = 64
DEFAULT_MAX_RECORDS_PER_REQUEST = 1000
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_REVIEW_MAX_PENDING = 10_000
DEFAULT_STORAGE_BYTES = 5 * 1024**3  # the PVC the manifests request by default (5Gi)
MAX_BYTES_SHARE = 0.8
DEFAULT_MAX_BYTES = int(DEFAULT_STORAGE_BYTES * MAX_BYTES_SHARE)
"""80 % of the default volume: the rest is headroom for the WAL (truncated to 64 MiB after
checkpoints) and for what one burst writes before the writer's byte check deletes old rows.
Used when ``retention.maxBytes`` is unset and the database's file system cannot be measured."""
DEFAULT_READ_TIMEOUT = "30s"
DEFAULT_IDLE_TIMEOUT = "60s"
DEFAULT_PORT = 8090


class ConfigError(ValueError):
    """The monitor config is invalid; the message names the offending key."""


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    name: str
    type: str = "numeric"


@dataclass(frozen=True, slots=True)
class ReferenceSpec:
    """Where the data-drift reference comes from; exactly one source is used.

    ``profile`` is an inline ``DatasetProfile.to_dict()``; ``uri`` a local .npz/.csv/.json
    path; ``config_map`` a ConfigMap mounted under the reference directory; ``stable_window``
    builds the reference from the stable revision's own recent traffic.
    """

    uri: str | None = None
    config_map: str | None = None
    key: str | None = None
    stable_window: float | None = None
    profile: Mapping[str, Any] | None = None

    @property
    def mode(self) -> str | None:
        for name in ("profile", "uri", "config_map", "stable_window"):
            if getattr(self, name) is not None:
                return name
        return None


@dataclass(frozen=True, slots=True)
class Thresholds:
    psi: float = 0.2
    jensen_shannon: float = 0.1
    alpha: float = 0.05
    drift_share: float = 0.5
    min_effect: float = 0.025  # DriftConfig.min_effect; docs/drift.md says why

    def drift_config(self) -> DriftConfig:
        from modelpilot.drift import (
            DriftConfig,
        )  # lazily: the operator imports this module without numpy work

        return DriftConfig(
            psi_threshold=self.psi,
            js_threshold=self.jensen_shannon,
            alpha=self.alpha,
            drift_share_threshold=self.drift_share,
            min_effect=self.min_effect,
        )


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """Which output is the predicted label/value and which the positive-class score (None: guess)."""

    prediction: str | None = None
    score: str | None = None
    positive_label: str = "1"
    decision_threshold: float = 0.5


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    namespace: str
    task: Task = "classification"
    features: tuple[FeatureSpec, ...] = ()
    reference: ReferenceSpec = field(default_factory=ReferenceSpec)
    thresholds: Thresholds = field(default_factory=Thresholds)
    outputs: OutputSpec = field(default_factory=OutputSpec)
    sample_rate: float = DEFAULT_SAMPLE_RATE
    review_sample_rate: float = DEFAULT_REVIEW_SAMPLE_RATE
    label_join_window: float = 86_400.0
    window: float = 3_600.0
    stable_revision: str | None = None
    concept_detector: str = "adwin"
    heuristics: tuple[HeuristicRule, ...] = ()

    @property
    def categorical(self) -> tuple[str, ...]:
        return tuple(feature.name for feature in self.features if feature.type == "categorical")

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(feature.name for feature in self.features)


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """Bounds that keep the database (and so the disk) from growing without limit."""

    max_rows: int = DEFAULT_MAX_ROWS
    max_age: float = 7 * 86_400.0
    max_bytes: int | None = None
    """``retention.maxBytes``; None: :data:`MAX_BYTES_SHARE` of the database's file system
    (:func:`effective_max_bytes`). The operator always sets it from the PVC it requests."""


@dataclass(frozen=True, slots=True)
class IngestConfig:
    queue_size: int = DEFAULT_QUEUE_SIZE
    max_records_per_request: int = DEFAULT_MAX_RECORDS_PER_REQUEST
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    review_max_pending: int = DEFAULT_REVIEW_MAX_PENDING
    read_timeout: float = 30.0
    """Seconds a client may take to send a request body; then 408 and the connection closes."""
    idle_timeout: float = 60.0
    """Seconds a connection may sit without a complete request (also bounds the header phase)."""


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    models: Mapping[str, ModelConfig] = field(default_factory=dict)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    synchronous: str = "full"
    skipped: Mapping[str, str] = field(default_factory=dict)
    """Model entries that were refused (name, or ``models[i]`` without one) → why."""

    def model(self, name: str) -> ModelConfig | None:
        return self.models.get(name)

    @property
    def features(self) -> dict[str, dict[str, str]]:
        """model → configured features (name → kind), for the models that configure them."""
        return {
            name: {f.name: f.type for f in model.features}
            for name, model in self.models.items()
            if model.features
        }

    @property
    def max_label_join_window(self) -> float:
        return max((model.label_join_window for model in self.models.values()), default=86_400.0)


def _duration(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        try:
            seconds = parse_duration(str(value))  # type: ignore[assignment]
        except ValueError as error:
            raise ConfigError(f"{where}: {error}") from None
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{where}: must be a positive duration")
    return seconds


def _rate(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{where}: must be a number in [0, 1], got {value!r}")
    return float(value)


def _positive_number(value: Any, where: str, *, upper: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{where}: must be a positive number, got {value!r}")
    if upper is not None and value > upper:
        raise ConfigError(f"{where}: must be at most {upper}, got {value!r}")
    return float(value)


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: must be a positive integer, got {value!r}")
    return value


def _label_text(value: Any, where: str) -> str:
    try:
        return label_key(value)
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None


def _features(raw: Any, where: str) -> tuple[FeatureSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise ConfigError(f"{where}: must be a list of {{name, type}}")
    features, seen = [], set()
    for index, entry in enumerate(raw):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise ConfigError(f"{where}[{index}]: needs a non-empty name")
        kind = entry.get("type", "numeric")
        if kind not in FEATURE_TYPES:
            raise ConfigError(f"{where}[{index}].type: must be one of {list(FEATURE_TYPES)}")
        if entry["name"] in seen:
            raise ConfigError(f"{where}[{index}]: duplicate feature {entry['name']!r}")
        seen.add(entry["name"])
        features.append(FeatureSpec(entry["name"], kind))
    return tuple(features)


def _reference(raw: Any, where: str) -> ReferenceSpec:
    if raw is None:
        return ReferenceSpec()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a mapping")
    given = [key for key in ("profile", "uri", "configMap", "stableWindow") if raw.get(key) not in (None, "")]
    if len(given) > 1:
        raise ConfigError(f"{where}: set only one of profile, uri, configMap, stableWindow (got {given})")
    profile = raw.get("profile")
    if profile is not None and not isinstance(profile, Mapping):
        raise ConfigError(f"{where}.profile: must be a DatasetProfile dict")
    stable = raw.get("stableWindow")
    return ReferenceSpec(
        uri=raw.get("uri") or None,
        config_map=raw.get("configMap") or None,
        key=raw.get("key") or None,
        stable_window=_duration(stable, f"{where}.stableWindow") if stable not in (None, "") else None,
        profile=profile,
    )


def _thresholds(raw: Any, where: str) -> Thresholds:
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a mapping")
    base = Thresholds()
    thresholds = Thresholds(
        psi=_positive_number(raw.get("psi", base.psi), f"{where}.psi"),
        jensen_shannon=_positive_number(
            raw.get("jensenShannon", base.jensen_shannon), f"{where}.jensenShannon", upper=1.0
        ),
        alpha=_positive_number(raw.get("alpha", base.alpha), f"{where}.alpha", upper=0.5),
        drift_share=_positive_number(
            raw.get("driftShare", base.drift_share), f"{where}.driftShare", upper=1.0
        ),
        min_effect=_rate(raw.get("minEffect", base.min_effect), f"{where}.minEffect"),
    )
    return thresholds


def _outputs(raw: Mapping[str, Any], where: str) -> OutputSpec:
    outputs = raw.get("outputs") or {}
    if not isinstance(outputs, Mapping):
        raise ConfigError(f"{where}.outputs: must be a mapping")
    threshold = outputs.get("decisionThreshold", 0.5)
    return OutputSpec(
        prediction=outputs.get("prediction") or None,
        score=outputs.get("score") or None,
        positive_label=_label_text(raw.get("positiveLabel", 1), f"{where}.positiveLabel"),
        decision_threshold=_rate(threshold, f"{where}.outputs.decisionThreshold"),
    )


def parse_model(
    raw: Mapping[str, Any], *, default_namespace: str = "default", where: str = "models[]"
) -> ModelConfig:
    """Validate one model entry (camelCase keys, as rendered by :func:`config_from_spec`)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a mapping")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.name: required")
    where = f"models[{name}]"
    task = raw.get("task", "classification")
    if task not in TASKS:
        raise ConfigError(f"{where}.task: must be one of {list(TASKS)}")
    detector = (
        raw.get("conceptDrift", {}).get("detector", "adwin")
        if isinstance(raw.get("conceptDrift"), Mapping)
        else "adwin"
    )
    if detector not in CONCEPT_DETECTORS:
        raise ConfigError(f"{where}.conceptDrift.detector: must be one of {list(CONCEPT_DETECTORS)}")
    try:
        heuristics = parse_rules(raw.get("heuristics") or ())
    except ValueError as error:
        raise ConfigError(f"{where}.heuristics: {error}") from None
    return ModelConfig(
        name=name,
        namespace=str(raw.get("namespace") or default_namespace),
        task=task,
        features=_features(raw.get("features"), f"{where}.features"),
        reference=_reference(raw.get("reference"), f"{where}.reference"),
        thresholds=_thresholds(raw.get("thresholds"), f"{where}.thresholds"),
        outputs=_outputs(raw, where),
        sample_rate=_rate(raw.get("sampleRate", DEFAULT_SAMPLE_RATE), f"{where}.sampleRate"),
        review_sample_rate=_rate(
            raw.get("reviewSampleRate", DEFAULT_REVIEW_SAMPLE_RATE), f"{where}.reviewSampleRate"
        ),
        label_join_window=_duration(
            raw.get("labelJoinWindow", DEFAULT_LABEL_JOIN_WINDOW), f"{where}.labelJoinWindow"
        ),
        window=_duration(raw.get("window", DEFAULT_WINDOW), f"{where}.window"),
        stable_revision=raw.get("stableRevision") or None,
        concept_detector=detector,
        heuristics=heuristics,
    )


def effective_max_bytes(retention: RetentionConfig, db_path: str | Path) -> int:
    """``retention.maxBytes``, else 80 % of the file system the database lives on (its volume),
    else :data:`DEFAULT_MAX_BYTES`: whoever deploys the monitor, the bound fits its volume."""
    if retention.max_bytes is not None:
        return retention.max_bytes
    try:
        stats = os.statvfs(Path(db_path).resolve().parent)
    except OSError:
        return DEFAULT_MAX_BYTES
    return int(stats.f_blocks * stats.f_frsize * MAX_BYTES_SHARE) or DEFAULT_MAX_BYTES


def check_retention(model: ModelConfig, max_age: float) -> None:
    """A model's labels must be able to join before retention deletes its predictions."""
    needed = model.label_join_window + model.window
    if needed > max_age:
        raise ConfigError(
            f"models[{model.name}]: labelJoinWindow + window ({needed / 3600:g}h) must be at most the monitor's "
            f"retention.maxAge ({max_age / 3600:g}h), or predictions are deleted before their labels can join"
        )


def _entry_name(entry: Any, index: int) -> str:
    name = entry.get("name") if isinstance(entry, Mapping) else None
    return name if isinstance(name, str) and name else f"models[{index}]"


def parse_config(raw: Mapping[str, Any] | None) -> MonitorConfig:
    """Validate a whole config document (already parsed from YAML/JSON).

    A model entry that is invalid (or a duplicate, or whose join window retention would cut
    short) is skipped and recorded in :attr:`MonitorConfig.skipped`; only a malformed document
    or namespace-wide section raises :class:`ConfigError`.
    """
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise ConfigError("the config must be a mapping")
    namespace = str(raw.get("namespace") or "default")
    entries = raw.get("models") or []
    if not isinstance(entries, Sequence) or isinstance(entries, str):
        raise ConfigError("models: must be a list")
    retention_raw = raw.get("retention") or {}
    ingest_raw = raw.get("ingest") or {}
    if not isinstance(retention_raw, Mapping) or not isinstance(ingest_raw, Mapping):
        raise ConfigError("retention and ingest must be mappings")
    retention = RetentionConfig(
        max_rows=_positive_int(retention_raw.get("maxRows", DEFAULT_MAX_ROWS), "retention.maxRows"),
        max_age=_duration(retention_raw.get("maxAge", DEFAULT_MAX_AGE), "retention.maxAge"),
        max_bytes=(
            _positive_int(retention_raw["maxBytes"], "retention.maxBytes")
            if retention_raw.get("maxBytes") is not None
            else None
        ),
    )
    models: dict[str, ModelConfig] = {}
    skipped: dict[str, str] = {}
    for index, entry in enumerate(entries):
        name = _entry_name(entry, index)
        try:
            model = parse_model(entry, default_namespace=namespace, where=f"models[{index}]")
            if model.name in models:
                raise ConfigError(f"models[{index}]: duplicate model {model.name!r}")
            check_retention(model, retention.max_age)
        except ConfigError as error:
            # The first entry of a name stays served; a later duplicate is reported, not merged.
            skipped[name if name not in models else f"models[{index}]"] = str(error)
            continue
        models[model.name] = model
    ingest = IngestConfig(
        queue_size=_positive_int(ingest_raw.get("queueSize", DEFAULT_QUEUE_SIZE), "ingest.queueSize"),
        max_records_per_request=_positive_int(
            ingest_raw.get("maxRecordsPerRequest", DEFAULT_MAX_RECORDS_PER_REQUEST),
            "ingest.maxRecordsPerRequest",
        ),
        max_body_bytes=_positive_int(
            ingest_raw.get("maxBodyBytes", DEFAULT_MAX_BODY_BYTES), "ingest.maxBodyBytes"
        ),
        review_max_pending=_positive_int(
            ingest_raw.get("reviewMaxPending", DEFAULT_REVIEW_MAX_PENDING), "ingest.reviewMaxPending"
        ),
        read_timeout=_duration(ingest_raw.get("readTimeout", DEFAULT_READ_TIMEOUT), "ingest.readTimeout"),
        idle_timeout=_duration(ingest_raw.get("idleTimeout", DEFAULT_IDLE_TIMEOUT), "ingest.idleTimeout"),
    )
    synchronous = str((raw.get("storage") or {}).get("synchronous", "full")).lower()
    if synchronous not in ("full", "normal"):
        raise ConfigError("storage.synchronous: must be full or normal")
    return MonitorConfig(
        models=models, retention=retention, ingest=ingest, synchronous=synchronous, skipped=skipped
    )


def load_config(path: str | Path) -> MonitorConfig:
    """Read a YAML or JSON file (JSON is YAML, so one parser reads both)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML/JSON: {error}") from None
    return parse_config(raw)


_SPEC_KEYS = (
    "sampleRate",
    "reviewSampleRate",
    "labelJoinWindow",
    "window",
    "task",
    "outputs",
    "positiveLabel",
    "stableRevision",
    "conceptDrift",
)


def config_from_spec(
    name: str, namespace: str, monitoring: Mapping[str, Any], *, max_age: float | None = None
) -> dict[str, Any]:
    """One ``models[]`` entry from a ModelDeployment's ``spec.monitoring`` (pure; validated).

    Only keys that are set are copied, so the monitor's defaults apply to the rest; the
    result is JSON-able and deterministic, so the ConfigMap hash only changes with the spec.
    Validation is the monitor's own (:func:`parse_model`, and :func:`check_retention` against
    ``max_age``, default the monitor's default ``retention.maxAge``), so whatever passes here
    the monitor serves.
    """
    monitoring = monitoring or {}
    entry: dict[str, Any] = {"name": name, "namespace": namespace}
    for key in _SPEC_KEYS:
        if monitoring.get(key) is not None:
            entry[key] = json.loads(json.dumps(monitoring[key]))
    reference = {
        key: monitoring["reference"][key]
        for key in ("uri", "configMap", "key", "stableWindow")
        if isinstance(monitoring.get("reference"), Mapping)
        and monitoring["reference"].get(key) not in (None, "")
    }
    if reference:
        entry["reference"] = reference
    if monitoring.get("features"):
        entry["features"] = [
            {"name": str(feature["name"]), "type": str(feature.get("type", "numeric"))}
            for feature in monitoring["features"]
        ]
    thresholds = {
        key: monitoring["thresholds"][key]
        for key in ("psi", "jensenShannon", "alpha", "driftShare", "minEffect")
        if isinstance(monitoring.get("thresholds"), Mapping) and monitoring["thresholds"].get(key) is not None
    }
    if thresholds:
        entry["thresholds"] = thresholds
    if monitoring.get("heuristics"):
        entry["heuristics"] = json.loads(json.dumps(list(monitoring["heuristics"])))
    model = parse_model(entry, default_namespace=namespace)
    check_retention(model, max_age if max_age is not None else _duration(DEFAULT_MAX_AGE, "retention.maxAge"))
    return entry


def monitor_config_document(models: Sequence[Mapping[str, Any]], **extra: Any) -> dict[str, Any]:
    """The whole config file for a namespace: model entries sorted by name, plus optional sections."""
    document: dict[str, Any] = dict(extra)
    document["models"] = sorted((dict(model) for model in models), key=lambda model: model["name"])
    return document


@dataclass(frozen=True, slots=True)
class RuntimeRevisions:
    """Which revisions of a model are stable and candidate right now (they change on promotion)."""

    stable: str | None = None
    candidate: str | None = None


def parse_revisions(raw: Any) -> dict[str, RuntimeRevisions]:
    """``{"models": {name: {"stable": rev, "candidate": rev}}}`` → per model; raises ConfigError."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not isinstance(raw.get("models") or {}, Mapping):
        raise ConfigError('revisions: expected {"models": {name: {stable, candidate}}}')
    result: dict[str, RuntimeRevisions] = {}
    for name, entry in (raw.get("models") or {}).items():
        entry = entry or {}
        if not isinstance(entry, Mapping):
            raise ConfigError(f"revisions.models.{name}: must be a mapping")
        values = {key: entry.get(key) for key in ("stable", "candidate")}
        for key, value in values.items():
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"revisions.models.{name}.{key}: must be a non-empty string")
        result[str(name)] = RuntimeRevisions(**values)
    return result


def load_revisions(path: str | Path) -> dict[str, RuntimeRevisions]:
    """The runtime revisions file (the ConfigMap key the operator rewrites on promotion)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML/JSON: {error}") from None
    return parse_revisions(raw)


def revisions_document(revisions: Mapping[str, RuntimeRevisions]) -> dict[str, Any]:
    """The inverse of :func:`parse_revisions`, sorted, without unset fields."""
    return {
        "models": {
            name: {key: value for key, value in (("stable", r.stable), ("candidate", r.candidate)) if value}
            for name, r in sorted(revisions.items())
        }
    }
