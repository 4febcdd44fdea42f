"""The trained workspace the model and loop tests share, and the project's DVC pipeline with tiny settings.

The workspace is a copy of the project's pipeline (dvc.yaml, the model code, params.yaml with :data:`TINY`
over it) in its own DVC repository: SYNTHETIC data, all three reference models trained (tiny settings: the
point is the machinery, not accuracy), tracked in a real MLflow SQLite store, recorded in dvc.lock as `dvc
repro` would leave it, and an Ed25519 signing key pair.

It is trained once per parameters and model code (:func:`edgeloop.devkit.cache.cached`, in ~/.cache/edgeloop) and
each user works on its own copy, its MLflow store's absolute paths pointing into the copy and the rest of the
runtime's code current: a test may retrain, register and promote without touching the cache or anyone else.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.kit import ROOT

TINY: dict[str, Any] = {
    "seed": 0,
    "scenes": {"frames": 120, "train_clips": 2, "clean_clips": 1, "drifted_clips": 1},
    "pump_anomaly": {"train_pumps": 8, "train_hours": 24.0, "holdout_pumps": 2, "holdout_hours": 24.0, "max_iter": 30},
    "intrusion": {"epochs": 1, "channels": [8, 16, 16, 16]},
    "activity": {"epochs": 1, "channels": [8, 16, 16, 16]},
}
CACHE_VERSION = "dvc-workspace-2"  # bump when build_workspace makes something else from the same inputs


@dataclass
class Workspace:
    root: Path
    keys: Path
    bentoml_home: Path
    runs: dict[str, dict[str, Any]]

    def artifact(self, name: str) -> Path:
        return self.root / "artifacts" / name


def dvc(ws: Path, *args: str) -> subprocess.CompletedProcess:
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}", "PYTHONPATH": str(ws),
           "BENTOML_DO_NOT_TRACK": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=ws, capture_output=True, text=True, env=env,
                          timeout=600)


def dvc_workspace(ws: Path) -> Path:
    """A copy of the project's pipeline (dvc.yaml, code) with tiny params, in its own DVC repository at ``ws``."""
    for d in ("models", "edge_runtime"):
        shutil.copytree(ROOT / d, ws / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", ws / "dvc.yaml")
    (ws / "data").mkdir(exist_ok=True)
    shutil.copy(ROOT / "data" / "dvc.yaml", ws / "data" / "dvc.yaml")  # the reference models' SYNTHETIC data
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in TINY.items():
        if isinstance(values, dict):
            params[section].update(values)
        else:
            params[section] = values
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    assert dvc(ws, "init", "--no-scm", "-q").returncode == 0
    shutil.copy(ROOT / ".dvcignore", ws / ".dvcignore")  # the project's: bytecode beside stage code is no change
    # the project's remote, as .dvc/config sets it: var/dvc-remote in the workspace
    assert "url = ../var/dvc-remote" in (ROOT / ".dvc" / "config").read_text()
    assert dvc(ws, "remote", "add", "-d", "local", "var/dvc-remote").returncode == 0
    assert dvc(ws, "config", "core.analytics", "false").returncode == 0
    labelled(ws)
    return ws


def labelled(ws: Path) -> None:
    """The agile loop's label folders (dependencies of prepare@<model>; empty until it harvests), as
    `make repro` and the loop create them."""
    for name in yaml.safe_load((ws / "params.yaml").read_text())["models"]:
        (ws / "data" / "labelled" / name).mkdir(parents=True, exist_ok=True)


def build_workspace(root: Path) -> None:
    """The DVC workspace with every stage run in this process (the stage functions dvc.yaml's commands call, at
    half the time of an interpreter per stage) and recorded in dvc.lock by `dvc commit`; a signing key pair;
    ``runs.json``: what each training registered."""
    from edge_runtime.signing import init_keys
    from models import stages
    from models.common import load_params

    dvc_workspace(root)
    params = load_params(root / "params.yaml")
    stages.generate(root, params)
    stages.prepare(root, params)
    runs = {}
    for name in stages.workspace_models(params):
        runs[name] = stages.train(root, name, params)
        stages.evaluate(root, name)
    committed = dvc(root, "commit", "-f", "-q")
    assert committed.returncode == 0, committed.stderr
    init_keys(root / "keys")
    (root / "runs.json").write_text(json.dumps(runs, default=str))


def trained_workspace(dest: Path) -> Workspace:
    """A copy at ``dest`` of the cached trained workspace (built first when missing or out of date)."""
    from edgeloop.devkit.cache import cached, copy_of, fingerprint

    entry = cached("test-workspace", fingerprint(TINY, extra=CACHE_VERSION), build_workspace)
    root = copy_of(entry, dest)
    # the runtime's code as it is now (the stages DVC tracks depend only on what the cache key covers)
    shutil.rmtree(root / "edge_runtime")
    shutil.copytree(ROOT / "edge_runtime", root / "edge_runtime", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".dvcignore", root / ".dvcignore")  # as the project's now (an entry may predate a change)
    # the run records DVC tracks name the MLflow store by its path, now the copy's: record them as they are
    committed = dvc(root, "commit", "-f", "-q")
    assert committed.returncode == 0, committed.stderr
    home = root / "bentoml"
    home.mkdir(exist_ok=True)
    os.environ["BENTOML_HOME"] = str(home)  # before bentoml is imported anywhere in this process
    os.environ["BENTOML_DO_NOT_TRACK"] = "true"
    return Workspace(root, root / "keys", home, json.loads((root / "runs.json").read_text()))
