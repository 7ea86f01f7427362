"""Install the project's CRDs and wait until the API server serves them."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from modelpilot.controller.kube import Kind, KubeClient

CRD_KIND = Kind("apiextensions.k8s.io/v1", "customresourcedefinitions", namespaced=False)


def crd_manifests() -> list[dict]:
    """The CRDs shipped with the package (a copy of crds/, kept equal by a unit test)."""
    here = Path(__file__).resolve().parent.parent / "crds"
    docs: list[dict] = []
    for path in sorted(here.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def install_crds(kube: KubeClient, timeout: float = 30.0) -> None:
    for crd in crd_manifests():
        name = crd["metadata"]["name"]
        kube._count("apply:CustomResourceDefinition")
        kube._call(
            "PATCH",
            CRD_KIND.path(None, name),
            body=crd,
            query=[("fieldManager", kube.field_manager), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )
        end = time.monotonic() + timeout
        while True:
            live = kube._call("GET", CRD_KIND.path(None, name))
            conds = {c["type"]: c["status"] for c in (live.get("status") or {}).get("conditions") or []}
            if conds.get("Established") == "True":
                break
            if time.monotonic() > end:
                raise TimeoutError(f"CRD {name} not established: {conds}")
            time.sleep(0.2)
