"""Triton model repositories with real trained weights, built at run time for the closed loop.

A scikit-learn logistic regression is trained on the breast-cancer data set that ships inside
scikit-learn (no download), and its weights are exported as ``.npy`` files next to a Python-backend
``model.py`` that does the inference with numpy alone: Triton's Python-backend stub runs in its own
numpy-1.26 environment without scikit-learn. Variants differ in training (v1 vs v2) or in a
behaviour injected at serving time (a share of errors, a share of biased answers), so a rollout
has something real to promote or roll back. ``disagree-10`` is good v1 with the answer flipped
on the inputs whose hash falls in a fixed 10 % (:func:`flipped`): deterministic, so it disagrees
with good v1 on the same requests on every run, and its served accuracy is known exactly.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelpilot.serving.triton import render_config_pbtxt

MODEL_NAME = "cancer"
INPUT = "INPUT0"
PROBABILITIES = "PROBABILITIES"
LABEL = "LABEL"
VARIANT_PARAMETER = "modelpilot.io/variant"
DEFAULT_STORE = "gs://modelpilot-models/cancer"  # never read here: the fleet serves the local copy


@dataclass(frozen=True)
class Variant:
    """How one model version is trained and how it misbehaves when served."""

    name: str
    version: int
    c: float  # inverse regularisation strength of the LogisticRegression
    max_iter: int
    error_share: float = 0.0  # share of requests (batches) that fail in the model (HTTP 500)
    bias_share: float = 0.0  # share of requests answered with `bias_class`, whatever the input
    bias_class: int = 1
    flip_share: float = 0.0  # share of inputs (by hash, see `flipped`) answered with the other class


VARIANTS: Mapping[str, Variant] = {
    v.name: v
    for v in (
        # v1 is strongly regularised and stopped early: a little less accurate than v2.
        Variant("good-v1", 1, c=0.002, max_iter=30),
        Variant("good-v2", 2, c=1.0, max_iter=1000),
        Variant("failing-v2", 2, c=1.0, max_iter=1000, error_share=0.3),
        Variant("drifting-v2", 2, c=1.0, max_iter=1000, bias_share=0.8),
        # good v1's weights, with the answer flipped on ~10 % of inputs: a shadow that disagrees.
        Variant("disagree-10", 2, c=0.002, max_iter=30, flip_share=0.1),
    )
}

# The Python-backend model: numpy only. Behaviour (error/bias shares) comes from behaviour.json
# beside it, so one template serves every variant.
MODEL_PY = textwrap.dedent(
    '''
    """Logistic regression exported from scikit-learn, served with numpy only."""

    import hashlib
    import json
    from pathlib import Path

    import numpy as np
    import triton_python_backend_utils as pb_utils

    HERE = Path(__file__).resolve().parent


    class TritonPythonModel:
        def initialize(self, args):
            self.mean = np.load(HERE / "mean.npy")
            self.scale = np.load(HERE / "scale.npy")
            self.coef = np.load(HERE / "coef.npy")
            self.intercept = np.load(HERE / "intercept.npy")
            behaviour = json.loads((HERE / "behaviour.json").read_text())
            self.error_share = float(behaviour["error_share"])
            self.bias_share = float(behaviour["bias_share"])
            self.bias_class = int(behaviour["bias_class"])
            self.flip_share = float(behaviour.get("flip_share", 0.0))
            self.rng = np.random.default_rng(int(behaviour["seed"]))

        def _flipped(self, raw):
            # The same rule as models.flipped: the row's float32 bytes, hashed, against the share.
            rows = np.ascontiguousarray(raw, dtype=np.float32)
            return np.array([int.from_bytes(hashlib.sha256(r.tobytes()).digest()[:8], "big") / 2.0**64
                             < self.flip_share for r in rows], dtype=bool)

        def _infer(self, raw):
            x = raw.astype(np.float64)
            z = ((x - self.mean) / self.scale) @ self.coef + self.intercept
            p1 = 1.0 / (1.0 + np.exp(-z))
            probs = np.stack([1.0 - p1, p1], axis=1).astype(np.float32)
            if self.bias_share > 0:
                biased = self.rng.random(len(x)) < self.bias_share
                forced = np.full(2, 0.02, dtype=np.float32)
                forced[self.bias_class] = 0.98
                probs[biased] = forced
            if self.flip_share > 0:
                flip = self._flipped(raw)
                probs[flip] = probs[flip][:, ::-1]
            label = probs.argmax(axis=1).astype(np.int64).reshape(-1, 1)
            return probs, label

        def execute(self, requests):
            # Raising fails every request of this batch with HTTP 500 and Triton counts them in
            # nv_inference_request_failure{reason="BACKEND"}; an error *response* would also be a 500
            # but Triton would count it as a success. Batches fail as a whole, so each request still
            # fails with probability error_share.
            if self.error_share > 0 and self.rng.random() < self.error_share:
                raise pb_utils.TritonModelException("injected failure")
            responses = []
            for request in requests:
                x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
                probs, label = self._infer(x)
                responses.append(
                    pb_utils.InferenceResponse(
                        output_tensors=[pb_utils.Tensor("PROBABILITIES", probs), pb_utils.Tensor("LABEL", label)]
                    )
                )
            return responses
    '''
)


def flipped(features: np.ndarray, share: float) -> np.ndarray:
    """Which rows a ``flip_share`` variant answers with the other class: sha256 of the row's float32
    bytes, read as a fraction of 2**64, below ``share``. model.py applies the same rule."""
    rows = np.ascontiguousarray(np.atleast_2d(features), dtype=np.float32)
    return np.array(
        [int.from_bytes(hashlib.sha256(r.tobytes()).digest()[:8], "big") / 2.0**64 < share for r in rows],
        dtype=bool,
    )


@dataclass(frozen=True)
class Weights:
    """What model.py loads: a standard scaler and a binary logistic regression."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """The exact arithmetic of model.py (without injected behaviour), for checking answers."""
        z = ((np.asarray(x, dtype=np.float64) - self.mean) / self.scale) @ self.coef + self.intercept
        p1 = 1.0 / (1.0 + np.exp(-z))
        return np.stack([1.0 - p1, p1], axis=1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.probabilities(x).argmax(axis=1)


@dataclass(frozen=True)
class Holdout:
    """The held-out test set the driver sends: rows never seen in training, with ground truth."""

    features: np.ndarray  # (n, d) float32
    labels: np.ndarray  # (n,) int64
    feature_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def inputs(self, row: int) -> dict[str, float]:
        """One row as the monitor's ``inputs`` mapping (feature name -> value)."""
        return {name: float(v) for name, v in zip(self.feature_names, self.features[row], strict=True)}

    def save(self, path: Path) -> None:
        np.savez(path, features=self.features, labels=self.labels, feature_names=np.array(self.feature_names))

    @classmethod
    def load(cls, path: Path) -> Holdout:
        with np.load(path) as data:
            return cls(data["features"], data["labels"], tuple(str(n) for n in data["feature_names"]))


