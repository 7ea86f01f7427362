"""Typed views over a ModelDeployment's spec, with the same defaults as the CRD schema.

The API server applies the schema's defaults, but pure functions (and their tests) are
fed raw dicts too, so the defaults live here once more and a unit test checks that the
two agree.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelpilot.api import defaults

DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
DEFAULT_REVISION_HEADER = "x-modelpilot-revision"
REVISION_HASH_LENGTH = 8

# The CRD's one duration form ("30s", "1.5m", "1h30m"): the schemas' pattern, parsed by parse_duration.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str | None, default: float | None = None) -> float | None:
    """Seconds in a Go-style duration such as '90s', '5m' or '1h30m'; None stays `default`."""
    if text is None or text == "":
        return default
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"invalid duration {text!r}: use a number with ms, s, m or h, e.g. 30s or 1h30m")
    return total


@dataclass(frozen=True)
class Resources:
    cpu: str = "1"
    memory: str = "4Gi"
    gpus: int = 0
    mig_profile: str | None = None

    @property
    def gpu_resource_name(self) -> str | None:
        if self.gpus <= 0:
            return None
        return f"nvidia.com/mig-{self.mig_profile}" if self.mig_profile else "nvidia.com/gpu"


@dataclass(frozen=True)
class Placement:
    node_pool: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    affinity: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Serving:
    image: str = DEFAULT_TRITON_IMAGE
    replicas: int = 1
    resources: Resources = field(default_factory=Resources)
    placement: Placement = field(default_factory=Placement)
    args: tuple[str, ...] = ()
    env: tuple[Mapping[str, Any], ...] = ()
    model_store_secret: str | None = None
    model_control_mode: str = "explicit"
    startup_timeout_seconds: int = 900
    readiness_period_seconds: int = 5
    service_account_name: str | None = None
    autoscaling: Mapping[str, Any] | None = (
        None  # serving.autoscaling as written (serving/autoscale.py parses it)
    )
    fallback: Mapping[str, Any] | None = None  # serving.fallback as written (rollout/fallback.py parses it)

    @property
    def min_available(self) -> int:
        """Pods that make a revision available: the autoscaler's floor, else the fixed replica count."""
        return int(self.autoscaling.get("minReplicas", 1)) if self.autoscaling else self.replicas


@dataclass(frozen=True)
class Traffic:
    hosts: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ("mesh",)
    port: int = 8000
    load_balancer: str = "LEAST_REQUEST"


@dataclass(frozen=True)
class Rollout:
    paused: bool = False
    kill_switch: bool = False
    revision_header: str = DEFAULT_REVISION_HEADER
    progress_deadline_seconds: int = defaults.PROGRESS_DEADLINE_SECONDS
    scale_down_delay_seconds: int = defaults.SCALE_DOWN_DELAY_SECONDS
    analysis: Mapping[str, Any] = field(default_factory=dict)
    steps: tuple[Mapping[str, Any], ...] = ()
    flags: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class ModelDeploymentSpec:
    """The whole spec; `model` stays a mapping because it is rendered straight into config.pbtxt."""

    model: Mapping[str, Any]
    serving: Serving
    traffic: Traffic
    rollout: Rollout
    monitoring: Mapping[str, Any]
    raw: Mapping[str, Any]

    @property
    def revision(self) -> str:
        return revision_hash(self.raw)


