"""examples/: one commented ModelDeployment per strategy, valid by the operator's own rules.

(The API server's schema and CEL checks run in tests/integration/test_chart_examples.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from modelpilot.api.spec import parse_spec, revision_hash
from modelpilot.rollout.decide import step_kind
from modelpilot.validation import validate

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = {p.stem: p for p in sorted((REPO / "examples").glob("*.yaml"))}


def load(name: str) -> dict:
    (doc,) = [d for d in yaml.safe_load_all(EXAMPLES[name].read_text()) if d]
    return doc


def kinds(doc: dict) -> list[str]:
    return [step_kind(s) for s in doc["spec"].get("rollout", {}).get("steps", [])]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_is_a_valid_commented_modeldeployment(name):
    text = EXAMPLES[name].read_text()
    assert text.startswith("#"), "every example opens with a comment saying what it shows"
    doc = load(name)
    assert doc["apiVersion"] == "modelpilot.io/v1alpha1" and doc["kind"] == "ModelDeployment"
    assert len(doc["metadata"]["name"]) <= 45 and "namespace" not in doc["metadata"]
    spec = parse_spec(doc["spec"])
    assert validate(spec) == []
    assert revision_hash(doc["spec"])


def test_names_are_distinct():
    names = [load(n)["metadata"]["name"] for n in EXAMPLES]
    assert len(names) == len(set(names)), "examples can be applied side by side"


def test_canary_shifts_weight_under_analysis():
    k = kinds(load("canary"))
    assert k.count("setWeight") >= 2 and "analysis" in k
    metrics = load("canary")["spec"]["rollout"]["analysis"]["metrics"]
    assert {m.get("test") for m in metrics} >= {"sequential"}
    assert any("maxRelative" in m for m in metrics)


def test_ab_test_matches_an_audience():
    doc = load("ab-test")
    (ab,) = [s["abTest"] for s in doc["spec"]["rollout"]["steps"] if "abTest" in s]
    assert ab["header"] == {"name": "x-user-group", "exact": "beta"} and ab["duration"]


def test_shadow_comes_before_any_user_traffic():
    k = kinds(load("shadow-then-canary"))
    assert k[0] == "shadow" and "setWeight" in k
    assert load("shadow-then-canary")["spec"]["rollout"]["steps"][0]["shadow"]["mirrorPercentage"] == 50


def test_blue_green_previews_then_waits_for_a_human():
    steps = load("blue-green")["spec"]["rollout"]["steps"]
    assert steps[0]["blueGreen"]["previewService"] is True
    assert steps[-1] == {"pause": {}}, "a pause without duration waits for promote"
    assert "setWeight" not in kinds(load("blue-green")), "traffic switches all at once on promotion"


def test_feature_flags_route_named_clients():
    flags = load("feature-flags")["spec"]["rollout"]["flags"]
    assert {"name": "qa", "revision": "candidate", "header": {"name": "x-qa", "exact": "1"}} in flags


def test_cpu_edge_requests_no_gpu():
    doc = load("cpu-edge")
    spec = parse_spec(doc["spec"])
    assert spec.serving.resources.gpus == 0 and spec.serving.resources.gpu_resource_name is None
    assert {g["kind"] for g in doc["spec"]["model"]["config"]["instanceGroups"]} == {"KIND_CPU"}
    assert "analysis" not in kinds(doc)
