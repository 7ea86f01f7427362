"""Every examples/*.yaml is accepted by the real API server: schema, defaults and CEL rules.

Server-side dry run with strict field validation, so a misspelt field fails instead of being pruned.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import kubernetes
import pytest
import yaml

from modelpilot.api.spec import parse_spec
from modelpilot.validation import validate

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
STRATEGIES = {"canary", "ab-test", "shadow-then-canary", "blue-green", "feature-flags", "cpu-edge"}


def load(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def dry_run(api_client, namespace: str, body: dict) -> dict:
    api = kubernetes.client.CustomObjectsApi(api_client)
    return api.create_namespaced_custom_object(
        "modelpilot.io",
        "v1alpha1",
        namespace,
        "modeldeployments",
        body,
        dry_run="All",
        field_validation="Strict",
    )


def test_there_is_an_example_per_strategy():
    assert {p.stem for p in EXAMPLES} >= STRATEGIES


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_is_accepted_by_the_api_server(api_client, crds, namespace, path):
    for doc in load(path):
        assert doc["kind"] == "ModelDeployment"
        created = dry_run(api_client, namespace, doc)
        assert created["metadata"]["namespace"] == namespace
        # Defaults were applied server-side: the operator reads these, never Python-side guesses.
        assert created["spec"]["serving"]["image"].startswith("nvcr.io/nvidia/tritonserver:")
        # The operator's own semantic checks (InvalidSpec) pass too.
        assert validate(parse_spec(created["spec"])) == []


def test_dry_run_really_enforces_the_cel_rules(api_client, crds, namespace):
    """Negative control: a step with two actions and a misspelt field are both refused."""
    doc = load(REPO / "examples" / "canary.yaml")[0]
    two_actions = copy.deepcopy(doc)
    two_actions["spec"]["rollout"]["steps"][0] = {"setWeight": 5, "pause": {"duration": "1m"}}
    with pytest.raises(kubernetes.client.ApiException) as err:
        dry_run(api_client, namespace, two_actions)
    assert err.value.status == 422 and "exactly one of" in json.loads(err.value.body)["message"]
    typo = copy.deepcopy(doc)
    typo["spec"]["rollout"]["stepz"] = []
    with pytest.raises(kubernetes.client.ApiException) as err:
        dry_run(api_client, namespace, typo)
    assert "stepz" in err.value.body
