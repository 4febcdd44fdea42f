"""The project's own dvc.yaml, run by real DVC on tiny SYNTHETIC settings: every stage reproduces, nothing
re-runs when nothing changed, a changed param re-runs only what depends on it, data goes to the local remote
and comes back, and the training runs are tracked in MLflow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from trained import TINY

pytestmark = pytest.mark.timeout(900)


def dvc(ws: Path, *args: str) -> subprocess.CompletedProcess:
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}", "PYTHONPATH": str(ws),
           "BENTOML_DO_NOT_TRACK": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=ws, capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's pipeline (dvc.yaml, code) with tiny params, in its own DVC repository."""
    ws = tmp_path_factory.mktemp("dvcws")
    for d in ("models", "edge_runtime"):
        shutil.copytree(ROOT / d, ws / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", ws / "dvc.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in TINY.items():
        if isinstance(values, dict):
            params[section].update(values)
        else:
            params[section] = values
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    assert dvc(ws, "init", "--no-scm", "-q").returncode == 0
    # the project's remote, as .dvc/config sets it: var/dvc-remote in the workspace
    assert "url = ../var/dvc-remote" in (ROOT / ".dvc" / "config").read_text()
    assert dvc(ws, "remote", "add", "-d", "local", "var/dvc-remote").returncode == 0
    assert dvc(ws, "config", "core.analytics", "false").returncode == 0
    return ws


def test_dvc_repro_reproduces_every_stage_and_tracks_the_runs(ws: Path) -> None:
    done = dvc(ws, "repro")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for stage in ("generate", "prepare", "train_pump_anomaly", "train_intrusion", "train_activity", "evaluate"):
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
    params["intrusion"]["lr"] = 0.004
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    done = dvc(ws, "repro")
    assert done.returncode == 0, done.stderr[-3000:]
    ran = {line.split("'")[1] for line in done.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {"train_intrusion", "evaluate"}, done.stdout
    m = json.loads((ws / "metrics" / "intrusion.json").read_text())
    assert m["version"] == "2" and m["registry"]["aliases"] == ["challenger"]  # v1 stays champion


def test_data_goes_to_the_local_remote_and_comes_back(ws: Path) -> None:
    pushed = dvc(ws, "push")
    assert pushed.returncode == 0, pushed.stderr
    remote = ws / "var" / "dvc-remote"
    assert remote.is_dir() and sum(1 for p in remote.rglob("*") if p.is_file()) > 10
    before = (ws / "data" / "prepared" / "activity" / "train.npz").read_bytes()
    shutil.rmtree(ws / "data")
    shutil.rmtree(ws / ".dvc" / "cache")
    pulled = dvc(ws, "pull")
    assert pulled.returncode == 0, pulled.stderr
    assert (ws / "data" / "prepared" / "activity" / "train.npz").read_bytes() == before
    status = dvc(ws, "status")
    assert "up to date" in status.stdout, status.stdout
