"""``activity``: a small CNN on the last few 64x64 drain-ROI crops -> "is sewage being dumped" (SYNTHETIC)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from models import street as vision

NAME = "activity"
LABELS = ["idle", "dumping"]
INPUT = "clip"
DATA = "synthetic (models.synth.scenes)"
DEFAULTS: dict[str, Any] = {
    "size": 64,  # crop side, pixels
    "frames": 4,  # crops per sample, oldest first (0.4 s at 10 fps)
    "channels": [24, 32, 48, 64],
    "epochs": 6,
    "lr": 0.005,
    "batch_size": 64,
}

generate = vision.generate  # SYNTHETIC street scenes (shared with the other street model)


def prepare(raw: Path, out: Path, p: Mapping[str, Any]) -> None:
    vision.prepare_activity(raw, out, p)


xy = vision.activity_xy


def fit(prepared: Path, out: Path, p: Mapping[str, Any], seed: int,
        progress: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    return vision.fit_cnn(prepared, out, p, seed, progress, name=NAME, labels=LABELS, input_kind=INPUT,
                          shape=[p["frames"], p["size"], p["size"], 3], xy=xy)
