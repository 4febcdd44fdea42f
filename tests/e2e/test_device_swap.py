"""A device swap across protocols: a pipeline runs on a product; its MQTT meter is replaced by an HTTP one
bound to the same product; the pipeline's spec does not change and its output goes on.

A real hub process assigns the pipeline to the node with ``devices: [meter-mqtt]``; readings arrive over
Mosquitto. The assignment then names ``meter-http`` instead: the agent rebinds the instance without a
restart of the node, and readings pushed over HTTP come out of the same instance's output topic, with the
same pipeline version.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.node import Node, load_node_config
from tests.kit.hub import HubProcess, wait_for
from tests.kit.mqtt import Collector, publisher
from tests.kit.nodes import write_node

pytestmark = pytest.mark.broker

WATCH = {"name": "meter-watch", "product": "meter", "steps": [
    {"device_input": {}}, {"filter": "power > 100"}, {"custom_function": {"set": {"kw": "power / 1000"}}}]}


def test_an_mqtt_meter_swapped_for_an_http_one_keeps_the_pipeline_running(tmp_path: Path, mosquitto: Any,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWAP_HTTP_TOKEN", "swap-secret")
    hub = HubProcess(tmp_path / "hub", broker_port=mosquitto.port, heartbeat=0.5).start()
    node = None
    out = Collector(mosquitto.port, "edgeloop/edge-s/pipelines/watch/out")
    try:
        admin = hub.admin()
        token = admin.post("/api/v1/nodes", {"name": "edge-s"})["token"]
        cfg = write_node(tmp_path, "edge-s", broker_port=mosquitto.port,
                         products=[{"name": "meter", "properties": {"power": {"type": "number", "min": 0}}}],
                         devices=[{"id": "meter-mqtt", "product": "meter", "connector": "mqtt", "topic": "site/meter",
                                   "qos": 1, "mapping": {"power": "w"}},
                                  {"id": "meter-http", "product": "meter", "connector": "http",
                                   "mapping": {"power": "watts"}}],
                         hub={"url": hub.url, "token": token, "heartbeat": 0.5}, outbox={"path": "outbox.db"},
                         http={"port": 0, "token_env": "SWAP_HTTP_TOKEN"})
        node = Node(load_node_config(cfg))
        node.start()
        version = admin.post("/api/v1/pipelines", WATCH)["version"]
        admin.put("/api/v1/assignments/node:edge-s/watch", {"pipeline": "meter-watch", "devices": ["meter-mqtt"]})
        wait_for(lambda: "watch" in node.instances, 15, "the instance on the MQTT meter")
        pub = publisher(mosquitto.port)
        for w in (50, 150, 250):
            pub.publish("site/meter", json.dumps({"w": w}).encode(), qos=1).wait_for_publish(5)
        got = wait_for(lambda: (o := out.payloads("/out")) and len(o) >= 2 and o, 15, "outputs from the MQTT meter")
        assert [(o["device"], o["values"]["kw"]) for o in got] == [("meter-mqtt", 0.15), ("meter-mqtt", 0.25)]

        # the swap: the same pipeline, another device on another protocol
        admin.put("/api/v1/assignments/node:edge-s/watch", {"pipeline": "meter-watch", "devices": ["meter-http"]})
        wait_for(lambda: node.instances.get("watch") is not None and node.instances["watch"].devices
                 == frozenset({"meter-http"}), 15, "the instance rebound to the HTTP meter")
        conn = http.client.HTTPConnection("127.0.0.1", node.connectors["http"].port, timeout=10)
        for watts in (400, 90, 500):
            conn.request("POST", "/devices/meter-http/telemetry", body=json.dumps({"watts": watts}),
                         headers={"Content-Type": "application/json", "Authorization": "Bearer swap-secret"})
            r = conn.getresponse()
            assert (r.status, json.loads(r.read())) == (202, {"accepted": 1})
        pub.publish("site/meter", json.dumps({"w": 999}).encode(), qos=1).wait_for_publish(5)  # no longer watched
        got = wait_for(lambda: (o := out.payloads("/out")) and len(o) >= 4 and o, 15, "outputs from the HTTP meter")
        pub.loop_stop()
        assert [(o["device"], o["values"]["kw"]) for o in got[2:]] == [("meter-http", 0.4), ("meter-http", 0.5)]
        view = admin.get("/api/v1/nodes/edge-s")
        assert [(i["instance"], i["pipeline"]) for i in view["instances"]] == [("watch", "meter-watch")]
        assert admin.get("/api/v1/pipelines/meter-watch")["version"] == version  # the spec never changed
        assert node.dead_letters.total == 0
    finally:
        out.close()
        if node is not None:
            node.stop()
        hub.stop()
