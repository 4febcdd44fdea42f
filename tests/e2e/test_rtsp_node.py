"""A live RTSP camera through an edge node to the hub: a real GStreamer RTSP server (H.264), a real
Mosquitto, a real hub; the server goes away and comes back while the node runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_runtime.node import Node, load_node_config
from tests.kit.hub import HubProcess, wait_for
from tests.kit.nodes import write_node

pytestmark = pytest.mark.broker


def write_config(tmp: Path, url: str, broker_port: int, hub_url: str, token: str) -> Path:
    """Node edge-rtsp recording the camera at ``url`` and sending a blurred snapshot alert every second."""
    return write_node(
        tmp, "edge-rtsp", broker_port=broker_port,
        products=[{"name": "street_camera", "properties": {"frame": {"type": "video"}}}],
        devices=[{"id": "gate-cam", "product": "street_camera", "connector": "video", "url": url,
                  "stall_timeout": 2, "backoff": 0.2, "max_backoff": 1}],
        pipelines={"snapshots": {
            "name": "snapshots", "product": "street_camera", "uplink": {"blur": [[0, 0, 640, 60]]},
            "steps": [{"device_input": {}}, {"frame_rate": {"fps": 5}},
                      {"file_output": {"path": str(tmp / "rec" / "{device}.mp4"), "fps": 5}},
                      {"alert": {"message": "snapshot of {device}", "image": "frame", "cooldown": "1s"}}]}},
        hub={"url": hub_url, "token": token, "heartbeat": 0.5}, outbox={"path": "outbox.db"})


def test_rtsp_camera_to_hub_through_an_outage(rtsp_server: Any, mosquitto: Any, tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub", broker_port=mosquitto.port, heartbeat=0.5).start()
    node = None
    try:
        admin = hub.admin()
        token = admin.post("/api/v1/nodes", {"name": "edge-rtsp"})["token"]
        node = Node(load_node_config(write_config(tmp_path, rtsp_server.url, mosquitto.port, hub.url, token)))
        node.start()
        alerts = lambda: admin.all_uploads(kind="alert", node="edge-rtsp")  # noqa: E731
        wait_for(lambda: len(alerts()) >= 3, 30, "3 snapshots from the live camera at the hub")

        rtsp_server.stop()
        wait_for(lambda: not node.connectors["video"].cameras["gate-cam"].stats()["connected"], 10, "the node to see the camera go")
        before = len(alerts())
        rtsp_server.start()
        wait_for(lambda: node.connectors["video"].cameras["gate-cam"].stats()["reconnects"] >= 1, 30, "the node to reconnect")
        wait_for(lambda: len(alerts()) >= before + 3, 30, "3 more snapshots after the camera came back")

        def reported() -> Any:  # the heartbeat at the hub says what happened to the camera
            cam = admin.get("/api/v1/nodes/edge-rtsp")["video"].get("gate-cam") or {}
            return cam if cam.get("reconnects", 0) >= 1 and cam.get("connected") else None

        cam = wait_for(reported, 10, "the reconnect in the node's heartbeat at the hub")
        assert cam["stalls"] >= 1 and cam["corrupt_frames"] == 0, cam
        got = alerts()
        image = admin.request("GET", f"/api/v1/media/edge-rtsp/{got[-1]['image']['media']}",
                              headers={"Accept": "*/*"})[1]
    finally:
        if node is not None:
            node.stop()
        hub.stop()
    ts = [a["ts"] for a in got]
    assert ts == sorted(ts) and all(b - a >= 0.99 for a, b in zip(ts, ts[1:]))  # cooldown 1 s per device
    img = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (480, 640, 3)
    band = img[8:24, 8:24].astype(int)  # the top band was pixelated on the node (16 px cells)
    assert np.abs(band - band.mean(axis=(0, 1))).max() <= 12
    # the recording on the node: H.264 frames from both sides of the outage
    cap = cv2.VideoCapture(str(tmp_path / "rec" / "gate-cam.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n >= 20, n
    assert time.time() - ts[-1] < 120
