"""The reference model ``pump_anomaly`` on SYNTHETIC telemetry: deterministic, accurate on a clean holdout,
evaluated under ageing drift, and fed features EdgeLoop's own time_window + aggregate compute identically."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from edge_runtime.pipeline import Pipeline
from edge_runtime.replay import replay_records
from models.pump_anomaly import FEATURES, matrix
from models.pump_anomaly.features import AGGREGATE_SPEC
from models.pump_anomaly.train import DEFAULTS, evaluate, main, make_datasets, predict, resolve_params, train
from models.synth import generate_telemetry, windows
from models.synth.telemetry import T0, Telemetry

SEED = 0
METRICS = ("precision", "recall", "f1", "roc_auc", "accuracy")


@pytest.fixture(scope="module")
def data() -> dict[str, dict[str, Any]]:
    return make_datasets(SEED)


@pytest.fixture(scope="module")
def model(data: dict[str, dict[str, Any]]) -> Any:
    return train(data["train"]["X"], data["train"]["y"], seed=SEED)


def test_features_match_synth_windows() -> None:
    w = windows(generate_telemetry(2, 2, rate_hz=0.1, seed=1), 600.0)
    produced = {k for k in w if k not in ("device", "start", "count", "anomalous", "fault")}
    assert set(FEATURES) <= produced
    assert FEATURES == [f"{ch}_{fn}" for ch, fns in AGGREGATE_SPEC.items() for fn in fns]
    X = matrix(w)
    assert X.dtype == np.float32 and X.shape == (w["count"].size, len(FEATURES))
    with pytest.raises(KeyError):
        matrix({k: v for k, v in w.items() if k != "vibration_max"})


def test_datasets_are_seeded_and_separate(data: dict[str, dict[str, Any]]) -> None:
    assert len({d["seed"] for d in data.values()}) == 3
    again = make_datasets(SEED)
    for name, d in data.items():
        assert np.array_equal(d["X"], again[name]["X"]) and np.array_equal(d["y"], again[name]["y"])
    assert not np.array_equal(data["holdout_clean"]["X"], data["holdout_drifted"]["X"])
    for d in data.values():
        assert 0.05 < d["y"].mean() < 0.6  # both classes are well represented


def test_training_is_deterministic(data: dict[str, dict[str, Any]], model: Any) -> None:
    again = train(data["train"]["X"], data["train"]["y"], seed=SEED)
    X = data["holdout_clean"]["X"]
    assert np.array_equal(model.predict_proba(X), again.predict_proba(X))
    assert np.array_equal(predict(model, X), predict(again, X))


def test_clean_holdout_is_accurate(data: dict[str, dict[str, Any]], model: Any) -> None:
    m = evaluate(model, data["holdout_clean"]["X"], data["holdout_clean"]["y"])
    # measured with the defaults, seeds 0-3: f1 0.936-0.957, roc_auc 0.963-0.973
    assert m["f1"] >= 0.85 and m["roc_auc"] >= 0.92, m
    assert m["n"] == data["holdout_clean"]["y"].size == sum(map(sum, m["confusion"]))


def test_drifted_holdout_is_evaluated(data: dict[str, dict[str, Any]], model: Any) -> None:
    clean = evaluate(model, data["holdout_clean"]["X"], data["holdout_clean"]["y"])
    drifted = evaluate(model, data["holdout_drifted"]["X"], data["holdout_drifted"]["y"])
    for m in (clean, drifted):
        assert all(0.0 <= m[k] <= 1.0 for k in METRICS), m
        assert np.array(m["confusion"]).shape == (2, 2)
    # ageing is not a fault; the model never saw it, so it is not expected to do better under it
    assert drifted["f1"] <= clean["f1"] + 0.05 and drifted["roc_auc"] <= clean["roc_auc"] + 0.05


def test_params_override_and_cli(tmp_path: Any) -> None:
    assert resolve_params({"pump_anomaly": {"max_iter": "50"}})["max_iter"] == 50
    with pytest.raises(KeyError):
        resolve_params({"no_such_param": 1})
    params = tmp_path / "params.yaml"
    params.write_text("pump_anomaly:\n  train_pumps: 6\n  train_hours: 24\n  holdout_pumps: 2\n"
                      "  holdout_hours: 24\n  max_iter: 20\n")
    assert main(["--out", str(tmp_path / "out"), "--seed", "3", "--params", str(params)]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics) >= {"clean", "drifted", "train", "params", "features"}
    assert metrics["params"]["train_pumps"] == 6 and metrics["features"] == FEATURES
    assert (tmp_path / "out" / "model.joblib").stat().st_size > 0


def _rounded(data: Telemetry) -> Telemetry:
    """The telemetry as its records carry it (to_records rounds each value)."""
    return Telemetry(data.device, data.ts, data.temperature.round(3), data.vibration.round(4),
                     data.current.round(3), data.label, data.events)


@pytest.mark.parametrize("batch_size", [4096, 97])
def test_edge_operators_compute_the_same_features(batch_size: int) -> None:
    window_s = DEFAULTS["window_s"]
    assert T0 % window_s == 0  # EdgeLoop aligns windows to multiples of the size since the epoch
    data = generate_telemetry(3, 4, rate_hz=0.1, seed=5, fault_rate=6.0)
    plan = (Pipeline.named("pump-anomaly-features").product("pump").device_input()
            .time_window(size=f"{window_s:g}s").aggregate(**AGGREGATE_SPEC).build())
    out, result = replay_records(plan, data.to_records(), batch_size=batch_size)
    assert not result.dead_letters.items and len(out) == 3 * 4 * 6
    edge = {(r["device"], r["values"]["window_start"]): r["values"] for r in out}
    assert len(edge) == len(out)

    for ref, atol in ((windows(_rounded(data), window_s), 1e-6), (windows(data, window_s), 2e-3)):
        keys = list(zip(ref["device"].tolist(), ref["start"].tolist()))
        assert set(keys) == set(edge)
        cols = {f: np.array([edge[k][f] for k in keys]) for f in FEATURES}
        assert np.array_equal([edge[k]["count"] for k in keys], ref["count"])
        for f in FEATURES:
            assert np.allclose(cols[f], ref[f], rtol=0, atol=atol), f
        assert np.allclose(matrix(cols), matrix(ref), rtol=0, atol=atol)
