"""Fixtures of the loop tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kit.trained import dvc_workspace, trained_workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's pipeline (dvc.yaml, code) with tiny params, in its own DVC repository, not run: the
    street scenes tinier still (one 60-frame training clip: these tests check what DVC runs, not the models)."""
    import yaml

    ws = dvc_workspace(tmp_path_factory.mktemp("dvcws"))
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["scenes"].update(frames=60, train_clips=1)
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    return ws


@pytest.fixture(scope="module")
def reproduced_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same pipeline with every stage run and recorded in dvc.lock: a copy of the trained workspace."""
    return trained_workspace(tmp_path_factory.mktemp("reproduced") / "ws").root
