"""Models trained elsewhere, brought into the registry: ``edgeloop model import NAME --onnx FILE`` or
``--mlflow models:/NAME/VERSION`` (a registered model of another MLflow: scikit-learn or PyTorch flavour).

The file becomes an EdgeLoop model artifact (edge_runtime.modelkit: the descriptor, ``model.onnx`` and a
health sample), checked by loading it with the loader the nodes use, and registered in MLflow as a new version
of NAME with where it came from. From there it is a version like any other: ``edgeloop model package`` builds
its Bento (models/services/generic.py), signs it and puts it in the warehouse, and a rollout serves it through
``apply_model``. Which imported models the loop can retrain: those imported under the name of a model plug-in
(:mod:`models.plugins`: its ``fit`` trains the next version on the field's labels); any other it can only
monitor (uploads, drift, labels) and replace, with a newer import or a model a plug-in trains.

From MLflow: a scikit-learn model (with ``predict_proba``) is stored as the ``sklearn`` kind the reference models
use (its features from the model's signature, or ``--features``; its labels from ``classes_`` or ``--labels``);
a PyTorch model is exported to ONNX (torch's TorchScript-based exporter, on the declared input: a row of
features, or float32 NCHW in [0, 1] for images, BGR, a clip's frames stacked on the channels) and imported as
the ``onnx`` kind, so nodes need onnxruntime, not torch. Loading either unpickles the model: import only from a
registry you trust; what reaches nodes is then signed.
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
                output: str | None = None, source: dict[str, str] | None = None) -> dict[str, Any]:
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
                                    {"source": "onnx", "imported_from": str(file), **(source or {}),
                                     "sha256": digest, "data_version": ""}, workdir=workdir)
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


def import_mlflow(name: str, uri: str, *, tracking_uri: str | None = None, labels: list[str] | None = None,
                  input: str = "table", features: list[str] | None = None, shape: list[int] | None = None,
                  threshold: float = 0.5, softmax: bool = True, sample: Path | None = None,
                  workdir: Path = Path(".")) -> dict[str, Any]:
    """Register the MLflow model at ``uri`` (``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``runs:/...``, a
    path) of the registry at ``tracking_uri`` (default: the workspace's store) as a new version of ``name``."""
    from edge_runtime import modelkit
    from models import tracking

    if not NAME.match(name):
        raise ValueError(f"model name {name!r}: lower-case letters, digits and _, starting with a letter")
    with tempfile.TemporaryDirectory(prefix="edgeloop-import-") as tmp:
        local = _download(uri, tracking_uri, Path(tmp) / "download", workdir)
        flavors = _flavors(local, uri)
        art = Path(tmp) / name
        art.mkdir()
        if "sklearn" in flavors:
            flavor = "sklearn"
            descriptor = _sklearn_artifact(local, art, name, labels, features, threshold, uri)
        elif "pytorch" in flavors:
            flavor = "pytorch"
            onnx_file = Path(tmp) / f"{name}.onnx"
            _torch_to_onnx(local, onnx_file, input, features, shape, uri)
            if not labels:
                raise ValueError(f"{uri}: a PyTorch model does not say its classes: pass --labels")
            r = import_onnx(name, onnx_file, labels=labels, input=input, features=features, shape=shape,
                            threshold=threshold, sample=sample, workdir=workdir, softmax=softmax,
                            source={"source": "mlflow", "flavor": "pytorch", "imported_from": uri,
                                    "exported": "onnx (torch.onnx.export, TorchScript-based)"})
            return {**r, "flavor": flavor}
        else:
            raise ValueError(f"{uri}: flavours {', '.join(sorted(flavors)) or 'none'}: EdgeLoop imports the "
                             "sklearn and pytorch flavours (or export the model to ONNX: --onnx)")
        modelkit.write_descriptor(art, descriptor)
        try:
            predictor = modelkit.Predictor(art)
            x = _sample(predictor, sample)
            predictor(x)
        except modelkit.ModelError as exc:
            raise ValueError(f"{uri}: {exc}") from None
        modelkit.write_sample(art, x)
        digest = hashlib.sha256((art / "model.joblib").read_bytes()).hexdigest()
        run = tracking.log_training(name, art, {"source": "mlflow", "uri": uri, "input": "table"},
                                    {"sample_rows": len(x)},
                                    {"source": "mlflow", "flavor": flavor, "imported_from": uri, "sha256": digest,
                                     "data_version": ""}, workdir=workdir)
    tracking.promote(name, run["version"], "challenger", workdir)
    return {"name": name, "version": run["version"], "sha256": digest, "sample_rows": int(len(x)),
            "run_id": run["run_id"], "flavor": flavor}


def _download(uri: str, tracking_uri: str | None, dest: Path, workdir: Path) -> Path:
    """The model's files from its registry: ``tracking_uri``, else the workspace's own store (a model a notebook
    logged there). MLflow's settings are put back afterwards: the import registers in the workspace's store."""
    import os

    import mlflow

    from models import tracking

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    source = tracking_uri or tracking.tracking_uri(workdir)
    try:
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
        mlflow.set_tracking_uri(source)  # the registry follows the tracking URI when none is set apart
        dest.mkdir(parents=True)
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest)))
    except Exception as exc:  # noqa: BLE001 - MlflowException, OSError: say which model could not be had
        raise ValueError(f"{uri}: cannot fetch it from {source}: {str(exc)[:300]}") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _flavors(local: Path, uri: str) -> dict[str, Any]:
    import yaml

    mlmodel = local / "MLmodel"
    if not mlmodel.is_file():
        raise ValueError(f"{uri}: no MLmodel file: not an MLflow model")
    return (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors") or {}


def _signature_columns(local: Path) -> list[str] | None:
    from mlflow.models import Model

    sig = Model.load(str(local / "MLmodel")).signature
    if sig is None or sig.inputs is None:
        return None
    names = sig.inputs.input_names()
    return [str(n) for n in names] if names and all(isinstance(n, str) for n in names) else None


def _sklearn_artifact(local: Path, art: Path, name: str, labels: list[str] | None, features: list[str] | None,
                      threshold: float, uri: str) -> dict[str, Any]:
    import joblib
    import mlflow.sklearn

    model = mlflow.sklearn.load_model(str(local))
    if not hasattr(model, "predict_proba"):
        raise ValueError(f"{uri}: {type(model).__name__} has no predict_proba: EdgeLoop needs a classifier's "
                         "probabilities")
    classes = [str(c) for c in getattr(model, "classes_", [])]
    labels = labels or classes
    if len(labels) != len(classes) or len(labels) < 2:
        raise ValueError(f"{uri}: the model has classes {classes}; --labels names {len(labels or [])}")
    fitted = [str(c) for c in getattr(model, "feature_names_in_", [])]
    cols = features or fitted or _signature_columns(local)
    if not cols:
        raise ValueError(f"{uri}: neither the model nor its signature names the input columns: pass --features")
    if fitted and cols != fitted:
        raise ValueError(f"{uri}: the model was fitted on columns {', '.join(fitted)}; --features names "
                         f"{', '.join(cols)}")
    n_in = getattr(model, "n_features_in_", len(cols))
    if n_in != len(cols):
        raise ValueError(f"{uri}: the model takes {n_in} features; {len(cols)} named: {', '.join(cols)}")
    if fitted:  # nodes pass rows in the descriptor's feature order, as arrays: the names are checked here, once
        del model.feature_names_in_
    joblib.dump(model, art / "model.joblib")
    return {"name": name, "kind": "sklearn", "input": "table", "features": cols, "labels": labels,
            "threshold": threshold, "data": f"imported from MLflow {uri}"}


def _torch_to_onnx(local: Path, out: Path, input: str, features: list[str] | None, shape: list[int] | None,
                   uri: str) -> None:
    """The MLflow PyTorch model as ONNX. A pickled module (``serialization_format="pickle"``) is exported with a
    free batch size. A ``pt2`` one (MLflow 3's default: a graph traced on the logged input example, which holds
    only the example's batch size) is exported at that batch size, which the node's runtime then keeps to."""
    import mlflow.pytorch
    import torch

    net = mlflow.pytorch.load_model(str(local), map_location="cpu")
    traced = (local / "data" / "model.pt2").is_file()
    batch = 1
    if traced:
        from mlflow.models import Model

        example = Model.load(str(local / "MLmodel")).load_input_example(str(local))
        batch = int(np.asarray(example).shape[0]) if example is not None and np.ndim(example) else 1
    if input == "table":
        if not features:
            raise ValueError(f"{uri}: a PyTorch table model needs --features (its input columns in order)")
        dummy = torch.zeros(batch, len(features))
    elif input == "image" and shape and len(shape) == 3:
        dummy = torch.zeros(batch, shape[2], shape[0], shape[1])
    elif input == "clip" and shape and len(shape) == 4:
        dummy = torch.zeros(batch, shape[0] * shape[3], shape[1], shape[2])
    else:
        raise ValueError(f"--shape {shape}: an {input} model needs {'H,W,C' if input == 'image' else 'T,H,W,C'}")
    for p in net.parameters():
        p.requires_grad_(False)
    if traced:
        net = _Frozen(net)
    else:
        net.eval()
    import warnings

    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
            torch.onnx.export(net, (dummy,), str(out), input_names=["input"], output_names=["probabilities"],
                              dynamic_axes=None if traced else {"input": {0: "n"}, "probabilities": {0: "n"}},
                              dynamo=False, opset_version=17)
    except Exception as exc:  # noqa: BLE001 - torch's exporter errors: say which model and input
        raise ValueError(f"{uri}: torch could not export it to ONNX on a {tuple(dummy.shape)} input: "
                         f"{str(exc)[:300]}") from None


def _Frozen(graph: Any) -> Any:
    """A module around a traced graph that the legacy exporter can trace through: the graph is held, not
    registered (the exporter's ``train(False)`` would reach it, and a traced graph refuses ``train``)."""
    import torch

    class Frozen(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            object.__setattr__(self, "graph", graph)

        def forward(self, x: Any) -> Any:
            return self.graph(x)

    return Frozen()
