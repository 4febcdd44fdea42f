"""Product events end to end on a real node: raised by the device (an MQTT event topic, an HTTP push) or
derived by the binding from readings (on the rising edge of a condition, for any protocol, here an OPC UA
server), taken by a pipeline through ``event_input``, kept apart from readings, and refused with the reason
when the product does not declare them."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.devices.catalog import load_catalog
from edge_runtime.node import Node, load_node_config
from edge_runtime.operators.base import SpecError
from edge_runtime.testing import wait_for
from tests.kit.mqtt import Collector, publisher
from tests.kit.nodes import dead_letter_reasons, write_catalog, write_node
from tests.kit.opcua import OpcuaServer

pytestmark = pytest.mark.broker

PRODUCTS = [{"name": "pump",
             "properties": {"temperature": {"type": "number"}, "running": {"type": "boolean"}},
             "services": {"stop": {}},
             "events": {"overheat": {"level": "WARN", "fields": ["temperature"]},
                        "jammed": {"level": "ERROR", "fields": ["code"]}}}]
ON_EVENT = {"name": "on-event", "product": "pump", "steps": [
    {"event_input": ["overheat", "jammed"]}, {"custom_function": {"set": {"seen": "event"}}}]}
READINGS = {"name": "readings", "product": "pump", "steps": [{"device_input": {}}]}


def test_events_from_devices_and_from_conditions_reach_event_input_and_only_it(
        tmp_path: Path, mosquitto: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUMP_HTTP_TOKEN", "secret")
    plc = OpcuaServer(pumps=1).start()
    cfg = write_node(tmp_path, "edge-e", broker_port=mosquitto.port, products=PRODUCTS, devices=[
        {"id": "mq", "product": "pump", "connector": "mqtt", "topic": "plant/mq", "event_topic": "plant/mq/events"},
        {"id": "hp", "product": "pump", "connector": "http", "token_env": "PUMP_HTTP_TOKEN"},
        {"id": "ua", "product": "pump", "connector": "opcua", "endpoint": plc.endpoint, "interval": "50ms",
         "nodes": {"temperature": "ns=2;s=Pump1.Temperature"}, "events": {"overheat": "temperature > 90"}}],
        pipelines={"events": ON_EVENT, "readings": READINGS}, http={"port": 0}, outputs={"qos": 1})
    out = Collector(mosquitto.port, "edgeloop/edge-e/pipelines/+/out")
    node = Node(load_node_config(cfg))
    node.start()
    pub = publisher(mosquitto.port)
    try:
        wait_for(lambda: node.connectors["opcua"].stats()[0]["accepted"] >= 1, what="the OPC UA pump's first value")
        # the device raises its own events: MQTT event topic, HTTP /events
        pub.publish("plant/mq/events", json.dumps({"event": "jammed", "code": 7, "ts": 1.8e9}), qos=1)
        pub.publish("plant/mq/events", json.dumps({"event": "exploded"}), qos=1)  # not declared: dead letter
        pub.publish("plant/mq", json.dumps({"temperature": 50.0}), qos=1)
        conn = http.client.HTTPConnection("127.0.0.1", node.connectors["http"].port, timeout=10)
        conn.request("POST", "/devices/hp/events", body=json.dumps({"event": "overheat", "temperature": 99.5}),
                     headers={"Content-Type": "application/json", "Authorization": "Bearer secret"})
        assert conn.getresponse().status == 202
        # the binding derives overheat from readings: once per rising edge, not for every hot reading
        for t in (80.0, 95.0, 96.0, 97.0, 85.0, 92.0):
            plc.set("Pump1.Temperature", t)
            wait_for(lambda t=t: any(r["values"].get("temperature") == t for r in node.store.query(devices=["ua"])),
                     what=f"temperature {t} read")
        events = wait_for(lambda: (lambda p: p if len(p) == 4 else None)(out.payloads("/events/out")),
                          what="four events out of the event pipeline")
        got = sorted((e["device"], e["values"]["event"], e["values"]["level"],
                      e["values"].get("temperature", e["values"].get("code"))) for e in events)
        assert got == [("hp", "overheat", "WARN", 99.5), ("mq", "jammed", "ERROR", 7),
                       ("ua", "overheat", "WARN", 92.0), ("ua", "overheat", "WARN", 95.0)]
        assert all(e["values"]["seen"] == e["values"]["event"] for e in events)
        assert next(e for e in events if e["device"] == "mq")["ts"] == 1.8e9
        # the readings pipeline saw readings only
        wait_for(lambda: any(r["device"] == "mq" for r in out.payloads("/readings/out")), what="the MQTT reading")
        assert all("event" not in r["values"] for r in out.payloads("/readings/out"))
        assert any("declares no event 'exploded'" in r for r in dead_letter_reasons(node))
    finally:
        pub.loop_stop()
        out.close()
        node.stop()
        plc.close()


@pytest.mark.parametrize(("change", "field"), [
    ({"events": {"burst": "temperature > 1"}}, "events.burst"),
    ({"events": {"overheat": "temperature >"}}, "events.overheat"),
    ({"events": {"overheat": 90}}, "events.overheat"),
    ({"events": []}, "events"),
    ({"event_topic": "plant/p"}, "event_topic"),
])
def test_bad_event_bindings_are_refused_naming_the_field(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    products, devices = write_catalog(tmp_path, PRODUCTS,
                                      [{"id": "p", "product": "pump", "connector": "mqtt", "topic": "plant/p", **change}])
    with pytest.raises(SpecError) as err:
        load_catalog([products], [devices])
    assert err.value.field == field, str(err.value)


def test_a_property_cannot_be_called_event(tmp_path: Path) -> None:
    products, _ = write_catalog(tmp_path, [{"name": "x", "properties": {"event": {"type": "string"}}}])
    with pytest.raises(SpecError) as err:
        load_catalog([products])
    assert err.value.field == "properties.event"
