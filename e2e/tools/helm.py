"""Render and lint charts/modelpilot with the helm binary that build-helm.sh builds (and caches).

Shared by the chart's unit tests and its integration test, so both see the very same manifests.
"""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modelpilot"
BUILD_SCRIPT = Path(__file__).resolve().parent / "build-helm.sh"


class HelmError(RuntimeError):
    """helm exited non-zero; the message carries its stderr."""


@functools.cache
def helm_binary() -> Path:
    """Path of the cached helm build (the script prints it on its last line)."""
    override = os.environ.get("MODELPILOT_HELM")
    if override:
        return Path(override)
    out = subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def run(args: Sequence[str], values: Mapping[str, Any] | None = None) -> str:
    """helm <args> [-f values.yaml]; returns stdout. Values go through a file, never --set parsing."""
    with tempfile.TemporaryDirectory(prefix="helm-values-") as tmp:
        cmd = [str(helm_binary()), *args]
        if values:
            path = Path(tmp) / "values.yaml"
            path.write_text(yaml.safe_dump(dict(values)))
            cmd += ["-f", str(path)]
        # No user helm config or cache leaks in: render the chart in this repository only.
        env = {**os.environ, "HELM_CONFIG_HOME": tmp, "HELM_CACHE_HOME": tmp, "HELM_DATA_HOME": tmp}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise HelmError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return proc.stdout


def render(
    values: Mapping[str, Any] | None = None,
    *,
    release: str = "modelpilot",
    namespace: str = "modelpilot-system",
    include_crds: bool = False,
    chart: Path = CHART,
) -> list[dict[str, Any]]:
    """`helm template` as a list of objects (empty documents dropped)."""
    args = ["template", release, str(chart), "--namespace", namespace]
    if include_crds:
        args.append("--include-crds")
    return [doc for doc in yaml.safe_load_all(run(args, values)) if doc]


def lint(values: Mapping[str, Any] | None = None, *, chart: Path = CHART) -> str:
    return run(["lint", "--strict", str(chart)], values)


def find(objs: Sequence[Mapping[str, Any]], kind: str, name: str | None = None) -> list[Mapping[str, Any]]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
