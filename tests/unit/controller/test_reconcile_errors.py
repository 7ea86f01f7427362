"""Nothing escapes `Reconciler.reconcile`: rejected children and unexpected errors are reported
in status and events, with backoff, and an invalid spec mid-rollout takes the candidate's traffic."""

from __future__ import annotations

import copy

from kubernetes.client.exceptions import ApiException

from modelpilot.controller.reconcile import BACKOFF_BASE, BACKOFF_MAX, Reconciler
from modelpilot.rollout.decide import problems_message
from modelpilot.routing.istio import without_candidate


class MemoryKube:
    """A tiny object store with the KubeClient surface; `reject` makes the API server refuse a kind."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.reject: dict[str, str] = {}
        self.boom: Exception | None = None

    def get(self, kind, name, namespace=None):
        if self.boom is not None and kind == "Deployment":
            raise self.boom
        obj = self.objects.get((kind, namespace or "", name))
        return copy.deepcopy(obj) if obj else None

    def list(self, kind, namespace=None, labels=None):
        if self.boom is not None:
            raise self.boom
        out = []
        for (k, ns, _), obj in self.objects.items():
            have = obj.get("metadata", {}).get("labels") or {}
            if (
                k == kind
                and ns == (namespace or "")
                and all(have.get(a) == b for a, b in (labels or {}).items())
            ):
                out.append(copy.deepcopy(obj))
        return out

    def apply(self, manifest, subresource=None):
        kind, meta = manifest["kind"], manifest["metadata"]
        if kind in self.reject:
            raise _rejection(kind, meta["name"], self.reject[kind])
        key = (kind, meta.get("namespace", ""), meta["name"])
        obj = copy.deepcopy(self.objects.get(key) or {})
        for field, value in manifest.items():
            if field == "metadata":
                obj.setdefault("metadata", {}).update(copy.deepcopy(value))
            elif subresource == "status" and field != "status":
                continue
            else:
                obj[field] = copy.deepcopy(value)
        self.objects[key] = obj
        return copy.deepcopy(obj)

    def create(self, manifest):
        meta = manifest["metadata"]
        self.objects[(manifest["kind"], meta.get("namespace", ""), meta["name"])] = copy.deepcopy(
            dict(manifest)
        )
        return manifest

    def merge_patch(self, kind, name, namespace, patch, subresource=None):
        return self.objects.get((kind, namespace or "", name))

    def delete(self, kind, name, namespace=None):
        return self.objects.pop((kind, namespace or "", name), None) is not None

    def events(self) -> list[dict]:
        return [o for (k, _, _), o in self.objects.items() if k == "Event"]


def _rejection(kind: str, name: str, why: str) -> ApiException:
    exc = ApiException(status=422, reason="Unprocessable Entity")
    exc.body = f'{{"kind":"Status","message":"{kind} \\"{name}\\" is invalid: {why}"}}'
    return exc


def mdep(kube: MemoryKube, spec: dict) -> None:
    kube.objects[("ModelDeployment", "ns", "m")] = {
        "apiVersion": "modelpilot.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m", "namespace": "ns", "uid": "u1", "generation": 1},
        "spec": spec,
    }


SPEC = {
    "model": {"name": "m", "repository": "s3://b/m", "version": "1", "format": "onnx"},
    "serving": {"replicas": 1},
}


def status(kube: MemoryKube) -> dict:
    return kube.objects[("ModelDeployment", "ns", "m")].get("status") or {}


def cond(kube: MemoryKube, type_: str) -> dict:
    return next(c for c in status(kube)["conditions"] if c["type"] == type_)


def test_a_child_the_api_server_rejects_is_reported_with_backoff():
    kube = MemoryKube()
    kube.reject["Service"] = "metadata.name: Invalid value: must be a DNS-1035 label"
    mdep(kube, SPEC)
    r = Reconciler(kube)  # type: ignore[arg-type]
    delays = [r.reconcile("ns", "m") for _ in range(8)]
    assert delays[0] == BACKOFF_BASE and delays[1] == 2 * BACKOFF_BASE and delays[-1] == BACKOFF_MAX
    reconciled = cond(kube, "Reconciled")
    assert reconciled["status"] == "False" and reconciled["reason"] == "ApplyFailed"
    assert "Service" in reconciled["message"] and "DNS-1035" in reconciled["message"]
    warnings = [e for e in kube.events() if e["reason"] == "ApplyFailed"]
    assert len(warnings) == 1  # the same problem is reported once, not on every retry
    del kube.reject["Service"]
    assert r.reconcile("ns", "m") is not None
    assert cond(kube, "Reconciled")["status"] == "True"


def test_an_unexpected_error_becomes_a_reconcile_error_condition():
    kube = MemoryKube()
    mdep(kube, SPEC)
    kube.boom = OverflowError("int too large to convert")
    r = Reconciler(kube)  # type: ignore[arg-type]
    assert r.reconcile("ns", "m") == BACKOFF_BASE
    kube.boom = None
    reconciled = cond(kube, "Reconciled")
    assert reconciled["reason"] == "ReconcileError" and "OverflowError" in reconciled["message"]


def test_problem_messages_are_capped_near_one_kib_and_say_how_many_were_cut():
    problems = [f"spec.serving.env[{i}].name: {'x' * 80} is not a valid name" for i in range(500)]
    message = problems_message(problems)
    assert len(message) <= 1024 and message.startswith("spec.serving.env[0]") and "more problems" in message
    assert problems_message(["short"]) == "short"


def test_without_candidate_sends_every_route_to_stable():
    live = {
        "hosts": ["m"],
        "http": [
            {
                "name": "flag-beta",
                "match": [{"headers": {"x-beta": {"exact": "1"}}}],
                "route": [{"destination": {"host": "m", "subset": "b"}}],
            },
            {
                "name": "revision-a",
                "match": [{"headers": {"x-rev": {"exact": "a"}}}],
                "route": [{"destination": {"host": "m", "subset": "a"}}],
            },
            {
                "name": "primary",
                "route": [
                    {"destination": {"host": "m", "subset": "a"}, "weight": 70},
                    {"destination": {"host": "m", "subset": "b"}, "weight": 30},
                ],
                "mirror": {"host": "m", "subset": "b"},
                "mirrorPercentage": {"value": 50.0},
            },
        ],
    }
    out = without_candidate(live, "a", "b")
    assert [r["name"] for r in out["http"]] == ["revision-a", "primary"]
    primary = out["http"][-1]
    assert primary["route"] == [{"destination": {"host": "m", "subset": "a"}, "weight": 100}]
    assert "mirror" not in primary


def test_a_policy_violation_is_invalid_spec_and_builds_nothing():
    from modelpilot.api.policy import Policy

    kube = MemoryKube()
    mdep(kube, {**SPEC, "serving": {"replicas": 1, "image": "evil.example.com/miner:1"}})
    Reconciler(kube, policy=Policy(images=("nvcr.io/nvidia/",))).reconcile("ns", "m")  # type: ignore[arg-type]
    assert status(kube)["phase"] == "InvalidSpec" and "spec.serving.image" in status(kube)["message"]
    assert not [k for k in kube.objects if k[0] == "Deployment"]
