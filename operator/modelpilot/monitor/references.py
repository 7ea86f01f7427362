"""Load a model's data-drift reference profile from the config: inline, a file, or a ConfigMap.

Files may hold a ready profile (``.json``, ``DatasetProfile.to_dict()``, the cheap option: no
raw data in the cluster) or raw training data (``.npz``/``.csv``), which is profiled at start-up
column by column. A stable-window reference is built elsewhere (analyzer) from live traffic.
"""

from __future__ import annotations

import json
from pathlib import Path

from modelpilot.drift import DatasetProfile, build_reference_profile, load_csv, load_npz

from .config import ModelConfig

DEFAULT_REFERENCE_DIR = "/etc/modelpilot/monitor/references"
CONFIG_MAP_KEYS = ("profile.json", "reference.json", "reference.npz", "reference.csv")


class ReferenceError(RuntimeError):
    """The configured reference cannot be loaded; the model's data drift stays inconclusive."""


def local_path(uri: str) -> Path:
    """A local path from ``/path`` or ``file:///path``; remote schemes must be mounted first."""
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    if "://" in uri:
        raise ReferenceError(
            f"reference uri {uri!r}: only local paths are read; mount the object (e.g. a ConfigMap or volume)"
        )
    return Path(uri)


def config_map_path(name: str, key: str | None, reference_dir: str | Path) -> Path:
    """Where a ConfigMap named in ``reference.configMap`` is mounted, and which key to read."""
    directory = Path(reference_dir) / name
    if key is not None:
        return directory / key
    for candidate in CONFIG_MAP_KEYS:
        if (directory / candidate).is_file():
            return directory / candidate
    raise ReferenceError(f"ConfigMap {name!r} mounted at {directory} has none of {list(CONFIG_MAP_KEYS)}")


def profile_from_file(path: Path, model: ModelConfig) -> DatasetProfile:
    if not path.is_file():
        raise ReferenceError(f"reference file {path} does not exist")
    features = list(model.feature_names) or None
    try:
        if path.suffix == ".json":
            return DatasetProfile.from_dict(json.loads(path.read_text(encoding="utf-8")))
        if path.suffix == ".npz":
            return build_reference_profile(load_npz(path), categorical=model.categorical, features=features)
        if path.suffix == ".csv":
            return build_reference_profile(load_csv(path), categorical=model.categorical, features=features)
    except (ValueError, KeyError, TypeError, OSError) as error:
        raise ReferenceError(f"reference file {path}: {error}") from error
    raise ReferenceError(f"reference file {path}: use .json (a profile), .npz or .csv")


def load_static_reference(
    model: ModelConfig, reference_dir: str | Path = DEFAULT_REFERENCE_DIR
) -> DatasetProfile | None:
    """The reference for ``profile``/``uri``/``configMap`` modes; None for stableWindow or none."""
    spec = model.reference
    if spec.profile is not None:
        try:
            return DatasetProfile.from_dict(spec.profile)
        except (ValueError, KeyError, TypeError) as error:
            raise ReferenceError(f"inline reference profile: {error}") from error
    if spec.uri is not None:
        return profile_from_file(local_path(spec.uri), model)
    if spec.config_map is not None:
        return profile_from_file(config_map_path(spec.config_map, spec.key, reference_dir), model)
    return None
