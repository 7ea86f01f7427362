"""Assemble a local Triton model repository (the `fetch-model` init container).

Used only when the operator generates config.pbtxt: Triton wants a model's config next
to its version directories, so the model is copied into an emptyDir and the generated
config laid over it. pvc:// and image paths are plain copies; s3:// and gs:// use fsspec
(with s3fs or gcsfs installed in the image), which Triton itself does not need.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def _source_path(repository: str, pvc_mount: str) -> str:
    if repository.startswith("pvc://"):
        rest = repository.removeprefix("pvc://").split("/", 1)
        return str(Path(pvc_mount) / (rest[1] if len(rest) > 1 else ""))
    return repository


def fetch_model(
    repository: str,
    model: str,
    destination: str,
    *,
    config: str | None = None,
    version: str | None = None,
    pvc_mount: str = "/mnt/model-store",
) -> Path:
    """Copy `<repository>/<model>` (one version, if given) into `<destination>/<model>`."""
    source = _source_path(repository, pvc_mount).rstrip("/") + f"/{model}"
    target = Path(destination) / model
    target.mkdir(parents=True, exist_ok=True)
    if "://" in source:
        import fsspec  # optional: only the remote stores need it

        fs, root = fsspec.core.url_to_fs(source)
        subdirs = [f"{root}/{version}"] if version else [p for p in fs.ls(root, detail=False) if fs.isdir(p)]
        for sub in subdirs:
            fs.get(sub, str(target / Path(sub).name), recursive=True)
    else:
        src = Path(source)
        if not src.is_dir():
            raise FileNotFoundError(f"model directory {src} does not exist")
        for child in src.iterdir():
            if child.is_dir() and (version is None or child.name == version):
                shutil.copytree(child, target / child.name, dirs_exist_ok=True)
            elif (child.is_file() and child.name != "config.pbtxt") or (child.is_file() and config is None):
                shutil.copy2(child, target / child.name)
    if config:
        shutil.copy2(config, target / "config.pbtxt")
    return target
