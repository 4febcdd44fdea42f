"""The loop's ``harvest`` step: finished annotations from Label Studio become a new DVC version of the labelled data
(features of table models, the images of image and clip models fetched back from the hub)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .collect import MEDIA_FIELD, descriptor
from .config import LoopConfig, LoopError, hub_call
from .dvc import version_data
from .state import LoopState

__all__ = ["harvest"]


def harvest(cfg: LoopConfig, state: LoopState, model: str, iteration: int) -> dict[str, Any]:
    """Finished annotations not harvested before -> ``data/labelled/<model>/batch-<iteration>-<n>.npz``
    (features and labels of table models), then ``dvc add data/labelled`` + ``dvc push``: a new data
    version (its hash is returned and goes into the MLflow run). Annotations with an unknown label are
    skipped and reported."""
    d = descriptor(cfg, model)
    ls = cfg.labelling()
    project = ls.ensure_project(model, "image" if d.get("input") in ("image", "clip") else "table",
                                list(d.get("labels") or ["0", "1"]))
    labelled, problems = ls.harvest(project)
    new_ids = state.new_annotations(r["annotation_id"] for r in labelled)
    rows = [r for r in labelled if r["annotation_id"] in new_ids]
    labels = list(d.get("labels") or ["0", "1"])
    out: dict[str, Any] = {"project": project, "new_labels": 0, "problems": problems, "data_version": None}
    if not rows:
        return out
    field = field_folder(cfg, model)
    if field is not None:
        return _harvest_field(cfg, state, model, iteration, d, rows, labels, field, out)
    values = state.sent_values(r["id"] for r in rows)
    if d.get("input") == "table":
        features = d["features"]
        usable = [r for r in rows if r["id"] in values and all(f in values[r["id"]] for f in features)]
        X = np.array([[float(values[r["id"]][f]) for f in features] for r in usable], dtype=np.float64)
        lacks = "the uploaded record lacks the model's features"
    elif d.get("input") in ("image", "clip"):
        usable, crops = [], []
        for r in rows:
            crop = _labelled_image(cfg, values.get(r["id"], {}).get(MEDIA_FIELD), d["shape"], d["input"] == "clip")
            if crop is not None:
                usable.append(r)
                crops.append(crop)
        X = np.stack(crops) if crops else np.zeros((0, *d["shape"]), dtype=np.uint8)
        lacks = "its image is not at the hub or does not decode"
    else:
        raise LoopError(f"harvesting {d.get('input')} labels of {model} into training data is not built yet; "
                        "its annotations stay in Label Studio")
    for r in rows:
        if r not in usable:
            problems.append(f"task {r.get('task_id')}: {lacks}")
    if usable:
        y = np.array([labels.index(r["label"]) for r in usable], dtype=np.int64)
        batch = f"batch-{iteration:04d}-{int(time.time())}"
        folder = cfg.root / "data" / "labelled" / model
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / f"{batch}.npz", X=X, y=y, ids=np.array([r["id"] for r in usable]))
        out["data_version"] = version_data(cfg)
        state.mark_harvested(model, batch, usable)
        out.update(new_labels=len(usable), batch=batch, positives=int(y.sum()))
    return out


def field_folder(cfg: LoopConfig, model: str) -> str | None:
    """``data/field/<model>``-like folder (relative) when ``model`` learns from field data (its ``data`` in the
    workspace's params.yaml is not the generated ``data/raw``); None for the generated-data models, whose labels
    go to data/labelled and join their train split."""
    from models.common import load_params
    from models.stages import raw_data

    params_file = cfg.root / "params.yaml"
    folder = raw_data(cfg.root, model, load_params(params_file) if params_file.exists() else {})
    return None if folder == cfg.root / "data" / "raw" else str(folder.relative_to(cfg.root))


def _harvest_field(cfg: LoopConfig, state: LoopState, model: str, iteration: int, d: dict[str, Any],
                   rows: list[dict[str, Any]], labels: list[str], folder: str, out: dict[str, Any]) -> dict[str, Any]:
    """Labelled uploads into the model's field data, as ``models.kit`` reads it (ts, device, label with the
    features of a table model; the image as the hub has it, listed in labels.csv, for an image model): the
    plug-in's prepare splits it by time and device, so the loop's labels make the holdouts too."""
    import csv

    sent = state.sent_rows(r["id"] for r in rows)
    root = cfg.root / folder
    root.mkdir(parents=True, exist_ok=True)
    usable: list[dict[str, Any]] = []
    lacks = ""
    batch = f"harvest-{iteration:04d}-{int(time.time())}"
    if d.get("input") == "table":
        features = list(d.get("features") or [])
        lines = []
        for r in rows:
            s = sent.get(r["id"])
            if s is None or not all(isinstance(s["values"].get(f), (int, float)) for f in features):
                continue
            usable.append(r)
            lines.append([s["ts"], s["device"], *[s["values"][f] for f in features], r["label"]])
        lacks = "the uploaded record lacks the model's features"
        if lines:
            with (root / f"{batch}.csv").open("w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["ts", "device", *features, "label"])
                w.writerows(lines)
    else:
        from edge_runtime.hubclient import HubError

        index = root / "labels.csv"
        new = not index.exists()
        (root / "images").mkdir(exist_ok=True)
        with index.open("a", newline="") as fh:
            w = csv.writer(fh)
            if new:
                w.writerow(["file", "ts", "device", "label"])
            for r in rows:
                s = sent.get(r["id"])
                ref = (s or {}).get("values", {}).get(MEDIA_FIELD)
                if not s or not ref:
                    continue
                try:
                    data = hub_call(cfg, lambda ref=ref: cfg.hub().get(f"/api/v1/media/{ref}"))
                except HubError:
                    continue
                if not isinstance(data, (bytes, bytearray)) or not data:
                    continue
                name = "images/" + "".join(c if c.isalnum() or c in "-_" else "_" for c in str(r["id"]))[:120] + ".jpg"
                (root / name).write_bytes(bytes(data))
                w.writerow([name, s["ts"], s["device"], r["label"]])
                usable.append(r)
        lacks = "its image is not at the hub"
    for r in rows:
        if r not in usable:
            out["problems"].append(f"task {r.get('task_id')}: {lacks}")
    if usable:
        out["data_version"] = version_data(cfg, folder)
        state.mark_harvested(model, batch, usable)
        out.update(new_labels=len(usable), batch=batch, field=folder,
                   positives=sum(labels.index(r["label"]) == 1 for r in usable if r["label"] in labels))
    return out


def _labelled_image(cfg: LoopConfig, ref: str | None, shape: list[int], clip: bool = False) -> np.ndarray | None:
    """The image a person labelled, from the hub, as the model's input (uint8, ``shape``, the node's channel
    order: OpenCV decodes what OpenCV encoded at the node); None when it is gone or does not decode. A clip
    model's ``shape`` is (frames, height, width, channels) and its image the node's filmstrip (the frames
    side by side, oldest first), cut back into its frames."""
    import cv2

    from edge_runtime.hubclient import HubError

    if not ref:
        return None
    try:
        data = hub_call(cfg, lambda: cfg.hub().get(f"/api/v1/media/{ref}"))
    except HubError:
        return None
    img = cv2.imdecode(np.frombuffer(bytes(data), dtype=np.uint8), cv2.IMREAD_COLOR) \
        if isinstance(data, (bytes, bytearray)) else None
    if img is None:
        return None
    frames = np.array_split(img, int(shape[0]), axis=1) if clip else [img]
    h, w = (int(shape[1]), int(shape[2])) if clip else (int(shape[0]), int(shape[1]))
    if min(f.shape[1] for f in frames) == 0:
        return None  # narrower than the clip has frames: not a filmstrip of this model
    frames = [f if f.shape[:2] == (h, w) else cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames]
    return (np.stack(frames) if clip else frames[0]).astype(np.uint8)
