"""Triton model configuration and server command line, derived from a ModelDeployment's ``spec.model``.

Everything here is a pure function of the spec, so the operator can hash the rendered
``config.pbtxt`` and the argument list to decide whether a rollout is needed.

Why one module (~450 lines): config.pbtxt and the server command line must agree on the model
repository layout and the model-control mode; every function here is pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from posixpath import normpath
from typing import Any

__all__ = [
    "DATA_TYPES",
    "FORMATS",
    "INSTANCE_KINDS",
    "RESTRICTED_APIS",
    "RESTRICTED_KEY_HEADER",
    "TritonConfigError",
    "model_repository_path",
    "needs_generated_config",
    "render_config_pbtxt",
    "triton_args",
    "wants_auto_complete",
]


class TritonConfigError(ValueError):
    """The spec cannot be turned into a configuration Triton would accept."""


# Format -> (field, value). Platforms are named where Triton has one, so a config reads the same
# as one produced by Triton's own auto-complete; pytorch and python are backend-only.
FORMATS: Mapping[str, tuple[str, str]] = {
    "onnx": ("platform", "onnxruntime_onnx"),
    "tensorrt": ("platform", "tensorrt_plan"),
    "pytorch": ("backend", "pytorch"),
    "tensorflow": ("platform", "tensorflow_savedmodel"),
    "python": ("backend", "python"),
}

DATA_TYPES = frozenset(
    {
        "TYPE_BOOL",
        "TYPE_UINT8",
        "TYPE_UINT16",
        "TYPE_UINT32",
        "TYPE_UINT64",
        "TYPE_INT8",
        "TYPE_INT16",
        "TYPE_INT32",
        "TYPE_INT64",
        "TYPE_FP16",
        "TYPE_FP32",
        "TYPE_FP64",
        "TYPE_STRING",
        "TYPE_BF16",
    }
)

INSTANCE_KINDS = frozenset({"KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"})

CONTROL_MODES = frozenset({"explicit", "poll", "none"})

# Behind the capture proxy, Triton's administrative API groups answer only requests carrying this
# header with the revision's key. The proxy never forwards the header (and answers 403 for these
# paths itself); Triton listens on loopback only, so nothing else in the cluster can send it.
# The names are those `tritonserver --help` lists for --http-restricted-api (added to Triton in late
# 2023; verified against the 2.51 binary, which takes `<apis>:<header>=<value>`, not the `,` its
# --help shows; on gRPC Triton expects the header as `triton-grpc-protocol-<header>`).
RESTRICTED_APIS = ("model-repository", "shared-memory", "trace", "logging")
RESTRICTED_KEY_HEADER = "modelpilot-triton-admin"  # = capture.config.RESTRICTED_KEY_HEADER
LOOPBACK = "127.0.0.1"

# Remote stores tritonserver reads natively; everything else must be mounted into the pod.
_REMOTE_SCHEMES = ("s3://", "gs://", "as://")

_INDENT = "  "


# --------------------------------------------------------------------------- text-format primitives


def _quote(value: str) -> str:
    """Quote a string for protobuf text format.

    Non-ASCII and control bytes are written as octal escapes of their UTF-8 encoding: both
    Triton's C++ parser and Python's protobuf accept that, whatever the file's locale.
    """
    out = []
    for byte in value.encode("utf-8"):
        char = chr(byte)
        if char == "\\":
            out.append("\\\\")
        elif char == '"':
            out.append('\\"')
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _int(value: Any, what: str, *, minimum: int | None = None) -> int:
    """Accept ints only: a float or bool here is a spec mistake, not something to round."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TritonConfigError(f"{what} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise TritonConfigError(f"{what} must be >= {minimum}, got {value}")
    return value


def _int_list(values: Any, what: str, *, minimum: int | None = None) -> str:
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise TritonConfigError(f"{what} must be a list of integers, got {values!r}")
    items = [str(_int(v, f"{what}[{i}]", minimum=minimum)) for i, v in enumerate(values)]
    return "[ " + ", ".join(items) + " ]" if items else "[ ]"


