"""The imperative shell around `decide`: observe, decide, act.

Observe reads the ModelDeployment, its children and (when a check is due) metrics;
`decide` is pure; act server-side applies only the children that differ from what is
live, patches status only when it changed, and posts the decision's events.

Why one module (~440 lines): observe, decide and act for one object, in the order that makes a crash
safe (status before children, routes before shrinking); the builders, measurement and apply client
live elsewhere.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from modelpilot.api.labels import LABEL_COMPONENT, LABEL_DEPLOYMENT, LABEL_REVISION
from modelpilot.api.policy import Policy
from modelpilot.api.policy import check as policy_check
from modelpilot.api.reasons import API_VERSION, KIND, ConditionType, Phase, Reason
from modelpilot.api.spec import parse_spec
from modelpilot.controller import metrics as opmetrics
from modelpilot.controller.autoscaling import Autoscalers
from modelpilot.controller.kube import KubeClient
from modelpilot.controller.monitoring import NamespaceMonitors
from modelpilot.controller.optimize import Optimizer
from modelpilot.monitor.manifests import MonitorSettings
from modelpilot.rollout.decide import (
    REQUEST_ANNOTATION,
    Decision,
    Event,
    analysis_request,
    decide,
    decide_invalid,
    gate_request,
    load_check_due,
    problems_message,
)
from modelpilot.rollout.fallback import LoadObservation
from modelpilot.rollout.observe import MetricSample, Observations, revision_states
from modelpilot.rollout.status import rfc3339, set_condition
from modelpilot.routing.istio import TrafficPlan, destination_rule, virtual_service, without_candidate
from modelpilot.serving import manifests
from modelpilot.serving.triton import TritonConfigError, render_config_pbtxt
from modelpilot.validation import validate

log = logging.getLogger(__name__)
BACKOFF_BASE = 5.0
BACKOFF_MAX = 300.0

Measure = Callable[..., Mapping[str, MetricSample]]


@dataclass
class Reconciler:
    kube: KubeClient
    measure: Measure | None = None  # (request, owner) -> samples; None: analysis is inconclusive
    measure_load: Callable[..., LoadObservation] | None = (
        None  # (owner, model, stable) -> queue p95, request rate
    )
    run_gate: Callable[..., Any] | None = None  # (owner, spec, gate, candidate, stable, now) -> GateResult
    init_image: str = manifests.DEFAULT_INIT_IMAGE
    clock: Callable[[], float] = time.time
    prometheus_url: str | None = None  # for KEDA's Prometheus trigger
    policy: Policy = field(default_factory=Policy)  # images, ServiceAccounts and Secrets a spec may use
    monitor_settings: MonitorSettings | None = None  # None: an open monitor (unit tests); see handlers
    monitors: NamespaceMonitors = field(init=False)
    autoscalers: Autoscalers = field(init=False)
    optimizer: Optimizer = field(init=False)
    _failures: dict[tuple[str, str], int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        settings = self.monitor_settings or MonitorSettings(image=self.init_image)
        self.monitors = NamespaceMonitors(self.kube, settings, is_subset)
        self.autoscalers = Autoscalers(self.kube, is_subset, self.prometheus_url)
        self.optimizer = Optimizer(self.kube, self.init_image)

    def reconcile(self, namespace: str, name: str) -> float | None:
        """One pass; returns seconds until the next wanted pass (None: only on events).

        Nothing escapes: a child the API server rejects, or any unexpected error, becomes a
        `Reconciled=False` condition and a Warning event, and the pass is retried with an
        exponential backoff (5 s doubling to 5 min) instead of a hot loop.
        """
        key = (namespace, name)
        try:
            wanted = self._reconcile(namespace, name)
        except Exception as exc:  # the whole point: report, back off, never crash-loop
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            delay = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (failures - 1))
            log.warning(
                "reconcile of %s/%s failed (%s); retrying in %.0fs",
                namespace,
                name,
                type(exc).__name__,
                delay,
                exc_info=not isinstance(exc, ChildRejected),
            )
            self._report_failure(namespace, name, exc)
            return delay
        self._failures.pop(key, None)
        return wanted

    def _report_failure(self, namespace: str, name: str, exc: Exception) -> None:
        """Write the failure into the CR's conditions and post one Warning event (best effort)."""
        try:
            body = self.kube.get("ModelDeployment", name, namespace)
            if body is None:
                return
            if isinstance(exc, ChildRejected):
                reason, message = Reason.APPLY_FAILED, str(exc)
            else:
                reason, message = Reason.RECONCILE_ERROR, f"{type(exc).__name__}: {exc}"
            message = problems_message([message])
            old = body.get("status") or {}
            generation = int(body["metadata"].get("generation", 0))
            conditions = set_condition(
                list(old.get("conditions") or []),
                ConditionType.RECONCILED,
                False,
                reason,
                message,
                generation,
                self.clock(),
            )
            if conditions != old.get("conditions"):
                new = {
                    **old,
                    "conditions": conditions,
                    "phase": old.get("phase") or Phase.DEGRADED.value,
                    "message": message,
                    "observedGeneration": generation,
                }
                self._act_status(
                    body,
                    Decision(apply_children=False, status=new, events=[Event("Warning", reason, message)]),
                )
        except Exception:  # the API server itself may be the problem
            log.exception("could not report the failure of %s/%s", namespace, name)

    def _reconcile(self, namespace: str, name: str) -> float | None:
        body = self.kube.get("ModelDeployment", name, namespace)
        if body is None or body["metadata"].get("deletionTimestamp"):
            opmetrics.forget(namespace, name)
            # The namespace monitor without this model: its config entry goes, and with the last model
            # the monitor's cluster-scoped TokenReview binding too (no owner reference can remove it).
            self.monitors.reconcile(namespace, {})
            return None
        now = self.clock()
        meta = body["metadata"]
        owner = manifests.Owner(name=name, namespace=namespace, uid=meta["uid"])
        status = body.get("status") or {}
        generation = int(meta.get("generation", 0))
        raw_spec = body.get("spec") or {}
        invalid: list[str] = []
        try:
            spec = parse_spec(raw_spec)
            invalid = validate(spec) + policy_check(spec, self.policy)
            if not invalid:
                render_config_pbtxt(spec.model)
        except (TritonConfigError, ValueError, TypeError, KeyError) as exc:
            invalid.append(str(exc))
            spec = None
        if spec is None or invalid:
            # Nothing is measured, gated, optimised or built from a spec that failed validation.
            self._hold_invalid(body, decide_invalid(generation, status, invalid, now))
            return None

        labels = {LABEL_DEPLOYMENT: name}
        deployments = self.kube.list("Deployment", namespace, labels)
        pods = self.kube.list("Pod", namespace, labels)
        samples = None
        request = analysis_request(spec, status, now)
        if request is not None:
            samples = self.measure(request, owner) if self.measure else {}
        optimization = self.optimizer.observe(owner, spec, status.get("stableRevision"))
        gate = None
        wanted_gate = gate_request(spec, status, now)
        if wanted_gate is not None and self.run_gate is not None:
            gate = self.run_gate(
                owner, spec, wanted_gate.gate, wanted_gate.candidate, wanted_gate.stable, now
            )
        load = None
        if load_check_due(spec, status, now) and self.measure_load is not None:
            load = self.measure_load(owner, str(spec.model["name"]), status.get("stableRevision"))
        obs = Observations(
            revisions=revision_states(deployments, pods),
            metrics=samples,
            request=(meta.get("annotations") or {}).get(REQUEST_ANNOTATION),
            load=load,
            gate=gate,
            optimization=optimization,
        )
        try:
            decision = decide(spec, generation, status, obs, now, invalid, namespace=namespace)
        except ValueError as exc:  # e.g. a step kind this version cannot run
            decision = decide_invalid(generation, status, [*invalid, str(exc)], now)
        if not decision.apply_children:
            self._hold_invalid(body, decision)
            return decision.requeue_after
        try:  # autoscalers depend on what the cluster serves (KEDA) and how the operator runs (Prometheus)
            scaling = self.autoscalers.desired(owner, spec, decision)
        except ValueError as exc:
            problem = f"spec.serving.autoscaling: {exc}"
            self._hold_invalid(body, decide_invalid(generation, status, [*invalid, problem], now))
            return None
        # The decision is recorded before it is carried out: a pass cut short between the two (a crash, a
        # rejected child) is carried out again by the next one, and a rollback is never forgotten.
        self._act_status(body, decision)
        self._act_children(owner, spec, decision, deployments, scaling)
        self.monitors.reconcile(namespace, stable_revisions={name: decision.stable})
        reconciled = next(
            (c for c in decision.status.get("conditions") or [] if c.get("type") == ConditionType.RECONCILED),
            None,
        )
        if reconciled is None or reconciled.get("status") != "True":
            recorded = {**body, "status": decision.status}
            conditions = set_condition(
                decision.status.get("conditions") or [],
                ConditionType.RECONCILED,
                True,
                Reason.AS_EXPECTED,
                "children applied",
                generation,
                now,
            )
            self._act_status(
                recorded, Decision(apply_children=False, status={**decision.status, "conditions": conditions})
            )
        opmetrics.observe(namespace, name, decision, samples)
        return decision.requeue_after

    # ---- act

    def _hold_invalid(self, body: Mapping[str, Any], decision: Decision) -> None:
        """Report an invalid spec; mid-rollout, the live routes stop sending anything to the candidate."""
        meta = body["metadata"]
        if decision.withdraw_candidate and decision.stable:
            live = self.kube.get("VirtualService", meta["name"], meta["namespace"])
            if live is not None:
                spec = without_candidate(live.get("spec") or {}, decision.stable, decision.withdraw_candidate)
                if spec != live.get("spec"):
                    self.kube.apply(
                        {
                            "apiVersion": live["apiVersion"],
                            "kind": "VirtualService",
                            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                            "spec": spec,
                        }
                    )
        self._act_status(body, decision)

    def _apply(self, manifest: Mapping[str, Any]) -> None:
        """Server-side apply; a rejection by the API server names the child and its reason."""
        try:
            self.kube.apply(manifest)
        except ApiException as exc:
            if exc.status in (400, 403, 404, 422):
                meta = manifest.get("metadata") or {}
                raise ChildRejected(
                    f"{manifest.get('kind')} {meta.get('name')!r} was rejected by the API server "
                    f"({exc.status}): {_api_message(exc)}"
                ) from exc
            raise

    def _apply_if_changed(self, desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> None:
        if live is not None and is_subset(desired, live):
            return
        self._apply(desired)

    def _act_children(
        self,
        owner: manifests.Owner,
        spec,
        decision: Decision,
        deployments: list[dict],
        scaling: Mapping[str, dict[str, Any]],
    ) -> None:
        ns = owner.namespace
        labels = {LABEL_DEPLOYMENT: owner.name}
        live_deps = {d["metadata"]["name"]: d for d in deployments}
        live_svcs = {s["metadata"]["name"]: s for s in self.kube.list("Service", ns, labels)}
        live_cms = {c["metadata"]["name"]: c for c in self.kube.list("ConfigMap", ns, labels)}
        current = spec.revision
        capture = manifests.capture_enabled(spec)
        # Order: what traffic will need exists first; routes move next; only then does anything shrink or go.
        shrink: list[tuple[str, int]] = []
        for rev, replicas in decision.replicas.items():
            dep_name = manifests.revision_name(owner, rev)
            size = None if rev in scaling else replicas  # an autoscaled revision's size is its HPA's
            if rev == current:
                cm = manifests.config_map(owner, spec, rev)
                if cm:  # the config must exist before pods mount it
                    self._apply_if_changed(cm, live_cms.get(cm["metadata"]["name"]))
                self._apply_if_changed(
                    manifests.deployment(owner, spec, rev, size, self.init_image), live_deps.get(dep_name)
                )
                self._apply_if_changed(
                    manifests.revision_service(owner, rev, capture), live_svcs.get(dep_name)
                )
            elif (
                size is not None
                and dep_name in live_deps
                and int(live_deps[dep_name]["spec"].get("replicas", 0)) != size
            ):
                # An older revision: its pod template came from an older spec; only its size changes.
                if size > int(live_deps[dep_name]["spec"].get("replicas", 0)):
                    self.kube.merge_patch("Deployment", dep_name, ns, {"spec": {"replicas": size}})
                else:
                    shrink.append((dep_name, size))
        self.autoscalers.apply(owner, scaling)
        self._apply_if_changed(manifests.stable_service(owner, capture), live_svcs.get(owner.name))
        preview_name = f"{owner.name}-preview"
        if decision.preview:
            preview = manifests.revision_service(owner, decision.preview, capture)
            preview["metadata"]["name"] = preview_name
            preview["metadata"]["labels"][LABEL_COMPONENT] = "preview"
            self._apply_if_changed(preview, live_svcs.get(preview_name))
        elif preview_name in live_svcs:
            self.kube.delete("Service", preview_name, ns)
        plan = TrafficPlan.of(decision, current)
        dr = destination_rule(owner, spec, plan)
        vs = virtual_service(owner, spec, plan)
        self._apply_if_changed(dr, self.kube.get("DestinationRule", owner.name, ns))
        live_vs = self.kube.get("VirtualService", owner.name, ns)
        if live_vs is None or live_vs.get("spec") != vs["spec"]:
            # Routes are compared whole: a stale mirror or match left in place would be a real bug.
            self._apply(vs)
        for dep_name, size in shrink:
            self.kube.merge_patch("Deployment", dep_name, ns, {"spec": {"replicas": size}})
        # Retired revisions: their Service and ConfigMap, then the Deployment last, so a pass cut short
        # leaves something that the next pass finds again (nothing is orphaned).
        keep = set(decision.replicas)
        everything = [*deployments, *live_svcs.values(), *live_cms.values()]
        retired = {(o["metadata"].get("labels") or {}).get(LABEL_REVISION) for o in everything}
        for rev in sorted(r for r in retired if r and r not in keep):
            base = manifests.revision_name(owner, rev)
            if base in live_svcs:
                self.kube.delete("Service", base, ns)
            if f"{base}-config" in live_cms:
                self.kube.delete("ConfigMap", f"{base}-config", ns)
            if base in live_deps:
                self.kube.delete("Deployment", base, ns)

    def _act_status(self, body: Mapping[str, Any], decision: Decision) -> None:
        meta = body["metadata"]
        old = body.get("status") or {}
        new = decision.status
        if old != new:
            self.kube.apply(
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                    "status": new,
                },
                subresource="status",
            )
        for event in decision.events:
            if (
                event.reason == "InvalidSpec"
                and old.get("message") == new.get("message")
                and old.get("phase") == "InvalidSpec"
            ):
                continue  # the same problem, already reported
            self.post_event(body, event.type, event.reason, event.message)

    def post_event(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        meta = body["metadata"]
        now = rfc3339(self.clock())
        self.kube.create(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {
                    "name": f"{meta['name']}.{uuid.uuid4().hex[:12]}",
                    "namespace": meta["namespace"],
                },
                "involvedObject": {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "uid": meta["uid"],
                },
                "reason": str(reason),
                "message": message[:1024],
                "type": type_,
                "source": {"component": "modelpilot"},
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
                "reportingComponent": "modelpilot.io/operator",
                "reportingInstance": "modelpilot",
            }
        )


class ChildRejected(RuntimeError):
    """The API server refused a child object built from the spec (reported as ApplyFailed)."""


def _api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.body or exc.reason)[:500]


def is_subset(desired: Any, live: Any) -> bool:
    """True when every field we want is already live (the server may add defaults around it)."""
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return False
        return all(k in live and is_subset(v, live[k]) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return False
        return all(is_subset(d, v) for d, v in zip(desired, live, strict=True))
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired is live
    if isinstance(desired, int | float) and isinstance(live, int | float):
        return float(desired) == float(live)
    return desired == live
