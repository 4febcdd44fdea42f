"""The project's own dvc.yaml, run by real DVC on tiny SYNTHETIC settings: every stage reproduces, nothing
re-runs when nothing changed, a changed param re-runs only what depends on it, data goes to the local remote
and comes back, and the training runs are tracked in MLflow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.kit.trained import dvc, labelled

pytestmark = pytest.mark.timeout(900)


def test_dvc_repro_reproduces_every_stage_and_tracks_the_runs(ws: Path) -> None:
    done = dvc(ws, "repro")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for stage in ("data/dvc.yaml:generate", *(f"{s}@{m}" for s in ("prepare", "train", "evaluate")
                                for m in ("pump_anomaly", "intrusion", "activity"))):
        assert f"Running stage '{stage}'" in done.stdout
    shown = dvc(ws, "metrics", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    metrics = json.loads(shown.stdout)
    files = next(iter(metrics.values()))["data"]
    for name in ("pump_anomaly", "intrusion", "activity"):
        m = files[f"metrics/{name}.json"]["data"]  # what DVC shows (numbers)
        assert 0 <= m["clean"]["f1"] <= 1 and 0 <= m["drifted"]["accuracy"] <= 1
        full = json.loads((ws / "metrics" / f"{name}.json").read_text())
        assert full["data"].startswith("synthetic") and len(full["drifted"]["confusion"]) == 2
        assert full["version"] == "1" and "challenger" in full["registry"]["aliases"]
    for plot in ("confusion_clean.csv", "roc_drifted.csv"):
        assert (ws / "plots" / "intrusion" / plot).read_text().count("\n") > 1
    assert (ws / "var" / "mlflow" / "mlflow.db").is_file()  # runs tracked in the default SQLite store

    again = dvc(ws, "repro")
    assert again.returncode == 0 and "Running stage" not in again.stdout, again.stdout


def test_a_changed_param_reruns_only_what_depends_on_it(ws: Path) -> None:
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["pump_anomaly"]["learning_rate"] = 0.1  # a training param of one model (the fastest to retrain)
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    done = dvc(ws, "repro")
    assert done.returncode == 0, done.stderr[-3000:]
    ran = {line.split("'")[1] for line in done.stdout.splitlines() if line.startswith("Running stage")}
    # its section of params.yaml: the model's stages (prepare runs again, its output is the same), no other's
    assert ran == {"prepare@pump_anomaly", "train@pump_anomaly", "evaluate@pump_anomaly"}, done.stdout
    m = json.loads((ws / "metrics" / "pump_anomaly.json").read_text())
    assert m["version"] == "2" and m["registry"]["aliases"] == ["challenger"]  # v1 stays champion


def test_data_goes_to_the_local_remote_and_comes_back(ws: Path) -> None:
    pushed = dvc(ws, "push")
    assert pushed.returncode == 0, pushed.stderr
    remote = ws / "var" / "dvc-remote"
    assert remote.is_dir() and sum(1 for p in remote.rglob("*") if p.is_file()) > 10
    before = (ws / "data" / "prepared" / "activity" / "train.npz").read_bytes()
    for out in ("raw", "prepared", "labelled"):  # what DVC keeps (data/dvc.yaml and its lock are in git)
        shutil.rmtree(ws / "data" / out)
    shutil.rmtree(ws / ".dvc" / "cache")
    labelled(ws)
    pulled = dvc(ws, "pull")
    assert pulled.returncode == 0, pulled.stderr
    assert (ws / "data" / "prepared" / "activity" / "train.npz").read_bytes() == before
    status = dvc(ws, "status")
    assert "up to date" in status.stdout, status.stdout


def test_the_loops_labels_become_a_dvc_version_and_retrain_only_their_model(ws: Path) -> None:
    """The agile loop in a DVC workspace: a harvested batch is `dvc add`ed and pushed (a new data version,
    its md5 tagged on the MLflow run), and retrain re-runs the pump model's preparation and training only: the
    CNNs are not touched, not even the intrusion model with new labels below min_labels, which `dvc status`
    still shows as pending."""
    import numpy as np

    from flows import dvc as fdvc
    from flows import steps
    from models import tracking
    from models.common import load_split

    cfg = steps.LoopConfig(workspace=str(ws), min_labels=5)
    assert fdvc.is_dvc_repo(cfg)
    train = load_split(ws / "data" / "prepared" / "pump_anomaly" / "train.npz")
    rows = len(train["y"])
    batch = ws / "data" / "labelled" / "pump_anomaly" / "batch-0001-1.npz"
    np.savez_compressed(batch, X=train["X"][:12], y=1 - train["y"][:12], ids=np.array([f"u{i}" for i in range(12)]))
    version = fdvc.version_data(cfg)
    meta = yaml.safe_load((ws / "data" / "labelled.dvc").read_text())
    assert version == meta["outs"][0]["md5"] and version.endswith(".dir")
    remote = ws / "var" / "dvc-remote"
    assert any(version.removesuffix(".dir")[2:] in p.name for p in remote.rglob("*")), "the version was not pushed"

    # two intrusion labels too, below min_labels: the pump's retraining must not retrain the CNN on them
    frames = load_split(ws / "data" / "prepared" / "intrusion" / "train.npz")
    np.savez_compressed(ws / "data" / "labelled" / "intrusion" / "batch-0001-1.npz", X=frames["X"][:2],
                        y=frames["y"][:2], ids=np.array(["f0", "f1"]))
    cnn = {n: (ws / "artifacts" / f"{n}.run.json").read_text() for n in ("intrusion", "activity")}
    with cfg.state() as state:
        state.mark_harvested("pump_anomaly", "batch-0001-1",
                             [{"annotation_id": i, "id": f"u{i}", "label": "normal"} for i in range(12)])
        got = steps.retrain(cfg, "pump_anomaly", {"data_version": version}, state)
        assert got["retrained"] is True, got
        assert steps.retrain(cfg, "pump_anomaly", {}, state)["retrained"] is False  # nothing new: nothing to do
    repeat = yaml.safe_load((ws / "params.yaml").read_text())["loop"]["labelled_repeat"]
    assert len(load_split(ws / "data" / "prepared" / "pump_anomaly" / "train.npz")["y"]) == rows + 12 * repeat
    assert {n: (ws / "artifacts" / f"{n}.run.json").read_text() for n in cnn} == cnn
    pending = json.loads(fdvc.run(cfg, "status", "--json").stdout)
    assert "prepare@intrusion" in pending and not [s for s in pending if "pump" in s], pending
    run = json.loads((ws / "artifacts" / "pump_anomaly.run.json").read_text())
    assert tracking.version_info("pump_anomaly", got["candidate"], ws)["tags"]["labelled_data_version"] == version, run
