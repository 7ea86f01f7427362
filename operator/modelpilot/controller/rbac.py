"""The operator's RBAC rules: the single source for the Helm chart, the e2e install and the tests.

Least privilege: the operator creates only what a ModelDeployment owns, reads pods and
nodes to explain scheduling failures, and writes events.
"""

from __future__ import annotations

from typing import Any

# Namespaced rules (a Role in single-namespace mode, part of the ClusterRole otherwise).
NAMESPACED_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["modelpilot.io"],
        "resources": ["modeldeployments"],
        "verbs": ["get", "list", "watch", "patch"],
    },
    {
        "apiGroups": ["modelpilot.io"],
        "resources": ["modeldeployments/status"],
        "verbs": ["get", "patch", "update"],
    },
    {
        # blockOwnerDeletion on children needs update on the owner's finalizers subresource.
        "apiGroups": ["modelpilot.io"],
        "resources": ["modeldeployments/finalizers"],
        "verbs": ["update"],
    },
    {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {
        "apiGroups": [""],
        "resources": ["services", "configmaps"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {
        # The namespace's shared monitor keeps its SQLite store on a claim (never deleted by the operator).
        "apiGroups": [""],
        "resources": ["persistentvolumeclaims"],
        "verbs": ["get", "list", "watch", "create", "patch"],
    },
    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    {
        "apiGroups": ["networking.istio.io"],
        "resources": ["virtualservices", "destinationrules"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {
        "apiGroups": ["autoscaling"],
        "resources": ["horizontalpodautoscalers"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {
        # Pre-deploy model optimisation (TensorRT / INT8) runs as a Job owned by the ModelDeployment.
        "apiGroups": ["batch"],
        "resources": ["jobs"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {
        "apiGroups": ["keda.sh"],
        "resources": ["scaledobjects"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {
        # kopf peering: exactly one active replica.
        "apiGroups": ["kopf.dev"],
        "resources": ["kopfpeerings"],
        "verbs": ["get", "list", "watch", "patch"],
    },
]

# Cluster-scoped reads: CRD discovery for kopf, nodes to tell InsufficientGPU from Unschedulable.
CLUSTER_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"], "verbs": ["get", "list", "watch", "patch"]},
]


def cluster_role(name: str = "modelpilot-operator") -> dict[str, Any]:
    """Cluster-wide mode: one ClusterRole with every rule."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "modelpilot"}},
        "rules": NAMESPACED_RULES + CLUSTER_RULES,
    }


def namespaced_role(namespace: str, name: str = "modelpilot-operator") -> dict[str, Any]:
    """Single-namespace mode: a Role for the namespace (cluster reads still need a small ClusterRole)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/name": "modelpilot"}},
        "rules": NAMESPACED_RULES,
    }


def cluster_reader_role(name: str = "modelpilot-operator-cluster") -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "modelpilot"}},
        "rules": CLUSTER_RULES,
    }


def service_account_bindings(namespace: str, service_account: str, cluster_wide: bool = True) -> list[dict[str, Any]]:
    """The ServiceAccount plus the role(s) and binding(s) for one install mode."""
    subject = [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}]
    objs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": service_account, "namespace": namespace}}
    ]
    if cluster_wide:
        role = cluster_role()
        objs += [role, _binding("ClusterRoleBinding", role["metadata"]["name"], "ClusterRole", subject)]
    else:
        role = namespaced_role(namespace)
        reader = cluster_reader_role()
        objs += [
            role,
            {**_binding("RoleBinding", "modelpilot-operator", "Role", subject), "metadata": {"name": "modelpilot-operator", "namespace": namespace}},
            reader,
            _binding("ClusterRoleBinding", reader["metadata"]["name"], "ClusterRole", subject),
        ]
    return objs


def _binding(kind: str, name: str, role_kind: str, subjects: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name},
        "subjects": subjects,
    }
