"""What a model plug-in (:mod:`models.plugins`) builds on: field data read from its folder, split so its holdouts are
honest, and the model artifacts the nodes load (:mod:`edge_runtime.modelkit`).

Field data (``data/field/<model>/``, what ``edgeloop data pull`` writes, or a team's own export):

- table models: CSV files (``*.csv``) with a header; columns ``ts`` (epoch seconds), ``device``, the model's
  features, and ``label`` (a class name; empty for rows nobody labelled, which are skipped);
- image and clip models: ``labels.csv`` (``file,ts,device,label``) beside the image files it names (a clip is
  a filmstrip: its frames side by side, oldest first, as nodes upload them).

:func:`split` makes the three splits the loop trains and gates on: ``holdout_drifted`` is the most recent
period (what the model will see next), ``holdout_clean`` the earlier period of devices held out of training
(the model never saw them), ``train`` the rest. A device never contributes to both train and holdout_clean,
and nothing in train is later than the recent period's start.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.common import load_split, sample_rows, save_split

__all__ = ["read_table", "read_images", "split", "write_splits", "fit_table", "fit_cnn", "FieldDataError", "POOL",
           "load_pool", "self_train"]


class FieldDataError(ValueError):
    """Field data that cannot be used: the file, the line and what is wrong."""


def read_table(folder: Path, features: Sequence[str], labels: Sequence[str]) -> dict[str, np.ndarray]:
    """The labelled rows of every ``*.csv`` under ``folder``: ``{"X": float32 (n, features), "y": int64 class
    index, "ts": float64, "device": str}``, sorted by time. Unlabelled rows are skipped; a bad one raises
    :class:`FieldDataError` naming file, line and column."""
    files = sorted(Path(folder).glob("*.csv"))
    if not files:
        raise FieldDataError(f"{folder}: no CSV files (`edgeloop data pull` writes them, or copy an export here)")
    X: list[list[float]] = []
    y: list[int] = []
    ts: list[float] = []
    dev: list[str] = []
    for f in files:
        with f.open(newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in ("ts", "device", "label", *features) if c not in (reader.fieldnames or [])]
            if missing:
                raise FieldDataError(f"{f}: no column {', '.join(missing)} (header: {reader.fieldnames})")
            for line, row in enumerate(reader, start=2):
                label = (row["label"] or "").strip()
                if not label:
                    continue
                if label not in labels:
                    raise FieldDataError(f"{f}:{line}: label {label!r}: expected one of {', '.join(labels)}")
                try:
                    values = [float(row[c]) for c in features]
                    t = float(row["ts"])
                except (TypeError, ValueError) as exc:
                    raise FieldDataError(f"{f}:{line}: not a number: {exc}") from None
                if not np.isfinite(values).all() or not np.isfinite(t):
                    raise FieldDataError(f"{f}:{line}: a value is not finite")
                X.append(values)
                y.append(labels.index(label))
                ts.append(t)
                dev.append(row["device"] or "")
    order = np.argsort(np.asarray(ts), kind="stable")
    return {"X": np.asarray(X, dtype=np.float32).reshape(-1, len(features))[order],
            "y": np.asarray(y, dtype=np.int64)[order], "ts": np.asarray(ts, dtype=np.float64)[order],
            "device": np.asarray(dev, dtype=str)[order]}


def read_images(folder: Path, labels: Sequence[str], shape: Sequence[int]) -> dict[str, np.ndarray]:
    """The labelled images listed in ``folder/labels.csv``, resized to ``shape`` (H, W, C; or T, H, W, C for a
    clip model, the file a filmstrip of T frames): ``{"X": uint8, "y", "ts", "device"}``, sorted by time."""
    import cv2

    index = Path(folder) / "labels.csv"
    if not index.is_file():
        raise FieldDataError(f"{index}: missing (file,ts,device,label per labelled image)")
    clip = len(shape) == 4
    h, w = (int(shape[1]), int(shape[2])) if clip else (int(shape[0]), int(shape[1]))
    X, y, ts, dev = [], [], [], []
    with index.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("file", "ts", "device", "label") if c not in (reader.fieldnames or [])]
        if missing:
            raise FieldDataError(f"{index}: no column {', '.join(missing)}")
        for line, row in enumerate(reader, start=2):
            label = (row["label"] or "").strip()
            if not label:
                continue
            if label not in labels:
                raise FieldDataError(f"{index}:{line}: label {label!r}: expected one of {', '.join(labels)}")
            path = Path(folder) / row["file"]
            if Path(row["file"]).is_absolute() or ".." in Path(row["file"]).parts:
                raise FieldDataError(f"{index}:{line}: file {row['file']!r} must lie inside {folder}")
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is None:
                raise FieldDataError(f"{index}:{line}: {path} is missing or not an image")
            frames = np.array_split(img, int(shape[0]), axis=1) if clip else [img]
            frames = [cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames]
            X.append(np.stack(frames) if clip else frames[0])
            y.append(labels.index(label))
            try:
                ts.append(float(row["ts"]))
            except ValueError:
                raise FieldDataError(f"{index}:{line}: ts {row['ts']!r} is not a number") from None
            dev.append(row["device"] or "")
    order = np.argsort(np.asarray(ts), kind="stable")
    return {"X": np.asarray(X, dtype=np.uint8).reshape(-1, *[int(s) for s in shape])[order],
            "y": np.asarray(y, dtype=np.int64)[order], "ts": np.asarray(ts, dtype=np.float64)[order],
            "device": np.asarray(dev, dtype=str)[order]}


def split(ts: np.ndarray, device: np.ndarray, *, recent: float = 0.2, holdout_devices: float = 0.2,
          seed: int = 0) -> dict[str, np.ndarray]:
    """Boolean masks ``train``, ``holdout_clean``, ``holdout_drifted`` over rows with times ``ts`` and devices
    ``device``: the last ``recent`` share of the time range's rows is ``holdout_drifted``; of the earlier rows,
    those of ``holdout_devices`` of the devices (seeded choice, at least one when there are three or more)
    are ``holdout_clean``; the rest is ``train``. With one or two devices there is no device holdout: the
    earlier rows' last ``recent`` share (in time) is ``holdout_clean`` instead."""
    ts = np.asarray(ts, dtype=np.float64)
    device = np.asarray(device).astype(str)
    n = len(ts)
    if n == 0:
        raise FieldDataError("no labelled rows")
    cut = np.sort(ts)[min(n - 1, int(np.floor(n * (1 - recent))))]
    drifted = ts >= cut if recent > 0 else np.zeros(n, bool)
    earlier = ~drifted
    devices = np.unique(device[earlier])
    if len(devices) >= 3:
        k = max(1, int(round(len(devices) * holdout_devices)))
        held = np.random.default_rng(seed).choice(devices, k, replace=False)
        clean = earlier & np.isin(device, held)
    else:
        e = np.flatnonzero(earlier)
        t_cut = np.sort(ts[e])[min(len(e) - 1, int(np.floor(len(e) * (1 - recent))))] if len(e) else np.inf
        clean = earlier & (ts >= t_cut)
    return {"train": earlier & ~clean, "holdout_clean": clean, "holdout_drifted": drifted}


