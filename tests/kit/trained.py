"""The trained workspace every model test shares: SYNTHETIC data, all three reference models trained (tiny
settings: the point is the machinery, not accuracy), tracked in a real MLflow SQLite store, and an Ed25519
signing key pair.

It is trained once per parameters and model code (:func:`edgeloop.devkit.cache.cached`, under var/cache) and
each test session works on its own copy of it, its MLflow store's absolute paths pointing into the copy: a
session may retrain, register and promote without touching the cache or another session.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TINY: dict[str, Any] = {
    "seed": 0,
    "scenes": {"frames": 120, "train_clips": 2, "clean_clips": 1, "drifted_clips": 1},
    "pump_anomaly": {"train_pumps": 8, "train_hours": 24.0, "holdout_pumps": 2, "holdout_hours": 24.0, "max_iter": 30},
    "intrusion": {"epochs": 1, "channels": [8, 16, 16, 16]},
    "activity": {"epochs": 1, "channels": [8, 16, 16, 16]},
}
CACHE_VERSION = "workspace-1"  # bump when build_workspace makes something else from the same inputs


@dataclass
class Workspace:
    root: Path
    keys: Path
    bentoml_home: Path
    runs: dict[str, dict[str, Any]]

    def artifact(self, name: str) -> Path:
        return self.root / "artifacts" / name


def build_workspace(root: Path) -> None:
    """Generate, prepare, train and evaluate the three models on :data:`TINY` in ``root``, tracked in MLflow
    there; a signing key pair; ``runs.json``: what each training registered."""
    import yaml

    from edge_runtime.signing import init_keys
    from models import stages

    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(TINY))
    stages.generate(root, TINY)
    stages.prepare(root, TINY)
    runs = {}
    for name in stages.MODELS:
        runs[name] = stages.train(root, name, TINY)
        stages.evaluate(root, name)
    init_keys(root / "keys")
    (root / "runs.json").write_text(json.dumps(runs, default=str))


def trained_workspace(dest: Path) -> Workspace:
    """A copy at ``dest`` of the cached trained workspace (built first when missing or out of date)."""
    from edgeloop.devkit.cache import cached, copy_of, fingerprint

    entry = cached("test-workspace", fingerprint(TINY, extra=CACHE_VERSION), build_workspace)
    root = copy_of(entry, dest)
    home = root / "bentoml"
    home.mkdir(exist_ok=True)
    os.environ["BENTOML_HOME"] = str(home)  # before bentoml is imported anywhere in this process
    os.environ["BENTOML_DO_NOT_TRACK"] = "true"
    return Workspace(root, root / "keys", home, json.loads((root / "runs.json").read_text()))
