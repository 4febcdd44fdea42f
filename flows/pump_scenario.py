"""The agile loop's pump scenario, SYNTHETIC throughout: shared by the end-to-end test, bench/agile_loop.py
and the demo.

- :func:`workspace`: a training workspace whose champion (version 1) has seen clean pumps only;
- :func:`field_windows`: what the pumps send after the deployment, drifted (ageing sensors), from another
  seed than the workspace's holdouts, with the generator's ground truth;
- :func:`write_node`: a node that scores each window with ``pump_anomaly`` (models come signed from the
  hub) and uploads every inference, marking low-confidence and a random few for labelling;
- :func:`send`, :func:`accuracy_at_node`, :func:`serving`: play the windows through the broker and read
  back what the node decided and which version it serves, from the hub;
- :func:`oracle_accuracy`: the reference for recovery, a model trained with every field window labelled.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

MODEL = "pump_anomaly"
LABELS = ["normal", "anomalous"]
PARAMS: dict[str, Any] = {
    "seed": 3,
    "pump_anomaly": {"train_pumps": 6, "train_hours": 24.0, "holdout_pumps": 3, "holdout_hours": 48.0,
                     "max_iter": 30},
    "loop": {"labelled_repeat": 4},
}


def features() -> list[str]:
    from models.pump_anomaly.features import FEATURES

    return list(FEATURES)


def workspace(root: Path, params: dict[str, Any] = PARAMS, *, track: bool = True) -> dict[str, Any]:
    """Generate, prepare, train and evaluate version 1 on clean SYNTHETIC pumps; returns its metrics."""
    import yaml

    from models import stages

    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    m = stages.model_module(MODEL)
    m.generate(root / "data" / "raw", stages.model_params(MODEL, params), stages.seed_of(params))
    stages.prepare(root, params, [MODEL])
    stages.train(root, MODEL, params, track=track)
    return stages.evaluate(root, MODEL, track=track)


def field_windows(tmp: Path, seed: int, params: dict[str, Any] = PARAMS) -> tuple[np.ndarray, np.ndarray]:
    """Drifted windows (features, truth) from ``seed``: pick one the workspace does not use."""
    from models import stages
    from models.common import load_split

    m = stages.model_module(MODEL)
    p = stages.model_params(MODEL, params)
    m.generate(tmp / "raw", p, seed)
    m.prepare(tmp / "raw", tmp / "prepared", p)
    d = load_split(tmp / "prepared" / "holdout_drifted.npz")
    return d["X"], d["y"]


def write_node(folder: Path, broker: int, hub: str, token: str, keys: Path, *, name: str = "edge-p",
               label_share: float = 0.05) -> Path:
    """node.yaml (+ products, devices, pipeline) for four pumps publishing feature windows."""
    import yaml

    feats = features()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "products.yaml").write_text(yaml.safe_dump({"products": [
        {"name": "pump_window", "properties": {f: {"type": "number"} for f in feats}}]}))
    (folder / "devices.yaml").write_text(yaml.safe_dump({"devices": [
        {"id": f"pump-{i}", "product": "pump_window", "connector": "mqtt", "topic": f"plant/pumps/{i}/window",
         "ts_field": "ts"} for i in range(4)]}))
    (folder / "score.yaml").write_text(yaml.safe_dump({"name": "score", "product": "pump_window", "steps": [
        {"device_input": {}},
        {"apply_model": {"model": MODEL, "inputs": feats, "output": "anomaly",
                         "select": {"low_confidence": 0.8, "random": label_share, "seed": 1}}},
        {"upload": {}}]}))
    cfg = folder / "node.yaml"
    cfg.write_text(yaml.safe_dump({
        "node": name, "broker": {"host": "127.0.0.1", "port": broker}, "store": {"path": "node.db"},
        "products": ["products.yaml"], "devices": ["devices.yaml"],
        "pipelines": [{"instance": "score", "pipeline": "score.yaml"}], "publish_telemetry": False,
        "models": {"store": "models", "trusted_keys": [str(keys / "signing.pub")]},
        "hub": {"url": hub, "token": token, "heartbeat": 0.5}, "outbox": {"path": "outbox.db"}}))
    return cfg


def send(pub: Any, X: np.ndarray, y: np.ndarray, t0: float) -> dict[tuple[str, float], int]:
    """Publish the windows as the four pumps would (QoS 1); returns the truth by (device, ts)."""
    from edge_runtime import jsonio

    feats = features()
    truth: dict[tuple[str, float], int] = {}
    for i, row in enumerate(X):
        dev, ts = f"pump-{i % 4}", t0 + 600.0 * (i // 4)
        truth[(dev, ts)] = int(y[i])
        pub.publish(f"plant/pumps/{dev.split('-')[1]}/window",
                    jsonio.dumps({"ts": ts, **{f: float(v) for f, v in zip(feats, row)}}), qos=1)
    return truth


def accuracy_at_node(uploads: list[dict[str, Any]], truth: dict[tuple[str, float], int], version: str) -> float:
    """The share of the node's uploaded inferences on ``truth``'s windows that match the ground truth.
    Raises when one was made by another version than ``version`` or when some are missing."""
    from edge_runtime.modelkit import model_outputs
    from hub.rollouts import record_values

    hits = n = 0
    for u in uploads:
        key = (u["device"], u["ts"])
        if key not in truth:
            continue
        values = dict(record_values(u))
        outs = dict(model_outputs(values, MODEL))
        if outs != {"anomaly": version}:
            raise ValueError(f"upload {u.get('id')}: made by {outs}, expected anomaly by version {version}")
        got = values["anomaly"]
        n += 1
        hits += (LABELS.index(got) if isinstance(got, str) else int(got)) == truth[key]
    if n != len(truth):
        raise ValueError(f"{n} of {len(truth)} inferences at the hub")
    return hits / n


def serving(admin: Any, node: str = "edge-p") -> str | None:
    """The version of ``pump_anomaly`` ``node`` reports in its heartbeats."""
    view = next((n for n in admin.get("/api/v1/nodes") if n["name"] == node), {})
    per = ((view.get("models") or {}).get("models") or {}).get(MODEL) or {}
    return str(per["active"]) if per.get("active") is not None else None


def oracle_accuracy(root: Path, work: Path, windows: list[tuple[np.ndarray, np.ndarray]],
                    params: dict[str, Any] = PARAMS) -> dict[str, Any]:
    """Train on the workspace's train split plus EVERY field window labelled (what unlimited labelling
    would give), without MLflow, in a copy under ``work``; its clean and drifted holdout accuracy."""
    from models import stages

    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(root / "data" / "raw", work / "data" / "raw")
    folder = work / "data" / "labelled" / MODEL
    folder.mkdir(parents=True)
    for i, (X, y) in enumerate(windows):
        np.savez_compressed(folder / f"all-{i}.npz", X=X, y=y)
    stages.prepare(work, params, [MODEL])
    stages.train(work, MODEL, params, track=False)
    m = stages.evaluate(work, MODEL, track=False)
    return {"clean": m["clean"]["accuracy"], "drifted": m["drifted"]["accuracy"],
            "labels": int(sum(len(y) for _, y in windows))}