def write_splits(out: Path, data: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """``out/<split>.npz`` (X, y, ts, device) for each mask; FieldDataError when a split is empty or train has
    one class only. Returns the rows and positives per split."""
    counts = {}
    for name, mask in masks.items():
        if not mask.any():
            raise FieldDataError(f"split {name} is empty: label more data (see `edgeloop data show`)")
        save_split(out / f"{name}.npz", **{k: np.asarray(v)[mask] for k, v in data.items()})
        counts[name] = {"n": int(mask.sum()), "positives": int(data["y"][mask].sum())}
    if np.unique(data["y"][masks["train"]]).size < 2:
        raise FieldDataError("the train split holds one class only: label examples of both")
    return counts


def fit_table(prepared: Path, out: Path, estimator: Any, *, name: str, features: Sequence[str],
              labels: Sequence[str], threshold: float = 0.5, seed: int = 0, data: str = "field data"
              ) -> dict[str, Any]:
    """Fit a scikit-learn ``estimator`` (with ``predict_proba``) on ``prepared/train.npz`` and write it as the
    nodes load it: ``model.joblib``, the descriptor, a 16-row health sample with both classes."""
    import joblib

    from edge_runtime.modelkit import write_descriptor, write_sample

    d = load_split(prepared / "train.npz")
    X, y = d["X"].astype(np.float32), d["y"]
    t = time.perf_counter()
    estimator.fit(X, y)
    took = time.perf_counter() - t
    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, out / "model.joblib")
    write_descriptor(out, {"name": name, "kind": "sklearn", "input": "table", "features": list(features),
                           "labels": list(labels), "threshold": threshold, "data": data})
    write_sample(out, X[sample_rows(y, 16, seed)])
    return {"n": int(len(y)), "positives": int(y.sum()), "fit_seconds": round(took, 3)}


