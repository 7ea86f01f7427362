"""A small Kubernetes REST client: server-side apply with one field manager, and counted writes.

It talks to fixed REST paths for the handful of kinds the operator manages, so start-up
needs no discovery, and it counts every write so tests and metrics can prove that a
steady state writes nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import kubernetes
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from modelpilot.api.reasons import FIELD_MANAGER


@dataclass(frozen=True)
class Kind:
    api_version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        path = f"{base}/{self.plural}"
        if name:
            path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
        return path


KINDS: dict[str, Kind] = {
    "ModelDeployment": Kind("modelpilot.io/v1alpha1", "modeldeployments"),
    "Deployment": Kind("apps/v1", "deployments"),
    "Service": Kind("v1", "services"),
    "ConfigMap": Kind("v1", "configmaps"),
    "PersistentVolumeClaim": Kind("v1", "persistentvolumeclaims"),
    "Pod": Kind("v1", "pods"),
    "Event": Kind("v1", "events"),
    "Node": Kind("v1", "nodes", namespaced=False),
    "VirtualService": Kind("networking.istio.io/v1", "virtualservices"),
    "DestinationRule": Kind("networking.istio.io/v1", "destinationrules"),
    "HorizontalPodAutoscaler": Kind("autoscaling/v2", "horizontalpodautoscalers"),
    "ScaledObject": Kind("keda.sh/v1alpha1", "scaledobjects"),
    "Job": Kind("batch/v1", "jobs"),
    "ServiceAccount": Kind("v1", "serviceaccounts"),
    "NetworkPolicy": Kind("networking.k8s.io/v1", "networkpolicies"),
    "ClusterRoleBinding": Kind("rbac.authorization.k8s.io/v1", "clusterrolebindings", namespaced=False),
    "CustomResourceDefinition": Kind(
        "apiextensions.k8s.io/v1", "customresourcedefinitions", namespaced=False
    ),
}


class NotFound(Exception):
    pass


class KubeClient:
    """Synchronous; the kopf handlers call it through asyncio.to_thread."""

    def __init__(
        self,
        api_client: ApiClient | None = None,
        field_manager: str = FIELD_MANAGER,
        on_write: Callable[[str, str], None] | None = None,
    ) -> None:
        self.api = api_client or ApiClient()
        self.field_manager = field_manager
        self.writes: Counter[str] = Counter()
        self.on_write = on_write

    def _count(self, operation: str, namespace: str | None = None) -> None:
        self.writes[operation] += 1
        if self.on_write:
            self.on_write(operation, namespace or "")

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None, **kwargs: Any) -> KubeClient:
        config = kubernetes.client.Configuration()
        if kubeconfig:
            kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=config)
        else:
            try:
                kubernetes.config.load_incluster_config(client_configuration=config)
            except kubernetes.config.ConfigException:
                kubernetes.config.load_kube_config(client_configuration=config)
        return cls(ApiClient(configuration=config), **kwargs)

    # ---- transport

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list | None = None,
        content_type: str | None = None,
    ):
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        if hasattr(self.api, "param_serialize"):  # kubernetes >= 35: openapi-generator 7 client
            method_, url, headers, body_, _ = self.api.param_serialize(
                method,
                path,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            resp = self.api.call_api(method_, url, header_params=headers, body=body_)
            data = resp.read()
            if resp.status >= 400:
                if resp.status == 404:
                    raise NotFound(path)
                raise ApiException(status=resp.status, reason=resp.reason, body=data.decode(errors="replace"))
            return json.loads(data) if data else {}
        try:
            resp = self.api.call_api(
                path,
                method,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
            )
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound(path) from exc
            raise
        data = resp.data
        return json.loads(data) if data else {}

    # ---- reads

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            return self._call("GET", KINDS[kind].path(namespace, name))
        except NotFound:
            return None

    def list(
        self, kind: str, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[dict]:
        query = []
        if labels:
            query.append(("labelSelector", ",".join(f"{k}={v}" for k, v in labels.items())))
        items = self._call("GET", KINDS[kind].path(namespace), query=query).get("items", [])
        version = KINDS[kind].api_version
        for item in items:  # list items come without apiVersion/kind
            item.setdefault("apiVersion", version)
            item.setdefault("kind", kind)
        return items

    # ---- writes (counted)

    def apply(self, manifest: Mapping[str, Any], subresource: str | None = None) -> dict[str, Any]:
        """Server-side apply as the operator's one field manager; force, because it owns these fields."""
        kind = KINDS[manifest["kind"]]
        meta = manifest["metadata"]
        self._count(
            f"apply:{manifest['kind']}{'/' + subresource if subresource else ''}", meta.get("namespace")
        )
        return self._call(
            "PATCH",
            kind.path(meta.get("namespace"), meta["name"], subresource),
            body=dict(manifest),
            query=[("fieldManager", self.field_manager), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )

    def merge_patch(
        self,
        kind: str,
        name: str,
        namespace: str | None,
        patch: Mapping[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        self._count(f"patch:{kind}{'/' + subresource if subresource else ''}", namespace)
        return self._call(
            "PATCH",
            KINDS[kind].path(namespace, name, subresource),
            body=dict(patch),
            query=[("fieldManager", self.field_manager)],
            content_type="application/merge-patch+json",
        )

    def delete(self, kind: str, name: str, namespace: str | None = None) -> bool:
        self._count(f"delete:{kind}", namespace)
        try:
            self._call("DELETE", KINDS[kind].path(namespace, name), body={"propagationPolicy": "Background"})
        except NotFound:
            return False
        return True

    def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        kind = KINDS[manifest["kind"]]
        self._count(f"create:{manifest['kind']}", manifest["metadata"].get("namespace"))
        return self._call("POST", kind.path(manifest["metadata"].get("namespace")), body=dict(manifest))

    @property
    def total_writes(self) -> int:
        return sum(self.writes.values())
