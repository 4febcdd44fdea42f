"""The sewage-dumping app end to end on SYNTHETIC street-camera video: cameras (file sources) on a node run
the paper's pipeline with trained intrusion/activity models; alerts with JPEGs reach a real hub and are
checked against the generator's ground truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from apps.sewage_dumping.builder import pipeline as build_pipeline
from apps.sewage_dumping.generate import generate, score, write_node
from edge_runtime.modelkit import Predictor
from edge_runtime.modelstore import ModelStore
from edge_runtime.node import Node, load_node_config
from edge_runtime.operators.base import SpecError
from edge_runtime.pipeline import load_pipeline, parse_pipeline
from edgeloop.devkit.cameras import MODEL_PARAMS, ensure_models
from tests.kit import ROOT
from tests.kit.hub import HubProcess, all_uploads, wait_for

APP = ROOT / "apps" / "sewage_dumping"
PARAMS = MODEL_PARAMS
# the first test pays for training the two CNNs (a minute on 2 idle cores, five on a loaded CI machine)
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def cv_models() -> Path:
    """intrusion and activity trained on 4 SYNTHETIC day clips (a minute on 2 cores), once per parameters and
    model code: the demo's and the benchmarks' cached models (edgeloop.devkit.cameras.ensure_models)."""
    return Path(ensure_models()["root"]) / "artifacts"


def test_the_yaml_and_the_builder_are_the_same_pipeline(tmp_path: Path) -> None:
    yaml_plan = load_pipeline(APP / "pipeline.yaml")
    spec = yaml.safe_load((APP / "pipeline.yaml").read_text())
    regions = {"cam-1": {"drain": [10, 10, 138, 138]}}
    for step in spec["steps"]:
        if "region_of_interest" in step:
            step["region_of_interest"] = {"per_device": regions, "size": 128, "output": "crop"}
    assert build_pipeline(regions).to_dict() == parse_pipeline(spec).to_dict()
    assert [s.op for s in yaml_plan.steps] == [
        "device_input", "frame_rate", "region_of_interest", "apply_model", "filter", "resolution", "frame_stack",
        "apply_model", "filter", "alert"]
    with pytest.raises(SpecError) as err:
        build_pipeline({"cam-1": {"drain": [10, 10, 5, 5]}})
    assert err.value.field == "per_device.cam-1.drain"


@pytest.mark.broker
def test_cameras_to_alerts_with_images_at_the_hub(cv_models: Path, tmp_path: Path, mosquitto: Any) -> None:
    cams = tmp_path / "cams"
    truths = generate(cams, cameras=2, frames=300, seed=7)
    hub = HubProcess(tmp_path / "hub", broker_port=mosquitto.port, heartbeat=0.5).start()
    node = None
    try:
        admin = hub.admin()
        token = admin.post("/api/v1/nodes", {"name": "edge-cam"})["token"]
        cfg = write_node(cams, "edge-cam", broker_port=mosquitto.port, hub_url=hub.url, token=token, heartbeat=0.5)
        store = ModelStore(tmp_path / "models")
        for name in ("intrusion", "activity"):
            store.register(name, Predictor(cv_models / name, version="t"))
        node = Node(load_node_config(cfg), models=store)
        node.start()
        wait_for(lambda: all(c.finished.is_set() for c in node.connectors["video"].cameras.values()), 120, "both videos decoded")
        assert node.engine.drain(60)
        wait_for(lambda: node.outbox.stats()["rows"] == 0 and node.outbox.stats()["media"] == 0, 60,
                 "the outbox to drain")
        video = {c: s.stats() for c, s in node.connectors["video"].cameras.items()}
        assert all(v["frames"] == 300 and v["corrupt_frames"] == 0 for v in video.values()), video
        alerts = all_uploads(admin, kind="alert")
        images = {a["id"]: admin.request("GET", f"/api/v1/media/edge-cam/{a['image']['media']}",
                                         headers={"Accept": "*/*"})[1] for a in alerts}
    finally:
        if node is not None:
            node.stop()
        hub.stop()
    assert alerts, "no alert reached the hub"
    for a in alerts:
        assert a["record"]["values"]["intrusion"] == 1 and a["record"]["values"]["activity"] == 1
        # the JPEG at the hub: the full frame, the shop fronts pixelated
        img = cv2.imdecode(np.frombuffer(images[a["id"]], np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (480, 640, 3)
        block = img[16:32, 16:32].astype(int)
        assert np.abs(block - block.mean(axis=(0, 1))).max() <= 12  # one colour per 16 px cell (JPEG noise)
    got = score(alerts, truths)
    acts = got["acts"]
    print(f"sewage e2e (SYNTHETIC): {got}")
    assert got["precision"] >= 0.75 and got["recall"] >= 0.75
    assert len(alerts) <= acts + 1  # one alert per act, not one per frame


@pytest.mark.broker
def test_edgeloop_demo_pumps_and_cameras_through_a_hub(cv_models: Path, tmp_path: Path) -> None:
    """`edgeloop demo`: its own broker and hub, the pump node and a camera node; the summary's figures."""
    from edgeloop.demo import run_demo

    out = tmp_path / "summary.json"
    rc = run_demo(duration=10, scenario="all", cameras=1, frames=150, summary=out,
                  quiet=True, loop=False, report=tmp_path / "report")  # the loop: tests/loop/test_agile_loop.py
    got = json.loads(out.read_text())
    assert rc == 0, got
    assert got["pumps"]["alerts"] >= 1 and got["pumps"]["actions"] >= 1 and got["pumps"]["dead_letters"] == 0
    cam = got["cameras"]["cam-1"]
    assert cam["frames"] == 150 and cam["corrupt_frames"] == 0
    assert cam["alerts"] >= 1 and cam["precision"] >= 0.75 and cam["recall"] >= 0.75
    assert 0 < cam["latency_p50_ms"] <= cam["latency_p99_ms"] < 2000
    assert 0 < cam["uploaded_bytes"] < cam["video_bytes"]
    assert got["cameras"]["all"]["alerts"] == cam["alerts"]
    # the closing report: the same figures in markdown and HTML, and the cameras' plot
    md = (tmp_path / "report" / "report.md").read_text()
    assert "SYNTHETIC" in md and f"| alerts / dumping acts in the videos | {cam['alerts']} / {cam['acts']} |" in md
    assert f"| device actions (pump-3 stopped by a Modbus coil write) | {got['pumps']['actions']} |" in md
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<table>" in html and 'src="cameras.png"' in html
    assert (tmp_path / "report" / "cameras.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
