"""Each way a spec used to pass the CRD and validate() and then break the operator (issue 12), pinned.

Every case is now refused where it can be said first: by the API server (schema or CEL: here
its Python approximation, which tests/integration/test_fuzz_admission.py holds to the real
one), or else by validate(), as an InvalidSpec that names the field, within 1 KiB.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from tests.unit.fuzz.admission import admit

from modelpilot.api.spec import parse_spec
from modelpilot.validation import MAX_MESSAGE, validate

REPO = Path(__file__).resolve().parents[3]
CANARY = yaml.safe_load((REPO / "examples" / "canary.yaml").read_text())


def body(name: str = "fraud-detector", **changes) -> dict:
    doc = copy.deepcopy(CANARY)
    doc["metadata"]["name"] = name
    for path, value in changes.items():
        node = doc["spec"]
        keys = path.split("__")
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        if isinstance(node, list):
            node[int(keys[-1])] = value
        else:
            node[keys[-1]] = value
    return doc


GATE = {"task": "classification"}

REFUSED_BY_THE_API_SERVER = {
    "a name valid for a CR but not for a Service (leading digit)": (body("1model"), "DNS-1035"),
    "a name valid for a CR but not for a Service (a dot)": (body("model.v2"), "DNS-1035"),
    "a name too long for name-revision children": (body("a" * 46), "at most 45"),
    "HPA scale-down stabilization over 1h": (
        body(serving__autoscaling={"scaleDownStabilization": "2h"}),
        "scaleDownStabilization must be at most 1h",
    ),
    "HPA scale-up stabilization over 1h": (
        body(serving__autoscaling={"scaleUpStabilization": "61m"}),
        "scaleUpStabilization must be at most 1h",
    ),
    "a zero autoscaling window": (
        body(serving__autoscaling={"window": "0s"}),
        "window must be longer than 0s",
    ),
    "optimize.sourceVersion 0": (
        body(model__version="2", model__optimize={"method": "tensorrt", "sourceVersion": "0"}),
        "sourceVersion",
    ),
    "optimize.sourceVersion 01 against version 1": (
        body(model__version="1", model__optimize={"method": "tensorrt", "sourceVersion": "01"}),
        "sourceVersion",
    ),
    "a pvc:// path that leaves the claim": (
        body(model__repository="pvc://claim/../x"),
        "must not contain '..'",
    ),
    "a 400-digit CPU quantity": (
        body(serving__resources={"cpu": "1" * 400, "memory": "1Gi"}),
        "resources.cpu",
    ),
    "a toleration key the Pod API refuses": (
        body(serving__placement={"tolerations": [{"key": "bad key", "operator": "Exists"}]}),
        "tolerations[0].key",
    ),
    "a toleration without key, operator Equal": (
        body(serving__placement={"tolerations": [{"operator": "Equal", "value": "x"}]}),
        "needs operator Exists",
    ),
    "a nodeSelector value the Pod API refuses": (
        body(serving__placement={"nodeSelector": {"disktype": "x y"}}),
        "nodeSelector",
    ),
    "a nodeSelector key the Pod API refuses": (
        body(serving__placement={"nodeSelector": {"-bad": "x"}}),
        "nodeSelector keys",
    ),
    "a ServiceAccount name the Pod API refuses": (
        body(serving__serviceAccountName="SA"),
        "serviceAccountName",
    ),
    "an env name the Pod API refuses": (body(serving__env=[{"name": "A=B", "value": "1"}]), "env[0].name"),
    "an env var with value and valueFrom": (
        body(
            serving__env=[
                {"name": "A", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
            ]
        ),
        "not both",
    ),
    "a model-store Secret name the Pod API refuses": (
        body(serving__modelStoreSecret="a_b"),
        "modelStoreSecret",
    ),
    "a gate metric of the other task": (
        body(rollout__steps=[{"gate": {**GATE, "metric": "mse"}}]),
        "metric accuracy goes with task classification",
    ),
    "a gate test of the other task": (
        body(rollout__steps=[{"gate": {**GATE, "test": "ttest"}}]),
        "test score or exact",
    ),
    "a gate exact test with a margin": (
        body(rollout__steps=[{"gate": {**GATE, "test": "exact", "margin": 0.02}}]),
        "needs margin 0",
    ),
    "a relative margin on accuracy": (
        body(rollout__steps=[{"gate": {**GATE, "marginType": "relative"}}]),
        "regression errors only",
    ),
    "accuracy minRelative at or below its tolerance (sequential tolerance >= 1)": (
        body(
            rollout__analysis={
                "metrics": [{"name": "acc", "provider": "monitor", "metric": "accuracy", "minRelative": 0.0}]
            }
        ),
        "minRelative must exceed",
    ),
    "a metric provider that does not serve the metric": (
        body(
            rollout__analysis={
                "metrics": [{"name": "q", "provider": "istio", "metric": "queueTime", "max": 1}]
            }
        ),
        "provider istio serves",
    ),
    "min above max": (
        body(rollout__analysis={"metrics": [{"name": "e", "metric": "errorRate", "min": 2, "max": 1}]}),
        "min must be <=",
    ),
    "fallback recovery at or above its trigger": (
        body(
            serving__fallback={
                "host": "lite",
                "share": 10,
                "triggers": {"queueP95Ms": 10},
                "recoverBelow": {"queueP95Ms": 20},
            }
        ),
        "recoverBelow.queueP95Ms must be below",
    ),
}


@pytest.mark.parametrize(
    "doc,fragment", REFUSED_BY_THE_API_SERVER.values(), ids=REFUSED_BY_THE_API_SERVER.keys()
)
def test_the_api_server_refuses_it(doc, fragment):
    result = admit(doc)
    assert not result.admitted
    assert any(fragment in e for e in result.errors), result.errors


def test_the_canary_example_itself_is_admitted_and_valid():
    result = admit(body())
    assert result.admitted, result.errors
    assert validate(parse_spec(result.body["spec"])) == []


# Raw specs that skipped the API server (pure functions and their tests take dicts): validate() has the last word.
INVALID_FOR_VALIDATE = {
    "a pvc:// path that leaves the claim": (
        {"model": {"repository": "pvc://c/../x"}},
        "spec.model.repository",
    ),
    "optimize.sourceVersion 01 against version 1": (
        {"model": {"version": "1", "optimize": {"method": "tensorrt", "sourceVersion": "01"}}},
        "same version",
    ),
    "optimize.sourceVersion 0": (
        {"model": {"optimize": {"method": "tensorrt", "sourceVersion": "0"}}},
        "sourceVersion",
    ),
    "a 400-digit CPU": ({"serving": {"resources": {"cpu": "1" * 400}}}, "spec.serving.resources.cpu"),
    "HPA stabilization over 1h": (
        {"serving": {"autoscaling": {"scaleDownStabilization": "2h"}}},
        "HPA's limit",
    ),
    "a zero autoscaling window": ({"serving": {"autoscaling": {"window": "0s"}}}, "spec.serving.autoscaling"),
    "a toleration key prefix over 253": (
        {"serving": {"placement": {"tolerations": [{"key": "a" * 254 + "/x", "operator": "Exists"}]}}},
        "label key",
    ),
    "fallback recovery above its trigger": (
        {
            "serving": {
                "fallback": {
                    "host": "h",
                    "share": 5,
                    "triggers": {"requestRate": 1},
                    "recoverBelow": {"requestRate": 2},
                }
            }
        },
        "spec.serving.fallback.recoverBelow",
    ),
    "a gate step that does not parse": (
        {"rollout": {"steps": [{"gate": {"task": "classification", "test": "ttest"}}]}},
        "spec.rollout.steps[0].gate.test",
    ),
    "a sequential tolerance of 1": (
        {
            "rollout": {
                "steps": [
                    {
                        "analysis": {
                            "metrics": [
                                {
                                    "name": "a",
                                    "provider": "monitor",
                                    "metric": "accuracy",
                                    "minRelative": 0.5,
                                    "tolerance": 0.6,
                                }
                            ]
                        }
                    }
                ]
            }
        },
        "sequential test cannot run",
    ),
    "a threshold with min above max": (
        {"rollout": {"analysis": {"metrics": [{"name": "e", "min": 3, "max": 1}]}}},
        "threshold cannot run",
    ),
}


@pytest.mark.parametrize("change,fragment", INVALID_FOR_VALIDATE.values(), ids=INVALID_FOR_VALIDATE.keys())
def test_validate_names_the_field(change, fragment):
    raw = copy.deepcopy(CANARY["spec"])
    for section, value in change.items():
        raw[section] = {**raw.get(section, {}), **value}
    problems = validate(parse_spec(raw))
    assert any(fragment in p for p in problems), problems
    assert all(p.startswith("spec") for p in problems), problems


def test_an_invalid_spec_message_stays_within_a_kib():
    # 32 broken templates used to make a message over the conditions' 32 KiB limit: the status write failed.
    metrics = [{"name": f"m{i}", "metric": "custom", "query": "x{{nope}}" * 200, "max": 1} for i in range(32)]
    problems = validate(parse_spec({**CANARY["spec"], "rollout": {"analysis": {"metrics": metrics}}}))
    assert len(problems) > 3 and len("; ".join(problems)) <= MAX_MESSAGE
    assert problems[-1].startswith("spec: … and") and all(p.startswith("spec") for p in problems)
