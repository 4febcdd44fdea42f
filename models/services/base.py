"""The service every reference model's Bento serves: ``predict`` and ``health`` over the model artifact.

The model is loaded with :class:`edge_runtime.modelkit.Predictor`, the loader the edge node uses, so a
Bento served with ``bentoml serve`` (or containerized) answers exactly as a node does.
"""

from __future__ import annotations

import os
from typing import Any

import bentoml
import numpy as np

from edge_runtime.modelkit import Predictor


def make_service(name: str, class_name: str, module: str) -> Any:
    """A ``@bentoml.service`` class for model ``name``: its BentoModel is ``EDGELOOP_BENTO_MODEL`` when it
    names this model (set while packaging a version), else ``<name>:latest`` (the one a Bento carries)."""
    tag = os.environ.get("EDGELOOP_BENTO_MODEL", "")
    if not tag.startswith(f"{name}:"):
        tag = f"{name}:latest"

    class Service:
        model = bentoml.models.BentoModel(tag)

        def __init__(self) -> None:
            self.predictor = Predictor(self.model.path, version=str(self.model.tag.version))

        @bentoml.api
        def predict(self, inputs: np.ndarray) -> dict[str, Any]:
            """Predictions and confidences for a batch (rows of features, or uint8 images/clips)."""
            pred, conf = self.predictor(inputs)
            return {"model": self.predictor.tag, "predictions": pred.tolist(), "confidences": conf.tolist()}

        @bentoml.api
        def health(self) -> dict[str, Any]:
            """The bundled sample through the model: fails unless it answers as it did when packaged."""
            return {"model": self.predictor.tag, **self.predictor.health_check()}

    Service.__name__ = Service.__qualname__ = class_name
    Service.__module__ = module
    return bentoml.service(name=name, traffic={"timeout": 30})(Service)
