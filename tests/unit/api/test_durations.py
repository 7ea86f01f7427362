"""One duration form everywhere: every duration field in the CRD has the same pattern, one parser reads it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from modelpilot.analysis.queries import promql_duration
from modelpilot.api.spec import DURATION_PATTERN, parse_duration
from modelpilot.serving.autoscale import parse_autoscaling

CRD = (
    Path(__file__).resolve().parents[3]
    / "operator"
    / "modelpilot"
    / "crds"
    / "modelpilot.io_modeldeployments.yaml"
)


def test_every_duration_pattern_in_the_crd_is_the_one_form():
    patterns = set(re.findall(r"pattern: '(\^\(\[0-9\]\+[^']*\(ms\|s\|m\|h\)[^']*)'", CRD.read_text()))
    assert patterns == {DURATION_PATTERN}


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30.0), ("1.5m", 90.0), ("1h30m", 5400.0), ("250ms", 0.25)]
)
def test_the_one_parser(text, seconds):
    assert re.fullmatch(DURATION_PATTERN, text)
    assert parse_duration(text) == seconds


def test_autoscaling_takes_decimals_like_every_other_duration():
    spec = parse_autoscaling({"window": "1.5m", "scaleDownStabilization": "2.5m"})
    assert spec.window == "90s" == promql_duration("1.5m") and spec.scale_down_window_s == 150
    with pytest.raises(ValueError, match="invalid duration"):
        promql_duration("90 s")
