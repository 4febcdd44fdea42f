"""Retraining several models at the same time through Prefect's Dask task runner, in a copy of the project's
DVC pipeline, every stage run (the shared trained workspace: tiny SYNTHETIC settings, real DVC, a real MLflow
SQLite store), and a real Prefect server: two
models with new labels train in two Dask worker processes whose trainings overlap, both get a new
``challenger`` version, and DVC's bookkeeping leaves the pipeline as `dvc repro` would (up to date)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from flows import dvc as fdvc
from flows import steps
from tests.kit.trained import dvc

pytestmark = pytest.mark.timeout(600)

RETRAINED = ("pump_anomaly", "intrusion")  # a table model and an image model: the two kinds the loop labels


def test_the_option_is_off_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGELOOP_PARALLEL_RETRAIN", raising=False)
    assert steps.LoopConfig.from_env().parallel_retrain is False
    monkeypatch.setenv("EDGELOOP_PARALLEL_RETRAIN", "true")
    assert steps.LoopConfig.from_env().parallel_retrain is True


def test_two_models_retrain_at_once_and_the_pipeline_stays_reproduced(reproduced_ws: Path, prefect_api: str) -> None:
    from flows.loop import retrain_models
    from models import tracking
    from models.common import digest_dir, load_split

    ws = reproduced_ws
    status = dvc(ws, "status")
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
    cfg = steps.LoopConfig(workspace=str(ws), models=list(RETRAINED), min_labels=5)
    before = {m: {"artifact": digest_dir(ws / "artifacts" / m), "challenger": tracking.alias_version(m, "challenger", ws),
                  "rows": len(load_split(ws / "data" / "prepared" / m / "train.npz")["y"])} for m in RETRAINED}
    untouched = {f: (ws / f).read_text() for f in ("artifacts/activity.run.json", "metrics/activity.json")}
    locked = _locked_artifacts(ws)

    # what harvest leaves: a labelled batch per model (12 rows, labels flipped), `dvc add`ed and pushed
    for m in RETRAINED:
        train = load_split(ws / "data" / "prepared" / m / "train.npz")
        np.savez_compressed(ws / "data" / "labelled" / m / "batch-0001-1.npz", X=train["X"][:12],
                            y=1 - train["y"][:12], ids=np.array([f"{m}-{i}" for i in range(12)]))
    version = fdvc.version_data(cfg)
    with cfg.state() as state:
        for k, m in enumerate(RETRAINED):
            state.mark_harvested(m, "batch-0001-1", [{"annotation_id": 1000 * k + i, "id": f"{m}-{i}", "label": "x"}
                                                    for i in range(12)])
    stale = dvc(ws, "status")
    assert all(f"prepare@{m}" in stale.stdout for m in RETRAINED), stale.stdout

    got = retrain_models(cfg, {m: {"data_version": version, "new_labels": 12} for m in RETRAINED})

    par = got["parallel"]
    assert par is not None and par["workers"] == 2 and par["failed"] == {}, got
    assert len(set(par["pids"].values())) == 2, par  # two Dask worker processes
    # each model's retraining (prepare, train, evaluate) ran while the other's did, and so did its training
    span = {m: (min(a for a, _ in par["stages"][m].values()), max(b for _, b in par["stages"][m].values()))
            for m in RETRAINED}
    assert _overlap(*span.values()) > 0, f"the retrainings did not overlap: {par['stages']}"
    for m, other in (RETRAINED, RETRAINED[::-1]):
        assert _overlap(par["stages"][m]["train"], span[other]) > 0, f"{m} trained alone: {par['stages']}"

    repeat = yaml.safe_load((ws / "params.yaml").read_text())["loop"]["labelled_repeat"]
    for m in RETRAINED:
        r = got["models"][m]
        assert r["retrained"] is True and r["labels_used"] == 12, r
        assert int(r["candidate"]) == int(before[m]["challenger"]) + 1, (r, before[m])
        assert tracking.alias_version(m, "challenger", ws) == r["candidate"]
        info = tracking.version_info(m, r["candidate"], ws)
        assert info["tags"]["labelled_data_version"] == version and "drifted.accuracy" in info["metrics"], info
        assert digest_dir(ws / "artifacts" / m) != before[m]["artifact"], f"{m}: the artifact did not change"
        assert len(load_split(ws / "data" / "prepared" / m / "train.npz")["y"]) == before[m]["rows"] + 12 * repeat
        metrics = json.loads((ws / "metrics" / f"{m}.json").read_text())
        assert metrics["version"] == r["candidate"], metrics
    with cfg.state() as state:
        assert all(state.trained_labels(m) == 12 for m in RETRAINED)
    assert {f: (ws / f).read_text() for f in untouched} == untouched  # the third model was left alone

    status = dvc(ws, "status")
    assert status.returncode == 0 and "Data and pipelines are up to date" in status.stdout, status.stdout
    now = _locked_artifacts(ws)  # dvc.lock records the new artifacts, as `dvc repro` would have
    assert all(now[m] != locked[m] for m in RETRAINED) and now["activity"] == locked["activity"], (locked, now)


def _overlap(a: tuple[float, float] | list[float], b: tuple[float, float] | list[float]) -> float:
    """Seconds two [start, end] intervals share (0 or less: none)."""
    return min(a[1], b[1]) - max(a[0], b[0])


def _locked_artifacts(root: Path) -> dict[str, str]:
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    return {m: next(o["md5"] for o in lock[f"train@{m}"]["outs"] if o["path"] == f"artifacts/{m}")
            for m in ("pump_anomaly", "intrusion", "activity")}
