"""The agile loop's camera scenario, SYNTHETIC throughout: shared by bench/agile_loop.py and the tests.

The ``intrusion`` champion (version 1) was trained on day clips only; after its deployment the street
cameras show night and rain (drift). The node runs the app's sewage-dumping pipeline with one extra step:
one frame in ``every`` uploads its drain crop (a JPEG) with the intrusion decision, and the loop's label
step sends the chosen crops to Label Studio as images; a SIMULATED annotator answers from the generator's
per-frame truth (``person_at_drain``). Harvest turns the labelled crops back into training crops.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

MODEL = "intrusion"
LABELS = ["clear", "person"]
PARAMS: dict[str, Any] = {
    "seed": 0, "scenes": {"frames": 300, "train_clips": 4, "clean_clips": 1, "drifted_clips": 1,
                          "drifted_variants": ["night", "rain"]},
    "pump_anomaly": {"train_pumps": 2, "train_hours": 2.0, "holdout_pumps": 1, "holdout_hours": 2.0},
    "intrusion": {"epochs": 4}, "activity": {"epochs": 4},
    "loop": {"labelled_repeat": 8},  # each labelled crop once as it came, 7 times under another light (its augment)
}
"""The app's small training set (edgeloop.devkit.cameras.MODEL_PARAMS): 4 day clips, holdouts of one day
clip (clean) and one night and one rain clip (drifted)."""


DRIFTS: dict[str, tuple[str, ...]] = {"mixed": ("night", "rain"), "night": ("night", "night"),
                                      "rain": ("rain", "rain"), "other_bucket": ("other_bucket", "other_bucket")}
"""The benchmark's drift variants: the field cameras' scene variants (two cameras each); the workspace's drifted
holdout holds one clip of each distinct one (``mixed``: the default, night and rain)."""


def variant_params(variant: str = "mixed", seed: int = 0) -> dict[str, Any]:
    """:data:`PARAMS` with the drifted holdout of ``variant`` (:data:`DRIFTS`) and the world's ``seed``."""
    if variant not in DRIFTS:
        raise ValueError(f"unknown drift variant {variant!r}: expected one of {', '.join(DRIFTS)}")
    params = copy.deepcopy(PARAMS)
    params["seed"] = int(seed)
    params["scenes"]["drifted_variants"] = list(dict.fromkeys(DRIFTS[variant]))
    return params


def workspace(root: Path, params: dict[str, Any] = PARAMS) -> dict[str, Any]:
    """Generate the clips, train and evaluate intrusion and activity (tracked: version 1 of each is the
    champion); returns intrusion's metrics."""
    from models import stages

    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    stages.generate(root, params)
    stages.prepare(root, params, [MODEL, "activity"])
    for name in (MODEL, "activity"):
        stages.train(root, name, params)
    stages.evaluate(root, "activity")
    return stages.evaluate(root, MODEL)


def field_cameras(out: Path, variants: tuple[str, ...] = ("night", "rain"), *, frames: int = 600,
                  seed: int = 77) -> dict[str, Any]:
    """One camera per variant (SYNTHETIC, other seeds than the workspace's), as file sources played as fast
    as the node takes them; devices.yaml and the app's pipeline with each camera's drain region. A variant
    named twice gives two cameras (``cam-<variant>-<i>``). Returns ``{camera: truth}``."""
    from apps.sewage_dumping.generate import APP
    from models.common import subseed
    from models.street import render_clip

    out.mkdir(parents=True, exist_ok=True)
    truths, devices, regions = {}, [], {}
    for i, variant in enumerate(variants, 1):
        cam = f"cam-{variant}" if variants.count(variant) == 1 else f"cam-{variant}-{i}"
        truth = render_clip(out / f"{cam}.mp4", variant=variant, seed=subseed(seed, 30, i), frames=frames)
        truths[cam] = truth
        regions[cam] = {"drain": truth["frames"][0]["drain_roi"]}
        devices.append({"id": cam, "product": "street_camera", "connector": "video", "file": f"{cam}.mp4",
                        "fps": 10.0, "realtime": False, "loop": False})
    (out / "devices.yaml").write_text(yaml.safe_dump({"devices": devices}, sort_keys=False))
    (out / "products.yaml").write_text((APP / "products.yaml").read_text())
    spec = yaml.safe_load((APP / "pipeline.yaml").read_text())
    for step in spec["steps"]:
        if "region_of_interest" in step:
            step["region_of_interest"]["per_device"] = regions
    (out / "pipeline.yaml").write_text(yaml.safe_dump(loop_pipeline(spec), sort_keys=False))
    return truths