def parse_spec(spec: Mapping[str, Any]) -> ModelDeploymentSpec:
    """Build the typed view, applying the CRD's defaults to anything missing."""
    model = copy.deepcopy(dict(spec.get("model") or {}))
    sv = spec.get("serving") or {}
    res = sv.get("resources") or {}
    pl = sv.get("placement") or {}
    probes = sv.get("probes") or {}
    tr = spec.get("traffic") or {}
    ro = spec.get("rollout") or {}
    serving = Serving(
        image=sv.get("image") or DEFAULT_TRITON_IMAGE,
        replicas=int(sv.get("replicas", 1)),
        resources=Resources(
            cpu=str(res.get("cpu", "1")),
            memory=str(res.get("memory", "4Gi")),
            gpus=int(res.get("gpus", 0)),
            mig_profile=res.get("migProfile"),
        ),
        placement=Placement(
            node_pool=pl.get("nodePool"),
            node_selector=dict(pl.get("nodeSelector") or {}),
            tolerations=tuple(pl.get("tolerations") or ()),
            affinity=pl.get("affinity"),
        ),
        args=tuple(sv.get("args") or ()),
        env=tuple(sv.get("env") or ()),
        model_store_secret=sv.get("modelStoreSecret"),
        model_control_mode=sv.get("modelControlMode", "explicit"),
        startup_timeout_seconds=int(probes.get("startupTimeoutSeconds", 900)),
        readiness_period_seconds=int(probes.get("readinessPeriodSeconds", 5)),
        service_account_name=sv.get("serviceAccountName"),
        autoscaling=copy.deepcopy(dict(sv["autoscaling"])) if sv.get("autoscaling") else None,
        fallback=copy.deepcopy(dict(sv["fallback"])) if sv.get("fallback") else None,
    )
    traffic = Traffic(
        hosts=tuple(tr.get("hosts") or ()),
        gateways=tuple(tr.get("gateways") or ("mesh",)),
        port=int(tr.get("port", 8000)),
        load_balancer=tr.get("loadBalancer", "LEAST_REQUEST"),
    )
    rollout = Rollout(
        paused=bool(ro.get("paused", False)),
        kill_switch=bool(ro.get("killSwitch", False)),
        revision_header=ro.get("revisionHeader") or DEFAULT_REVISION_HEADER,
        progress_deadline_seconds=int(ro.get("progressDeadlineSeconds", defaults.PROGRESS_DEADLINE_SECONDS)),
        scale_down_delay_seconds=int(ro.get("scaleDownDelaySeconds", defaults.SCALE_DOWN_DELAY_SECONDS)),
        analysis=dict(ro.get("analysis") or {}),
        steps=tuple(ro.get("steps") or ()),
        flags=tuple(ro.get("flags") or ()),
    )
    return ModelDeploymentSpec(
        model=model,
        serving=serving,
        traffic=traffic,
        rollout=rollout,
        monitoring=dict(spec.get("monitoring") or {}),
        raw=spec,
    )


def pod_affecting(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The part of the spec that changes the pods: model, serving but replicas, and payload capture.

    Replica counts and traffic or rollout settings must not make a new revision.
    """
    serving = dict(spec.get("serving") or {})
    for key in ("replicas", "autoscaling", "fallback"):  # sizing and load-shedding, not the pods themselves
        serving.pop(key, None)
    # How a model version was produced (optimize) is not part of the pods that serve it.
    model = {k: v for k, v in (spec.get("model") or {}).items() if k != "optimize"}
    config = dict(model.get("config") or {})
    if config.get("instanceGroups"):  # the schema's default, so a spelled-out count hashes the same
        config["instanceGroups"] = [{"count": 1, **group} for group in config["instanceGroups"]]
        model["config"] = config
    out = {"model": model, "serving": _normalise(parse_spec(spec).serving, serving)}
    monitoring = spec.get("monitoring") or {}
    if monitoring.get("enabled"):  # the capture sidecar is part of the pod
        out["capture"] = {"sampleRate": float(monitoring.get("sampleRate", 0.1))}
    return out


def _normalise(typed: Serving, serving: dict[str, Any]) -> dict[str, Any]:
    # Hash the defaulted values, so that spelling out a default does not roll a new revision.
    out = dict(serving)
    out["image"] = typed.image
    out["modelControlMode"] = typed.model_control_mode
    out["resources"] = {
        "cpu": typed.resources.cpu,
        "memory": typed.resources.memory,
        "gpus": typed.resources.gpus,
        **({"migProfile": typed.resources.mig_profile} if typed.resources.mig_profile else {}),
    }
    out["probes"] = {
        "startupTimeoutSeconds": typed.startup_timeout_seconds,
        "readinessPeriodSeconds": typed.readiness_period_seconds,
    }
    return out


def revision_hash(spec: Mapping[str, Any]) -> str:
    """A short, stable name for the pod-affecting spec: a new model version or image gives a new one."""
    canonical = json.dumps(pod_affecting(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:REVISION_HASH_LENGTH]
