"""An in-memory API server for the fuzz suite: the operator's real KubeClient, talking to a dict.

`FakeKube` subclasses the operator's `KubeClient` and replaces only its transport (`_call`), so
every path, query, content type, NotFound and ApiException goes through the operator's own
code. The server side validates what the operator writes the way kube-apiserver 1.35 does, for
the fields the operator sets: object names (DNS-1035 labels for Services, DNS-1123 subdomains
otherwise), labels and annotations, the pod template (containers, env, envFrom, resources,
volumes and mounts, probes, nodeSelector, tolerations, serviceAccountName), Services, HPAs,
Jobs and ConfigMaps, and the ModelDeployment's status against the CRD's status schema. It
must never be friendlier than the real server: where it cannot check something (the inside of
a free-form `affinity`), the generator only produces values the real server accepts.
Unknown kinds answer 404, as a cluster without KEDA does for ScaledObjects.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from kubernetes.client.exceptions import ApiException
from tests.unit.fuzz.admission import admit, clone, status_errors

from modelpilot.controller.kube import KINDS, KubeClient, NotFound

DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])*$")
QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
_SUFFIXES = {
    "": 1,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
ENV_FIELD_PATHS = {
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
}
ENV_RESOURCES = {
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
}
PLURALS = {k.plural: name for name, k in KINDS.items()}


# --------------------------------------------------------------------------- apimachinery's checks


def dns1035_label(value: Any, where: str) -> list[str]:
    if not isinstance(value, str) or len(value) > 63 or not DNS1035.match(value):
        return [
            f"{where}: Invalid value: {value!r}: a DNS-1035 label must consist of lower case alphanumeric "
            "characters or '-', start with an alphabetic character, and end with an alphanumeric character"
        ]
    return []


def dns1123_label(value: Any, where: str) -> list[str]:
    if not isinstance(value, str) or len(value) > 63 or not DNS1123_LABEL.match(value):
        return [f"{where}: Invalid value: {value!r}: a lowercase RFC 1123 label"]
    return []


def subdomain(value: Any, where: str) -> list[str]:
    if not isinstance(value, str) or len(value) > 253 or not DNS1123_SUBDOMAIN.match(value):
        return [f"{where}: Invalid value: {value!r}: a lowercase RFC 1123 subdomain"]
    return []


def qualified_name(value: Any, where: str) -> list[str]:
    if isinstance(value, str) and _good_qualified_name(value):
        return []
    return _qualified_name_errors(value, where)


def _qualified_name_errors(value: Any, where: str) -> list[str]:
    if not isinstance(value, str) or not value:
        return [f"{where}: Invalid value: {value!r}: name part must be non-empty"]
    parts = value.split("/")
    if len(parts) > 2:
        return [f"{where}: Invalid value: {value!r}: a qualified name must consist of [prefix/]name"]
    if len(parts) == 2:
        prefix, name = parts
        if not prefix:
            return [f"{where}: Invalid value: {value!r}: prefix part must be non-empty"]
        if subdomain(prefix, where):
            return [f"{where}: Invalid value: {value!r}: prefix part a lowercase RFC 1123 subdomain"]
    else:
        name = parts[0]
    if len(name) > 63 or not QUALIFIED_NAME.match(name):
        return [
            f"{where}: Invalid value: {value!r}: name part must consist of alphanumeric characters, '-', '_' or '.'"
        ]
    return []


@lru_cache(maxsize=65536)
def _good_qualified_name(value: str) -> bool:
    return not _qualified_name_errors(value, "")


def label_value(value: Any, where: str) -> list[str]:
    if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
        return [f"{where}: Invalid value: {value!r}: a valid label value"]
    return []


def labels(values: Any, where: str) -> list[str]:
    if values is None:
        return []
    if not isinstance(values, Mapping):
        return [f"{where}: Invalid value: must be a map"]
    out = []
    for k, v in values.items():
        out += qualified_name(k, f"{where}[{k!r}]") + label_value(v, f"{where}[{k!r}]")
    return out


def annotations(values: Any, where: str) -> list[str]:
    if values is None:
        return []
    out = [e for k in values for e in qualified_name(str(k).lower(), where)]
    if sum(len(k) + len(str(v)) for k, v in values.items()) > 256 * 1024:
        out.append(f"{where}: Too long: must have at most 262144 bytes")
    return out


def quantity(value: Any, where: str) -> tuple[Decimal | None, list[str]]:
    """resource.ParseQuantity: the number and its suffix."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not QUANTITY.match(text):
        return None, [f"{where}: Invalid value: {value!r}: quantities must match the regular expression"]
    match = QUANTITY.match(text)
    number, suffix = match.group(1), match.group(2)
    try:
        amount = Decimal(number)
    except InvalidOperation:
        return None, [f"{where}: Invalid value: {value!r}: unable to parse quantity's numeric part"]
    if suffix in _SUFFIXES:
        return amount * Decimal(_SUFFIXES[suffix]), []
    if re.fullmatch(r"[eE][-+]?[0-9]+", suffix):
        try:
            return amount * (Decimal(10) ** int(suffix[1:])), []
        except (InvalidOperation, OverflowError):
            return None, [f"{where}: Invalid value: {value!r}: unable to parse quantity's suffix"]
    return None, [f"{where}: Invalid value: {value!r}: unable to parse quantity's suffix"]


