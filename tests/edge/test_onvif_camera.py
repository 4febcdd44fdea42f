"""ONVIF cameras. No ONVIF camera exists on these machines, so tests/kit/onvif.py plays one: a SOAP server
answering the ONVIF operations in the schemas' shape (with WS-Security digest checks and a WS-Discovery
responder). Everything else is real: the onvif-zeep-async client, a GStreamer RTSP server behind the
stream URI the camera gives, Mosquitto, and a node that reads the stream and moves the camera through
product services."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from edge_runtime.connectors.onvif import discover, stream_uri
from edge_runtime.devices.catalog import load_catalog
from edge_runtime.node import Node, load_node_config
from edge_runtime.operators.base import SpecError
from edge_runtime.records import RecordError
from edge_runtime.testing import wait_for
from tests.kit.cli import edgeloop
from tests.kit.nodes import write_catalog, write_node
from tests.kit.onvif import OnvifCamera

pytestmark = pytest.mark.broker

PRODUCTS = [{"name": "street_camera", "properties": {"frame": {"type": "video"}},
             "services": {"look_left": {}, "go_to": {"args": {"name": {"type": "string"}}}}}]


@pytest.fixture
def camera(rtsp_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[OnvifCamera]:
    monkeypatch.setenv("CAM_USER", "operator")
    monkeypatch.setenv("CAM_PASSWORD", "s3cret")
    cam = OnvifCamera(rtsp_server.url, users={"operator": "s3cret"}).start()
    yield cam
    cam.stop()


def test_a_directed_ws_discovery_probe_finds_the_camera(camera: OnvifCamera) -> None:
    (found,) = discover(timeout=1.0, to=("127.0.0.1", camera.discovery_port))
    assert found["xaddrs"] == [f"{camera.base}/device_service"]
    assert "onvif://www.onvif.org/location/street-4" in found["scopes"]
    assert found["types"] == ["dn:NetworkVideoTransmitter"]


def test_edgeloop_onvif_discover_prints_the_camera(camera: OnvifCamera) -> None:
    import json

    discover = ("onvif", "discover", "--timeout", "1")
    out = edgeloop(*discover, "--to", f"127.0.0.1:{camera.discovery_port}", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["xaddrs"] == [f"{camera.base}/device_service"]
    bad = edgeloop(*discover, "--to", "nowhere")
    assert bad.returncode == 2 and "expected host:port" in bad.stderr


def test_the_stream_uri_needs_the_account_and_names_the_profile(camera: OnvifCamera, rtsp_server: Any,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    opt = {"host": "127.0.0.1", "port": camera.port, "profile": "main", "username_env": "CAM_USER",
           "password_env": "CAM_PASSWORD"}
    assert stream_uri(opt) == rtsp_server.url.replace("rtsp://", "rtsp://operator:s3cret@")
    asked = next(a for c, a in camera.calls if c == "GetStreamUri")
    assert (asked["ProfileToken"], asked["Stream"], asked["Protocol"]) == ("main", "RTP-Unicast", "RTSP")
    with pytest.raises(RecordError, match=r"no media profile 'wide' \(the camera has: sub, main\)"):
        stream_uri({**opt, "profile": "wide"})
    monkeypatch.setenv("CAM_PASSWORD", "wrong")
    with pytest.raises(RecordError, match="the camera refused the account") as err:
        stream_uri(opt)
    assert "wrong" not in str(err.value)


def test_a_node_reads_the_onvif_camera_and_moves_it_through_services(tmp_path: Path, mosquitto: Any,
                                                                    camera: OnvifCamera) -> None:
    cfg = write_node(tmp_path, "edge-onvif", broker_port=mosquitto.port, products=PRODUCTS, devices=[
        {"id": "street-4", "product": "street_camera", "connector": "video", "stall_timeout": 2,
         "onvif": {"host": "127.0.0.1", "port": camera.port, "profile": "main", "username_env": "CAM_USER",
                   "password_env": "CAM_PASSWORD"},
         "services": {"look_left": {"ptz": "continuous_move", "pan": -0.5, "timeout": "1s"},
                      "go_to": {"ptz": "goto_preset", "preset": "$name"}}}],
        pipelines={"patrol": {"name": "patrol", "product": "street_camera", "steps": [
            {"device_input": {}}, {"sample": {"every": 1000}},
            {"device_output": {"service": "look_left"}},
            {"device_output": {"service": "go_to", "args": {"name": "'gate'"}}}]}})
    node = Node(load_node_config(cfg))
    node.start()
    try:
        wait_for(lambda: node.connectors["video"].cameras["street-4"].stats()["frames"] >= 10, 30, "frames from the ONVIF camera")
        stats = node.connectors["video"].cameras["street-4"].stats()
        assert stats["source"] == f"ONVIF camera 127.0.0.1:{camera.port}" and "s3cret" not in str(stats)
        wait_for(lambda: [c for c, _ in camera.calls if c in ("ContinuousMove", "GotoPreset")]
                 == ["ContinuousMove", "GotoPreset"], 20, "the two PTZ calls at the camera")
        move = next(a for c, a in camera.calls if c == "ContinuousMove")
        assert move["PanTilt"] == {"x": "-0.5", "y": "0.0"} and move["Timeout"] == "PT1S"
        assert next(a for c, a in camera.calls if c == "GotoPreset")["PresetToken"] == "gate"
    finally:
        node.stop()


@pytest.mark.parametrize(("device", "field"), [
    ({"onvif": {"host": "10.0.0.4", "port": "eighty"}}, "source"),
    ({"onvif": {"host": "10.0.0.4"}, "services": {"look_left": {"ptz": "spin"}}}, "services.look_left.ptz"),
    ({"onvif": {"host": "10.0.0.4"}, "services": {"look_left": {"ptz": "continuous_move", "pan": 3}}},
     "services.look_left.pan"),
    ({"onvif": {"host": "10.0.0.4"}, "services": {"go_to": {"ptz": "goto_preset"}}}, "services.go_to.preset"),
    ({"url": "rtsp://10.0.0.4/s", "services": {"look_left": {"ptz": "stop"}}}, "services.look_left"),
])
def test_bad_onvif_bindings_are_refused_naming_the_field(tmp_path: Path, device: dict[str, Any], field: str) -> None:
    products, devices = write_catalog(tmp_path, PRODUCTS,
                                      [{"id": "c", "product": "street_camera", "connector": "video", **device}])
    with pytest.raises(SpecError) as err:
        load_catalog([products], [devices])
    assert err.value.field == field, str(err.value)
