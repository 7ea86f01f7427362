"""The monitor's own identity in the cluster, for ``--auth=tokenreview``: a ServiceAccount, and the
right to ask the API server who a caller is.

Reviewing a bearer token (TokenReview) is a cluster-scoped ``create``; a RoleBinding cannot grant
it, so each namespace's monitor ServiceAccount gets a ClusterRoleBinding to one ClusterRole that
allows only that (the chart's ``modelpilot-monitor-tokenreview``, narrower than the built-in
``system:auth-delegator``, which also allows SubjectAccessReviews). A cluster-scoped object cannot
be owned by a namespaced one, so the binding carries no owner reference: the operator deletes it
with the namespace's monitor, and it names its namespace in a label so that it is found again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelpilot.api.labels import LABEL_MONITOR_NAMESPACE

MONITOR_SERVICE_ACCOUNT = "modelpilot-monitor"
TOKEN_REVIEW_ROLE = "modelpilot-monitor-tokenreview"


def service_account(namespace: str, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The monitor pod's ServiceAccount. Its token is mounted by the pod spec only (tokenreview)."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {**dict(metadata), "name": MONITOR_SERVICE_ACCOUNT, "namespace": namespace},
        "automountServiceAccountToken": False,
    }


def token_review_binding_name(namespace: str) -> str:
    return f"{MONITOR_SERVICE_ACCOUNT}:{namespace}"


def token_review_binding(namespace: str, role: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """Lets the namespace's monitor create TokenReviews, nothing else."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": token_review_binding_name(namespace),
            "labels": {**dict(labels), LABEL_MONITOR_NAMESPACE: namespace},
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": MONITOR_SERVICE_ACCOUNT, "namespace": namespace}],
    }


def token_review_role(name: str = TOKEN_REVIEW_ROLE) -> dict[str, Any]:
    """The ClusterRole the bindings refer to; installed once, by the chart or the e2e install."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "modelpilot"}},
        "rules": [
            {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}
        ],
    }
