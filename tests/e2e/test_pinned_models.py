"""Model versions pinned per pipeline instance (``apply_model: {model: "name:${v}"}``), with a real hub,
Mosquitto, signed BentoML bundles and a node whose agent does the work: one template runs as two instances
on one node, one on the version the group serves and one on an older version it pins; the node fetches the
pinned version from the warehouse (verified like any bundle) without changing what it serves; the hub lets a
node download only the versions it serves or pins, and refuses a pin of a version the warehouse lacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.hubclient import HubClient, HubError
from edge_runtime.node import Node, load_node_config
from models.pump_anomaly.features import FEATURES
from tests.kit.hub import HubProcess, wait_for
from tests.kit.mqtt import Collector, publisher
from tests.kit.nodes import write_node

pytestmark = [pytest.mark.broker]

TEMPLATE = {"name": "score", "product": "pump_window", "params": {"model": "pump_anomaly"}, "steps": [
    {"device_input": {}},
    {"apply_model": {"model": "${model}", "inputs": FEATURES, "output": "anomaly"}}]}


def publish(admin: HubClient, workspace: Any, tmp: Path, version: str) -> None:
    from models import bento

    bento.build("pump_anomaly", version, workspace.artifact("pump_anomaly"))
    archive = bento.export("pump_anomaly", version, tmp / "bundles")
    bento.upload(admin, archive, *bento.sign(archive, "pump_anomaly", version, {}, workspace.keys))


def write_hub_node(tmp: Path, *, broker: int, hub: str, token: str, keys: Path) -> Path:
    """Node edge-p with pump-1's windows and no pipeline of its own: the hub assigns them."""
    return write_node(
        tmp, "edge-p", broker_port=broker,
        products=[{"name": "pump_window", "properties": {f: {"type": "number"} for f in FEATURES}}],
        devices=[{"id": "pump-1", "product": "pump_window", "connector": "mqtt", "topic": "plant/pumps/1/window",
                  "ts_field": "ts"}],
        hub={"url": hub, "token": token, "heartbeat": 0.3},
        models={"store": "models", "trusted_keys": str(keys / "signing.pub")})


def test_two_instances_of_one_template_serve_two_versions_of_a_model(workspace: Any, tmp_path: Path,
                                                                      mosquitto: Any) -> None:
    hub = HubProcess(tmp_path / "hub", broker_port=mosquitto.port, heartbeat=0.3).start()
    node = out = None
    try:
        admin = hub.admin()
        for v in ("1", "2", "3"):
            publish(admin, workspace, tmp_path, v)
        admin.put("/api/v1/models/pump_anomaly/deployments/group:pumps", {"version": "2"})
        token = admin.post("/api/v1/nodes", {"name": "edge-p", "group": "pumps"})["token"]
        admin.post("/api/v1/pipelines", TEMPLATE)
        # a pin of a version the warehouse lacks is refused up front, naming what it has
        with pytest.raises(HubError) as bad:
            admin.put("/api/v1/assignments/group:pumps/score-old",
                      {"pipeline": "score", "params": {"model": "pump_anomaly:9"}})
        assert bad.value.status == 422 and "'9'" in bad.value.detail and "it has 1, 2, 3" in bad.value.detail
        # a model the warehouse does not know may be one the nodes register themselves: left to them
        admin.put("/api/v1/assignments/node:edge-p/score-local", {"pipeline": "score",
                                                                   "params": {"model": "local_model:7"}})
        admin.delete("/api/v1/assignments/node:edge-p/score-local")

        nodec = HubClient(hub.url, token)
        with pytest.raises(HubError) as denied:  # nothing pins 1 yet: least privilege
            nodec.get("/api/v1/models/pump_anomaly/versions/1")
        assert denied.value.status == 403 and "pins" in denied.value.detail

        admin.put("/api/v1/assignments/group:pumps/score-now", {"pipeline": "score"})
        admin.put("/api/v1/assignments/group:pumps/score-old",
                  {"pipeline": "score", "params": {"model": "pump_anomaly:1"}})
        assert nodec.get("/api/v1/models/pump_anomaly/versions/1")["version"] == "1"  # pinned: readable
        with pytest.raises(HubError) as still:
            nodec.get("/api/v1/models/pump_anomaly/versions/3")
        assert still.value.status == 403

        node = Node(load_node_config(write_hub_node(tmp_path / "node", broker=mosquitto.port, hub=hub.url, token=token,
                                                    keys=workspace.keys)))
        out = Collector(mosquitto.port, "edgeloop/edge-p/pipelines/+/out")
        node.start()
        wait_for(lambda: {"score-now", "score-old"} <= set(node.instances), 60, "both instances on the node")
        assert node.models.get("pump_anomaly").version == "2"  # the pin does not change what is served
        assert sorted(node.models.installed("pump_anomaly")) == ["1", "2"]

        pub = publisher(mosquitto.port)
        for i in range(20):
            pub.publish("plant/pumps/1/window", json.dumps({"ts": 1_800_000_000.0 + i, **dict.fromkeys(FEATURES, 0.5)}),
                        qos=1)
        pub.loop_stop()

        def tags() -> Any:
            got = {inst: {p["values"]["anomaly_model"] for p in out.payloads(f"/{inst}/out")}
                   for inst in ("score-now", "score-old")}
            n = {inst: len(out.payloads(f"/{inst}/out")) for inst in got}
            return got if min(n.values()) >= 20 else None

        assert wait_for(tags, 60, "both instances' predictions") == {"score-now": {"pump_anomaly:2"},
                                                                      "score-old": {"pump_anomaly:1"}}

        def status() -> Any:
            return admin.get("/api/v1/nodes/edge-p")["models"].get("models", {}).get("pump_anomaly")

        seen = wait_for(lambda: (s := status()) and s.get("pinned") == ["1"] and s, 30, "the pin in a heartbeat")
        assert seen["active"] == "2" and seen["error"] is None

        # a version the node registered itself (not in the warehouse) is served as it is
        node.models.register("local_model", lambda X: (X[:, 0] > 1, None), version="7")
        admin.put("/api/v1/assignments/node:edge-p/score-local", {"pipeline": "score",
                                                                   "params": {"model": "local_model:7"}})
        wait_for(lambda: "score-local" in node.instances, 30, "the instance pinning the node's own model")
        pub = publisher(mosquitto.port)
        pub.publish("plant/pumps/1/window", json.dumps({"ts": 1_800_000_100.0, **dict.fromkeys(FEATURES, 0.5)}), qos=1)
        pub.loop_stop()
        wait_for(lambda: out.payloads("/score-local/out"), 30, "a prediction of the node's own model")
        assert {p["values"]["anomaly_model"] for p in out.payloads("/score-local/out")} == {"local_model:7"}

        # the pinning instance goes: the pin is dropped (the bundle stays installed), the other runs on
        admin.delete("/api/v1/assignments/group:pumps/score-old")
        wait_for(lambda: "score-old" not in node.instances, 30, "the instance to stop")
        wait_for(lambda: (s := status()) and "pinned" not in s, 30, "the pin gone from a heartbeat")
        assert node.models.get("pump_anomaly:1") is None and node.models.get("pump_anomaly").version == "2"
        with pytest.raises(HubError) as gone:
            nodec.get("/api/v1/models/pump_anomaly/versions/1")
        assert gone.value.status == 403
    finally:
        if node is not None:
            node.stop()
        if out is not None:
            out.close()
        hub.stop()
