"""Synthetic data and config builders shared by the monitor tests."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from modelpilot.drift import build_reference_profile
from modelpilot.monitor.config import MonitorConfig, parse_config
from modelpilot.monitor.records import Label, Prediction

NOW = 1_700_000_000.0


@functools.cache
def reference_dict(rows: int = 4000, seed: int = 0) -> dict[str, Any]:
    """Reference profile of x ~ N(0, 1), y ~ N(5, 2) and c in {a, b, c} (built once per session)."""
    rng = np.random.default_rng(seed)
    data = {
        "x": rng.normal(0.0, 1.0, rows),
        "y": rng.normal(5.0, 2.0, rows),
        "c": rng.choice(np.array(["a", "b", "c"], dtype=object), rows),
    }
    return build_reference_profile(data).to_dict()


def model_entry(name: str = "fraud", **overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "namespace": "team-a",
        "reference": {"profile": reference_dict()},
        "labelJoinWindow": "24h",
        "window": "1h",
    }
    entry.update(overrides)
    return entry


def config(*entries: Mapping[str, Any], **sections: Any) -> MonitorConfig:
    return parse_config({"models": list(entries) or [model_entry()], **sections})


def predictions(
    count: int,
    *,
    model: str = "fraud",
    revision: str = "v1",
    shift: float = 0.0,
    ts: float = NOW,
    seed: int = 1,
    prefix: str | None = None,
    score_shift: float = 0.0,
) -> list[Prediction]:
    """Rows like the reference (``shift`` moves x and y); outputs hold a label and a score."""
    rng = np.random.default_rng(seed)
    prefix = prefix if prefix is not None else f"{revision}-"
    rows = []
    for i in range(count):
        x = float(rng.normal(shift, 1.0))
        score = float(np.clip(rng.uniform(0.0, 1.0) + score_shift, 0.0, 0.999))
        rows.append(
            Prediction(
                request_id=f"{prefix}{i}",
                model=model,
                revision=revision,
                ts=ts,
                inputs={
                    "x": x,
                    "y": float(rng.normal(5.0 + 2 * shift, 2.0)),
                    "c": str(rng.choice(["a", "b", "c"])),
                },
                outputs={"label": int(score >= 0.5), "score": score},
            )
        )
    return rows


def labels_for(
    rows: list[Prediction],
    *,
    correct: float = 1.0,
    delay: float = 3600.0,
    seed: int = 2,
    source: str = "delayed_label",
) -> list[Label]:
    """Ground truth that agrees with the predicted label for a ``correct`` share of rows."""
    rng = np.random.default_rng(seed)
    result = []
    for row in rows:
        predicted = int(row.outputs["label"])
        truth = predicted if rng.random() < correct else 1 - predicted
        result.append(Label(row.request_id, truth, source, row.ts + delay, row.model))
    return result


def as_payload(rows: list[Prediction]) -> dict[str, Any]:
    return {
        "records": [
            {
                "request_id": r.request_id,
                "model": r.model,
                "revision": r.revision,
                "timestamp": r.ts,
                "inputs": dict(r.inputs),
                "outputs": dict(r.outputs),
            }
            for r in rows
        ]
    }
