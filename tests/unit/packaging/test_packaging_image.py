"""Dockerfile, .dockerignore and skaffold.yaml, checked without Docker (CI has none).

The build context is reproduced from .dockerignore and built into a wheel, which is what the
image's `pip install .` does: a context that misses a file fails here, not at release time.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = (REPO / "Dockerfile").read_text()
CHART_VALUES = yaml.safe_load((REPO / "charts" / "modelpilot" / "values.yaml").read_text())
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in joined.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, regex) per .dockerignore line, with Docker's `**` and last-match-wins semantics."""
    out = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        rx = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                rx, i = rx + ".*", i + 2
            else:
                rx += (
                    fnmatch.translate(pattern[i])
                    .removeprefix("(?s:")
                    .removesuffix(")\\Z")
                    .replace(".*", "[^/]*")
                )
                i += 1
        out.append((negate, re.compile(rx + r"\Z")))
    return out


def excluded(rel: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = rel.split("/")
    result = False
    for negate, rx in patterns:
        if any(rx.match("/".join(parts[: i + 1])) for i in range(len(parts))):
            result = not negate
    return result


def build_context(dest: Path) -> list[str]:
    patterns = dockerignore_patterns()
    kept = []
    for path in REPO.rglob("*"):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith((".git/", ".venv")) or not path.is_file() or excluded(rel, patterns):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest / rel)
        kept.append(rel)
    return kept


def test_base_image_is_pinned_python_311_slim():
    (arg,) = [v for k, v in instructions(DOCKERFILE) if k == "ARG" and v.startswith("PYTHON_IMAGE=")]
    image = arg.split("=", 1)[1]
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image), image
    froms = [v for k, v in instructions(DOCKERFILE) if k == "FROM"]
    assert froms and all(f.split()[0] == "${PYTHON_IMAGE}" for f in froms), "every stage uses the pinned base"


def test_runs_as_the_charts_non_root_user_with_modelpilot_entrypoint():
    ins = instructions(DOCKERFILE)
    user = [v for k, v in ins if k == "USER"][-1]
    uid = CHART_VALUES["podSecurityContext"]["runAsUser"]
    assert user == f"{uid}:{CHART_VALUES['podSecurityContext']['runAsGroup']}"
    assert uid != 0 and user.split(":")[0].isdigit(), "numeric, so runAsNonRoot can verify it"
    assert [v for k, v in ins if k == "ENTRYPOINT"] == ['["modelpilot"]']
    assert "modelpilot" in PYPROJECT["project"]["scripts"]
    assert any(k == "RUN" and "pip install --no-cache-dir ." in v for k, v in ins)


def test_dockerignore_keeps_what_copy_needs_and_drops_local_state(tmp_path):
    kept = build_context(tmp_path)
    for k, v in instructions(DOCKERFILE):
        if k == "COPY" and "--from" not in v:
            for src in v.split()[:-1]:
                assert (tmp_path / src).exists(), f"COPY {src}: missing from the build context"
    assert "operator/modelpilot/cli.py" in kept and "pyproject.toml" in kept
    assert not [
        p
        for p in kept
        if p.startswith(("tests/", "e2e/", ".cluster/", "charts/", "bench/")) or "__pycache__" in p
    ]


def test_build_context_builds_the_package(tmp_path):
    """What the image's `pip install .` builds, built from the filtered context (without Docker).

    With build isolation, as in the image: pip fetches pyproject's build requirements from PyPI.
    """
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    build_context(ctx)
    if not (ctx / "README.md").exists():
        pytest.fail("README.md is missing: pyproject's readme and the Dockerfile's COPY need it")
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(ctx)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("modelpilot-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "modelpilot/cli.py" in names
    assert "modelpilot/crds/modelpilot.io_modeldeployments.yaml" in names, (
        "install_crds reads the packaged CRD"
    )
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "modelpilot = modelpilot.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_chart_app_version_is_the_package_version():
    chart = yaml.safe_load((REPO / "charts" / "modelpilot" / "Chart.yaml").read_text())
    assert chart["appVersion"] == PYPROJECT["project"]["version"]


def test_skaffold_builds_the_image_and_deploys_the_chart():
    sk = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    assert sk["apiVersion"].startswith("skaffold/v4")
    (artifact,) = sk["build"]["artifacts"]
    assert (REPO / artifact["context"] / artifact["docker"]["dockerfile"]).is_file()
    assert sk["build"]["local"]["push"] is False, "kind loads images, no registry push"
    (release,) = sk["deploy"]["helm"]["releases"]
    assert (REPO / release["chartPath"] / "Chart.yaml").is_file()
    key = re.sub(r"[^A-Za-z0-9]", "_", artifact["image"])
    assert release["setValueTemplates"] == {
        "image.repository": f"{{{{.IMAGE_REPO_{key}}}}}",
        "image.tag": f"{{{{.IMAGE_TAG_{key}}}}}",
    }
    for dotted in [*release["setValueTemplates"], *release["setValues"]]:
        node = CHART_VALUES
        for part in dotted.split("."):
            assert part in node, f"skaffold sets {dotted}, which values.yaml does not have"
            node = node[part]
    for profile in sk.get("profiles", []):
        for patch in profile["patches"]:
            node = CHART_VALUES
            for part in patch["path"].rsplit("/", 1)[1].split("."):
                assert part in node, f"profile {profile['name']} sets unknown value {patch['path']}"
                node = node[part]
