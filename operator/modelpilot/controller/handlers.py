"""Thin kopf handlers: watch events only schedule reconciles; the Reconciler does the work.

Only `on.event` handlers are used, so kopf writes nothing to the objects (no progress
annotations) and puts no finalizer on them: children are cleaned up by owner references.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kopf

from modelpilot.api.labels import KOPF_FINALIZER, LABEL_DEPLOYMENT
from modelpilot.api.policy import load_policy
from modelpilot.api.reasons import GROUP, PLURAL, VERSION
from modelpilot.controller import metrics as opmetrics
from modelpilot.controller.kube import KubeClient
from modelpilot.controller.reconcile import Reconciler
from modelpilot.controller.workqueue import WorkQueue

log = logging.getLogger("modelpilot")


class _State:
    queue: WorkQueue | None = None
    reconciler: Reconciler | None = None


STATE = _State()


def prometheus_auth_headers(env: Mapping[str, str]) -> dict[str, str]:
    """Bearer token (read from a file, so rotation works) or basic auth for Prometheus."""
    token_file = env.get("MODELPILOT_PROMETHEUS_BEARER_TOKEN_FILE")
    if token_file:
        return {"Authorization": f"Bearer {Path(token_file).read_text().strip()}"}
    user, password = env.get("MODELPILOT_PROMETHEUS_USERNAME"), env.get("MODELPILOT_PROMETHEUS_PASSWORD")
    if user:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        return {"Authorization": f"Basic {token}"}
    return {}


def build_reconciler(kube: KubeClient) -> Reconciler:
    """The reconciler with its metric provider, configured from the environment."""
    from modelpilot.controller.gate import GateRunner
    from modelpilot.controller.measure import PrometheusLoad, PrometheusMeasure
    from modelpilot.controller.monitoring import monitor_settings_from_env

    prometheus_url = os.environ.get("MODELPILOT_PROMETHEUS_URL", "")
    measure = (
        PrometheusMeasure(prometheus_url, headers=prometheus_auth_headers(os.environ))
        if prometheus_url
        else None
    )
    init_image = os.environ.get("MODELPILOT_IMAGE", "ghcr.io/modelpilot/modelpilot:0.1.0")
    load = PrometheusLoad(measure.provider) if measure else None
    policy = load_policy(os.environ)
    log.info("ModelDeployment policy: %s", policy.to_dict())
    monitors = monitor_settings_from_env(os.environ, init_image)
    log.info(
        "namespace monitors: auth=%s networkPolicy=%s tokenReviewRole=%s reader=%s",
        monitors.auth,
        monitors.network_policy,
        monitors.token_review_role,
        monitors.operator_username,
    )
    return Reconciler(
        kube=kube,
        measure=measure,
        measure_load=load,
        run_gate=GateRunner(),
        init_image=init_image,
        prometheus_url=prometheus_url or None,
        policy=policy,
        monitor_settings=monitors,
    )


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """Log in with an explicit kubeconfig when one is given, else as kopf would (in-cluster first)."""
    path = os.environ.get("MODELPILOT_KUBECONFIG")
    if not path:
        return kopf.login_via_client(**kwargs)
    import kubernetes

    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=path, client_configuration=config)
    scheme, _, token = (
        config.api_key.get("authorization") or config.api_key.get("BearerToken") or ""
    ).partition(" ")
    return kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
    )


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.persistence.finalizer = KOPF_FINALIZER  # never added: no handler needs one
    kube = KubeClient.from_environment(
        os.environ.get("MODELPILOT_KUBECONFIG") or None,
        on_write=lambda op, ns: opmetrics.WRITES.labels(op, ns).inc(),
    )
    STATE.reconciler = build_reconciler(kube)

    async def handle(key: Any) -> float | None:
        namespace, name = key
        assert STATE.reconciler is not None
        try:
            result = await asyncio.to_thread(STATE.reconciler.reconcile, namespace, name)
        except Exception:
            opmetrics.RECONCILES.labels("error").inc()
            raise
        opmetrics.RECONCILES.labels("ok").inc()
        return result

    STATE.queue = WorkQueue(handle, workers=int(os.environ.get("MODELPILOT_WORKERS", "4")))
    STATE.queue.start()


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if STATE.queue:
        await STATE.queue.stop()


@kopf.on.event(GROUP, VERSION, PLURAL)
def modeldeployment_event(event: dict, name: str, namespace: str, **_: Any) -> None:
    if STATE.queue is None:
        return
    if event.get("type") == "DELETED":
        STATE.queue.forget((namespace, name))
        opmetrics.forget(namespace, name)
        return
    STATE.queue.add((namespace, name))


@kopf.on.event("apps", "v1", "deployments", labels={LABEL_DEPLOYMENT: kopf.PRESENT})
def child_deployment_event(labels: dict, namespace: str, **_: Any) -> None:
    if STATE.queue is not None:
        STATE.queue.add((namespace, labels[LABEL_DEPLOYMENT]), 0.2)


@kopf.on.event("", "v1", "pods", labels={LABEL_DEPLOYMENT: kopf.PRESENT})
def child_pod_event(labels: dict, namespace: str, **_: Any) -> None:
    # Pods tell us about scheduling failures (InsufficientGPU) that Deployments do not show.
    if STATE.queue is not None:
        STATE.queue.add((namespace, labels[LABEL_DEPLOYMENT]), 0.5)
