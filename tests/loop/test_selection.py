"""Which uploads the loop labels (flows.selection) and what the rest is used for (self-training: models.kit,
models.stages.merge_pool): plain data in, plain data out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from flows.selection import pick, save_pool
from models.common import load_split

FEATURES = ["a", "b"]


def uploads(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Two well separated groups of table uploads (900 and 100) from two devices, with confidences."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        centre = 10.0 if i % 10 == 0 else 0.0  # every tenth upload lies in a small second group
        out.append({"id": f"u{i}", "device": f"d{i % 2}", "ts": 1000.0 + i, "confidence": float(rng.uniform(0.5, 1)),
                    "values": {"a": centre + float(rng.normal()), "b": centre + float(rng.normal())}})
    return out


def test_the_stratified_draw_keeps_the_budget_and_covers_every_group() -> None:
    items = uploads(1000)
    keys = list(np.random.default_rng(1).random(len(items)))
    hard, rand = pick(items, keys, set(), 40, 1.0, features=FEATURES)
    assert hard == [] and len(rand) == 40 and len({p["id"] for p in rand}) == 40
    small = sum(p["values"]["a"] > 5 for p in rand)
    assert 3 <= small <= 5  # the small group gets its share (a tenth), neither none nor more
    assert pick(items, keys, set(), 40, 1.0, features=FEATURES) == (hard, rand)  # a re-run chooses the same


def test_the_hard_share_is_least_confident_first_one_group_after_another() -> None:
    items = uploads(1000)
    keys = list(np.random.default_rng(1).random(len(items)))
    marked = {p["id"] for p in items if p["confidence"] < 0.6}
    hard, rand = pick(items, keys, marked, 40, 0.5, features=FEATURES)
    assert len(hard) == 20 and len(rand) == 20 and {p["id"] for p in hard} <= marked
    assert not {p["id"] for p in hard} & {p["id"] for p in rand}
    least = min(items, key=lambda p: p["confidence"])
    assert least in hard
    # too few hard examples: the stratified draw fills the budget
    hard, rand = pick(items, keys, {"u1", "u2"}, 40, 0.5, features=FEATURES)
    assert len(hard) == 2 and len(rand) == 38


def test_images_are_drawn_spread_over_time_per_device() -> None:
    items = uploads(600)
    hard, rand = pick(items, [0.5] * len(items), set(), 60, 1.0, features=None, by_time=True)
    for dev in ("d0", "d1"):
        ts = sorted(p["ts"] for p in rand if p["device"] == dev)
        assert len(ts) == 30 and min(np.diff(ts)) >= 10  # no near-duplicate frames


def test_the_unlabelled_rest_becomes_the_trainers_pool(tmp_path: Path) -> None:
    from models.kit import load_pool, self_train
    from models.stages import merge_pool

    items = uploads(50)
    assert save_pool(tmp_path, "pump_anomaly", FEATURES, items[:30], "pool-0") == 30
    ws_pool = load_split(tmp_path / "data" / "labelled" / "pump_anomaly" / "unlabelled" / "pool-0.npz")
    assert ws_pool["X"].shape == (30, 2) and list(ws_pool["ids"][:2]) == ["u0", "u1"]

    from sklearn.linear_model import LogisticRegression

    X = np.array([[0.0], [0.1], [0.9], [1.0]] * 5)
    y = np.array([0, 0, 1, 1] * 5)
    pool = np.array([[-1.0], [2.0], [0.5]])
    model, info = self_train(lambda X, y, w: LogisticRegression(C=100).fit(X, y, sample_weight=w),
                             lambda m, X: m.predict_proba(X)[:, 1], X, y, pool, rounds=1, threshold=0.95)
    assert info == {"pseudo_labels": 2, "pseudo_positives": 1, "pool": 3}  # the sure ones only
    prepared = tmp_path / "data" / "prepared" / "pump_anomaly"
    prepared.mkdir(parents=True)
    np.savez_compressed(prepared / "train.npz", X=np.zeros((4, 2), np.float32), y=np.zeros(4, np.int64))
    assert merge_pool(tmp_path, "pump_anomaly") == 30 and load_pool(prepared) is not None
    (tmp_path / "data" / "labelled" / "pump_anomaly" / "unlabelled" / "pool-0.npz").unlink()
    assert merge_pool(tmp_path, "pump_anomaly") == 0 and load_pool(prepared) is None  # none left behind