def relaxed_env_name(value: Any, where: str) -> list[str]:
    # 1.35: RelaxedEnvironmentVariableValidation is on: any printable ASCII but '='.
    if not isinstance(value, str) or not value:
        return [f"{where}: Required value"]
    if any(not 32 <= ord(c) <= 126 or c == "=" for c in value):
        return [
            f"{where}: Invalid value: {value!r}: a valid environment variable name must consist only of printable "
            "ASCII characters other than '='"
        ]
    return []


# --------------------------------------------------------------------------- kinds


def metadata(obj: Mapping[str, Any], kind: str) -> list[str]:
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    where = "metadata.name"
    if kind == "Service":
        errors = dns1035_label(name, where)
    elif kind == "Job":
        errors = subdomain(name, where) + (
            label_value(name, "metadata.name (the job-name label)") if name else []
        )
    else:
        errors = subdomain(name, where)
    errors += labels(meta.get("labels"), "metadata.labels") + annotations(
        meta.get("annotations"), "metadata.annotations"
    )
    for ref in meta.get("ownerReferences") or ():
        if not ref.get("uid") or not ref.get("name"):
            errors.append("metadata.ownerReferences: Invalid value: uid and name must be set")
    return errors


def container(c: Mapping[str, Any], where: str, volume_names: set[str]) -> list[str]:
    errors = dns1123_label(c.get("name"), f"{where}.name")
    if not c.get("image"):
        errors.append(f"{where}.image: Required value")
    ports = set()
    for i, port in enumerate(c.get("ports") or ()):
        if not 1 <= int(port.get("containerPort", 0)) <= 65535:
            errors.append(f"{where}.ports[{i}].containerPort: Invalid value")
        if port.get("name"):
            if (
                len(port["name"]) > 15
                or not IANA_SVC_NAME.match(port["name"])
                or not re.search("[a-z]", port["name"])
            ):
                errors.append(f"{where}.ports[{i}].name: Invalid value: {port['name']!r}")
            if port["name"] in ports:
                errors.append(f"{where}.ports[{i}].name: Duplicate value")
            ports.add(port["name"])
    for i, env in enumerate(c.get("env") or ()):
        path = f"{where}.env[{i}]"
        errors += relaxed_env_name(env.get("name"), f"{path}.name")
        errors += env_value_from(env, f"{path}.valueFrom")
        unknown = set(env) - {"name", "value", "valueFrom"}
        if unknown:
            errors.append(f"{path}: field not declared in schema: {sorted(unknown)}")
    for i, source in enumerate(c.get("envFrom") or ()):
        refs = [k for k in ("configMapRef", "secretRef") if k in source]
        if len(refs) != 1:
            errors.append(
                f"{where}.envFrom[{i}]: Invalid value: must specify one of configMapRef or secretRef"
            )
        for ref in refs:
            errors += subdomain((source[ref] or {}).get("name"), f"{where}.envFrom[{i}].{ref}.name")
    resources = c.get("resources") or {}
    amounts: dict[tuple[str, str], Decimal] = {}
    for part in ("requests", "limits"):
        for res, value in (resources.get(part) or {}).items():
            path = f"{where}.resources.{part}[{res}]"
            errors += qualified_name(res, path)
            amount, problems = quantity(value, path)
            errors += problems
            if amount is not None:
                if amount < 0:
                    errors.append(f"{path}: Invalid value: must be greater than or equal to 0")
                if (
                    "/" in res
                    and not res.startswith("kubernetes.io/")
                    and amount != amount.to_integral_value()
                ):
                    errors.append(f"{path}: Invalid value: must be an integer")
                amounts[(part, res)] = amount
    for (part, res), amount in amounts.items():
        limit = amounts.get(("limits", res))
        if part == "requests" and limit is not None and amount > limit:
            errors.append(
                f"{where}.resources.requests[{res}]: Invalid value: must be less than or equal to {res} limit"
            )
        if part == "requests" and "/" in res and not res.startswith("kubernetes.io/") and limit != amount:
            errors.append(f"{where}.resources.requests[{res}]: Invalid value: must be equal to {res} limit")
    mounts = set()
    for i, mount in enumerate(c.get("volumeMounts") or ()):
        if mount.get("name") not in volume_names:
            errors.append(f"{where}.volumeMounts[{i}].name: Not found: {mount.get('name')!r}")
        path = mount.get("mountPath")
        if not path:
            errors.append(f"{where}.volumeMounts[{i}].mountPath: Required value")
        elif path in mounts:
            errors.append(f"{where}.volumeMounts[{i}].mountPath: Invalid value: must be unique")
        mounts.add(path)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = c.get(probe)
        if p:
            for key in ("periodSeconds", "timeoutSeconds", "failureThreshold"):
                if key in p and int(p[key]) < 1:
                    errors.append(f"{where}.{probe}.{key}: Invalid value: must be greater than or equal to 1")
            port = (p.get("httpGet") or {}).get(
                "port"
            )  # a name: valid IANA syntax (the kubelet resolves it later)
            if isinstance(port, str) and (len(port) > 15 or not IANA_SVC_NAME.match(port)):
                errors.append(f"{where}.{probe}.httpGet.port: Invalid value: {port!r}")
    return errors


