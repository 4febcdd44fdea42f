"""The edge runtime stays small: no Prefect, MLflow, DVC, BentoML, torch or OpenCV on its import path."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.kit import ROOT


def test_node_and_cli_import_no_cloud_packages():
    code = ("import sys, edge_runtime.node, edge_runtime.cli, edge_runtime.replay, edge_runtime.demo, "
            "edge_runtime.modelstore, edge_runtime.modelkit\n"
            "heavy = [m for m in ('prefect', 'mlflow', 'dvc', 'bentoml', 'torch', 'cv2', 'sklearn') if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"edge runtime imported {out.stdout.strip()}"


def test_signing_imports_cryptography_lazily():
    """Nodes verify bundles with cryptography, but only when they do: importing the runtime stays light."""
    code = ("import sys, edge_runtime.node, edge_runtime.cli, edge_runtime.signing\n"
            "print('cryptography' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", "importing edge_runtime.signing imported cryptography"
