"""Collect and images that reach the hub after their records (records over MQTT, JPEGs over HTTP).

A real hub process; a node's token uploads an image model's inference record whose JPEG is not at the hub
yet. Collect must not fail or send it without its image: it waits (the watermark stays before it) and
sends it on the run after the image arrived; an image that never comes is given up after a grace period.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.hubclient import HubClient
from flows import collect, steps
from tests.kit.hub import ADMIN, HubProcess


@pytest.fixture
def env(tmp_path: Path) -> Any:
    ws = tmp_path / "ws"
    (ws / "artifacts" / "cam").mkdir(parents=True)
    (ws / "artifacts" / "cam" / "edgeloop-model.json").write_text(json.dumps({"labels": ["clear", "someone"],
                                                                              "input": "image"}))
    hub = HubProcess(tmp_path / "hub").start()
    try:
        token = hub.admin().post("/api/v1/nodes", {"name": "edge-c"})["token"]
        yield ws, hub, HubClient(hub.url, token)
    finally:
        hub.stop()


def upload(node: HubClient, media: str) -> str:
    uid = uuid.uuid4().hex
    item = {"id": uid, "kind": "record", "device": "cam-1", "ts": 1.8e9,
            "record": {"device": "cam-1", "ts": 1.8e9, "values": {"hit": 1, "hit_model": "cam:1",
                                                                  "hit_confidence": 0.6, "select": "low_confidence"}},
            "image": {"media": media, "size": 3}}
    assert node.post("/api/v1/nodes/edge-c/uploads", {"items": [item]})["stored"] == 1
    return uid


def test_a_record_whose_image_is_late_is_collected_once_the_image_is_there(env: Any, monkeypatch) -> None:
    ws, hub, node = env
    cfg = steps.LoopConfig(workspace=str(ws), hub_url=hub.url, hub_token=ADMIN, models=["cam"], max_label_share=1.0)
    uid = upload(node, "late.jpg")
    with cfg.state() as state:
        first = steps.collect(cfg, state, "cam")
        assert (first["items"], first["image_pending"], first["without_image"]) == ([], 1, 0)
        state.set_watermark("cam", first["watermark"])
        data = b"\xff\xd8\xff"
        assert node.put_media("edge-c", "late.jpg", data, sha256=hashlib.sha256(data).hexdigest(),
                              content_type="image/jpeg") in (200, 201)
        second = steps.collect(cfg, state, "cam")
        assert [(i["id"], i["image"]) for i in second["items"]] == [(uid, data)] and second["image_pending"] == 0
        state.set_watermark("cam", second["watermark"])
        monkeypatch.setattr(collect, "MEDIA_GRACE_S", 0.0)  # an image that never comes: given up, not waited for
        upload(node, "never.jpg")
        third = steps.collect(cfg, state, "cam")
        assert (third["items"], third["image_pending"], third["without_image"]) == ([], 0, 1)
        assert third["watermark"] > second["watermark"]