def env_value_from(env: Mapping[str, Any], where: str) -> list[str]:
    source = env.get("valueFrom")
    if source is None:
        return []
    known = ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef", "fileKeyRef")
    errors = [f"{where}.{k}: field not declared in schema" for k in source if k not in known]
    present = [k for k in known if source.get(k) is not None]
    if not present:
        return [
            *errors,
            f"{where}: Invalid value: must specify one of fieldRef, resourceFieldRef, configMapKeyRef or secretKeyRef",
        ]
    if env.get("value"):
        errors.append(f"{where}: Invalid value: may not be specified when `value` is not empty")
    elif len(present) > 1:
        errors.append(f"{where}: Invalid value: may not have more than one field specified at a time")
    ref = source.get("fieldRef")
    if ref is not None:
        if ref.get("apiVersion", "v1") != "v1":
            errors.append(f"{where}.fieldRef.apiVersion: Invalid value: unsupported pod version")
        path = ref.get("fieldPath")
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.*)'\]", path or "")
        if m:
            key = m.group(2).lower() if m.group(1) == "annotations" else m.group(2)
            errors += qualified_name(key, f"{where}.fieldRef.fieldPath")
        elif path not in ENV_FIELD_PATHS:
            errors.append(f"{where}.fieldRef.fieldPath: Unsupported value: {path!r}")
    ref = source.get("resourceFieldRef")
    if ref is not None:
        res = ref.get("resource")
        if res not in ENV_RESOURCES:
            errors.append(f"{where}.resourceFieldRef.resource: Unsupported value: {res!r}")
        divisor = ref.get("divisor")
        if divisor is not None:
            allowed = (
                ("1", "1m")
                if str(res).endswith("cpu")
                else ("1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei")
            )
            if str(divisor) not in allowed:
                errors.append(f"{where}.resourceFieldRef.divisor: Invalid value: {divisor!r}")
    for key in ("configMapKeyRef", "secretKeyRef"):
        ref = source.get(key)
        if ref is not None:
            errors += subdomain(ref.get("name"), f"{where}.{key}.name")
            k = ref.get("key")
            if (
                not isinstance(k, str)
                or len(k) > 253
                or not CONFIG_KEY.match(k)
                or k in (".", "..")
                or k.startswith("..")
            ):
                errors.append(f"{where}.{key}.key: Invalid value: {k!r}")
    return errors


