"""A tiny Python-backend Triton model for tests and benchmarks: a fixed linear classifier over 4 features.

One definition of the weights, model.py and spec.model, so the real-Triton tests, the capture
test and the capture benchmark all serve the same thing.
"""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from modelpilot.serving.triton import render_config_pbtxt

WEIGHTS = np.array([[0.5, 1.0, -2.0, -1.0], [0.4, -0.6, 1.2, -1.5], [-0.9, -0.7, 1.5, 3.0]], dtype=np.float32)
BIAS = np.array([0.3, 0.1, -0.4], dtype=np.float32)
CLASSES = ["setosa", "versicolor", "virginica"]

_MODEL_PY = """
import numpy as np
import triton_python_backend_utils as pb_utils

WEIGHTS = np.array({weights!r}, dtype=np.float32)
BIAS = np.array({bias!r}, dtype=np.float32)
CLASSES = {classes!r}
WITH_CLASS = {with_class!r}


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            scores = (x @ WEIGHTS.T + BIAS).astype(np.float32)
            label = np.argmax(scores, axis=1).astype(np.int64).reshape(-1, 1)
            tensors = [pb_utils.Tensor("SCORES", scores), pb_utils.Tensor("LABEL", label)]
            if WITH_CLASS:  # the class name as a BYTES tensor: strings must survive capture too
                names = np.array([[CLASSES[i].encode()] for i in label[:, 0]], dtype=np.object_)
                tensors.append(pb_utils.Tensor("CLASS", names))
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
"""


def model_spec(*, with_class: bool = False, **config: Any) -> dict[str, Any]:
    """spec.model for the classifier; keyword arguments add or replace keys under `config`."""
    outputs = [
        {"name": "SCORES", "dataType": "TYPE_FP32", "dims": [3]},
        {"name": "LABEL", "dataType": "TYPE_INT64", "dims": [1]},
    ]
    if with_class:
        outputs.append({"name": "CLASS", "dataType": "TYPE_STRING", "dims": [1]})
    base = {
        "maxBatchSize": 8,
        "instanceGroups": [{"count": 1, "kind": "KIND_CPU"}],
        "inputs": [{"name": "INPUT0", "dataType": "TYPE_FP32", "dims": [4]}],
        "outputs": outputs,
    }
    return {
        "name": "iris",
        "repository": "/models",
        "version": "1",
        "format": "python",
        "config": {**base, **copy.deepcopy(config)},
    }


def write_repository(root: Path, model: dict[str, Any]) -> str:
    """Lay out `<root>/<name>/<version>/model.py` and a config.pbtxt rendered by the operator's renderer."""
    with_class = any(o["name"] == "CLASS" for o in model["config"]["outputs"])
    model_dir = root / model["name"]
    (model_dir / model["version"]).mkdir(parents=True, exist_ok=True)
    code = _MODEL_PY.format(
        weights=WEIGHTS.tolist(), bias=BIAS.tolist(), classes=CLASSES, with_class=with_class
    )
    (model_dir / model["version"] / "model.py").write_text(textwrap.dedent(code))
    config = render_config_pbtxt(model)
    (model_dir / "config.pbtxt").write_text(config)
    return config
