"""What every reference model shares: params, seeds, splits on disk, binary metrics and DVC plot files.

Every dataset here is SYNTHETIC (see :mod:`models.synth`); metrics on it measure the models against the
generators' ground truth, not field performance.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

SPLITS: tuple[str, ...] = ("train", "holdout_clean", "holdout_drifted")


def resolve(defaults: Mapping[str, Any], params: Mapping[str, Any] | None, section: str) -> dict[str, Any]:
    """``defaults`` updated from ``params`` (or its ``section`` mapping, as in a shared params.yaml); unknown
    keys raise ``KeyError`` naming them; values are cast to the defaults' types."""
    params = dict(params or {})
    if isinstance(params.get(section), Mapping):
        params = dict(params[section])
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise KeyError(f"unknown {section} params: {unknown}")
    out = {}
    for k, v in defaults.items():
        got = params.get(k, v)
        out[k] = list(got) if isinstance(v, list) else type(v)(got)
    return out


def load_params(path: str | Path | None) -> dict[str, Any]:
    """A params.yaml as a mapping (``{}`` for ``None``)."""
    if path is None:
        return {}
    import yaml

    loaded = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of params")
    return loaded


def subseed(seed: int, *keys: int) -> int:
    """An independent 32-bit seed for ``(seed, *keys)``."""
    return int(np.random.SeedSequence([int(seed), *keys]).generate_state(1)[0])


def save_split(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def load_split(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def sample_rows(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` sorted row indices with both classes represented (a model's health-check sample)."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    k = min(len(pos), n // 2)
    return np.sort(np.r_[rng.choice(pos, k, replace=False), rng.choice(neg, min(len(neg), n - k), replace=False)])


def digest_dir(path: Path) -> str:
    """A content hash of the files under ``path`` (names and bytes): the data version a run trained on."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def binary_metrics(y: np.ndarray, score: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """precision, recall, f1, roc_auc (``None`` with one class), accuracy, confusion ``[[tn, fp], [fn, tp]]``."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score

    y = np.asarray(y).astype(np.int64)
    pred = np.asarray(pred).astype(np.int64)
    return {
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "roc_auc": float(roc_auc_score(y, score)) if np.unique(y).size == 2 else None,
        "accuracy": float(accuracy_score(y, pred)),
        "confusion": confusion_matrix(y, pred, labels=[0, 1]).tolist(),
        "n": int(y.size),
        "positives": int(y.sum()),
    }


def write_plots(folder: Path, split: str, y: np.ndarray, score: np.ndarray, pred: np.ndarray,
                labels: list[str]) -> list[Path]:
    """DVC plot data: ``confusion_<split>.csv`` (actual,predicted per row) and ``roc_<split>.csv``
    (fpr,tpr,threshold)."""
    from sklearn.metrics import roc_curve

    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / f"confusion_{split}.csv"
    with conf.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["actual", "predicted"])
        w.writerows([labels[int(a)], labels[int(p)]] for a, p in zip(y.tolist(), pred.tolist()))
    roc = folder / f"roc_{split}.csv"
    with roc.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["fpr", "tpr", "threshold"])
        if np.unique(y).size == 2:
            fpr, tpr, thr = roc_curve(y, score)
            thr = np.where(np.isfinite(thr), thr, 1.0)
            w.writerows(zip(np.round(fpr, 5).tolist(), np.round(tpr, 5).tolist(), np.round(thr, 5).tolist()))
    return [conf, roc]


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