def tolerations(items: Any, where: str) -> list[str]:
    errors = []
    for i, t in enumerate(items or ()):
        path = f"{where}[{i}]"
        key, op = t.get("key", ""), t.get("operator", "")
        if key:
            errors += qualified_name(key, f"{path}.key")
        elif op != "Exists":
            errors.append(f"{path}.operator: Invalid value: operator must be Exists when `key` is empty")
        if t.get("tolerationSeconds") is not None and t.get("effect") != "NoExecute":
            errors.append(
                f"{path}.effect: Invalid value: effect must be 'NoExecute' when `tolerationSeconds` is set"
            )
        if op in ("Equal", ""):
            errors += label_value(t.get("value", ""), f"{path}.operator")
        elif op == "Exists":
            if t.get("value"):
                errors.append(
                    f"{path}.operator: Invalid value: value must be empty when `operator` is 'Exists'"
                )
        else:
            errors.append(f"{path}.operator: Unsupported value: {op!r}")
        if t.get("effect", "") not in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"):
            errors.append(f"{path}.effect: Unsupported value: {t.get('effect')!r}")
    return errors


def pod_spec(spec: Mapping[str, Any], where: str, restart: tuple[str, ...] = ("Always",)) -> list[str]:
    errors: list[str] = []
    volumes = set()
    for i, volume in enumerate(spec.get("volumes") or ()):
        name = volume.get("name")
        errors += dns1123_label(name, f"{where}.volumes[{i}].name")
        if name in volumes:
            errors.append(f"{where}.volumes[{i}].name: Duplicate value")
        volumes.add(name)
        if "configMap" in volume and not (volume["configMap"] or {}).get("name"):
            errors.append(f"{where}.volumes[{i}].configMap.name: Required value")
        if "persistentVolumeClaim" in volume and not (volume["persistentVolumeClaim"] or {}).get("claimName"):
            errors.append(f"{where}.volumes[{i}].persistentVolumeClaim.claimName: Required value")
        size = (volume.get("emptyDir") or {}).get("sizeLimit")
        if size is not None:
            errors += quantity(size, f"{where}.volumes[{i}].emptyDir.sizeLimit")[1]
    names = set()
    for group in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(group) or ()):
            errors += container(c, f"{where}.{group}[{i}]", volumes)
            if c.get("name") in names:
                errors.append(f"{where}.{group}[{i}].name: Duplicate value: {c.get('name')!r}")
            names.add(c.get("name"))
    if not spec.get("containers"):
        errors.append(f"{where}.containers: Required value")
    errors += labels(spec.get("nodeSelector"), f"{where}.nodeSelector")
    errors += tolerations(spec.get("tolerations"), f"{where}.tolerations")
    if spec.get("serviceAccountName"):
        errors += subdomain(spec["serviceAccountName"], f"{where}.serviceAccountName")
    affinity = spec.get("affinity")
    if affinity is not None:
        unknown = set(affinity) - {"nodeAffinity", "podAffinity", "podAntiAffinity"}
        if unknown:
            errors.append(f"{where}.affinity: field not declared in schema: {sorted(unknown)}")
    if spec.get("restartPolicy", restart[0]) not in restart:
        errors.append(f"{where}.restartPolicy: Unsupported value: {spec.get('restartPolicy')!r}")
    return errors


