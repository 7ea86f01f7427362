"""Argo CD health and actions for ModelDeployment, run in a real Lua 5.1 (Argo CD's gopher-lua dialect).

lupa (PyPI) embeds the reference Lua implementations; lupa.lua51 matches the language Argo CD runs.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelpilot.api.reasons import Phase
from modelpilot.rollout.decide import REQUEST_ANNOTATION

lua51 = pytest.importorskip("lupa.lua51", reason="needs lupa (pip install lupa), a Lua 5.1 interpreter")

REPO = Path(__file__).resolve().parents[3]
ARGO = REPO / "deploy" / "argocd"
HEALTH = (ARGO / "health.lua").read_text()
ACTIONS = ("promote", "abort", "retry", "pause", "resume")


def to_lua(lua: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return lua.table_from({k: to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([to_lua(lua, v) for v in value])
    return value


def from_lua(value: Any) -> Any:
    if lua51.lua_type(value) != "table":
        return value
    items = dict(value.items())
    if items and all(isinstance(k, int) for k in items) and sorted(items) == list(range(1, len(items) + 1)):
        return [from_lua(items[i]) for i in range(1, len(items) + 1)]
    return {k: from_lua(v) for k, v in items.items()}


def run_lua(script: str, obj: dict[str, Any]) -> Any:
    """Argo CD's calling convention: the resource is the global `obj`, the chunk returns the result."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = to_lua(lua, obj)
    return from_lua(lua.execute(script))


def cond(type_: str, status: str, reason: str = "AsExpected", message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message or reason,
        "lastTransitionTime": "2025-01-01T00:00:00Z",
        "observedGeneration": 3,
    }


def mdep(status: dict[str, Any] | None, generation: int = 3, paused: bool | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "modelpilot.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "resnet", "namespace": "models", "generation": generation},
        "spec": {"model": {"name": "resnet50", "repository": "s3://m/r", "format": "onnx"}},
    }
    if paused is not None:
        obj["spec"]["rollout"] = {"paused": paused}
    if status is not None:
        obj["status"] = {"observedGeneration": 3, **status}
    return obj


def health(obj: dict[str, Any]) -> dict[str, str]:
    return run_lua(HEALTH, obj)


# ---- health -----------------------------------------------------------------------------------------


def test_new_object_without_status_is_progressing():
    assert health(mdep(None))["status"] == "Progressing"


def test_unobserved_generation_is_progressing_even_if_ready():
    hs = health(mdep({"phase": "Ready", "conditions": [cond("Ready", "True", "Available")]}, generation=4))
    assert hs["status"] == "Progressing" and "generation 4" in hs["message"]


def test_ready_is_healthy():
    hs = health(
        mdep(
            {
                "phase": "Ready",
                "message": "revision abc serving (2/2 ready)",
                "conditions": [cond("Ready", "True", "Available"), cond("Degraded", "False")],
            }
        )
    )
    assert hs == {"status": "Healthy", "message": "revision abc serving (2/2 ready)"}


def test_ready_phase_with_pods_not_ready_is_progressing():
    hs = health(
        mdep({"phase": "Ready", "conditions": [cond("Ready", "False", "WaitingForPods", "1/2 pods ready")]})
    )
    assert hs == {"status": "Progressing", "message": "1/2 pods ready"}


def test_canary_in_progress_reports_candidate_and_weight():
    hs = health(
        mdep(
            {
                "phase": "Progressing",
                "message": "step 2/5: analysis",
                "canaryRevision": "f00d",
                "canaryWeight": 25,
                "conditions": [cond("Progressing", "True", "RolloutStep")],
            }
        )
    )
    assert hs["status"] == "Progressing"
    assert hs["message"] == "step 2/5: analysis (candidate f00d at 25%)"


def test_unschedulable_while_progressing_says_why():
    hs = health(
        mdep(
            {
                "phase": "Progressing",
                "message": "waiting for revision abc pods (0/2 ready)",
                "conditions": [
                    cond("Degraded", "True", "InsufficientGPU", "0/4 nodes have a free nvidia.com/gpu")
                ],
            }
        )
    )
    assert hs["status"] == "Progressing"
    assert "InsufficientGPU: 0/4 nodes" in hs["message"]


def test_pending_is_progressing():
    assert health(mdep({"phase": "Pending"}))["status"] == "Progressing"


def test_paused_is_suspended():
    hs = health(mdep({"phase": "Paused", "message": "paused at step 3 until promoted"}))
    assert hs == {"status": "Suspended", "message": "paused at step 3 until promoted"}


def test_degraded_uses_the_condition():
    hs = health(
        mdep(
            {
                "phase": "Degraded",
                "message": "x",
                "conditions": [cond("Degraded", "True", "Unschedulable", "no node matches pool gpu")],
            }
        )
    )
    assert hs == {"status": "Degraded", "message": "Unschedulable: no node matches pool gpu"}


def test_rolled_back_is_degraded():
    msg = "revision f00d rolled back (AnalysisFailed): errors 0.08 > 0.01"
    hs = health(
        mdep(
            {
                "phase": "RolledBack",
                "message": msg,
                "stableRevision": "abc",
                "conditions": [
                    cond("Degraded", "True", "AnalysisFailed", msg),
                    cond("Ready", "True", "Available"),
                ],
            }
        )
    )
    assert hs == {"status": "Degraded", "message": msg}


