"""Drift at the edge (edge_runtime.drift): the training-time profile against a sliding window of what a node
scores, with no labels. Data here is SYNTHETIC (seeded normal features, generated images)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime.drift import PROFILE, DriftMonitor, image_stats, make_profile, psi

NAMES = ["temp", "vib", "amps", "f3", "pressure", "b", "a", "flow"]  # not sorted: columns keep the model's order


def _profile(rng: np.random.Generator) -> dict[str, Any]:
    return make_profile(rng.normal(size=(4000, 8)), NAMES, rng.random(4000), kind="features")


def test_a_window_like_the_reference_stays_low_and_a_shifted_input_is_named() -> None:
    rng = np.random.default_rng(1)
    prof = _profile(rng)
    same, moved = DriftMonitor(prof), DriftMonitor(prof)
    for _ in range(8):
        same.update(rng.normal(size=(500, 8)), rng.random(500))
        x = rng.normal(size=(500, 8))
        x[:, 3] += 0.75  # one input moves by three quarters of its spread
        moved.update(x, rng.random(500))
    a, b = same.summary(), moved.summary()
    assert a["rows"] == 2000 and a["score"] < 0.05, a  # sampling noise only (about 9/2000 per input)
    assert b["score"] > 0.25 and b["worst"] == "f3" and b["psi"]["f3"] == b["score"], b
    assert max(v for k, v in b["psi"].items() if k != "f3") < 0.05
    again = DriftMonitor(json.loads(json.dumps(prof, sort_keys=True)))  # as the bundle's JSON file has it
    again.update(x, rng.random(500))
    assert again.summary()["worst"] == "f3"


def test_confidence_drift_is_seen_without_input_drift() -> None:
    rng = np.random.default_rng(2)
    mon = DriftMonitor(_profile(rng))
    mon.update(rng.normal(size=(1000, 8)), rng.random(1000) * 0.3)  # the model became sure of "negative"
    s = mon.summary()
    assert s["worst"] == "confidence" and s["psi_confidence"] > 1.0 and s["positive_rate"] == 0.0, s


def test_the_window_is_bounded_and_too_few_rows_give_no_score() -> None:
    rng = np.random.default_rng(3)
    mon = DriftMonitor(_profile(rng), window=1000, blocks=4, min_rows=300)
    mon.update(rng.normal(size=(100, 8)), rng.random(100))
    assert mon.summary()["score"] is None and mon.summary()["rows"] == 100
    for _ in range(50):
        mon.update(rng.normal(size=(997, 8)), rng.random(997))
    s = mon.summary()
    assert s["seen"] == 100 + 50 * 997 and 1000 <= s["rows"] <= 1250, s  # old blocks dropped, no rows kept
    # memory: the blocks' counts only, whatever went through
    assert len(mon._closed) <= 4 and all(c.sum() <= 250 for block in mon._closed for c in block[0])


def test_psi_is_symmetric_in_spirit_and_zero_for_equal_shares() -> None:
    e = np.full(10, 0.1)
    assert psi(e, e) == 0.0
    a = np.array([0.2, 0.0, *[0.1] * 8])
    assert psi(e, a) > 0 and psi(a, e) > 0


def test_image_statistics_follow_night_and_blur() -> None:
    rng = np.random.default_rng(4)
    day = rng.integers(60, 255, size=(64, 32, 32, 3), dtype=np.uint8)
    night = (day // 4).astype(np.uint8)
    blurred = ((day[:, :-1].astype(np.uint16) + day[:, 1:]) // 2).astype(np.uint8)
    d, n, b = image_stats(day), image_stats(night), image_stats(blurred)
    assert (n[:, 0] < d[:, 0] / 3).all() and (n[:, 1] < d[:, 1]).all()  # darker, less contrast
    assert (b[:, 2] < d[:, 2]).all()  # less sharp
    clips = np.stack([day, night], axis=1)  # (n, T, H, W, C): a clip's last frame
    assert np.allclose(image_stats(clips), n)
    prof = make_profile(d, ["brightness", "contrast", "sharpness"], rng.random(64), kind="image-stats")
    mon = DriftMonitor(prof, min_rows=64)
    mon.update(night, rng.random(64))  # an image model measures a sample of at most 8 crops per batch
    assert mon.summary()["rows"] == 8 and mon.summary()["score"] is None
    for a in range(0, 64, 8):
        mon.update(night[a:a + 8], rng.random(8))
    assert mon.summary()["rows"] == 72
    assert mon.summary()["worst"] in ("brightness", "contrast") and mon.summary()["score"] > 1


def test_a_trained_model_ships_its_profile_and_the_node_reports_drift(tmp_path: Path) -> None:
    """A table model trained here (scikit-learn, SYNTHETIC rows) with the stage's profile; the node's model
    store loads it; apply_model counts what it scores; the store's heartbeat status carries the summary."""
    from sklearn.linear_model import LogisticRegression

    from edge_runtime.drift import write_profile
    from edge_runtime.instance import Instance
    from edge_runtime.modelkit import write_descriptor, write_sample
    from edge_runtime.modelstore import ModelStore
    from edge_runtime.pipeline import parse_pipeline
    from edge_runtime.records import Batch

    rng = np.random.default_rng(5)
    X = rng.normal(size=(3000, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    art = tmp_path / "m"
    art.mkdir()
    import joblib

    joblib.dump(LogisticRegression().fit(X, y), art / "model.joblib")
    write_descriptor(art, {"name": "m", "kind": "sklearn", "input": "table", "features": ["a", "b", "c"],
                           "labels": ["ok", "bad"]})
    write_sample(art, X[:8])
    prof = write_profile(art, X, rows=2000)
    assert json.loads((art / PROFILE).read_text()) == prof and prof["n"] == 2000
    assert 0.3 < prof["positive_rate"] < 0.7

    store = ModelStore(tmp_path / "store")
    from edge_runtime.modelkit import Predictor

    store.register("m", Predictor(art, version="1"))
    assert "drift" not in store.status()["models"]["m"]  # nothing scored yet
    plan = parse_pipeline({"name": "score", "steps": [{"device_input": {}},
                                                      {"apply_model": {"model": "m", "inputs": ["a", "b", "c"]}}]})
    inst = Instance("score", plan, models=store)
    shifted = rng.normal(size=(1000, 3)) + np.array([0.0, 0.0, 2.0])  # c moved; the model ignores it
    out = inst.push(Batch.from_records([{"device": "d", "ts": float(i), "values": {"a": r[0], "b": r[1], "c": r[2]}}
                                        for i, r in enumerate(shifted)]))
    assert len(out) == 1000
    d = store.status()["models"]["m"]["drift"]["1"]
    assert d["rows"] == 1000 and d["worst"] == "c" and d["score"] > 1.0, d
    assert d["psi"]["a"] < 0.1 and d["psi_confidence"] < 0.1, d  # the model's answers did not move


@pytest.mark.parametrize("bad", [{"format": 2}, {"format": 1}])
def test_an_unreadable_profile_means_no_monitor_not_a_broken_model(tmp_path: Path, bad: dict[str, Any]) -> None:
    from edge_runtime.drift import load_monitor

    (tmp_path / PROFILE).write_text(json.dumps(bad))
    assert load_monitor(tmp_path) is None


def test_reference_first_measures_change_on_this_node_not_the_training_gap() -> None:
    """A camera unlike the training clips (another scene) is far from the training profile whatever happens;
    with reference "first" the node's own first window is the reference and only a change after it counts."""
    rng = np.random.default_rng(6)
    prof = make_profile(rng.normal(size=(4000, 8)), NAMES, rng.random(4000), kind="features")
    own = rng.normal(loc=1.5, size=(4000, 8))  # this node's data: far from training, and stable
    trained, first = DriftMonitor(prof, window=800), DriftMonitor(prof, window=800, reference="first")
    for a in range(0, 4000, 400):
        for m in (trained, first):
            m.update(own[a:a + 400], rng.random(400))
    assert trained.summary()["score"] > 1.0 and first.summary()["score"] < 0.1, (trained.summary(), first.summary())
    assert first.summary()["reference"] == "first"
    later = own[:800].copy()
    later[:, 5] -= 1.0  # then one input moves on this node
    first.update(later, rng.random(800))
    assert first.summary()["worst"] == "b" and first.summary()["score"] > 0.25, first.summary()
    fresh = DriftMonitor(prof, window=800, reference="first")
    fresh.update(own[:400], rng.random(400))
    assert fresh.summary()["score"] is None and fresh.summary()["reference"] == "first (still learning it)"
    with pytest.raises(ValueError, match="drift reference 'last'"):
        DriftMonitor(prof, reference="last")