def deployment(obj: Mapping[str, Any]) -> list[str]:
    spec = obj.get("spec") or {}
    errors: list[str] = []
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    template = spec.get("template") or {}
    tlabels = (template.get("metadata") or {}).get("labels") or {}
    errors += labels(selector, "spec.selector.matchLabels") + labels(tlabels, "spec.template.metadata.labels")
    errors += annotations(
        (template.get("metadata") or {}).get("annotations"), "spec.template.metadata.annotations"
    )
    if not selector or any(tlabels.get(k) != v for k, v in selector.items()):
        errors.append(
            "spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`"
        )
    if "replicas" in spec and int(spec["replicas"]) < 0:
        errors.append("spec.replicas: Invalid value: must be greater than or equal to 0")
    errors += pod_spec(template.get("spec") or {}, "spec.template.spec")
    return errors


def service(obj: Mapping[str, Any]) -> list[str]:
    spec = obj.get("spec") or {}
    errors = labels(spec.get("selector"), "spec.selector")
    seen = set()
    for i, port in enumerate(spec.get("ports") or ()):
        if not 1 <= int(port.get("port", 0)) <= 65535:
            errors.append(f"spec.ports[{i}].port: Invalid value")
        errors += dns1123_label(port.get("name"), f"spec.ports[{i}].name")
        if port.get("name") in seen:
            errors.append(f"spec.ports[{i}].name: Duplicate value")
        seen.add(port.get("name"))
        target = port.get("targetPort")
        if isinstance(target, str) and (len(target) > 15 or not IANA_SVC_NAME.match(target)):
            errors.append(f"spec.ports[{i}].targetPort: Invalid value: {target!r}")
    return errors


def hpa(obj: Mapping[str, Any]) -> list[str]:
    spec = obj.get("spec") or {}
    errors = []
    if not (spec.get("scaleTargetRef") or {}).get("name"):
        errors.append("spec.scaleTargetRef.name: Required value")
    low, high = spec.get("minReplicas", 1), spec.get("maxReplicas")
    if low < 1:
        errors.append("spec.minReplicas: Invalid value: must be greater than or equal to 1")
    if high is None or high < low:
        errors.append("spec.maxReplicas: Invalid value: must be greater than or equal to `minReplicas`")
    for i, metric in enumerate(spec.get("metrics") or ()):
        target = (metric.get(metric.get("type", "").lower()) or {}).get("target") or {}
        for key in ("averageValue", "value"):
            if key in target:
                amount, problems = quantity(target[key], f"spec.metrics[{i}].target.{key}")
                errors += problems
                if amount is not None and amount <= 0:
                    errors.append(f"spec.metrics[{i}].target.{key}: Invalid value: must be positive")
    for direction, rules in (spec.get("behavior") or {}).items():
        window = rules.get("stabilizationWindowSeconds")
        if window is not None and not 0 <= window <= 3600:
            errors.append(
                f"spec.behavior.{direction}.stabilizationWindowSeconds: Invalid value: {window}: must be less "
                "than or equal to 3600"
            )
        for j, policy in enumerate(rules.get("policies") or ()):
            if policy.get("value", 0) <= 0 or not 0 < policy.get("periodSeconds", 0) <= 1800:
                errors.append(f"spec.behavior.{direction}.policies[{j}]: Invalid value")
    return errors


def job(obj: Mapping[str, Any]) -> list[str]:
    spec = obj.get("spec") or {}
    errors = []
    if spec.get("activeDeadlineSeconds") is not None and spec["activeDeadlineSeconds"] <= 0:
        errors.append("spec.activeDeadlineSeconds: Invalid value: must be greater than 0")
    template = spec.get("template") or {}
    errors += labels((template.get("metadata") or {}).get("labels"), "spec.template.metadata.labels")
    errors += pod_spec(template.get("spec") or {}, "spec.template.spec", restart=("Never", "OnFailure"))
    return errors


def config_map(obj: Mapping[str, Any]) -> list[str]:
    data = obj.get("data") or {}
    errors = [f"data[{k!r}]: Invalid value: a valid config key" for k in data if not CONFIG_KEY.match(str(k))]
    if sum(len(k) + len(v.encode()) for k, v in data.items()) > 1024 * 1024:
        errors.append("data: Too long: must have at most 1048576 bytes")
    return errors


