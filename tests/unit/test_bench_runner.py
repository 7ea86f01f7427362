"""`make bench` runs every benchmark there is, and nothing that is not there."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_run_all_lists_every_benchmark_file():
    spec = importlib.util.spec_from_file_location("run_all", BENCH / "run_all.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    files = {p.stem for p in BENCH.glob("*.py")} - {"run_all"}
    assert set(module.BENCHES) == files
