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