@dataclass(frozen=True)
class BuiltModel:
    """One variant's model repository, ready for ``tritonserver --model-repository``."""

    variant: Variant
    repository: Path
    weights: Weights
    accuracy: float  # on the holdout, before any injected misbehaviour
    # On the holdout as served, where serving is deterministic (flips, no random errors or bias).
    served_accuracy: float | None = None

    @property
    def version(self) -> str:
        return str(self.variant.version)

    def served_predict(self, x: np.ndarray) -> np.ndarray:
        """The classes the served model answers, deterministic behaviour (flips) included."""
        labels = self.weights.predict(x)
        if self.variant.flip_share > 0:
            labels = np.where(flipped(x, self.variant.flip_share), 1 - labels, labels)
        return labels

    def model_spec(self, store: str = DEFAULT_STORE) -> dict[str, Any]:
        """``spec.model`` for a ModelDeployment; the same dict renders this repository's config."""
        return model_spec(self.variant, store=store)


@dataclass(frozen=True)
class ModelZoo:
    """Every built variant plus the shared holdout; index by variant name."""

    root: Path
    holdout: Holdout
    models: Mapping[str, BuiltModel] = field(default_factory=dict)
    sklearn_version: str = ""

    def __getitem__(self, variant: str) -> BuiltModel:
        return self.models[variant]


