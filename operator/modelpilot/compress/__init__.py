"""Model compression: ONNX dynamic INT8 quantization with an accuracy gate, and the Jobs that run it.

Importing this package does not import onnx/onnxruntime; only running a quantization does
(the ``compress`` extra).
"""

from modelpilot.compress.accuracy import AccuracyReport, AccuracyThresholds, compare_outputs
from modelpilot.compress.jobs import CompressionRequest, compression_job, job_name, output_model_patch
from modelpilot.compress.quantize import QuantizeResult, quantize_onnx

__all__ = [
    "AccuracyReport",
    "AccuracyThresholds",
    "CompressionRequest",
    "QuantizeResult",
    "compare_outputs",
    "compression_job",
    "job_name",
    "output_model_patch",
    "quantize_onnx",
]