def fit_cnn(prepared: Path, out: Path, params: Mapping[str, Any], seed: int,
            progress: Callable[[int, float], None] | None = None, *, name: str, labels: Sequence[str],
            input: str, shape: Sequence[int], data: str = "field data") -> dict[str, Any]:
    """The reference models' small CNN (``params``: channels, epochs, lr, batch_size; ``min_steps``: at least this
    many batches, the epochs raised for a small train split) on ``prepared/train.npz`` (uint8 images or clips),
    written as the nodes load it."""
    import math

    from models import street

    p = dict(params)
    if p.get("min_steps"):  # a first model from a few dozen labels: enough gradient steps, whatever the epochs say
        n = len(load_split(prepared / "train.npz")["y"])
        p["epochs"] = max(int(p["epochs"]), math.ceil(int(p["min_steps"]) * int(p["batch_size"]) / max(n, 1)))
    return street.fit_cnn(prepared, out, p, seed, progress, name=name, labels=list(labels), input_kind=input,
                          shape=list(shape), xy=lambda p: (load_split(p)["X"], load_split(p)["y"]), data=data)


POOL = "unlabelled.npz"
"""In a prepared folder: the loop's uploads nobody labelled (``X``), for self-training (:func:`self_train`)."""


def load_pool(prepared: Path) -> np.ndarray | None:
    """The unlabelled rows :func:`models.stages.merge_labelled` left in ``prepared`` (None: there are none)."""
    path = Path(prepared) / POOL
    if not path.is_file():
        return None
    X = load_split(path)["X"]
    return X if len(X) else None


def self_train(fit: Callable[[np.ndarray, np.ndarray, np.ndarray | None], Any],
               proba: Callable[[Any, np.ndarray], np.ndarray], X: np.ndarray, y: np.ndarray, pool: np.ndarray, *,
               rounds: int = 2, threshold: float = 0.95, weight: float = 1.0) -> tuple[Any, dict[str, Any]]:
    """Self-training of a binary classifier: fit on ``(X, y)``, then ``rounds`` times refit with the rows of ``pool``
    the current model puts at P(1) >= ``threshold`` or <= 1 - ``threshold`` added as pseudo-labelled rows of
    weight ``weight``. ``fit(X, y, sample_weight)`` returns a model, ``proba(model, X)`` its P(1). Returns the
    last model and ``{"pseudo_labels", "pseudo_positives", "pool"}``.

    The loop labels a small share of what the edge uploaded; the rest, unlabelled, still shows what the inputs
    look like now. On the SYNTHETIC pump scenario (10% of 6,048 drifted windows labelled, three worlds, four
    draws each) two rounds at 0.95 raised the recovery of the oracle's drifted accuracy from 0.971 to 0.973-0.982
    (with the labelled rows counted 8-16 times)."""
    model = fit(X, y, None)
    kept = np.zeros(0, dtype=np.int64)
    for _ in range(max(0, int(rounds))):
        p1 = np.asarray(proba(model, pool), dtype=np.float64)
        sure = (p1 >= threshold) | (p1 <= 1.0 - threshold)
        if not sure.any():
            break
        kept = (p1[sure] >= 0.5).astype(y.dtype)
        w = np.concatenate([np.ones(len(y)), np.full(int(sure.sum()), float(weight))])
        model = fit(np.concatenate([X, pool[sure].astype(X.dtype)]), np.concatenate([y, kept]), w)
    return model, {"pseudo_labels": int(len(kept)), "pseudo_positives": int(kept.sum()), "pool": int(len(pool))}
