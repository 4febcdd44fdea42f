"""``intrusion``: a small CNN on 128x128 drain-ROI crops -> "is someone at the drain" (SYNTHETIC scenes)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from models import vision

NAME = "intrusion"
LABELS = ["clear", "person"]
INPUT = "image"
DEFAULTS: dict[str, Any] = {
    "size": 128,  # crop side, pixels
    "channels": [16, 32, 48, 64],  # one stride-2 conv block each
    "epochs": 6,
    "lr": 0.005,
    "batch_size": 64,
}


def prepare(raw: Path, out: Path, p: Mapping[str, Any]) -> None:
    vision.prepare_intrusion(raw, out, p)


xy = vision.intrusion_xy


def fit(prepared: Path, out: Path, p: Mapping[str, Any], seed: int,
        progress: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    X, y = xy(prepared / "train.npz")
    arch = {"channels": p["channels"], "pool": 1}
    net, info = vision.train_cnn(X, y, input_kind=INPUT, arch=arch, epochs=p["epochs"], lr=p["lr"],
                                 batch_size=p["batch_size"], seed=seed, progress=progress)
    vision.save_cnn(net, out, name=NAME, input_kind=INPUT, shape=[p["size"], p["size"], 3], labels=LABELS,
                    arch=arch, sample=X[vision.sample_rows(y, 16, seed)])
    return info
