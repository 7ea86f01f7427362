"""docs/reference.md is generated from the CRD and must be regenerated whenever the CRD changes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "gen_reference.py"
CRD = yaml.safe_load((REPO / "crds" / "modelpilot.io_modeldeployments.yaml").read_text())
REFERENCE = (REPO / "docs" / "reference.md").read_text()


def _leaf_paths(schema: dict, path: str) -> list[str]:
    """Every property path in the schema, the way the reference spells it."""
    out = [path]
    if isinstance(schema.get("items"), dict):
        return (
            out + _leaf_paths(schema["items"], path + "[]")[1:] if schema["items"].get("properties") else out
        )
    for name, child in (schema.get("properties") or {}).items():
        out += _leaf_paths(child, f"{path}.{name}")
    return out


def test_reference_is_up_to_date():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + " (run: python scripts/gen_reference.py)"


def test_every_crd_field_is_documented():
    root = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    paths = (
        _leaf_paths(root["properties"]["spec"], "spec")[1:]
        + _leaf_paths(root["properties"]["status"], "status")[1:]
    )
    missing = [p for p in paths if f"| `{p}`" not in REFERENCE]
    assert not missing, missing
    assert len(paths) > 150


def test_rows_carry_type_default_bounds_and_description():
    rows = {
        line.split("|")[1].strip().split(" ")[0].strip("`"): line
        for line in REFERENCE.splitlines()
        if line.startswith("| `")
    }
    assert "| integer | `1` | >= 0; <= 200 |" in rows["spec.serving.replicas"]
    assert (
        "one of `istio`, `triton`, `prometheus`, `monitor`"
        in rows["spec.rollout.steps[].analysis.metrics[].provider"]
    )
    assert (
        "Fail when candidate > maxRelative x stable." in rows["spec.rollout.analysis.metrics[].maxRelative"]
    )
    assert (
        '`"4Gi"`' in rows["spec.serving.resources.memory"]
        and "int-or-string" in rows["spec.serving.resources.memory"]
    )
    assert "(required)" in rows["spec.model.name"]
    # CEL rules are documented with their messages.
    assert "abTest matches on exactly one of header or cookie" in REFERENCE
    assert "size(self.metadata.name) <= 45" in REFERENCE


def test_generator_output_is_deterministic(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import gen_reference
    finally:
        sys.path.pop(0)
    assert gen_reference.render(CRD) == gen_reference.render(CRD) == REFERENCE
