"""A small trained workspace shared by the model tests: SYNTHETIC data, all three reference models trained
(tiny settings: the point is the machinery, not accuracy), tracked in a real MLflow SQLite store, and an
Ed25519 signing key pair."""

from __future__ import annotations

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


@dataclass
class Workspace:
    root: Path
    keys: Path
    bentoml_home: Path
    runs: dict[str, dict[str, Any]]

    def artifact(self, name: str) -> Path:
        return self.root / "artifacts" / name


def build_workspace(root: Path) -> Workspace:
    import yaml

    from edge_runtime.signing import init_keys
    from models import stages

    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(TINY))
    home = root / "bentoml"
    os.environ["BENTOML_HOME"] = str(home)  # before bentoml is imported anywhere in this process
    os.environ["BENTOML_DO_NOT_TRACK"] = "true"
    stages.generate(root, TINY)
    stages.prepare(root, TINY)
    runs = {}
    for name in stages.MODELS:
        runs[name] = stages.train(root, name, TINY)
        stages.evaluate(root, name)
    init_keys(root / "keys")
    return Workspace(root, root / "keys", home, runs)
