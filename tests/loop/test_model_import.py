"""`edgeloop model import --onnx` and `--mlflow`: a model trained elsewhere (a scikit-learn gradient-boosting classifier exported
to ONNX with skl2onnx, as another team would hand it over) registered in a real MLflow store, packaged as a signed
Bento by `edgeloop model package`, installed by a node's model store and answering as the original does; and
models another team registered in its own MLflow (a scikit-learn classifier, PyTorch networks in MLflow 3's
default traced `pt2` format and as a pickled module) imported from that registry and answering as there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.kit.cli import edgeloop, edgeloop_here

FEATURES = [f"f{i}" for i in range(12)]


@pytest.fixture(scope="module")
def gbm(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, np.ndarray]:
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 12)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(int)
    model = GradientBoostingClassifier(n_estimators=40, max_depth=3, random_state=0).fit(x, y)
    onx = to_onnx(model, x[:1], options={id(model): {"zipmap": False}}, target_opset=17)
    path = tmp_path_factory.mktemp("onnx") / "gbm.onnx"
    path.write_bytes(onx.SerializeToString())
    return model, path, rng.normal(size=(500, 12)).astype(np.float32)


@pytest.mark.slow  # builds a Bento
def test_an_onnx_model_is_registered_packaged_signed_installed_and_answers_as_the_original(
        gbm: tuple, tmp_path: Path) -> None:
    from edge_runtime.signing import init_keys
    from models import tracking

    model, path, x = gbm
    ws, keys = tmp_path / "ws", tmp_path / "keys"
    ws.mkdir()
    init_keys(keys)
    done = edgeloop("model", "import", "line_gbm", "--onnx", str(path), "--labels", "ok,fault",
                    "--features", ",".join(FEATURES), "--root", str(ws))
    assert done.returncode == 0, done.stderr
    assert "registered line_gbm version 1 (challenger)" in done.stdout
    info = tracking.version_info("line_gbm", "1", ws)
    assert info["tags"]["source"] == "onnx" and info["tags"]["imported_from"] == str(path), info["tags"]

    predictor = package_and_install(ws, keys, "line_gbm", "1", tmp_path)
    assert predictor.kind == "onnx" and predictor.tag == "line_gbm:1"
    pred, conf = predictor(x)
    want = model.predict_proba(x)
    assert np.array_equal(pred, model.predict(x))
    assert np.abs(conf - want[np.arange(len(x)), pred]).max() < 1e-5


def package_and_install(ws: Path, keys: Path, name: str, version: str, tmp_path: Path) -> Any:
    """`edgeloop model package` of the version (a Bento, signed), installed by a node's model store from the
    archive as from the warehouse: the predictor the node would serve."""
    from edge_runtime.modelstore import ModelStore
    from edge_runtime.signing import build_manifest, load_private_key, load_public_keys, sign_manifest

    env = {"BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    packaged = edgeloop("model", "package", name, "-v", version, "--keys", str(keys), "--no-upload",
                        "--out", str(tmp_path / "bundles"), "--root", str(ws), env=env)
    assert packaged.returncode == 0, packaged.stderr
    archive = tmp_path / "bundles" / f"{name}-{version}.bento"
    assert archive.is_file(), list((tmp_path / "bundles").iterdir())
    key = load_private_key(keys / "signing.key")
    manifest = build_manifest(archive, name, version, key, metrics={})
    store = ModelStore(tmp_path / "store", load_public_keys(keys))
    return store.install_archive(archive, manifest, sign_manifest(manifest, key), name=name, version=version)


@pytest.mark.parametrize(("args", "says"), [
    (("--labels", "ok,fault"), "--features: a table model needs its input columns"),
    (("--labels", "ok", "--features", "a"), "at least two class names"),
    (("--labels", "ok,fault", "--input", "image", "--shape", "64,64"), "needs H,W,C"),
    (("--labels", "ok,fault", "--features", "a,b"), "the model takes 12 input columns, the descriptor names 2 (a, b)"),
])
def test_bad_imports_exit_2_naming_what_is_wrong(gbm: tuple, tmp_path: Path, args: tuple, says: str) -> None:
    _, path, _ = gbm
    done = edgeloop_here("model", "import", "line_gbm", "--onnx", str(path), *args, "--root", str(tmp_path))
    assert done.returncode == 2 and says in done.stderr, (done.returncode, done.stderr)


def test_a_file_that_is_not_onnx_is_refused_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a model")
    done = edgeloop("model", "import", "m", "--onnx", str(bad), "--labels", "a,b", "--features", "x",
                    "--root", str(tmp_path))
    assert done.returncode == 2 and f"{bad}: not a model onnxruntime can run" in done.stderr, done.stderr


@pytest.mark.parametrize(("kind", "shape"), [("image", [32, 32, 3]), ("clip", [4, 16, 16, 3])])
def test_an_image_or_clip_cnn_exported_to_onnx_answers_as_the_torch_artifact(tmp_path: Path, kind: str,
                                                                             shape: list[int]) -> None:
    """The ONNX image path takes the layout the torch CNNs take (NCHW in [0, 1], a clip's frames on C), given
    logits (``softmax``): the same network as a torch-cnn artifact and as ONNX gives the same answers."""
    import torch

    from edge_runtime.modelkit import Predictor, build_cnn, write_descriptor

    torch.manual_seed(0)
    arch = {"channels": [8, 16]}
    in_ch = shape[-1] * (shape[0] if kind == "clip" else 1)
    net = build_cnn(arch, in_ch, 2).eval()
    desc = {"name": "cam", "input": kind, "shape": shape, "labels": ["clear", "person"]}
    as_torch, as_onnx = tmp_path / "torch", tmp_path / "onnx"
    as_torch.mkdir()
    as_onnx.mkdir()
    torch.save(net.state_dict(), as_torch / "weights.pt")
    write_descriptor(as_torch, {**desc, "kind": "torch-cnn", "arch": arch})
    h, w = shape[-3], shape[-2]
    torch.onnx.export(net, (torch.zeros(1, in_ch, h, w),), str(as_onnx / "model.onnx"), dynamo=False,
                      input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "n"}}, opset_version=17)
    write_descriptor(as_onnx, {**desc, "kind": "onnx", "onnx": {"softmax": True}})
    x = np.random.default_rng(0).integers(0, 256, size=(16, *shape), dtype=np.uint8)
    want, got = Predictor(as_torch).proba(x), Predictor(as_onnx).proba(x)
    assert np.abs(got - want).max() < 1e-5 and np.array_equal(got.argmax(1), want.argmax(1))
    assert np.ptp(want[:, 1]) > 0  # the inputs are told apart: a layout mix-up would not match


# -- from another team's MLflow registry --------------------------------------------------------------------------
COLS = ["flow", "pressure", "temp", "vib", "noise"]
# the types MLflow 3's default (skops) format asks its user to vouch for when logging a gradient-boosting model
SKOPS_TRUSTED = ["sklearn.tree._tree.Tree", "sklearn._loss.loss.HalfBinomialLoss", "sklearn._loss.link.LogitLink",
                 "sklearn._loss.link.Interval", "numpy.dtype"]


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Another team's MLflow store (SQLite) with three registered models, logged as MLflow's docs show: a
    scikit-learn GBM fitted on named columns (its signature inferred), a PyTorch network in the default format
    (pt2, traced on a one-row input example) and the same network pickled."""
    import os

    import mlflow
    import pandas as pd
    import torch
    from mlflow.models import infer_signature
    from sklearn.ensemble import GradientBoostingClassifier

    tmp = tmp_path_factory.mktemp("elsewhere")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment("acme")
        rng = np.random.default_rng(1)
        X = pd.DataFrame(rng.normal(size=(600, 5)).astype(np.float32), columns=COLS)
        y = np.where(X["flow"] - X["pressure"] > 0, "leak", "ok")
        gbm = GradientBoostingClassifier(n_estimators=20, random_state=0).fit(X, y)
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        with mlflow.start_run(), mlflow.start_run(nested=True):
            mlflow.sklearn.log_model(sk_model=gbm, name="model", signature=infer_signature(X, gbm.predict_proba(X)),
                                     registered_model_name="acme_gbm", skops_trusted_types=SKOPS_TRUSTED,
                                     pip_requirements=["scikit-learn"])  # not inferred: a subprocess each
        with mlflow.start_run():
            mlflow.pytorch.log_model(net, name="model", registered_model_name="acme_net",
                                     input_example=np.zeros((1, 5), np.float32), pip_requirements=["torch"])
        with mlflow.start_run():
            mlflow.pytorch.log_model(net, name="model", registered_model_name="acme_net_pickled",
                                     serialization_format="pickle", pip_requirements=["torch"])
    finally:
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before
    return {"uri": uri, "gbm": gbm, "net": net, "x": rng.normal(size=(300, 5)).astype(np.float32)}


def _registered(ws: Path, name: str, version: str) -> Any:
    """The imported version as the warehouse will package it: its artifact, fetched back from the workspace's
    registry and loaded by the nodes' loader."""
    from edge_runtime.modelkit import Predictor
    from models import tracking

    return Predictor(tracking.download(name, version, ws / "fetched", ws))


@pytest.mark.slow  # another MLflow store, three models logged; an interpreter per import
def test_a_scikit_learn_model_from_another_mlflow_is_imported_served_and_answers_as_there(elsewhere: dict,
                                                                                     tmp_path: Path) -> None:
    from models import tracking

    ws = tmp_path / "ws"
    ws.mkdir()
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        done = edgeloop_here("model", "import", "pipe_leak", "--mlflow", "models:/acme_gbm/1", "--from-tracking-uri",
                             elsewhere["uri"], "--root", str(ws))
    assert done.returncode == 0, done.stderr
    assert "registered pipe_leak version 1 (challenger) from models:/acme_gbm/1 (sklearn)" in done.stdout
    assert "not retrain it (no model plug-in is called 'pipe_leak')" in done.stdout
    # the names were checked once, at import: rows are arrays afterwards, and scikit-learn does not warn about them
    assert not [w for w in caught if "feature names" in str(w.message)], [str(w.message) for w in caught]
    info = tracking.version_info("pipe_leak", "1", ws)
    assert info["tags"]["source"] == "mlflow" and info["tags"]["flavor"] == "sklearn", info["tags"]
    p = _registered(ws, "pipe_leak", "1")
    assert p.kind == "sklearn" and p.features == COLS and p.labels == ["leak", "ok"]  # classes_, in order
    x = elsewhere["x"]
    want = elsewhere["gbm"].predict_proba(x)
    from edge_runtime.signing import init_keys

    init_keys(tmp_path / "keys")
    served = package_and_install(ws, tmp_path / "keys", "pipe_leak", "1", tmp_path)  # as a node serves it
    for model in (p, served):
        pred, _ = model(x)
        assert np.abs(model.proba(x) - want).max() < 1e-9
        assert [model.labels[i] for i in pred] == [str(c) for c in elsewhere["gbm"].predict(x)]
    import sqlite3

    with sqlite3.connect(elsewhere["uri"].removeprefix("sqlite:///")) as db:  # their registry is left as it was
        assert {r[0] for r in db.execute("select name from registered_models")} == {"acme_gbm", "acme_net",
                                                                                  "acme_net_pickled"}


@pytest.mark.slow  # another MLflow store, three models logged; an interpreter per import
@pytest.mark.parametrize("model", ["acme_net", "acme_net_pickled"])
def test_a_pytorch_model_from_another_mlflow_is_imported_as_onnx_and_answers_as_there(
        elsewhere: dict, tmp_path: Path, model: str) -> None:
    import torch

    ws = tmp_path / "ws"
    ws.mkdir()
    done = edgeloop_here("model", "import", "pipe_net", "--mlflow", f"models:/{model}/1", "--from-tracking-uri",
                    elsewhere["uri"], "--labels", "ok,leak", "--features", ",".join(COLS), "--root", str(ws))
    assert done.returncode == 0, done.stderr
    p = _registered(ws, "pipe_net", "1")
    assert p.kind == "onnx"  # nodes run it with onnxruntime: no torch there
    x = elsewhere["x"]  # 300 rows: a pt2 graph traced on one row takes them one at a time
    with torch.no_grad():
        want = torch.softmax(elsewhere["net"](torch.from_numpy(x)), 1).numpy()
    assert np.abs(p.proba(x) - want).max() < 1e-5 and np.ptp(want[:, 1]) > 0.1


@pytest.mark.slow  # another MLflow store, three models logged; an interpreter per import
@pytest.mark.parametrize(("args", "says"), [
    (("--mlflow", "models:/nope/1"), "models:/nope/1: cannot fetch it from"),
    (("--mlflow", "models:/acme_gbm/1", "--features", "a,b"), "the model was fitted on columns flow, pressure"),
    (("--mlflow", "models:/acme_net/1", "--labels", "ok,leak"), "a PyTorch table model needs --features"),
    (("--mlflow", "models:/acme_gbm/1", "--onnx", "x.onnx"), "give one of --onnx FILE or --mlflow URI"),
])
def test_bad_mlflow_imports_exit_2_naming_what_is_wrong(elsewhere: dict, tmp_path: Path, args: tuple,
                                                        says: str) -> None:
    done = edgeloop_here("model", "import", "m", *args, "--from-tracking-uri", elsewhere["uri"], "--root",
                         str(tmp_path))
    assert done.returncode == 2 and says in done.stderr, (done.returncode, done.stderr)