def test_invalid_spec_is_degraded_with_the_reason():
    hs = health(
        mdep(
            {
                "phase": "InvalidSpec",
                "conditions": [
                    cond("InvalidSpec", "True", "InvalidSpec", "spec.serving.args sets --http-port")
                ],
            }
        )
    )
    assert hs == {"status": "Degraded", "message": "Invalid spec: spec.serving.args sets --http-port"}


def test_invalid_spec_condition_wins_over_a_stale_phase():
    hs = health(
        mdep(
            {
                "phase": "Ready",
                "conditions": [cond("InvalidSpec", "True", "InvalidSpec", "bad"), cond("Ready", "True")],
            }
        )
    )
    assert hs["status"] == "Degraded"


def test_unknown_phase_is_never_healthy():
    assert health(mdep({"phase": "Hibernating"}))["status"] == "Unknown"


@pytest.mark.parametrize("phase", [p.value for p in Phase])
def test_every_operator_phase_has_a_known_health(phase):
    expected = {
        "Pending": "Progressing",
        "Progressing": "Progressing",
        "Ready": "Healthy",
        "Paused": "Suspended",
        "Degraded": "Degraded",
        "RolledBack": "Degraded",
        "InvalidSpec": "Degraded",
    }
    assert health(mdep({"phase": phase}))["status"] == expected[phase]


# ---- actions ----------------------------------------------------------------------------------------


def action(name: str) -> str:
    return (ARGO / "actions" / f"{name}.lua").read_text()


def test_discovery_offers_only_useful_actions():
    idle = run_lua(action("discovery"), mdep({"phase": "Ready"}))
    assert set(idle) == set(ACTIONS)
    assert {k for k, v in idle.items() if not v["disabled"]} == {"pause"}
    canary = run_lua(action("discovery"), mdep({"phase": "Progressing", "canaryRevision": "f00d"}))
    assert {k for k, v in canary.items() if not v["disabled"]} == {"promote", "abort", "pause"}
    paused = run_lua(action("discovery"), mdep({"phase": "Paused", "canaryRevision": "f00d"}, paused=True))
    assert {k for k, v in paused.items() if not v["disabled"]} == {"promote", "abort", "resume"}
    rolled = run_lua(action("discovery"), mdep({"phase": "RolledBack"}))
    assert {k for k, v in rolled.items() if not v["disabled"]} == {"retry", "pause"}


@pytest.mark.parametrize("name", ["promote", "abort", "retry"])
def test_request_actions_write_the_operator_annotation(name):
    obj = run_lua(action(name), mdep({"phase": "Progressing"}))
    value = obj["metadata"]["annotations"][REQUEST_ANNOTATION]
    assert re.fullmatch(rf"{name}@\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ", value), value
    assert obj["spec"] == mdep(None)["spec"]


def test_pause_and_resume_mirror_the_cli():
    paused = run_lua(action("pause"), mdep({"phase": "Progressing"}))
    assert paused["spec"]["rollout"] == {"paused": True}
    resumed = run_lua(action("resume"), mdep({"phase": "Paused"}, paused=True))
    assert resumed["spec"]["rollout"] == {"paused": False}
    assert resumed["metadata"]["annotations"][REQUEST_ANNOTATION].startswith("resume@")


def test_actions_keep_existing_annotations():
    obj = mdep({"phase": "Progressing"})
    obj["metadata"]["annotations"] = {"team": "vision"}
    out = run_lua(action("abort"), obj)
    assert out["metadata"]["annotations"]["team"] == "vision"


# ---- the example Application and argocd-cm snippet ------------------------------------------------


def test_argocd_cm_snippet_embeds_the_lua_files_verbatim():
    docs = list(yaml.safe_load_all((ARGO / "application.yaml").read_text()))
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert cm["metadata"] == {**cm["metadata"], "name": "argocd-cm", "namespace": "argocd"}
    assert cm["data"]["resource.customizations.health.modelpilot.io_ModelDeployment"] == HEALTH
    actions = yaml.safe_load(cm["data"]["resource.customizations.actions.modelpilot.io_ModelDeployment"])
    assert actions["discovery.lua"] == action("discovery")
    assert {d["name"]: d["action.lua"] for d in actions["definitions"]} == {n: action(n) for n in ACTIONS}


def applications() -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((ARGO / "application.yaml").read_text())
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Application"}


def test_model_application_points_at_an_existing_example():
    app = applications()["resnet-canary"]
    assert app["apiVersion"] == "argoproj.io/v1alpha1"
    source = app["spec"]["source"]
    assert (REPO / source["path"] / source["directory"]["include"]).is_file()
    assert app["spec"]["ignoreDifferences"][0]["jqPathExpressions"] == [
        f'.metadata.annotations["{REQUEST_ANNOTATION}"]'
    ]


def test_operator_application_values_render_the_chart():
    from e2e.tools import helm

    if shutil.which("go") is None:
        pytest.skip("helm is built from its Go module and needs the go toolchain")
    source = applications()["modelpilot-operator"]["spec"]["source"]
    assert (REPO / source["path"]) == helm.CHART
    objs = helm.render(source["helm"]["valuesObject"], release=source["helm"]["releaseName"])
    assert helm.find(objs, "ClusterKopfPeering") and helm.find(objs, "ServiceMonitor")
