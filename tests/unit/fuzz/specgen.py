"""ModelDeployment specs for the fuzz suite: schema-guided random ones, and mutations of real ones.

Everything is drawn from one `random.Random(seed)`, so a seed names a sample exactly and a
failure can be replayed with `cases(seed, n)`. Values come from the CRD schema (types, enums,
bounds, and the boundaries just outside them) and from per-field pools of the strings that
broke the operator before: names valid for a CR but not for a Service, durations past the
HPA's limits, `..` in a claim path, 400-digit quantities, label keys the Pod API refuses.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import yaml
from tests.unit.fuzz.admission import REPO, clone, spec_schema

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))

# Seeds that reach what the examples do not: autoscaling, fallback, optimize, gates, env, monitoring.
EXTRA_SEEDS: list[dict[str, Any]] = [
    {
        "model": {
            "name": "iris",
            "repository": "pvc://models/iris",
            "version": "2",
            "format": "onnx",
            "optimize": {"method": "onnx-int8", "sourceVersion": "1", "maxAbsDiff": 0.05},
            "config": {
                "inputs": [{"name": "x", "dataType": "TYPE_FP32", "dims": [4]}],
                "outputs": [{"name": "y", "dataType": "TYPE_FP32", "dims": [3]}],
                "maxBatchSize": 8,
            },
        },
        "serving": {
            "replicas": 2,
            "resources": {"cpu": "1", "memory": "1Gi"},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 6, "targetQueueTimeMs": 15, "engine": "hpa"},
            "env": [
                {"name": "OMP_NUM_THREADS", "value": "1"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            ],
            "serviceAccountName": "triton",
            "placement": {
                "nodePool": "cpu",
                "nodeSelector": {"disktype": "ssd"},
                "tolerations": [
                    {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
                ],
            },
        },
        "rollout": {
            "steps": [
                {"gate": {"task": "classification", "margin": 0.02, "minSamples": 100, "maxSamples": 1000}},
                {"setWeight": 20},
                {
                    "analysis": {
                        "duration": "5m",
                        "metrics": [
                            {"name": "acc", "provider": "monitor", "metric": "accuracy", "minRelative": 0.98},
                            {"name": "drift", "provider": "monitor", "metric": "predictionDrift"},
                        ],
                    }
                },
                {"setWeight": 60},
                {"pause": {"duration": "1m"}},
            ]
        },
        "monitoring": {
            "enabled": True,
            "sampleRate": 0.5,
            "task": "classification",
            "features": [{"name": "a"}, {"name": "b", "type": "categorical"}],
        },
    },
    {
        "model": {"name": "ranker", "repository": "s3://models/ranker", "version": "3", "format": "onnx"},
        "serving": {
            "replicas": 3,
            "resources": {"cpu": "2", "memory": "4Gi", "gpus": 1},
            "autoscaling": {
                "minReplicas": 2,
                "maxReplicas": 8,
                "engine": "keda",
                "window": "2m",
                "scaleDownStabilization": "10m",
                "pollingInterval": "30s",
            },
            "fallback": {
                "modelDeployment": "ranker-lite",
                "share": 30,
                "triggers": {"queueP95Ms": 50, "requestRate": 400},
                "recoverBelow": {"queueP95Ms": 20},
            },
        },
        "rollout": {
            "analysis": {
                "interval": "1m",
                "metrics": [
                    {
                        "name": "errors",
                        "provider": "triton",
                        "metric": "errorRate",
                        "test": "sequential",
                        "toleranceRelative": 0.2,
                    },
                    {
                        "name": "latency",
                        "provider": "triton",
                        "metric": "requestDuration",
                        "maxRelative": 1.3,
                        "min": 0,
                        "max": 500,
                    },
                ],
            },
            "steps": [
                {"setWeight": 10},
                {"analysis": {"duration": "10m"}},
                {"gate": {"task": "regression", "metric": "mse", "test": "wilcoxon", "margin": 0.1}},
                {"blueGreen": {"duration": "1m"}},
                {"shadow": {"mirrorPercentage": 20, "analysis": False}},
            ],
        },
    },
    {
        "model": {
            "name": "py",
            "repository": "/models",
            "format": "python",
            "config": {
                "inputs": [{"name": "IN", "dataType": "TYPE_STRING", "dims": [-1]}],
                "outputs": [{"name": "OUT", "dataType": "TYPE_FP32", "dims": [1]}],
                "instanceGroups": [{"kind": "KIND_CPU", "count": 2}],
                "parameters": {"k": "v"},
            },
        },
        "serving": {
            "args": ["--log-verbose=1"],
            "modelControlMode": "poll",
            "modelStoreSecret": "store",
            "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "token"}}}],
            "placement": {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                            ]
                        }
                    }
                }
            },
        },
        "traffic": {"port": 9000, "gateways": ["mesh"]},
        "rollout": {
            "killSwitch": False,
            "paused": False,
            "flags": [{"name": "beta", "revision": "candidate", "header": {"name": "x-beta", "exact": "1"}}],
            "steps": [
                {"abTest": {"cookie": {"name": "grp", "value": "b"}, "duration": "30s"}},
                {"setWeight": 100},
            ],
        },
    },
]

NAMES = ["m", "resnet", "fraud-detector", "a1", "model-v2", "x" * 45, "ranker-lite", "churn"] * 7 + [
    "1model",
    "model.v2",
    "Model",
    "m-",
    "-m",
    "a" * 46,
    "a" * 55,
    "a" * 63,
    "x" * 254,
    "m_1",
    "a--b",
    "9",
]

_DURATIONS = [
    "0s",
    "0ms",
    "1ms",
    "10ms",
    "500ms",
    "1s",
    "30s",
    "1m",
    "5m",
    "10m",
    "1h",
    "2h",
    "1h30m",
    "3600s",
    "3600001ms",
    "61m",
    "1.5s",
    "0.5m",
    "24h",
    "999999999999h",
    "99999999999999999999h",
    "1d",
    "5",
    "",
    "1h0m1ms",
]
_QUALIFIED = [
    "disktype",
    "kubernetes.io/arch",
    "node.kubernetes.io/instance-type",
    "nvidia.com/gpu",
    "dedicated",
    "modelpilot.io/edge",
    "a/b/c",
    "-bad",
    "bad key",
    "x" * 63,
    "x" * 64,
    "example.com/" + "y" * 63,
    "Upper.Case/x",
    "",
    "a" * 254 + "/x",
    "a_b.c-d",
    "example.com/",
    "/x",
]
_LABEL_VALUES = ["ssd", "amd64", "ml", "true", "", "x y", "x" * 63, "x" * 64, "-x", "a_b.c", "ü", "1"]
_SUBDOMAINS = ["triton", "sa.v1", "s3-credentials", "", "SA", "a_b", "x" * 253, "x" * 254, "-a", "a.", "tok"]

FIELD_POOLS: dict[str, list[Any]] = {
    "name": [
        "resnet50",
        "m",
        "fraud_xgb",
        "a.b",
        "x",
        "errors",
        "p99",
        "-x",
        "",
        "x" * 64,
        "x" * 129,
        "a/b",
        "..",
        "OMP_NUM_THREADS",
        "1FOO",
        "FOO BAR",
        "a=b",
        "x-beta",
        "X-Upper",
    ],
    "repository": [
        "s3://models-prod/triton",
        "gs://ml-models/m",
        "pvc://models/triton",
        "pvc://claim/../x",
        "pvc://claim/a/..",
        "pvc://claim/./x",
        "pvc://claim",
        "pvc://Claim/x",
        "/models",
        "/",
        "s3://b",
        "http://x/y",
        "pvc://" + "a" * 300 + "/x",
        "pvc://claim//x",
        "pvc://claim/..x",
        "s3://b/../c",
    ],
    "version": ["1", "2", "3", "7", "0", "01", "00", "9" * 18, "9" * 19, "", "1.0", "-1", "12"],
    "sourceVersion": ["1", "2", "0", "01", "3", "9" * 18, ""],
    "cpu": [
        "1",
        "2",
        "0.5",
        "500m",
        "0",
        "1" * 400,
        "1" * 7,
        "0.0001",
        "1.5m",
        "2Gi",
        2,
        0,
        -1,
        10**7,
        "250m",
    ],
    "memory": ["4Gi", "512Mi", "1", "1.5Gi", "0", "1" * 400 + "Gi", "8G", "1e3", 4294967296, -5, "16Gi"],
    "migProfile": ["1g.10gb", "3g.40gb", "1g", "mig"],
    "image": ["nvcr.io/nvidia/tritonserver:24.10-py3", "tritonserver", " x", "x y", "", "x\n"],
    "nodePool": ["gpu", "edge", "cpu", "GPU", "a_b", "", "x" * 64, "x" * 63],
    "serviceAccountName": _SUBDOMAINS,
    "modelStoreSecret": _SUBDOMAINS,
    "key": _QUALIFIED,
    "value": _LABEL_VALUES,
    "modelDeployment": ["ranker-lite", "lite", "1lite", "lite.v2", "", "x" * 46],
    "host": ["lite.models.svc.cluster.local", "lite", "bad host", "*", "", "10.0.0.5"],
    "query": [
        'sum(rate(x{namespace="{{namespace}}"}[{{interval}}]))',
        "{{bad}}",
        "{{model",
        "up",
        "x" * 5000,
        'max(y{revision="{{revision}}", pod=~"{{workload}}-.*"})',
    ],
    "regex": ["^beta$", "(", "^partner-(acme|globex)$", ".*"],
    "exact": ["1", "beta", "", "x y"],
    "fieldPath": [
        "metadata.name",
        "metadata.namespace",
        "status.podIP",
        "spec.nodeName",
        "metadata.labels['app']",
        "metadata.annotations['x/y']",
        "metadata.labels['bad key']",
        "spec.containers",
        "metadata.name2",
    ],
    "output": ["y", "label", "", "probabilities"],
    "revision": ["stable", "candidate", "abc12345", ""],
    "method": ["psi", "js", "tensorrt", "onnx-int8"],
    "backend": ["onnxruntime", "openvino", "python", ""],
    "validation": ["pvc://models/val.npz", "s3://b/val.npz"],
    "sourceFile": ["model.onnx", "a/b.onnx", "model.pt"],
    "hosts": ["a.example.com", "*", "m"],
    "gateways": ["mesh", "istio-ingress/ml-gateway"],
    "args": [
        "--log-verbose=1",
        "--model-repository=/x",
        "--http-port=1",
        "--foo",
        "--model-control-mode=poll",
        "",
    ],
    "prediction": ["y", "label"],
    "score": ["p", "score"],
    "uri": ["pvc://models/ref.json", "s3://b/ref.json", "x"],
    "configMap": ["ref", "ref.v1", "Ref", "bad name", "x" * 254],
    "resource": ["requests.cpu", "limits.memory", "requests.ephemeral-storage", "limits.nvidia.com/gpu"],
    "divisor": ["1", "1m", "1Mi", "1Gi"],
}
for _key in (
    "duration",
    "interval",
    "window",
    "timeout",
    "minDwell",
    "labelJoinWindow",
    "stableWindow",
    "scaleUpStabilization",
    "scaleDownStabilization",
    "pollingInterval",
):
    FIELD_POOLS[_key] = _DURATIONS

AFFINITIES = [
    {},
    {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}
                ]
            }
        }
    },
    {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 10,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app": "m"}},
                    },
                }
            ]
        }
    },
]
GENERIC_STRINGS = ["", "a", "x y", "0", "-", "ü", "a" * 300, "{{model}}", "a\nb", "1" * 400]
STEP_KINDS = ("setWeight", "pause", "analysis", "shadow", "abTest", "blueGreen", "gate")


@cache
def _fitting_cached(candidates: tuple, pattern: str, low: int, high: int) -> tuple:
    regex = re.compile(pattern)
    return tuple(v for v in candidates if isinstance(v, str) and regex.search(v) and low <= len(v) <= high)


def _fitting(candidates: list[Any], schema: Mapping[str, Any]) -> tuple:
    return _fitting_cached(
        tuple(candidates), schema["pattern"], schema.get("minLength", 0), schema.get("maxLength", 10**9)
    )


@dataclass(frozen=True)
class Case:
    index: int
    origin: str  # "example:<file>", "seed:<n>", "schema", each with "+mutation" when mutated
    name: str
    spec: dict[str, Any]

    def body(self) -> dict[str, Any]:
        return {
            "apiVersion": "modelpilot.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": self.name},
            "spec": clone(self.spec),
        }


def seeds() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in EXAMPLES:
        (doc,) = [
            d
            for d in yaml.load_all(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
            if d
        ]
        out.append((f"example:{path.stem}", doc["spec"]))
    out += [(f"seed:{i}", spec) for i, spec in enumerate(EXTRA_SEEDS)]
    return out


class Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.schema = spec_schema()
        self.seeds = seeds()

    # ---- values from the schema

    def number(self, schema: Mapping[str, Any], integer: bool) -> Any:
        rng = self.rng
        low, high = schema.get("minimum"), schema.get("maximum")
        if "default" in schema and rng.random() < 0.2:
            return schema["default"]
        if rng.random() < 0.6:  # inside the bounds
            lo = low if low is not None else 0
            hi = high if high is not None else lo + 100
            if integer:
                return rng.randint(
                    int(lo) + (1 if schema.get("exclusiveMinimum") else 0), int(min(hi, lo + 1000))
                )
            return round(
                rng.uniform(lo + (1e-6 if schema.get("exclusiveMinimum") else 0), min(hi, lo + 100)), 4
            )
        choices: list[Any] = []
        if low is not None:
            choices += [low, low - 1 if integer else low - 0.001]
            if schema.get("exclusiveMinimum"):
                choices.append(low + (1 if integer else 1e-9))
        if high is not None:
            choices += [high, high + 1 if integer else high * 1.01 + 0.001]
        lo = low if low is not None else (-5 if rng.random() < 0.1 else 0)
        hi = high if high is not None else lo + 100
        if integer:
            choices += [rng.randint(int(lo), int(min(hi, lo + 1000))) for _ in range(3)] + [
                0,
                1,
                2**31,
                2**63,
            ]
        else:
            choices += [rng.uniform(lo, min(hi, lo + 100)) for _ in range(3)] + [0.0, 0.5, 1, 1e308, 1e-9]
        value = rng.choice(choices)
        return int(value) if integer and not isinstance(value, bool) else value

    def string(self, schema: Mapping[str, Any], key: str) -> Any:
        rng = self.rng
        if "enum" in schema and rng.random() < 0.9:
            return rng.choice(schema["enum"])
        if "default" in schema and rng.random() < 0.2:
            return schema["default"]
        pool = FIELD_POOLS.get(key) or []
        if "pattern" in schema and rng.random() < 0.7:  # schema-guided: a value the pattern admits
            fits = _fitting(pool + GENERIC_STRINGS, schema)
            if fits:
                return rng.choice(fits)
        if pool and rng.random() < 0.9:
            return rng.choice(pool)
        return rng.choice(GENERIC_STRINGS + ([schema["default"]] if "default" in schema else []))

    def value(self, schema: Mapping[str, Any], key: str = "", depth: int = 0) -> Any:
        rng = self.rng
        if key == "affinity":
            return clone(rng.choice(AFFINITIES))
        if key == "heuristics":
            return []
        if schema.get("x-kubernetes-int-or-string"):
            pool = FIELD_POOLS.get(key)
            return rng.choice(pool) if pool else rng.choice([1, "1", "x"])
        kind = schema.get("type")
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "integer":
            return self.number(schema, True)
        if kind == "number":
            return self.number(schema, False)
        if kind == "string":
            return self.string(schema, key)
        if kind == "array":
            limit = schema.get("maxItems", 4)
            size = rng.choice(
                [0, 1, 1, 2, 2, 3] + ([limit, limit + 1] if limit <= 16 and rng.random() < 0.05 else [])
            )
            item_key = key if key in FIELD_POOLS else key.rstrip("s")
            return [self.value(schema.get("items") or {}, item_key, depth + 1) for _ in range(size)]
        if kind == "object" or "properties" in schema:
            return self.object(schema, key, depth)
        return rng.choice(GENERIC_STRINGS)

    def object(self, schema: Mapping[str, Any], key: str, depth: int) -> dict[str, Any]:
        rng = self.rng
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        out: dict[str, Any] = {}
        if isinstance(extra, Mapping):
            pool_key = "key" if key == "nodeSelector" else "name"
            for _ in range(rng.choice([0, 1, 2])):
                value_key = "value" if key == "nodeSelector" else "exact"
                out[str(rng.choice(FIELD_POOLS[pool_key]))] = self.value(extra, value_key, depth + 1)
            return out
        required = set(schema.get("required") or ())
        names = list(props)
        forced: set[str] = set()
        if {"setWeight", "gate"} <= set(names):  # a step: one kind, now and then two
            forced = {rng.choice(STEP_KINDS) for _ in range(2 if rng.random() < 0.03 else 1)}
            names = sorted(forced)
        elif {"fieldRef", "secretKeyRef"} <= set(names):  # valueFrom: one source, now and then two
            forced = {rng.choice(names) for _ in range(2 if rng.random() < 0.05 else 1)}
            names = sorted(forced)
        p = max(0.08, 0.45 - 0.08 * depth)
        for name in names:
            if name in required or name in forced or (depth <= 7 and rng.random() < p):
                out[name] = self.value(props[name], name, depth + 1)
        return out

    # ---- mutations of a spec, guided by the schema

    def _walk(self, spec: dict[str, Any]) -> tuple[tuple, Any, Mapping[str, Any]]:
        """A random node of the spec (path, value, schema), by a random walk from the root."""
        rng = self.rng
        path: tuple = ()
        value: Any = spec
        schema: Mapping[str, Any] = self.schema
        while True:
            if isinstance(value, dict) and value:
                key = rng.choice(list(value))
                props = schema.get("properties") or {}
                extra = schema.get("additionalProperties")
                sub = props.get(key) or (extra if isinstance(extra, Mapping) else {})
            elif isinstance(value, list) and value:
                key = rng.randrange(len(value))
                sub = schema.get("items") or {}
            else:
                return path, value, schema
            path, value, schema = (*path, key), value[key], sub
            if rng.random() < 0.22:
                return path, value, schema

    def _leaves(self) -> list[tuple[tuple[str, ...], Mapping[str, Any]]]:
        """Every field the schema declares (objects' properties, through array items), with its schema."""
        if getattr(self, "_leaf_cache", None) is None:
            out: list[tuple[tuple[str, ...], Mapping[str, Any]]] = []

            def walk(schema: Mapping[str, Any], path: tuple[str, ...]) -> None:
                for key, sub in (schema.get("properties") or {}).items():
                    out.append(((*path, key), sub))
                    walk(sub, (*path, key))
                items = schema.get("items")
                if isinstance(items, Mapping):
                    walk(items, (*path, "[]"))

            walk(self.schema, ())
            self._leaf_cache = out
        return self._leaf_cache

    def _set_field(self, spec: dict[str, Any]) -> None:
        """Schema-guided: set one declared field anywhere, creating its parents (lists get one item)."""
        rng = self.rng
        path, schema = rng.choice(self._leaves())
        node: Any = spec
        for i, step in enumerate(path[:-1]):
            nxt = path[i + 1]
            if step == "[]":
                continue
            if not isinstance(node, dict):
                return
            child = node.get(step)
            if nxt == "[]":
                if not isinstance(child, list) or not child:
                    child = node[step] = [{}]
                node = rng.choice(child)
            else:
                if not isinstance(child, dict):
                    child = node[step] = {}
                node = child
        if isinstance(node, dict) and path[-1] != "[]":
            node[path[-1]] = self.value(schema, path[-1], 3)

    def mutate(self, spec: dict[str, Any]) -> dict[str, Any]:
        rng = self.rng
        spec = clone(spec)
        for _ in range(rng.choice([1, 1, 1, 1, 2, 2, 3])):
            if rng.random() < 0.35:
                self._set_field(spec)
                continue
            path, value, schema = self._walk(spec)
            op = rng.random()
            parent = spec
            for step in path[:-1]:
                parent = parent[step]
            last = path[-1] if path else None
            key = str(last) if isinstance(last, str) else (str(path[-2]) if len(path) > 1 else "")
            if last is None:
                continue
            if op < 0.15 and isinstance(parent, dict):
                del parent[last]  # drop a field (the server may default it back)
            elif op < 0.35 and isinstance(value, dict):
                missing = [k for k in (schema.get("properties") or {}) if k not in value]
                if missing:
                    name = rng.choice(missing)
                    value[name] = self.value(schema["properties"][name], name, 2)
            elif op < 0.42 and isinstance(value, list) and value:
                value.append(clone(rng.choice(value)))  # duplicates: names, steps
            elif op < 0.45:
                parent[last] = rng.choice([None, None, "x", 1, 1.5, True, [], {}])  # a wrong type, or null
            else:
                parent[last] = self.value(schema, key, 2)
        return spec

    # ---- cases

    def name(self) -> str:
        return self.rng.choice(NAMES)

    def case(self, index: int) -> Case:
        rng = self.rng
        roll = rng.random()
        if roll < 0.2:
            spec = self.object(self.schema, "spec", 0)
            origin = "schema"
        else:
            origin, base = rng.choice(self.seeds)
            spec = clone(base)
        if roll >= 0.2 or rng.random() < 0.3:
            spec = self.mutate(spec)
            origin += "+mutation"
        return Case(index, origin, self.name(), spec)

    def pod_affecting_change(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The same spec with a new revision: another model version, image or env (a rollout)."""
        spec = clone(spec)
        model = spec.setdefault("model", {})
        if (
            isinstance(model, dict)
            and isinstance(model.get("version"), str)
            and model["version"].isdigit()
            and not model.get("optimize")
        ):
            model["version"] = str(int(model["version"]) + 1)
        else:
            serving = spec.setdefault("serving", {})
            if isinstance(serving, dict):
                serving["image"] = f"nvcr.io/nvidia/tritonserver:24.{self.rng.randint(11, 12)}-py3"
        return spec


def cases(seed: int, n: int) -> Iterator[Case]:
    gen = Generator(seed)
    for i in range(n):
        yield gen.case(i)
