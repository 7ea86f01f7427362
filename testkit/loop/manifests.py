"""ModelDeployment manifests for the loop's models, and the revision each one becomes.

The revision is the operator's own hash of the spec, so the fleet can start a variant's Triton
under the name the operator will give its pods before the manifest is even applied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from modelpilot.api.spec import parse_spec
from testkit.loop.models import BuiltModel

API_VERSION = "modelpilot.io/v1alpha1"


def deployment_spec(
    model: BuiltModel,
    steps: Sequence[Mapping[str, Any]],
    *,
    replicas: int = 1,
    store: str | None = None,
    **rollout: Any,
) -> dict[str, Any]:
    """A CPU-only spec serving ``model``; ``rollout`` adds fields such as ``scaleDownDelaySeconds``."""
    return {
        "model": model.model_spec(store) if store else model.model_spec(),
        "serving": {"replicas": replicas, "resources": {"cpu": "1", "memory": "1Gi", "gpus": 0}},
        "traffic": {"port": 8000},
        "rollout": {"steps": [dict(s) for s in steps], "scaleDownDelaySeconds": 0, **rollout},
    }


def model_deployment(name: str, namespace: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": dict(spec),
    }


def revision_of(spec: Mapping[str, Any]) -> str:
    return parse_spec(spec).revision
