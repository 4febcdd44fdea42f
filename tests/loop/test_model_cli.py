"""`edgeloop model train|ls|show|promote` against a real MLflow store, and the errors they give."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.kit.cli import edgeloop


@pytest.fixture(scope="module")
def root(workspace: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the trained workspace (its own MLflow database), so retraining here changes nothing elsewhere."""
    copy = tmp_path_factory.mktemp("cli") / "ws"
    shutil.copytree(workspace.root, copy, ignore=shutil.ignore_patterns("bentoml", "bundles"))
    return copy


def test_train_registers_a_challenger_and_promote_makes_it_champion(root: Path, workspace: Any) -> None:
    done = edgeloop("model", "train", "activity", "--root", str(root))
    assert done.returncode == 0, done.stderr
    assert "activity on SYNTHETIC holdouts" in done.stdout and "drifted" in done.stdout
    assert "registered activity version 2 (challenger)" in done.stdout
    info = json.loads(edgeloop("model", "show", "activity", "challenger", "--root", str(root)).stdout)
    assert info["version"] == "2" and info["aliases"] == ["challenger"]
    assert info["tags"]["data_version"] and int(info["params"]["epochs"]) == 1
    assert json.loads(edgeloop("model", "show", "activity", "--root", str(root)).stdout)["version"] == "1"
    promoted = edgeloop("model", "promote", "activity", "2", "--root", str(root))
    assert promoted.returncode == 0 and "activity@champion -> version 2" in promoted.stdout
    listed = edgeloop("model", "ls", "--root", str(root)).stdout
    rows = {tuple(c.strip() for c in line.split("│")[1:4]) for line in listed.splitlines() if "│" in line}
    assert ("activity", "2", "challenger, champion") in rows and ("activity", "1", "") in rows
    assert ("pump_anomaly", "1", "challenger, champion") in rows
    from models import tracking

    # the run went into the copy's store only: nothing pins later runs to the first store used in a process
    assert [v["version"] for v in tracking.list_versions("activity", workspace.root)] == ["1"]


def test_runs_stay_in_their_workspace(workspace: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models import tracking

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    other = tmp_path / "other"
    run = tracking.log_training("pump_anomaly", workspace.artifact("pump_anomaly"), {"seed": 0}, {"n": 1},
                                {"data": "synthetic"}, workdir=other)
    assert run["tracking_uri"] == f"sqlite:///{other.resolve() / 'var' / 'mlflow' / 'mlflow.db'}"
    assert "MLFLOW_TRACKING_URI" not in os.environ  # not left behind for later workdirs and child processes
    assert not (tmp_path / "mlruns").exists()  # artifacts go under the workdir, not the current directory
    assert list((other / "var" / "mlflow" / "artifacts").rglob("model.joblib"))


@pytest.mark.parametrize(("args", "message"), [
    (("model", "train", "bogus"), "unknown model 'bogus'"),
    (("model", "show", "activity", "nightly"), "no alias 'nightly'"),
    (("model", "promote", "activity", "42"), "version 42"),
    (("model", "package", "activity", "--keys", "/nonexistent"), "no signing key"),
    (("model", "deploy", "activity", "--to", "group:g", "--token", "t"), "expected NAME:VERSION"),
])
def test_bad_arguments_exit_2_with_a_message(root: Path, args: tuple[str, ...], message: str) -> None:
    done = edgeloop(*args, "--root", str(root)) if args[1] in ("train", "show", "promote") else edgeloop(*args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr


def test_bad_params_exit_2_naming_the_key(root: Path) -> None:
    (root / "bad.yaml").write_text("intrusion: {epochz: 3}\n")
    done = edgeloop("model", "train", "intrusion", "--root", str(root), "--params", "bad.yaml")
    assert done.returncode == 2 and "unknown intrusion params: ['epochz']" in done.stderr
