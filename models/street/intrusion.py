"""``intrusion``: a small CNN on 128x128 drain-ROI crops -> "is someone at the drain" (SYNTHETIC scenes)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from models import street as vision

NAME = "intrusion"
LABELS = ["clear", "person"]
INPUT = "image"
DATA = "synthetic (models.synth.scenes)"
DEFAULTS: dict[str, Any] = {
    "size": 128,  # crop side, pixels
    "channels": [16, 32, 48, 64],  # one stride-2 conv block each
    "epochs": 6,
    "lr": 0.005,
    "batch_size": 64,
}

generate = vision.generate  # SYNTHETIC street scenes (shared with the other street model)


def prepare(raw: Path, out: Path, p: Mapping[str, Any]) -> None:
    vision.prepare_intrusion(raw, out, p)


xy = vision.intrusion_xy
augment = vision.augment_labelled  # the loop's labelled crops, under other lights too


def fit(prepared: Path, out: Path, p: Mapping[str, Any], seed: int,
        progress: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    return vision.fit_cnn(prepared, out, p, seed, progress, name=NAME, labels=LABELS, input_kind=INPUT,
                          shape=[p["size"], p["size"], 3], xy=xy)
