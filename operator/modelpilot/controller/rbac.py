"""The operator's RBAC rules: the single source for the Helm chart, the e2e install and the tests.

Least privilege: every verb below is one the operator's own code or kopf makes (or one the API
server checks on its behalf); tests/unit/controller/test_rbac_matches_code.py reads the code's API calls and
fails on a missing or an extra permission. How each client call maps to a verb:

- `kube.get` -> get, `kube.list` -> list, `kube.delete` -> delete, `kube.create` -> create,
  `kube.merge_patch` -> patch (on a missing object it answers 404, it never creates);
- `kube.apply` (server-side apply, a PATCH) -> patch, and create as well: when the object does not
  exist yet the API server also authorizes the request as `create` for that name
  (k8s.io/apiserver/pkg/endpoints/handlers/patch.go, createAuthorizerAttributes). On the status
  subresource apply only ever updates (a subresource is never created), so it needs patch only;
- a kind kopf watches (`kopf.on.event`) -> list and watch.

No Secrets, no Nodes, no writes to the ModelDeployment's spec or metadata (kopf event handlers write
nothing to the objects they watch), and one kind of RBAC object only: the namespace monitors'
TokenReview bindings, to one role (CLUSTER_WIDE_RULES).
"""

from __future__ import annotations

from typing import Any

from modelpilot.monitor.identity import TOKEN_REVIEW_ROLE, token_review_role

# Namespaced rules: a Role in each watched namespace (namespace scope), or part of the ClusterRole.
NAMESPACED_RULES: list[dict[str, Any]] = [
    {
        # Watched by kopf; read by the reconciler (get) and the namespace monitor (list).
        "apiGroups": ["modelpilot.io"],
        "resources": ["modeldeployments"],
        "verbs": ["get", "list", "watch"],
    },
    {
        # Status is server-side applied.
        "apiGroups": ["modelpilot.io"],
        "resources": ["modeldeployments/status"],
        "verbs": ["patch"],
    },
    {
        # Not a call: children carry blockOwnerDeletion, and the OwnerReferencesPermissionEnforcement
        # admission plugin then requires update on the owner's finalizers subresource.
        "apiGroups": ["modelpilot.io"],
        "resources": ["modeldeployments/finalizers"],
        "verbs": ["update"],
    },
    {
        # Triton revisions and the namespace monitor; watched by kopf for readiness; scaled by patch.
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["list", "watch", "create", "patch", "delete"],
    },
    {
        "apiGroups": [""],
        "resources": ["configmaps", "services"],
        "verbs": ["list", "create", "patch", "delete"],
    },
    {
        # The namespace monitor's own ServiceAccount (it reviews callers' tokens with it).
        "apiGroups": [""],
        "resources": ["serviceaccounts"],
        "verbs": ["list", "create", "patch", "delete"],
    },
    {
        # Only capture sidecars, the operator and labelled clients reach the namespace monitor.
        "apiGroups": ["networking.k8s.io"],
        "resources": ["networkpolicies"],
        "verbs": ["list", "create", "patch", "delete"],
    },
    {
        # Scheduling failures (InsufficientGPU) show on pods, not on Deployments.
        "apiGroups": [""],
        "resources": ["pods"],
        "verbs": ["list", "watch"],
    },
    {
        # The namespace monitor's SQLite claim: created once, never changed or deleted by the operator.
        "apiGroups": [""],
        "resources": ["persistentvolumeclaims"],
        "verbs": ["get", "create", "patch"],
    },
    {
        # The operator's own events, and kopf's (warnings and errors about handling).
        "apiGroups": [""],
        "resources": ["events"],
        "verbs": ["create"],
    },
    {
        # Routing; removed with the ModelDeployment by the garbage collector, never by the operator.
        "apiGroups": ["networking.istio.io"],
        "resources": ["destinationrules", "virtualservices"],
        "verbs": ["get", "create", "patch"],
    },
    {
        "apiGroups": ["autoscaling"],
        "resources": ["horizontalpodautoscalers"],
        "verbs": ["list", "create", "patch", "delete"],
    },
    {
        # Pre-deploy model optimisation (TensorRT / INT8): a Job owned by the ModelDeployment.
        "apiGroups": ["batch"],
        "resources": ["jobs"],
        "verbs": ["get", "create", "patch"],
    },
    {
        "apiGroups": ["keda.sh"],
        "resources": ["scaledobjects"],
        "verbs": ["list", "create", "patch", "delete"],
    },
    {
        # kopf peering in watched namespaces (the chart creates the objects; kopf heartbeats into them).
        "apiGroups": ["kopf.dev"],
        "resources": ["kopfpeerings"],
        "verbs": ["list", "watch", "patch"],
    },
]

