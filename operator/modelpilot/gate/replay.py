"""Replay labeled production requests against candidate and stable, then decide.

The transport is injected (``predict(revision, batch) -> outputs``, e.g. Triton HTTP), so
this module stays pure and testable. Every way the replay can go wrong ends in
``inconclusive`` with a reason; nothing here can pass a candidate silently.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelpilot.api.wire import label_key
from modelpilot.gate.result import GateDecision, GateResult
from modelpilot.gate.spec import GateSpec
from modelpilot.gate.stats import (
    min_samples_for_skewness,
    paired_error_noninferiority,
    paired_proportions_noninferiority,
)

Predict = Callable[[str, Sequence[Any]], Sequence[Any]]


@dataclass(frozen=True, slots=True)
class Example:
    request_id: str
    inputs: Any
    label: Any


def select_examples(records: Iterable[Mapping[str, Any]], spec: GateSpec) -> tuple[list[Example], int]:
    """The most recent ``maxSamples`` usable records, one per request id; and how many were dropped.

    Records arrive oldest first (the monitor's order). A record is unusable without inputs
    or with a label the task cannot score (a non-numeric regression label).
    """
    seen: dict[str, Example] = {}
    dropped = 0
    for rec in records:
        rid, label = rec.get("request_id"), rec.get("label")
        if (
            not isinstance(rid, str)
            or rec.get("inputs") is None
            or label is None
            or not _label_ok(label, spec)
        ):
            dropped += 1
            continue
        if rid in seen:
            dropped += 1
            del seen[rid]  # keep the newest copy, in its position
        seen[rid] = Example(rid, rec["inputs"], label)
    examples = list(seen.values())
    if len(examples) > spec.max_samples:
        examples = examples[-spec.max_samples :]
    return examples, dropped


def _label_ok(label: Any, spec: GateSpec) -> bool:
    try:
        if spec.task == "regression":
            return not isinstance(label, bool) and isinstance(label, int | float) and math.isfinite(label)
        label_key(label)
        return True
    except ValueError:
        return False


class DecodeError(ValueError):
    """A model output cannot be read as a prediction for the gate's task."""


def decode_output(output: Any, spec: GateSpec) -> Any:
    """A model output as a class key (classification) or a float (regression).

    Accepted outputs: a mapping of output tensors (``spec.output`` picks one; a single
    tensor is used as is), a scalar, or a score vector (argmax, mapped through
    ``spec.classes``; a single score is thresholded when ``spec.threshold`` is set).
    """
    if isinstance(output, Mapping):
        if spec.output is not None:
            if spec.output not in output:
                raise DecodeError(f"output {spec.output!r} missing; model returned {sorted(output)}")
            output = output[spec.output]
        elif len(output) == 1:
            output = next(iter(output.values()))
        else:
            raise DecodeError(f"model returned several outputs {sorted(output)}; set gate.output")
    arr = np.asarray(output)
    if arr.dtype.kind in "US":
        if arr.size != 1 or spec.task != "classification":
            raise DecodeError(f"cannot read {output!r} as a {spec.task} prediction")
        return label_key(str(arr.reshape(-1)[0]))
    if arr.dtype.kind not in "biuf":
        raise DecodeError(f"cannot read {output!r} as a {spec.task} prediction")
    flat = arr.astype(float).reshape(-1)
    if flat.size == 0 or not np.all(np.isfinite(flat)):
        raise DecodeError(f"empty or non-finite output {output!r}")
    if spec.task == "regression":
        if flat.size != 1:
            raise DecodeError(f"regression output must be one number, got shape {arr.shape}")
        return float(flat[0])
    if flat.size == 1:
        value = flat[0]
        if spec.threshold is not None:
            return label_key(int(value >= spec.threshold))
        return label_key(int(value) if float(value).is_integer() else float(value))
    index = int(np.argmax(flat))
    if spec.classes is not None:
        if index >= len(spec.classes):
            raise DecodeError(f"argmax {index} has no entry in gate.classes ({len(spec.classes)} classes)")
        return label_key(spec.classes[index])
    return label_key(index)


def inconclusive(spec: GateSpec, reason: str, n: int = 0, dropped: int = 0) -> GateResult:
    """A result that decides nothing: the rollout waits (or fails, as onInconclusive says)."""
    return _inconclusive(spec, reason, n, dropped)


def _inconclusive(spec: GateSpec, reason: str, n: int, dropped: int = 0) -> GateResult:
    return GateResult(
        GateDecision.INCONCLUSIVE,
        reason,
        n,
        math.nan,
        math.nan,
        math.nan,
        spec.margin,
        spec.alpha,
        spec.metric,
        spec.test,
        dropped=dropped,
    )


def precheck(examples: Sequence[Example], spec: GateSpec, dropped: int = 0) -> GateResult | None:
    """Inconclusive when too few labeled requests are available; None when the replay may start."""
    if len(examples) < spec.min_samples:
        return _inconclusive(
            spec,
            f"only {len(examples)} usable labeled requests (minSamples {spec.min_samples}; {dropped} dropped)",
            len(examples),
            dropped,
        )
    return None


def _decode_all(outputs: Sequence[Any], n: int, revision: str, spec: GateSpec) -> list[Any] | str:
    if len(outputs) != n:
        return f"{revision} returned {len(outputs)} outputs for {n} requests"
    try:
        return [decode_output(o, spec) for o in outputs]
    except (DecodeError, ValueError) as error:
        return f"{revision} output unreadable: {error}"


def evaluate(
    examples: Sequence[Example],
    candidate_outputs: Sequence[Any],
    stable_outputs: Sequence[Any],
    spec: GateSpec,
    *,
    candidate: str = "candidate",
    stable: str = "stable",
    dropped: int = 0,
) -> GateResult:
    """The paired test over both models' outputs for the same examples, and the decision."""
    early = precheck(examples, spec, dropped)
    if early is not None:
        return early
    n = len(examples)
    cand = _decode_all(candidate_outputs, n, candidate, spec)
    stab = _decode_all(stable_outputs, n, stable, spec)
    for problem in (cand, stab):
        if isinstance(problem, str):
            return _inconclusive(spec, problem, n, dropped)
    assert isinstance(cand, list) and isinstance(stab, list)
    if spec.task == "classification":
        labels = [label_key(e.label) for e in examples]
        cand_ok = np.array([p == y for p, y in zip(cand, labels, strict=True)])
        stab_ok = np.array([p == y for p, y in zip(stab, labels, strict=True)])
        res = paired_proportions_noninferiority(
            cand_ok, stab_ok, spec.margin, spec.alpha, test=spec.test, mid_p=spec.mid_p
        )
        cand_metric, stab_metric = float(cand_ok.mean()), float(stab_ok.mean())
        allowed = f"{spec.margin:g}"
    else:
        y = np.array([float(e.label) for e in examples])
        power = 1 if spec.metric == "mae" else 2
        ec, es = np.abs(np.array(cand) - y) ** power, np.abs(np.array(stab) - y) ** power
        res = paired_error_noninferiority(
            ec,
            es,
            margin=0.0 if spec.relative else spec.margin,
            relative_margin=spec.margin if spec.relative else 0.0,
            alpha=spec.alpha,
            test=spec.test,
        )
        cand_metric, stab_metric = float(ec.mean()), float(es.mean())
        needed = min_samples_for_skewness(res.skewness) if spec.test == "ttest" else 0
        if n < needed:
            return _inconclusive(
                spec,
                f"per-request error differences too skewed (skewness {res.skewness:.2g}) for a mean test "
                f"on {n} requests; needs >= {needed} (Cochran's 25 g^2)",
                n,
                dropped,
            )
        allowed = f"{spec.margin:.1%} relative" if spec.relative else f"{spec.margin:g}"
    summary = (
        f"{spec.metric} {candidate}={cand_metric:.4g} {stable}={stab_metric:.4g} over {n} requests, "
        f"{res.test} p={res.p_value:.3g}"
    )
    if res.p_value <= spec.alpha:
        decision, reason = GateDecision.PASSED, f"not worse than {stable} within margin {allowed}: {summary}"
    else:
        decision, reason = (
            GateDecision.FAILED,
            f"non-inferiority within margin {allowed} not shown at alpha {spec.alpha:g}: {summary}",
        )
    return GateResult(
        decision,
        reason,
        n,
        cand_metric,
        stab_metric,
        res.p_value,
        spec.margin,
        spec.alpha,
        spec.metric,
        res.test,
        res.difference,
        res.bound,
        dropped,
    )


def _batches(examples: Sequence[Example], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(examples), size):
        yield [e.inputs for e in examples[start : start + size]]


def _replay(predict: Predict, revision: str, examples: Sequence[Example], size: int) -> list[Any]:
    out: list[Any] = []
    for batch in _batches(examples, size):
        out.extend(predict(revision, batch))
    return out


def _prepare(
    records: Iterable[Mapping[str, Any]], spec: GateSpec
) -> tuple[list[Example], int, GateResult | None]:
    """The examples to replay, how many records were dropped, and an early verdict if replaying is pointless."""
    examples, dropped = select_examples(records, spec)
    return examples, dropped, precheck(examples, spec, dropped)


def _replay_failed(spec: GateSpec, revision: str, error: Exception, n: int, dropped: int) -> GateResult:
    # The transport is the caller's: any failure makes the replay unusable, never a pass.
    return _inconclusive(
        spec, f"prediction failed on {revision}: {type(error).__name__}: {error}", n, dropped
    )


def run_gate(
    records: Iterable[Mapping[str, Any]], predict: Predict, spec: GateSpec, *, candidate: str, stable: str
) -> GateResult:
    """Select, replay in batches against both revisions, and test. Prediction errors are inconclusive."""
    examples, dropped, early = _prepare(records, spec)
    if early is not None:
        return early
    outputs: dict[str, list[Any]] = {}
    for revision in (candidate, stable):
        try:
            outputs[revision] = _replay(predict, revision, examples, spec.batch_size)
        except Exception as error:
            return _replay_failed(spec, revision, error, len(examples), dropped)
    return evaluate(
        examples,
        outputs[candidate],
        outputs[stable],
        spec,
        candidate=candidate,
        stable=stable,
        dropped=dropped,
    )
