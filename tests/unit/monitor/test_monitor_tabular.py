"""Record → column conversion, outcome extraction, and the hopping window's time grid."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tests.unit.monitor.monitor_helpers import reference_dict

from modelpilot.drift import DatasetProfile
from modelpilot.monitor.concept import ConceptDetector, error_of
from modelpilot.monitor.config import OutputSpec
from modelpilot.monitor.records import label_key
from modelpilot.monitor.tabular import flatten_outputs, infer_kinds, input_columns, outcome, output_columns
from modelpilot.monitor.windows import HoppingWindow, oldest_start

SPEC = OutputSpec()


def test_input_columns_type_and_fill_missing_values():
    rows = [{"x": 1, "c": "a"}, {"x": None, "c": None}, {"x": "oops", "c": True}, {}]
    columns = input_columns(rows, {"x": "numeric", "c": "categorical"})
    assert columns["x"].dtype == np.float64
    assert columns["x"][0] == 1 and np.isnan(columns["x"][1:]).all()
    assert list(columns["c"]) == ["a", None, "true", None]
    assert infer_kinds(rows) == {"c": "categorical", "x": "categorical"}
    assert infer_kinds([{"x": 1.5}, {"x": None}]) == {"x": "numeric"}


def test_list_outputs_become_class_scores_and_an_argmax_label():
    assert flatten_outputs({"probs": [0.2, 0.7, 0.1], "y": 3, "one": [4]}) == {
        "probs[0]": 0.2,
        "probs[1]": 0.7,
        "probs[2]": 0.1,
        "probs_label": "1",
        "y": 3,
        "one": 4,
    }
    wide = flatten_outputs({"logits": list(range(100))})
    assert wide == {"logits_label": "99"}
    columns, kinds = output_columns([{"probs": [0.2, 0.8]}, {"probs": [0.9, 0.1]}])
    assert kinds["probs_label"] == "categorical" and kinds["probs[1]"] == "numeric"
    assert list(columns["probs_label"]) == ["1", "0"]


@pytest.mark.parametrize(
    ("outputs", "spec", "expected"),
    [
        ({"label": 1, "score": 0.93}, SPEC, ("1", 0.93)),
        ({"probs": [0.3, 0.7]}, SPEC, ("1", 0.7)),
        ({"score": 0.31}, SPEC, ("0", 0.31)),
        ({"score": 0.81}, OutputSpec(decision_threshold=0.9), ("0", 0.81)),
        ({"class": "cat", "probability": 0.6}, SPEC, ("cat", 0.6)),
        ({"a": 1, "b": 2}, SPEC, (None, None)),
        ({"a": 1, "b": 2}, OutputSpec(prediction="b"), ("2", None)),
        ({"label": 1.0}, SPEC, ("1", None)),
        ({"label": None}, SPEC, (None, None)),
    ],
)
def test_classification_outcomes(outputs, spec, expected):
    assert outcome(outputs, spec, "classification") == expected


def test_regression_outcomes_and_errors():
    assert outcome({"y": [2.5]}, SPEC, "regression") == (2.5, None)
    assert outcome({"y": "n/a"}, SPEC, "regression") == (None, None)
    assert error_of(2.5, 4, "regression") == 1.5
    assert error_of(2.5, "4", "regression") is None
    assert error_of("1", 1.0, "classification") == 0.0
    assert error_of("1", 0, "classification") == 1.0
    assert error_of(None, 0, "classification") is None
    assert label_key(True) == "1" and label_key(2.0) == "2" and label_key(2.5) == "2.5"
    with pytest.raises(ValueError):
        label_key(math.nan)


def test_concept_detector_ignores_falling_errors():
    detector = ConceptDetector()
    for i in range(2000):
        detector.update(1.0 if i < 1000 else 0.0, float(i))
    assert detector.detections == 0
    for i in range(2000):
        detector.update(0.0 if i < 1000 else 1.0, 2000.0 + i)
    assert detector.detections >= 1 and detector.active(4000.0, hold=3600)
    assert not detector.active(4000.0 + 7200, hold=3600)


def test_page_hinkley_variant_detects_a_rise():
    detector = ConceptDetector("pageHinkley")
    fired = [detector.update(0.05 if i < 500 else 1.0, float(i)) for i in range(1500)]
    assert any(fired[500:]) and not any(fired[:500])


def test_hopping_window_keeps_two_aligned_panes():
    reference = DatasetProfile.from_dict(reference_dict())
    length = 3600.0
    now = 10 * length + 100
    window = HoppingWindow(reference, length, now)
    assert window.start == oldest_start(now, length) == now - 100 - length / 2
    ts = np.array([window.start - 1, window.start + 10, now])
    columns = {
        "x": np.array([0.0, 1.0, 2.0]),
        "y": np.array([5.0, 5.0, 5.0]),
        "c": np.array(["a", "b", "c"], dtype=object),
    }
    window.update(columns, ts)
    assert window.current().n_rows == 2  # the row before the pane start is not in it
    assert window.panes[1][1].n_rows == 1
    window.rotate(now + length / 2)  # a new half-window: the older pane is dropped
    assert window.current().n_rows == 1
    assert window.panes[1][1].n_rows == 0
    window.rotate(now + 5 * length)  # a long gap: both panes restart empty
    assert window.current().n_rows == 0
