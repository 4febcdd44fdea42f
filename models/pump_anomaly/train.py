"""Train and evaluate ``pump_anomaly`` on SYNTHETIC telemetry (see :mod:`models.synth.telemetry`).

``python -m models.pump_anomaly.train --out DIR [--seed N] [--params params.yaml]`` builds the datasets,
trains, evaluates on a clean and an ``"ageing"``-drifted holdout and writes ``DIR/metrics.json`` and
``DIR/model.joblib`` (packaging into a signed bundle happens later, elsewhere).

All three datasets come from separate seeds derived from ``seed``; same seed and params, same model and
same predictions.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from models.common import binary_metrics, load_params, load_split, sample_rows, save_split
from models.pump_anomaly.features import FEATURES, matrix
from models.synth import generate_telemetry, windows
from models.synth.telemetry import Telemetry

DEFAULTS: dict[str, Any] = {
    # data (synthetic)
    "window_s": 600.0,  # tumbling window length, seconds (the edge pipeline's time_window size)
    "rate_hz": 0.1,  # one sample every 10 s per pump
    "fault_rate": 2.0,  # expected fault events per pump and day
    "train_hours": 72.0,
    "train_pumps": 40,  # many pumps: each has its own ambient, rated current and vibration base
    "holdout_hours": 168.0,
    "holdout_pumps": 6,
    # model: HistGradientBoostingClassifier
    "max_iter": 50,  # 50 trees of <= 63 leaves at 0.2: the accuracy of 200 x 31 at 0.1, 6x faster inference
    "learning_rate": 0.2,
    "max_leaf_nodes": 63,
    "min_samples_leaf": 20,
    "l2_regularization": 0.0,
    "threshold": 0.5,  # decision threshold on P(anomalous)
    # self-training on the loop's unlabelled uploads (prepared/unlabelled.npz, when the loop left some): rounds
    # of refitting with the windows the model itself is this sure of as pseudo-labels (0: none)
    "self_training": 2,
    "pseudo_threshold": 0.95,
}
"""Default parameters; :func:`resolve_params` overrides them from a params.yaml-like mapping."""

_DATASETS = ("train", "holdout_clean", "holdout_drifted")


def resolve_params(params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:data:`DEFAULTS` updated with ``params`` (unknown keys raise ``KeyError``), values cast to the
    defaults' types.  A ``pump_anomaly`` section, as in a shared params.yaml, is used when present."""
    params = dict(params or {})
    if isinstance(params.get("pump_anomaly"), Mapping):
        params = dict(params["pump_anomaly"])
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise KeyError(f"unknown pump_anomaly params: {unknown}")
    return {k: type(v)(params.get(k, v)) for k, v in DEFAULTS.items()}


def _seed(seed: int, k: int) -> int:
    """An independent 32-bit seed for dataset ``k`` of run ``seed`` (run seeds do not share datasets)."""
    return int(np.random.SeedSequence([int(seed), k]).generate_state(1)[0])


