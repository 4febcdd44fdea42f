"""The edge runtime stays small: no Prefect, MLflow, DVC, BentoML, torch or OpenCV on its import path; the
front door (the ``edgeloop`` command line) starts without them, and on an install without the cloud extra
its cloud commands say which extra to install instead of failing with a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edge_runtime.clikit import CLOUD_EXTRA, CLOUD_MODULES
from tests.kit import ROOT

HEAVY = ("prefect", "mlflow", "dvc", "bentoml", "torch", "cv2", "sklearn", "sqlalchemy", "fastapi")


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)


def test_node_and_the_front_door_import_no_cloud_packages():
    out = run("import sys, edge_runtime.node, edge_runtime.cli, edge_runtime.replay, edge_runtime.modelstore, "
              "edge_runtime.modelkit, edgeloop.cli\n"
              f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing the node and the CLI imported {out.stdout.strip()}"


def test_signing_imports_cryptography_lazily():
    """Nodes verify bundles with cryptography, but only when they do: importing the runtime stays light."""
    out = run("import sys, edge_runtime.node, edge_runtime.cli, edge_runtime.signing\n"
              "print('cryptography' in sys.modules)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", "importing edge_runtime.signing imported cryptography"


# An install without the cloud extra (`pip install .`), made here by making the extra's packages unimportable
# in the child process (a name set to None in sys.modules raises ModuleNotFoundError on import, as a missing
# package does): everything else is the real command line.
WITHOUT_CLOUD = ("import sys\n"
                 f"for name in {sorted(CLOUD_MODULES)!r}:\n"
                 "    sys.modules[name] = None\n"
                 "sys.argv = ['edgeloop', *sys.argv[1:]]\n"
                 "from edgeloop.cli import main\n"
                 "main()\n")


def edgeloop_without_cloud(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITHOUT_CLOUD, *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}, timeout=60)


@pytest.mark.parametrize("args", [["hub", "serve"], ["hub", "ingest"], ["model", "ls"], ["model", "show", "pump_anomaly"],
                                  ["loop", "run"], ["up"], ["demo"]], ids=" ".join)
def test_cloud_commands_without_the_cloud_extra_exit_2_naming_it(args: list[str], tmp_path) -> None:
    out = edgeloop_without_cloud(*args, *(["--workspace", str(tmp_path)] if args in (["up"], ["loop", "run"]) else []))
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: this command needs the cloud extra (") and \
        lines[0].endswith(CLOUD_EXTRA), out.stderr


def test_edge_commands_work_without_the_cloud_extra() -> None:
    out = edgeloop_without_cloud("pipeline", "validate", str(ROOT / "apps/pump_monitoring/pipelines/overheat.yaml"))
    assert out.returncode == 0 and out.stdout.startswith("ok: pump-overheat"), (out.stdout, out.stderr)
    bad = edgeloop_without_cloud("node", "ls", "--hub", "http://127.0.0.1:9", "--token", "t")  # HTTP only: no extra
    assert bad.returncode == 1 and "hub unreachable: http://127.0.0.1:9" in bad.stderr, bad.stderr