CHECKS = {
    "Deployment": deployment,
    "Service": service,
    "HorizontalPodAutoscaler": hpa,
    "Job": job,
    "ConfigMap": config_map,
}


def validate_object(obj: Mapping[str, Any]) -> list[str]:
    """The API server's refusals for one object the operator writes (empty: accepted)."""
    kind = obj.get("kind", "")
    errors = metadata(obj, kind)
    if kind in CHECKS:
        errors += CHECKS[kind](obj)
    return errors


# --------------------------------------------------------------------------- the server


class FakeApiServer:
    """Objects by (kind, namespace, name); a resourceVersion and generation like the real server's."""

    def __init__(self, kinds_installed: set[str] | None = None) -> None:
        self.objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self.installed = set(KINDS) - {"ScaledObject"} if kinds_installed is None else kinds_installed
        self.rv = 0
        self.rejections: list[tuple[str, str, list[str]]] = []
        self.crds: set[str] = set()

    def _refuse(self, status: int, reason: str, kind: str, name: str, errors: list[str]) -> None:
        self.rejections.append((kind, name, errors))
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "code": status,
            "reason": reason,
            "message": f"{kind} {name!r} is invalid: " + "; ".join(errors),
        }
        raise ApiException(status=status, reason=reason, body=json.dumps(body))

    def _store(self, kind: str, ns: str | None, obj: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(self.rv)
        meta.setdefault("uid", f"uid-{self.rv}")
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        if ns is not None:
            meta["namespace"] = ns
        obj["apiVersion"], obj["kind"] = KINDS[kind].api_version, kind
        self.objects[(kind, ns, meta["name"])] = obj
        return _copy(obj)

    # ---- what the operator's client calls

    def request(self, method: str, path: str, body: Any, query: list, content_type: str | None) -> Any:
        parts = path.strip("/").split("/")
        parts = parts[2:] if parts[0] == "api" else parts[3:]  # drop api/v1 or apis/group/version
        ns = None
        if parts and parts[0] == "namespaces" and len(parts) > 2:
            ns, parts = parts[1], parts[2:]
        plural, name, sub = (
            parts[0],
            (parts[1] if len(parts) > 1 else None),
            (parts[2] if len(parts) > 2 else None),
        )
        kind = PLURALS.get(plural)
        if kind is None or kind not in self.installed:
            raise NotFound(path)  # no such resource type: a 404, as a cluster without the CRD answers
        key = (kind, ns, name)
        if method == "GET":
            if name is None:
                selector = dict(q for q in query if q[0] == "labelSelector")
                wanted = dict(p.split("=", 1) for p in selector.get("labelSelector", "").split(",") if p)
                items = [
                    _copy(o)
                    for (k, n, _), o in self.objects.items()
                    if k == kind
                    and (ns is None or n == ns)
                    and all((o["metadata"].get("labels") or {}).get(a) == b for a, b in wanted.items())
                ]
                return {"items": items}
            if key not in self.objects:
                if kind == "CustomResourceDefinition" and name in self.crds:
                    return {"metadata": {"name": name}}
                raise NotFound(path)
            return _copy(self.objects[key])
        if method == "DELETE":
            if self.objects.pop(key, None) is None:
                raise NotFound(path)
            return {}
        if method == "POST":
            obj = clone(body)
            errors = validate_object(obj)
            name = (obj.get("metadata") or {}).get("name")
            if errors:
                self._refuse(422, "Invalid", kind, str(name), errors)
            if (kind, ns, name) in self.objects:
                self._refuse(409, "AlreadyExists", kind, str(name), ["already exists"])
            return self._store(kind, ns, obj)
        if method == "PATCH":
            return self._patch(kind, ns, name, sub, clone(body), content_type)
        raise AssertionError(method)

    def _patch(
        self, kind: str, ns: str | None, name: str, sub: str | None, body: dict, content_type: str | None
    ) -> Any:
        key = (kind, ns, name)
        live = self.objects.get(key)
        if kind == "ModelDeployment":
            if live is None:
                raise NotFound(name)
            if sub == "status":
                status = (
                    body.get("status")
                    if content_type == "application/apply-patch+yaml"
                    else {**(live.get("status") or {}), **(body.get("status") or {})}
                )
                errors = status_errors(status)
                if errors:
                    self._refuse(422, "Invalid", kind, name, errors)
                live["status"] = status
                self.rv += 1
                live["metadata"]["resourceVersion"] = str(self.rv)
                return _copy(live)
            raise AssertionError("the operator never writes a ModelDeployment's spec")
        if content_type == "application/merge-patch+json":
            if live is None:
                raise NotFound(name)
            merged = _merge(clone(live), body)
            errors = validate_object(merged)
            if errors:
                self._refuse(422, "Invalid", kind, name, errors)
            return self._store(kind, ns, merged)
        # Server-side apply: the applied object is the whole of this manager's intent.
        if (body.get("metadata") or {}).get("name") != name:
            self._refuse(400, "BadRequest", kind, name, ["the name in the body does not match the URL"])
        errors = validate_object(body)
        if errors:
            self._refuse(422, "Invalid", kind, name, errors)
        if live is not None:
            body["metadata"] = {**live["metadata"], **body["metadata"]}
            if "status" in live:
                body["status"] = live["status"]
        self._simulate(kind, body)
        stored = self._store(kind, ns, body)
        if kind in ("HorizontalPodAutoscaler", "ScaledObject"):  # the autoscaler sizes its Deployment
            target = self.objects.get(("Deployment", ns, body["spec"]["scaleTargetRef"]["name"]))
            low = body["spec"].get("minReplicas", body["spec"].get("minReplicaCount", 1))
            if target is not None and int(target["spec"].get("replicas", 1)) < low:
                target["spec"]["replicas"] = low
                self._simulate("Deployment", target)
        return stored

    @staticmethod
    def _simulate(kind: str, obj: dict[str, Any]) -> None:
        """What controllers would do soon after: pods ready, Jobs done."""
        if kind == "Deployment":
            replicas = int(obj["spec"].setdefault("replicas", (obj.get("status") or {}).get("replicas", 1)))
            obj["status"] = {
                "replicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "updatedReplicas": replicas,
                "observedGeneration": 1,
            }
        elif kind == "Job":
            obj["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}

    # ---- what a user does

    def create_model(self, ns: str, body: Mapping[str, Any]) -> tuple[bool, list[str]]:
        """kubectl create of a ModelDeployment, through the CRD's admission."""
        result = admit(body)
        if not result.admitted:
            return False, result.errors
        stored = result.body
        stored["metadata"] = {"name": body["metadata"]["name"], "namespace": ns, "generation": 1}
        self._store("ModelDeployment", ns, stored)
        return True, []

    def update_model_spec(self, ns: str, name: str, spec: Mapping[str, Any]) -> tuple[bool, list[str]]:
        live = self.objects[("ModelDeployment", ns, name)]
        result = admit({"metadata": {"name": name}, "spec": spec})
        if not result.admitted:
            return False, result.errors
        if result.body["spec"] != live["spec"]:
            live["spec"] = result.body["spec"]
            live["metadata"]["generation"] = int(live["metadata"].get("generation", 1)) + 1
        return True, []

    def model(self, ns: str, name: str) -> dict[str, Any]:
        return _copy(self.objects[("ModelDeployment", ns, name)])


def _copy(stored: Any) -> Any:
    """A reply: a copy of stored JSON data (already plain lists and dicts, so pickle copies it exactly and fast)."""
    return pickle.loads(pickle.dumps(stored, pickle.HIGHEST_PROTOCOL))


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = _merge(target.get(k), v)
    return target


class FakeKube(KubeClient):
    """The operator's KubeClient, its transport replaced by the in-memory server."""

    def __init__(self, server: FakeApiServer) -> None:
        super().__init__(api_client=object())  # never used: _call is replaced
        self.server = server

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list | None = None,
        content_type: str | None = None,
    ):
        return self.server.request(method, path, body, query or [], content_type)
