"""Monitor config parsing and the CR → config conversion."""

from __future__ import annotations

import json

import pytest
import yaml

from modelpilot.monitor.config import (
    ConfigError,
    config_from_spec,
    load_config,
    monitor_config_document,
    parse_config,
    parse_model,
)

SPEC = {
    "enabled": True,
    "sampleRate": 0.25,
    "reviewSampleRate": 0.01,
    "labelJoinWindow": "36h",
    "reference": {"uri": "/data/reference.npz"},
    "features": [{"name": "amount"}, {"name": "country", "type": "categorical"}],
    "thresholds": {"psi": 0.25, "jensenShannon": 0.15, "alpha": 0.01, "driftShare": 0.3, "minEffect": 0.05},
    "heuristics": [{"name": "sure", "when": {"output": "score", "op": ">=", "value": 0.99}, "label": 1}],
}


def test_config_from_spec_converts_every_monitoring_key():
    entry = config_from_spec("fraud", "team-a", SPEC)
    assert entry == {
        "name": "fraud",
        "namespace": "team-a",
        "sampleRate": 0.25,
        "reviewSampleRate": 0.01,
        "labelJoinWindow": "36h",
        "reference": {"uri": "/data/reference.npz"},
        "features": [{"name": "amount", "type": "numeric"}, {"name": "country", "type": "categorical"}],
        "thresholds": {
            "psi": 0.25,
            "jensenShannon": 0.15,
            "alpha": 0.01,
            "driftShare": 0.3,
            "minEffect": 0.05,
        },
        "heuristics": SPEC["heuristics"],
    }
    model = parse_model(entry)
    assert model.label_join_window == 36 * 3600
    assert model.categorical == ("country",)
    assert model.thresholds.drift_config().js_threshold == 0.15
    assert model.thresholds.drift_config().drift_share_threshold == 0.3
    assert model.thresholds.drift_config().min_effect == 0.05
    assert model.heuristics[0].name == "sure"
    json.dumps(entry)  # JSON-able, so it can go into a ConfigMap


def test_config_from_spec_leaves_unset_keys_to_the_monitor_defaults():
    entry = config_from_spec("m", "ns", {"enabled": True, "reference": {"stableWindow": "2h"}})
    assert entry == {"name": "m", "namespace": "ns", "reference": {"stableWindow": "2h"}}
    model = parse_model(entry)
    assert model.reference.mode == "stable_window"
    assert model.reference.stable_window == 7200
    assert (model.label_join_window, model.window, model.task) == (86_400, 3600, "classification")
    assert model.thresholds.drift_config().min_effect == 0.025  # the drift engine's default
    assert config_from_spec("m", "ns", {}) == {"name": "m", "namespace": "ns"}


def test_config_from_spec_is_a_pure_copy():
    spec = json.loads(json.dumps(SPEC))
    entry = config_from_spec("fraud", "team-a", spec)
    entry["heuristics"][0]["label"] = 0
    assert spec["heuristics"][0]["label"] == 1


@pytest.mark.parametrize(
    ("monitoring", "message"),
    [
        ({"thresholds": {"alpha": 0.9}}, "alpha"),
        ({"thresholds": {"jensenShannon": 2}}, "jensenShannon"),
        ({"thresholds": {"minEffect": 1.5}}, "minEffect"),
        ({"thresholds": {"minEffect": -0.1}}, "minEffect"),
        ({"labelJoinWindow": "1 day"}, "labelJoinWindow"),
        ({"sampleRate": 1.5}, "sampleRate"),
        ({"features": [{"name": "a", "type": "text"}]}, "type"),
        ({"features": [{"name": "a"}, {"name": "a"}]}, "duplicate"),
        ({"reference": {"uri": "/a.npz", "stableWindow": "1h"}}, "only one"),
        ({"heuristics": [{"name": "x", "when": {"output": "s", "op": "~=", "value": 1}, "label": 1}]}, "op"),
        ({"task": "ranking"}, "task"),
    ],
)
def test_invalid_monitoring_is_rejected_with_the_key_named(monitoring, message):
    with pytest.raises(ConfigError, match=message):
        config_from_spec("m", "ns", monitoring)


def test_parse_config_reads_sections_and_defaults():
    config = parse_config(
        {
            "models": [config_from_spec("b", "ns", SPEC), config_from_spec("a", "ns", {})],
            "retention": {"maxRows": 5000, "maxAge": "72h"},
            "ingest": {"queueSize": 8, "maxRecordsPerRequest": 50},
            "storage": {"synchronous": "normal"},
        }
    )
    assert sorted(config.models) == ["a", "b"]
    assert (config.retention.max_rows, config.retention.max_age) == (5000, 72 * 3600)
    assert (config.ingest.queue_size, config.ingest.max_records_per_request) == (8, 50)
    assert config.synchronous == "normal"
    assert config.max_label_join_window == 36 * 3600


def test_a_model_whose_join_window_outlives_retention_is_skipped_not_fatal():
    config = parse_config(
        {
            "models": [{"name": "m", "labelJoinWindow": "48h"}, {"name": "ok", "labelJoinWindow": "12h"}],
            "retention": {"maxAge": "24h"},
        }
    )
    assert list(config.models) == ["ok"]
    assert "maxAge" in config.skipped["m"] and "labelJoinWindow + window" in config.skipped["m"]


def test_duplicate_models_are_skipped_and_the_first_kept():
    config = parse_config({"models": [{"name": "m", "window": "2h"}, {"name": "m"}]})
    assert config.models["m"].window == 7200
    assert "duplicate" in config.skipped["models[1]"]


def test_an_invalid_entry_degrades_only_its_own_model():
    config = parse_config({"models": [{"name": "bad", "sampleRate": 7}, {"name": "good"}, {"sampleRate": 1}]})
    assert list(config.models) == ["good"]
    assert set(config.skipped) == {"bad", "models[2]"} and "sampleRate" in config.skipped["bad"]


def test_config_from_spec_refuses_a_join_window_the_monitor_cannot_serve():
    """The CRD-valid ``labelJoinWindow: 200h`` that used to crash-loop the shared monitor."""
    with pytest.raises(ConfigError, match=r"retention\.maxAge"):
        config_from_spec("m", "ns", {"labelJoinWindow": "200h"})
    with pytest.raises(ConfigError, match=r"retention\.maxAge"):
        config_from_spec("m", "ns", {"labelJoinWindow": "160h", "window": "9h"})
    assert (
        config_from_spec("m", "ns", {"labelJoinWindow": "200h"}, max_age=30 * 86_400)["labelJoinWindow"]
        == "200h"
    )


def test_load_config_reads_the_rendered_document(tmp_path):
    document = monitor_config_document(
        [config_from_spec("zeta", "ns", SPEC), config_from_spec("alpha", "ns", {})], namespace="ns"
    )
    assert [m["name"] for m in document["models"]] == ["alpha", "zeta"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    config = load_config(path)
    assert config.models["zeta"].review_sample_rate == 0.01
    assert config.models["alpha"].namespace == "ns"
    (tmp_path / "bad.yaml").write_text("models: [")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(tmp_path / "bad.yaml")
