"""ONNX dynamic INT8 quantization (weights int8, activations quantized on the fly).

Dynamic quantization needs no calibration data, which is why it is the default for CPU
and edge pools: MatMul/Gemm-heavy models (MLPs, transformers) shrink about 4x and run
faster on CPUs with VNNI/AVX512. onnxruntime is imported lazily: only the compression Job
(and its tests) need it, not the operator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class QuantizeResult:
    source: Path
    target: Path
    bytes_before: int
    bytes_after: int

    @property
    def ratio(self) -> float:
        return self.bytes_after / self.bytes_before if self.bytes_before else float("nan")


def quantize_onnx(
    source: str | Path,
    target: str | Path,
    *,
    per_channel: bool = False,
    weight_type: str = "QInt8",
    op_types: tuple[str, ...] | None = None,
) -> QuantizeResult:
    """Write a dynamically quantized copy of ``source`` to ``target``."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise RuntimeError(
            "ONNX quantization needs onnx and onnxruntime (pip install 'modelpilot[compress]')"
        ) from error
    source, target = Path(source), Path(target)
    if not source.is_file():
        raise FileNotFoundError(f"no ONNX model at {source}")
    if weight_type not in ("QInt8", "QUInt8"):
        raise ValueError(f"weight_type must be QInt8 or QUInt8, got {weight_type!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(
        source,
        target,
        per_channel=per_channel,
        weight_type=QuantType[weight_type],
        op_types_to_quantize=list(op_types) if op_types else None,
    )
    return QuantizeResult(source, target, source.stat().st_size, target.stat().st_size)