def loop_pipeline(spec: dict[str, Any], every: int = 2) -> dict[str, Any]:
    """The app's pipeline with ``upload: {every, image: crop}`` right after the intrusion model: what the
    loop labels (the decision and the crop it was made on)."""
    spec = copy.deepcopy(spec)
    steps = spec["steps"]
    at = next(i for i, s in enumerate(steps) if (s.get("apply_model") or {}).get("model") == MODEL)
    steps.insert(at + 1, {"upload": {"every": every, "image": "crop"}})
    return spec


def write_node(folder: Path, broker: int, hub: str, token: str, keys: Path, *, name: str = "edge-cam") -> Path:
    cfg = folder / "node.yaml"
    cfg.write_text(yaml.safe_dump({
        "node": name, "broker": {"host": "127.0.0.1", "port": broker}, "store": {"path": f"{name}.db"},
        "products": ["products.yaml"], "devices": ["devices.yaml"],
        "pipelines": [{"instance": "sewage", "pipeline": "pipeline.yaml"}], "publish_telemetry": False,
        "models": {"store": "models", "trusted_keys": [str(keys / "signing.pub")]},
        "hub": {"url": hub, "token": token, "heartbeat": 0.5}, "outbox": {"path": f"{name}-outbox.db"}}))
    return cfg


def truth_by_frame(truths: dict[str, Any]) -> dict[tuple[str, int], int]:
    return {(cam, int(f["index"])): int(bool(f["person_at_drain"])) for cam, t in truths.items() for f in t["frames"]}


def label_of(truth: dict[tuple[str, int], int], values: dict[str, Any]) -> str:
    """What the SIMULATED annotator answers for a task: the truth of the frame the crop came from."""
    return LABELS[truth[(str(values["device"]), int(values["frame_index"]))]]


def accuracy_at_node(uploads: list[dict[str, Any]], truth: dict[tuple[str, int], int], version: str,
                     cameras: set[str]) -> dict[str, Any]:
    """The node's uploaded intrusion decisions (made by ``version``) on ``cameras`` against the truth."""
    from edge_runtime.modelkit import model_outputs
    from hub.client import record_values

    hits = n = 0
    for u in uploads:
        if u.get("device") not in cameras:
            continue
        values = dict(record_values(u))
        outs = dict(model_outputs(values, MODEL))
        if outs.get("intrusion") != version:
            continue
        got = values["intrusion"]
        n += 1
        hits += (LABELS.index(got) if isinstance(got, str) else int(got)) == truth[(u["device"], int(values["frame_index"]))]
    return {"accuracy": hits / n if n else None, "records": n}


def oracle_accuracy(root: Path, work: Path, fields: list[Path], params: dict[str, Any] = PARAMS) -> dict[str, Any]:
    """Train intrusion on the workspace's train split plus EVERY frame of the field cameras in ``fields``
    labelled (their drain crops, as prepare makes them), without MLflow, in a copy under ``work``; its
    clean and drifted holdout accuracy."""
    import shutil

    import numpy as np

    from models import stages
    from models.street import roi_crops

    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(root / "data" / "raw", work / "data" / "raw")
    folder = work / "data" / "labelled" / MODEL
    folder.mkdir(parents=True)
    size = int(stages.model_params(MODEL, params)["size"])
    n = 0
    for i, field in enumerate(fields):
        for j, video in enumerate(sorted(field.glob("*.mp4"))):
            crops, truth = roi_crops(video, size)
            y = np.array([int(bool(t["person_at_drain"])) for t in truth], dtype=np.int64)
            np.savez_compressed(folder / f"all-{i}-{j}.npz", X=crops, y=y)
            n += len(y)
    stages.prepare(work, params, [MODEL])
    stages.train(work, MODEL, params, track=False)
    m = stages.evaluate(work, MODEL, track=False)
    return {"clean": m["clean"]["accuracy"], "drifted": m["drifted"]["accuracy"], "labels": n}
