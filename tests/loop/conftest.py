"""Fixtures of the loop tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kit.dvc import dvc_workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's pipeline (dvc.yaml, code) with tiny params, in its own DVC repository."""
    return dvc_workspace(tmp_path_factory.mktemp("dvcws"))
