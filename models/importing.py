"""Models trained elsewhere, brought into the registry: ``edgeloop model import NAME --onnx FILE``.

The file becomes an EdgeLoop model artifact (edge_runtime.modelkit: the descriptor, ``model.onnx`` and a
health sample), checked by loading it with the loader the nodes use, and registered in MLflow as a new version
of NAME with where it came from. From there it is a version like any other: ``edgeloop model package`` builds
its Bento (models/services/generic.py), signs it and puts it in the warehouse, and a rollout serves it through
``apply_model``. The loop cannot retrain an imported model (nothing here knows how it was fitted): it can
monitor it, and replace it with a newer import or a model it trains.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def import_onnx(name: str, file: Path, *, labels: list[str], input: str = "table",
                features: list[str] | None = None, shape: list[int] | None = None, threshold: float = 0.5,
                sample: Path | None = None, workdir: Path = Path("."), softmax: bool = False,
                output: str | None = None) -> dict[str, Any]:
    """Check, wrap and register ``file`` as a new version of ``name``; ValueError says what is wrong."""
    from edge_runtime import modelkit
    from models import tracking

    if not NAME.match(name):
        raise ValueError(f"model name {name!r}: lower-case letters, digits and _, starting with a letter")
    if not file.is_file():
        raise ValueError(f"{file}: no such file")
    descriptor: dict[str, Any] = {"name": name, "kind": "onnx", "input": input, "labels": labels,
                                  "threshold": threshold, "onnx": {"softmax": softmax}}
    if output:
        descriptor["onnx"]["output"] = output
    if input == "table":
        descriptor["features"] = features
    else:
        descriptor["shape"] = shape
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    with tempfile.TemporaryDirectory(prefix="edgeloop-import-") as tmp:
        art = Path(tmp) / name
        art.mkdir()
        shutil.copy(file, art / "model.onnx")
        modelkit.write_descriptor(art, descriptor)
        try:
            predictor = modelkit.Predictor(art)  # the descriptor and the file, as a node will load them
            x = _sample(predictor, sample)
            predictor(x)
        except modelkit.ModelError as exc:
            raise ValueError(str(exc).replace(str(art / "model.onnx"), str(file)).replace(str(art), str(file))) \
                from None
        modelkit.write_sample(art, x)
        run = tracking.log_training(name, art, {"source": "onnx", "file": file.name, "input": input},
                                    {"sample_rows": len(x)},
                                    {"source": "onnx", "imported_from": str(file), "sha256": digest,
                                     "data_version": ""}, workdir=workdir)
    tracking.promote(name, run["version"], "challenger", workdir)
    return {"name": name, "version": run["version"], "sha256": digest, "sample_rows": int(len(x)),
            "run_id": run["run_id"]}


def _sample(predictor: Any, sample: Path | None) -> np.ndarray:
    """The health sample's inputs: the user's (a .npy of model inputs) or seeded ones of the declared shape (the
    sample checks that a node's runtime answers as this one did, not the model's accuracy)."""
    if sample is not None:
        try:
            x = np.load(sample, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{sample}: not a .npy array of model inputs: {exc}") from None
        return predictor.check_input(x)
    rng = np.random.default_rng(0)
    if predictor.input == "table":
        return rng.normal(size=(64, len(predictor.features))).astype(np.float32)
    return rng.integers(0, 256, size=(8, *predictor.shape), dtype=np.uint8)