# Cluster-scoped reads every install needs. CRDs: kopf observes them for new resources, and the
# operator gets KEDA's to know whether ScaledObjects exist. Namespaces: kopf lists and watches them
# when it serves named namespaces (without, it logs a warning and assumes they exist).
CLUSTER_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["get", "list", "watch"],
    },
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
]

# Only a cluster-wide operator peers through a ClusterKopfPeering, and binds each namespace monitor's
# ServiceAccount to the one ClusterRole that lets it review tokens (TokenReview is cluster-scoped, so
# a RoleBinding cannot grant it). `bind` is limited to that role: the operator can create bindings of
# no other role it does not itself hold. In namespace scope the chart makes those bindings instead.
CLUSTER_WIDE_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"], "verbs": ["list", "watch", "patch"]},
    {
        "apiGroups": ["rbac.authorization.k8s.io"],
        "resources": ["clusterrolebindings"],
        "verbs": ["list", "create", "patch", "delete"],
    },
    {
        "apiGroups": ["rbac.authorization.k8s.io"],
        "resources": ["clusterroles"],
        "verbs": ["bind"],
        "resourceNames": [TOKEN_REVIEW_ROLE],
    },
]

LABELS = {"app.kubernetes.io/name": "modelpilot"}


def cluster_role(name: str = "modelpilot-operator") -> dict[str, Any]:
    """Cluster scope (an explicit choice): one ClusterRole with every rule, for every namespace."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": dict(LABELS)},
        "rules": NAMESPACED_RULES + CLUSTER_RULES + CLUSTER_WIDE_RULES,
    }


def namespaced_role(namespace: str, name: str = "modelpilot-operator") -> dict[str, Any]:
    """Namespace scope: a Role in one watched namespace (cluster reads need cluster_reader_role too)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(LABELS)},
        "rules": NAMESPACED_RULES,
    }


def cluster_reader_role(name: str = "modelpilot-operator-cluster") -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": dict(LABELS)},
        "rules": CLUSTER_RULES,
    }


def service_account_bindings(
    namespace: str, service_account: str, cluster_wide: bool = True, watch_namespaces: list[str] | None = None
) -> list[dict[str, Any]]:
    """The ServiceAccount plus the role(s) and binding(s) for one install mode.

    Namespace scope (`cluster_wide=False`) grants a Role in each of `watch_namespaces` (default:
    `namespace`, where the ServiceAccount lives) and the small cluster reader role.
    """
    subject = [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}]
    objs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": service_account, "namespace": namespace},
        }
    ]
    objs.append(token_review_role())  # what the monitors' bindings refer to
    if cluster_wide:
        role = cluster_role()
        return [*objs, role, _binding("ClusterRoleBinding", role["metadata"]["name"], "ClusterRole", subject)]
    for ns in watch_namespaces or [namespace]:
        role = namespaced_role(ns)
        binding = _binding("RoleBinding", role["metadata"]["name"], "Role", subject)
        binding["metadata"]["namespace"] = ns
        objs += [role, binding]
    reader = cluster_reader_role()
    return [*objs, reader, _binding("ClusterRoleBinding", reader["metadata"]["name"], "ClusterRole", subject)]


def _binding(kind: str, name: str, role_kind: str, subjects: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name},
        "subjects": subjects,
    }