def _string_value(value: Any, what: str) -> str:
    """Parameters are strings in Triton; render scalars the way a YAML author would expect."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise TritonConfigError(f"{what} must be a string or a scalar, got {value!r}")


def _data_type(value: Any, what: str) -> str:
    """Accept both Triton config names (TYPE_FP32) and KServe names (FP32, BYTES)."""
    if not isinstance(value, str):
        raise TritonConfigError(f"{what} must be a string, got {value!r}")
    name = value.upper()
    if name == "BYTES":
        name = "TYPE_STRING"
    elif not name.startswith("TYPE_"):
        name = "TYPE_" + name
    if name not in DATA_TYPES:
        raise TritonConfigError(f"{what}: unknown data type {value!r}")
    return name


# --------------------------------------------------------------------------- spec accessors


def _config(model: Mapping[str, Any]) -> Mapping[str, Any]:
    config = model.get("config") or {}
    if not isinstance(config, Mapping):
        raise TritonConfigError(f"model.config must be a mapping, got {config!r}")
    return config


def _model_name(model: Mapping[str, Any]) -> str:
    name = model.get("name")
    if not isinstance(name, str) or not name or "/" in name or name in {".", ".."}:
        raise TritonConfigError(f"model.name must be a non-empty directory name, got {name!r}")
    return name


def _format(model: Mapping[str, Any]) -> str:
    fmt = model.get("format")
    if fmt not in FORMATS:
        raise TritonConfigError(f"model.format must be one of {sorted(FORMATS)}, got {fmt!r}")
    return fmt


def _pinned_version(model: Mapping[str, Any]) -> int | None:
    version = model.get("version")
    if version is None or version == "":
        return None
    text = str(version)
    if not text.isdigit() or int(text) < 1:
        raise TritonConfigError(f"model.version must be a positive integer, got {version!r}")
    return int(text)


# --------------------------------------------------------------------------- config.pbtxt sections


def _tensor_block(tensor: Any, what: str) -> list[str]:
    if not isinstance(tensor, Mapping):
        raise TritonConfigError(f"{what} must be a mapping, got {tensor!r}")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise TritonConfigError(f"{what}.name must be a non-empty string")
    if "dims" not in tensor:
        raise TritonConfigError(f"{what}.dims is required")
    lines = [
        f"name: {_quote(name)}",
        f"data_type: {_data_type(tensor.get('dataType', 'TYPE_FP32'), f'{what}.dataType')}",
        f"dims: {_int_list(tensor['dims'], f'{what}.dims', minimum=-1)}",
    ]
    if "reshape" in tensor:
        lines.append(f"reshape: {{ shape: {_int_list(tensor['reshape'], f'{what}.reshape', minimum=-1)} }}")
    if tensor.get("optional"):
        lines.append("optional: true")
    return lines


def _list_section(field: str, blocks: list[list[str]]) -> list[str]:
    lines = [f"{field} ["]
    for i, block in enumerate(blocks):
        lines.append(_INDENT + "{")
        lines.extend(_INDENT * 2 + line for line in block)
        lines.append(_INDENT + ("}," if i < len(blocks) - 1 else "}"))
    lines.append("]")
    return lines


def _tensors(config: Mapping[str, Any], key: str, field: str) -> list[str]:
    tensors = config.get(key) or []
    if not isinstance(tensors, Sequence) or isinstance(tensors, str):
        raise TritonConfigError(f"model.config.{key} must be a list")
    if not tensors:
        return []
    names = [t.get("name") for t in tensors if isinstance(t, Mapping)]
    if len(set(names)) != len(names):
        raise TritonConfigError(f"model.config.{key} has duplicate tensor names: {names}")
    return _list_section(field, [_tensor_block(t, f"model.config.{key}[{i}]") for i, t in enumerate(tensors)])


def _dynamic_batching(config: Mapping[str, Any], max_batch_size: int | None) -> list[str]:
    batching = config.get("dynamicBatching")
    if batching is None:
        return []
    if not isinstance(batching, Mapping):
        raise TritonConfigError("model.config.dynamicBatching must be a mapping")
    # Triton refuses dynamic batching on a model that does not batch; say so before a rollout does.
    if not max_batch_size:
        raise TritonConfigError("model.config.dynamicBatching needs model.config.maxBatchSize > 0")
    body = []
    preferred = batching.get("preferredBatchSizes")
    if preferred:
        what = "model.config.dynamicBatching.preferredBatchSizes"
        rendered = _int_list(preferred, what, minimum=1)
        too_big = [size for size in preferred if size > max_batch_size]
        if too_big:
            raise TritonConfigError(f"{what} {too_big} exceed maxBatchSize {max_batch_size}")
        body.append(f"preferred_batch_size: {rendered}")
    if batching.get("maxQueueDelayMicroseconds") is not None:
        delay = _int(
            batching["maxQueueDelayMicroseconds"],
            "model.config.dynamicBatching.maxQueueDelayMicroseconds",
            minimum=0,
        )
        body.append(f"max_queue_delay_microseconds: {delay}")
    if batching.get("preserveOrdering") is not None:
        body.append(f"preserve_ordering: {'true' if batching['preserveOrdering'] else 'false'}")
    if not body:
        return ["dynamic_batching { }"]
    return ["dynamic_batching {", *(_INDENT + line for line in body), "}"]


def _instance_block(group: Any, what: str) -> list[str]:
    if not isinstance(group, Mapping):
        raise TritonConfigError(f"{what} must be a mapping, got {group!r}")
    lines = []
    if group.get("name"):
        lines.append(f"name: {_quote(str(group['name']))}")
    lines.append(f"count: {_int(group.get('count', 1), f'{what}.count', minimum=1)}")
    kind = group.get("kind", "KIND_AUTO")
    if kind not in INSTANCE_KINDS:
        raise TritonConfigError(f"{what}.kind must be one of {sorted(INSTANCE_KINDS)}, got {kind!r}")
    lines.append(f"kind: {kind}")
    gpus = group.get("gpus")
    if gpus:
        if kind not in {"KIND_GPU", "KIND_AUTO"}:
            raise TritonConfigError(f"{what}.gpus is only valid for KIND_GPU, not {kind}")
        lines.append(f"gpus: {_int_list(gpus, f'{what}.gpus', minimum=0)}")
    return lines


def _instance_groups(config: Mapping[str, Any]) -> list[str]:
    groups = config.get("instanceGroups") or []
    if not isinstance(groups, Sequence) or isinstance(groups, str):
        raise TritonConfigError("model.config.instanceGroups must be a list")
    if not groups:
        return []
    return _list_section(
        "instance_group",
        [_instance_block(g, f"model.config.instanceGroups[{i}]") for i, g in enumerate(groups)],
    )


def _parameters(config: Mapping[str, Any]) -> list[str]:
    params = config.get("parameters") or {}
    if not isinstance(params, Mapping):
        raise TritonConfigError("model.config.parameters must be a mapping")
    lines = []
    for key in sorted(params, key=str):
        value = _string_value(params[key], f"model.config.parameters[{key!r}]")
        lines += [
            "parameters {",
            f"{_INDENT}key: {_quote(str(key))}",
            f"{_INDENT}value: {{ string_value: {_quote(value)} }}",
            "}",
        ]
    return lines


# --------------------------------------------------------------------------- public API


def render_config_pbtxt(model: Mapping[str, Any]) -> str:
    """Render ``spec.model`` as a Triton ``config.pbtxt`` (protobuf text format).

    Output is byte-for-byte deterministic for equal specs (parameters sorted, fixed field order),
    because the operator hashes it to detect changes.
    """
    name = _model_name(model)
    fmt = _format(model)
    config = _config(model)
    lines = [f"name: {_quote(name)}"]

    backend = config.get("backend")
    if backend:
        # An explicit backend (e.g. openvino for an onnx file) replaces the format's platform:
        # Triton rejects a platform and backend that disagree.
        lines.append(f"backend: {_quote(str(backend))}")
    else:
        field, value = FORMATS[fmt]
        lines.append(f"{field}: {_quote(value)}")

    max_batch_size = None
    if config.get("maxBatchSize") is not None:
        max_batch_size = _int(config["maxBatchSize"], "model.config.maxBatchSize", minimum=0)
        lines.append(f"max_batch_size: {max_batch_size}")

    version = _pinned_version(model)
    if version is not None:
        lines.append(f"version_policy: {{ specific: {{ versions: [ {version} ] }} }}")

    lines += _tensors(config, "inputs", "input")
    lines += _tensors(config, "outputs", "output")
    lines += _dynamic_batching(config, max_batch_size)
    lines += _instance_groups(config)
    lines += _parameters(config)
    return "\n".join(lines) + "\n"


def needs_generated_config(model: Mapping[str, Any]) -> bool:
    """Whether the operator must write ``config.pbtxt`` instead of relying on Triton's auto-complete.

    Overrides and a pinned version only reach Triton through a config file; the python backend
    has no model file Triton could inspect, so it always needs one.
    """
    if _format(model) == "python":
        return True
    if _pinned_version(model) is not None:
        return True
    return any(value not in (None, {}, [], "") for value in _config(model).values())


def wants_auto_complete(model: Mapping[str, Any]) -> bool:
    """Whether Triton must fill in the config (tensors read from the model file)."""
    config = _config(model)
    return not (config.get("inputs") and config.get("outputs"))


def triton_args(
    model: Mapping[str, Any],
    *,
    repository_path: str,
    control_mode: str = "explicit",
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    extra_args: Iterable[str] = (),
    behind_proxy: bool = False,
    restricted_key: str = "",
) -> list[str]:
    """Build the ``tritonserver`` argument list (without the binary) for one model.

    User ``extra_args`` go last: tritonserver keeps the last value of a repeated flag, so they
    override the defaults here. With ``behind_proxy`` (payload capture on), the flags that make the
    capture sidecar the only way in come after them, so they cannot be overridden:

    - HTTP and gRPC listen on loopback only (``--http-address``/``--grpc-address``); metrics still
      listen on every address (``--metrics-address=0.0.0.0``; it would follow ``--http-address``
      otherwise), so Prometheus can scrape the pod.
    - With ``restricted_key``, the repository (load/unload/index), shared-memory, trace and logging
      APIs require the ``modelpilot-triton-admin`` header on HTTP (``--http-restricted-api``) and
      gRPC (``--grpc-restricted-protocol``, Triton's name for the gRPC flag).
    """
    if control_mode not in CONTROL_MODES:
        raise TritonConfigError(f"control_mode must be one of {sorted(CONTROL_MODES)}, got {control_mode!r}")
    ports = {"http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port}
    for what, port in ports.items():
        _int(port, what, minimum=1)
        if port > 65535:
            raise TritonConfigError(f"{what} must be <= 65535, got {port}")
    if len(set(ports.values())) != len(ports):
        raise TritonConfigError(f"ports must differ, got {ports}")
    if not repository_path:
        raise TritonConfigError("repository_path must not be empty")
    if restricted_key and not all(c.isalnum() or c in "-_." for c in restricted_key):
        raise TritonConfigError("restricted_key may hold only letters, digits, '-', '_' and '.'")

    args = [f"--model-repository={repository_path}", f"--model-control-mode={control_mode}"]
    if control_mode == "explicit":
        args.append(f"--load-model={_model_name(model)}")
    if wants_auto_complete(model):
        args.append("--strict-model-config=false")
    args += [
        "--allow-metrics=true",
        "--allow-gpu-metrics=true",
        f"--metrics-port={metrics_port}",
        # Queue and request latency quantiles (nv_inference_queue_summary_us{quantile=...}): the
        # fallback's queue-p95 trigger reads them; the counters alone only give averages.
        "--metrics-config=summary_latencies=true",
        f"--http-port={http_port}",
        f"--grpc-port={grpc_port}",
        "--exit-on-error=true",
        "--log-verbose=0",
    ]
    args += [str(arg) for arg in extra_args]
    if behind_proxy:
        args += [f"--http-address={LOOPBACK}", f"--grpc-address={LOOPBACK}", "--metrics-address=0.0.0.0"]
        if restricted_key:
            restriction = f"{','.join(RESTRICTED_APIS)}:{RESTRICTED_KEY_HEADER}={restricted_key}"
            args += [f"--http-restricted-api={restriction}", f"--grpc-restricted-protocol={restriction}"]
    return args


def model_repository_path(repository_uri: str, *, mount_path: str = "/models") -> str:
    """Map ``spec.model.repository`` to what ``--model-repository`` accepts.

    Object stores pass through (Triton reads them itself); ``pvc://claim/sub/path`` becomes a path
    under ``mount_path``, where the caller mounts the claim.
    """
    if not isinstance(repository_uri, str) or not repository_uri:
        raise TritonConfigError(f"model.repository must be a non-empty string, got {repository_uri!r}")
    if repository_uri.startswith(_REMOTE_SCHEMES):
        if not repository_uri.partition("://")[2].strip("/"):
            raise TritonConfigError(f"model.repository {repository_uri!r} names no bucket")
        return repository_uri
    if repository_uri.startswith("pvc://"):
        claim, _, sub = repository_uri.removeprefix("pvc://").partition("/")
        if not claim:
            raise TritonConfigError(f"model.repository {repository_uri!r} names no claim")
        parts = [p for p in sub.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise TritonConfigError(f"model.repository {repository_uri!r} leaves the claim with '..'")
        return normpath("/".join([mount_path.rstrip("/") or "", *parts])) if parts else mount_path
    if repository_uri.startswith("/"):
        return repository_uri
    raise TritonConfigError(
        f"model.repository must be s3://, gs://, as://, pvc:// or an absolute path, got {repository_uri!r}"
    )