def make_datasets(seed: int, params: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """``{"train", "holdout_clean", "holdout_drifted"}``, each ``{"X", "y", "windows", "seed"}``.

    ``X`` is the float32 :func:`~models.pump_anomaly.features.matrix`, ``y`` the int window label
    (1: a fault is active in the window), ``windows`` the full :func:`models.synth.windows` columns.
    The drifted holdout uses ``drift="ageing"``.
    """
    p = resolve_params(params)
    specs = {
        "train": (p["train_pumps"], p["train_hours"], None),
        "holdout_clean": (p["holdout_pumps"], p["holdout_hours"], None),
        "holdout_drifted": (p["holdout_pumps"], p["holdout_hours"], "ageing"),
    }
    out: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(_DATASETS):
        n_pumps, hours, drift = specs[name]
        s = _seed(seed, k)
        data = generate_telemetry(n_pumps, hours, rate_hz=p["rate_hz"], seed=s, drift=drift,
                                  fault_rate=p["fault_rate"])
        w = windows(data, p["window_s"])
        out[name] = {"X": matrix(w), "y": w["anomalous"].astype(np.int64), "windows": w, "seed": s}
    return out


def train(X: np.ndarray, y: np.ndarray, params: Mapping[str, Any] | None = None, *,
          seed: int = 0, sample_weight: np.ndarray | None = None) -> HistGradientBoostingClassifier:
    """Fit a HistGradientBoostingClassifier (no early stopping: deterministic). No scaler: trees split on
    binned values, which per-feature scaling does not change, and inference is a third faster without it."""
    p = resolve_params(params)
    model = HistGradientBoostingClassifier(
        max_iter=p["max_iter"], learning_rate=p["learning_rate"], max_leaf_nodes=p["max_leaf_nodes"],
        min_samples_leaf=p["min_samples_leaf"], l2_regularization=p["l2_regularization"],
        early_stopping=False, random_state=seed)
    return model.fit(np.asarray(X, dtype=np.float32), np.asarray(y), sample_weight=sample_weight)


def predict(model: HistGradientBoostingClassifier, X: np.ndarray, threshold: float = DEFAULTS["threshold"]) -> np.ndarray:
    """0/1 predictions at ``threshold`` on P(anomalous)."""
    return (model.predict_proba(np.asarray(X, dtype=np.float32))[:, 1] >= threshold).astype(np.int64)


def evaluate(model: HistGradientBoostingClassifier, X: np.ndarray, y: np.ndarray, threshold: float = DEFAULTS["threshold"]
             ) -> dict[str, Any]:
    """precision, recall, f1, roc_auc (``None`` when ``y`` has one class), accuracy, confusion (``[[tn,
    fp], [fn, tp]]``), n and positives."""
    score = model.predict_proba(np.asarray(X, dtype=np.float32))[:, 1]
    return binary_metrics(y, score, (score >= threshold).astype(np.int64))


def run(seed: int, params: Mapping[str, Any] | None = None) -> tuple[HistGradientBoostingClassifier, dict[str, Any]]:
    """Datasets, training and both evaluations: ``(model, metrics)``."""
    p = resolve_params(params)
    t = time.perf_counter()
    data = make_datasets(seed, p)
    data_s = time.perf_counter() - t
    t = time.perf_counter()
    model = train(data["train"]["X"], data["train"]["y"], p, seed=seed)
    train_s = time.perf_counter() - t
    metrics = {
        "model": "pump_anomaly",
        "data": "synthetic (models.synth.telemetry); not field performance",
        "seed": int(seed),
        "params": p,
        "features": list(FEATURES),
        "seeds": {name: data[name]["seed"] for name in _DATASETS},
        "train": {"n": int(data["train"]["y"].size), "positives": int(data["train"]["y"].sum()),
                  "data_seconds": round(data_s, 3), "fit_seconds": round(train_s, 3)},
        "clean": evaluate(model, data["holdout_clean"]["X"], data["holdout_clean"]["y"], p["threshold"]),
        "drifted": evaluate(model, data["holdout_drifted"]["X"], data["holdout_drifted"]["y"], p["threshold"]),
    }
    return model, metrics


# -- DVC stages (models.stages) ------------------------------------------------------------------
NAME = "pump_anomaly"
LABELS = ["normal", "anomalous"]
INPUT = "table"
DATA = "synthetic (models.synth.telemetry)"


def generate(raw: Path, params: Mapping[str, Any], seed: int, progress: Any = None) -> None:
    """Raw SYNTHETIC telemetry per split: ``raw/pump/<split>.npz`` (device, ts, channels, fault label); ``params``:
    params.yaml (its ``pump_anomaly`` section) or the section itself."""
    p = resolve_params(params)
    specs = {"train": (p["train_pumps"], p["train_hours"], None),
             "holdout_clean": (p["holdout_pumps"], p["holdout_hours"], None),
             "holdout_drifted": (p["holdout_pumps"], p["holdout_hours"], "ageing")}
    for k, name in enumerate(_DATASETS):
        n_pumps, hours, drift = specs[name]
        data = generate_telemetry(n_pumps, hours, rate_hz=p["rate_hz"], seed=_seed(seed, k), drift=drift,
                                  fault_rate=p["fault_rate"])
        save_split(raw / "pump" / f"{name}.npz", **data.columns())
    if progress:
        progress("pump telemetry")


def prepare(raw: Path, out: Path, params: Mapping[str, Any]) -> None:
    """Window features (what the edge's time_window + aggregate compute) and labels per split."""
    p = resolve_params(params)
    for name in _DATASETS:
        w = windows(Telemetry(**load_split(raw / "pump" / f"{name}.npz")), p["window_s"])
        save_split(out / f"{name}.npz", X=matrix(w), y=w["anomalous"].astype(np.int64))


def xy(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = load_split(path)
    return d["X"], d["y"]


def fit(prepared: Path, out: Path, params: Mapping[str, Any], seed: int, progress: Any = None) -> dict[str, Any]:
    """Train on ``prepared/train.npz``; write the model artifact (joblib, descriptor, health sample) to ``out``."""
    import joblib

    from edge_runtime.modelkit import write_descriptor, write_sample
    from models.kit import load_pool, self_train

    p = resolve_params(params)
    X, y = xy(prepared / "train.npz")
    t = time.perf_counter()
    pool = load_pool(prepared)
    if pool is not None and p["self_training"] > 0:
        model, pseudo = self_train(lambda X, y, w: train(X, y, p, seed=seed, sample_weight=w),
                                   lambda m, X: m.predict_proba(np.asarray(X, dtype=np.float32))[:, 1], X, y, pool,
                                   rounds=p["self_training"], threshold=p["pseudo_threshold"])
    else:
        model, pseudo = train(X, y, p, seed=seed), {}
    took = time.perf_counter() - t
    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, out / "model.joblib")
    write_descriptor(out, {"name": NAME, "kind": "sklearn", "input": INPUT, "features": list(FEATURES),
                           "labels": LABELS, "threshold": p["threshold"],
                           "data": "synthetic (models.synth.telemetry)"})
    write_sample(out, X[sample_rows(y, 16, seed)])
    if progress:
        progress(1, 0.0)
    return {"n": int(y.size), "positives": int(y.sum()), "fit_seconds": round(took, 3), **pseudo}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.pump_anomaly.train", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output directory for metrics.json and model.joblib")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--params", default=None, help="params.yaml (top level or a pump_anomaly: section)")
    args = ap.parse_args(argv)
    import joblib

    model, metrics = run(args.seed, load_params(args.params))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, out / "model.joblib")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    c, d = metrics["clean"], metrics["drifted"]
    print(f"pump_anomaly seed={args.seed}: fit {metrics['train']['fit_seconds']:.2f}s on {metrics['train']['n']} "
          f"windows; clean f1={c['f1']:.3f} auc={c['roc_auc']}; drifted f1={d['f1']:.3f} auc={d['roc_auc']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
