"""Go/no-go gate: replay labeled production requests and test non-inferiority, paired."""

from modelpilot.gate.replay import (
    DecodeError,
    Example,
    GateDecision,
    GateResult,
    StepOutcome,
    decode_output,
    evaluate,
    labeled_query,
    run_gate,
    run_gate_async,
    select_examples,
    step_outcome,
)
from modelpilot.gate.spec import GATE_SCHEMA, GateSpec, GateSpecError, parse_gate
from modelpilot.gate.stats import (
    PairedTestResult,
    min_samples_for_skewness,
    paired_error_noninferiority,
    paired_proportions_noninferiority,
    required_samples,
    tango_z,
)

__all__ = [
    "GATE_SCHEMA",
    "DecodeError",
    "Example",
    "GateDecision",
    "GateResult",
    "GateSpec",
    "GateSpecError",
    "PairedTestResult",
    "StepOutcome",
    "decode_output",
    "evaluate",
    "labeled_query",
    "min_samples_for_skewness",
    "paired_error_noninferiority",
    "paired_proportions_noninferiority",
    "parse_gate",
    "required_samples",
    "run_gate",
    "run_gate_async",
    "select_examples",
    "step_outcome",
    "tango_z",
]