def model_spec(variant: Variant, *, store: str = DEFAULT_STORE, features: int = 30) -> dict[str, Any]:
    """The model section: Python backend on CPU, dynamic batching, the variant named in a parameter.

    The parameter lands in config.pbtxt and in the revision hash, so a failing build of "v2" is a
    different revision from a good one, as a different artefact would be.
    """
    return {
        "name": MODEL_NAME,
        "repository": store,
        "version": str(variant.version),
        "format": "python",
        "config": {
            "maxBatchSize": 16,
            "dynamicBatching": {"maxQueueDelayMicroseconds": 200},
            "instanceGroups": [{"count": 1, "kind": "KIND_CPU"}],
            "inputs": [{"name": INPUT, "dataType": "TYPE_FP32", "dims": [features]}],
            "outputs": [
                {"name": PROBABILITIES, "dataType": "TYPE_FP32", "dims": [2]},
                {"name": LABEL, "dataType": "TYPE_INT64", "dims": [1]},
            ],
            "parameters": {VARIANT_PARAMETER: variant.name},
        },
    }


def _train(variant: Variant, x_train: np.ndarray, y_train: np.ndarray) -> tuple[Weights, Any, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    classifier = LogisticRegression(C=variant.c, max_iter=variant.max_iter)
    with warnings.catch_warnings():  # v1 stops early on purpose
        warnings.simplefilter("ignore")
        classifier.fit(scaler.transform(x_train), y_train)
    weights = Weights(
        mean=scaler.mean_.astype(np.float64),
        scale=scaler.scale_.astype(np.float64),
        coef=classifier.coef_[0].astype(np.float64),
        intercept=classifier.intercept_.astype(np.float64),
    )
    return weights, scaler, classifier


def load_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, Holdout]:
    """Breast-cancer features: a stratified 70/30 split; the 30 % is the holdout."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    data = load_breast_cancer()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.3, stratify=data.target, random_state=seed
    )
    names = tuple(str(n).replace(" ", "_") for n in data.feature_names)
    holdout = Holdout(x_test.astype(np.float32), y_test.astype(np.int64), names)
    return x_train, y_train, holdout


def write_repository(root: Path, variant: Variant, weights: Weights, *, seed: int) -> Path:
    """``root/<model>/config.pbtxt`` and ``root/<model>/<version>/{model.py, *.npy, behaviour.json}``."""
    model_dir = root / MODEL_NAME
    version_dir = model_dir / str(variant.version)
    version_dir.mkdir(parents=True, exist_ok=True)
    for name in ("mean", "scale", "coef", "intercept"):
        np.save(version_dir / f"{name}.npy", getattr(weights, name))
    behaviour = {
        "error_share": variant.error_share,
        "bias_share": variant.bias_share,
        "bias_class": variant.bias_class,
        "flip_share": variant.flip_share,
        "seed": seed,
        "variant": variant.name,
    }
    (version_dir / "behaviour.json").write_text(json.dumps(behaviour, indent=2))
    (version_dir / "model.py").write_text(MODEL_PY)
    (model_dir / "config.pbtxt").write_text(
        render_config_pbtxt(model_spec(variant, features=len(weights.mean)))
    )
    return root


def build_zoo(root: Path, variants: Iterable[str | Variant] = tuple(VARIANTS), *, seed: int = 0) -> ModelZoo:
    """Train every variant and write one model repository per variant under ``root``.

    The exported numpy arithmetic is checked against scikit-learn's own ``predict_proba`` on the
    holdout, so the Triton model is the trained model and not an approximation of it.
    """
    import sklearn

    root.mkdir(parents=True, exist_ok=True)
    x_train, y_train, holdout = load_data(seed)
    holdout.save(root / "holdout.npz")
    models: dict[str, BuiltModel] = {}
    for item in variants:
        variant = VARIANTS[item] if isinstance(item, str) else item
        weights, scaler, classifier = _train(variant, x_train, y_train)
        expected = classifier.predict_proba(scaler.transform(holdout.features.astype(np.float64)))
        got = weights.probabilities(holdout.features)
        if not np.allclose(got, expected, atol=1e-9):
            raise AssertionError(f"exported weights of {variant.name} disagree with scikit-learn")
        repository = write_repository(
            root / "repos" / variant.name, variant, weights, seed=seed + variant.version
        )
        accuracy = float((weights.predict(holdout.features) == holdout.labels).mean())
        built = BuiltModel(variant, repository, weights, accuracy)
        if variant.error_share == 0 and variant.bias_share == 0:
            served = float((built.served_predict(holdout.features) == holdout.labels).mean())
            built = BuiltModel(variant, repository, weights, accuracy, served)
        models[variant.name] = built
    return ModelZoo(root=root, holdout=holdout, models=models, sklearn_version=sklearn.__version__)
