"""A copy of the project's DVC pipeline (dvc.yaml and the model code) with tiny SYNTHETIC params, in its own
DVC repository, and `dvc` run with this venv's Python."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.kit import ROOT
from tests.kit.trained import TINY


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
    labelled(ws)
    return ws


def labelled(ws: Path) -> None:
    """The agile loop's label folders (dependencies of prepare_<model>; empty until it harvests), as
    `make repro` and the loop create them."""
    for name in ("pump_anomaly", "intrusion", "activity"):
        (ws / "data" / "labelled" / name).mkdir(parents=True, exist_ok=True)
