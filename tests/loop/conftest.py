"""Fixtures of the loop tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kit.trained import dvc_workspace, trained_workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's pipeline (dvc.yaml, code) with tiny params, in its own DVC repository, not run."""
    return dvc_workspace(tmp_path_factory.mktemp("dvcws"))


@pytest.fixture(scope="module")
def reproduced_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same pipeline with every stage run and recorded in dvc.lock: a copy of the trained workspace."""
    return trained_workspace(tmp_path_factory.mktemp("reproduced") / "ws").root
