"""A model package of one's own as the tests make it: `edgeloop model init` into a folder of the test's, added to a
workspace, and installed with pip into a folder of its own (EdgeLoop's venv is shared by every test), put on this
process's path and its children's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kit import ROOT


def install_model(tmp: Path, ws: Path, name: str, *init_args: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Scaffold ``name`` (``init_args``: --kind, --labels, ...) into ``tmp/pkgs`` and workspace ``ws``, pip-install
    it into ``tmp/site``; returns the package's folder."""
    made = subprocess.run([sys.executable, "-m", "edgeloop", "model", "init", name, *init_args, "--dir",
                           str(tmp / "pkgs"), "-w", str(ws)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    assert made.returncode == 0, made.stderr
    site = tmp / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--target", str(site), str(tmp / "pkgs" / name)], capture_output=True, text=True,
                         timeout=300)
    assert pip.returncode == 0, pip.stderr
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(ROOT)]))
    return tmp / "pkgs" / name
