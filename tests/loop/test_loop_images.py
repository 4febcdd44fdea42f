"""The agile loop for an image model and a clip model, against a real hub process and a real Label Studio:
decisions a node uploaded with their crop or clip (JPEG media; a clip as the node's filmstrip) are collected
with their images, shown in Label Studio as images, labelled (a SIMULATED annotator), and harvested back into
training crops or clips of the model's input shape.

The crops are SYNTHETIC uniform colours (so that a pixel check after JPEG and resizing is exact enough); each
frame of a clip has its own colour, so a clip cut back in the wrong place or order is seen."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_runtime.hubclient import HubClient
from edge_runtime.modelkit import write_descriptor
from models.common import load_split
from tests.kit.hub import ADMIN, HubProcess

pytestmark = [pytest.mark.labelstudio, pytest.mark.timeout(300)]

LABELS = ["clear", "person"]


FRAMES = 3


def colour(i: int, frame: int = 0) -> tuple[int, int, int]:
    return (10 * i, 255 - 10 * i, 40 + 70 * frame)


def media(i: int, kind: str) -> bytes:
    """What the node uploads: a 48x48 crop, or a clip of FRAMES of them as the upload operator encodes it."""
    from edge_runtime.operators.images import media_jpeg

    class Ctx:
        desensitiser = None

    if kind == "image":
        return media_jpeg(Ctx(), np.full((48, 48, 3), colour(i), np.uint8), 95, "test")
    return media_jpeg(Ctx(), np.stack([np.full((48, 48, 3), colour(i, f), np.uint8) for f in range(FRAMES)]), 95, "test")


@pytest.mark.parametrize("kind", ["image", "clip"])
def test_image_decisions_go_to_label_studio_as_images_and_come_back_as_training_crops(
        label_studio: Any, tmp_path: Path, kind: str) -> None:
    from edgeloop.devkit.annotator import simulated_annotator
    from flows import steps

    ws = tmp_path / "ws"
    model = "intrusion" if kind == "image" else "activity"  # one Label Studio project each
    art = ws / "artifacts" / model
    art.mkdir(parents=True)
    shape = [32, 32, 3] if kind == "image" else [FRAMES, 32, 32, 3]
    write_descriptor(art, {"name": model, "kind": "torch-cnn", "input": kind, "shape": shape, "labels": LABELS})
    hub = HubProcess(tmp_path / "hub").start()
    try:
        admin = hub.admin()
        token = admin.post("/api/v1/nodes", {"name": "c1", "group": "cams"})["token"]
        node = HubClient(hub.url, token)
        truth, items = {}, []
        for i in range(20):
            data = media(i, kind)
            mid = f"record-{i}.jpg"
            assert node.put_media("c1", mid, data, sha256=hashlib.sha256(data).hexdigest(),
                                  content_type="image/jpeg", upload_id=f"c1-{i}") in (200, 201)
            truth[f"c1-{i}"] = LABELS[i % 3 == 0]
            values = {"frame_index": i, model: "clear", f"{model}_confidence": 0.6,
                      f"{model}_model": f"{model}:1", **({"select": "low_confidence"} if i % 2 else {})}
            items.append({"id": f"c1-{i}", "kind": "record", "device": "cam-1", "seq": i, "ts": 1.7e9 + i,
                          "image": {"content_type": "image/jpeg", "size": len(data), "media": mid},
                          "record": {"device": "cam-1", "ts": 1.7e9 + i, "values": values}})
        # a decision that lost its image cannot be labelled: it is counted out, not sent
        items.append({"id": "c1-x", "kind": "record", "device": "cam-1", "seq": 99, "ts": 1.7e9 + 99,
                      "record": {"device": "cam-1", "ts": 1.7e9 + 99, "values": {
                          "frame_index": 99, model: "clear", f"{model}_model": f"{model}:1"}}})
        node.post("/api/v1/nodes/c1/uploads", {"items": items})

        cfg = steps.LoopConfig(workspace=str(ws), hub_url=hub.url, hub_token=ADMIN, label_studio_url=label_studio.url,
                               label_studio_token=label_studio.token, models=[model], max_label_share=0.5,
                               min_labels=1)
        with cfg.state() as state:
            got = steps.collect(cfg, state, model)
            assert got["uploads"] == 20 and got["without_image"] == 1 and len(got["items"]) == 10 and got["hard"] == 5 and got["random"] == 5
            for it in got["items"]:
                i = int(it["id"].split("-")[1])
                img = cv2.imdecode(np.frombuffer(it["image"], np.uint8), cv2.IMREAD_COLOR)
                assert img.shape[:2] == ((48, 48) if kind == "image" else (48, 48 * FRAMES))
                assert np.abs(img[:, :48].reshape(-1, 3).mean(0) - colour(i)).max() < 4  # its own, from the hub
            sent = steps.label(cfg, state, model, got)
        assert sent["sent"] == 10
        labelling = cfg.labelling()
        tasks = list(labelling.tasks(sent["project"]))
        assert len(tasks) == 10 and all(str(t["data"]["image"]).startswith("data:image/jpeg;base64,") for t in tasks)
        assert simulated_annotator(labelling, sent["project"], lambda d: truth[d["edgeloop_id"]]) == 10
        with cfg.state() as state:
            h = steps.harvest(cfg, state, model, 1)
        assert h["new_labels"] == 10 and h["problems"] == []
        batch = load_split(ws / "data" / "labelled" / model / f"{h['batch']}.npz")
        X, y, ids = batch["X"], batch["y"], [str(x) for x in batch["ids"]]
        assert X.shape == (10, *shape) and X.dtype == np.uint8  # the model's input shape
        for x, label, uid in zip(X, y, ids):
            assert LABELS[int(label)] == truth[uid]
            for f, frame in enumerate(x if kind == "clip" else [x]):  # each frame its own colour, in order
                assert np.abs(frame.reshape(-1, 3).mean(0) - colour(int(uid.split("-")[1]), f)).max() < 4
    finally:
        hub.stop()
