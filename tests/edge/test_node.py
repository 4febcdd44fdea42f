"""The node end to end: real Mosquitto, real pymodbus server, the pump-monitoring app."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import yaml

from edge_runtime.node import Node, load_node_config
from edge_runtime.testing import wait_for
from edgeloop.devkit.modbus import ModbusServer
from tests.kit import ROOT
from tests.kit.cli import edgeloop
from tests.kit.mqtt import Collector, publisher
from tests.kit.nodes import dead_letter_reasons, pump_app_node, reading

pytestmark = [pytest.mark.broker, pytest.mark.modbus]

@pytest.fixture
def node_env(tmp_path, mosquitto):
    server = ModbusServer().start()
    server.set_holding(0, [int(70.0 * 10), 150])  # 70.0 degC, 1.50 mm/s
    server.set_coil(0, True)
    cfg = load_node_config(pump_app_node(tmp_path, mosquitto.port, server.port))
    node = Node(cfg)
    out = Collector(mosquitto.port, "edgeloop/edge-t/#")
    node.start()
    assert node.publisher.wait_connected(10) and node.connectors["mqtt"].link.wait_connected(10)
    wait_for(lambda: out.payloads("/status"), what="node online status")
    yield node, out, server, mosquitto
    node.stop()
    out.close()
    server.stop()


def test_mqtt_devices_flow_through_bus_store_and_pipeline(node_env):
    node, out, _server, mosquitto = node_env
    pub = publisher(mosquitto.port)
    t0 = 1_800_000_000.0
    # pump-1 runs hot and shakes for 12 s (3 windows of 5 s), pump-2 stays cool
    for i in range(24):
        t = t0 + i * 0.5
        pub.publish("plant/pumps/1/state", reading(t, 95.0 + (i % 3), 5.0 + i * 0.01), qos=1).wait_for_publish(5)
        pub.publish("plant/pumps/2/state", reading(t, 60.0, 1.0), qos=1).wait_for_publish(5)
    wait_for(lambda: node.bus.records_in >= 48, what="48 records on the bus")
    # telemetry republished per device, records kept in the local store, queryable by device and time
    wait_for(lambda: len(out.payloads("/devices/pump-1/telemetry")) >= 24, what="pump-1 telemetry")
    rows = node.store.query(devices=["pump-1"], since=t0 + 2, until=t0 + 4)
    assert [r["ts"] for r in rows] == [t0 + 2 + 0.5 * k for k in range(5)]
    assert rows[0]["values"] == {"temperature": 96.0, "vibration": 5.04, "current": 12.0, "running": True}
    # windows [t0, t0+5) and [t0+5, t0+10) closed by later records: two alerts suppressed to one by cooldown 30 s
    outs = wait_for(lambda: out.payloads("/pipelines/overheat/out") if len(out.payloads("/pipelines/overheat/out")) >= 2
                    else None, what="two overheat windows")
    assert {o["device"] for o in outs} == {"pump-1"}
    assert outs[0]["values"]["count"] == 10 and outs[0]["values"]["temperature_max"] == 97.0
    assert outs[0]["ts"] == t0 + 5
    alerts = wait_for(lambda: out.payloads("edgeloop/edge-t/alerts"), what="an alert")
    assert alerts[0]["device"] == "pump-1" and "overheating" in alerts[0]["message"]
    assert len(node.store.messages("alert")) == 1
    pub.loop_stop()


def test_bad_input_becomes_dead_letters_and_the_node_keeps_running(node_env):
    node, out, _server, mosquitto = node_env
    pub = publisher(mosquitto.port)
    t = 1_800_000_000.0
    bad = [
        ("plant/pumps/1/state", b"{not json", "malformed JSON"),
        ("plant/pumps/1/state", reading(t, "hot", 1.0), "must be a number"),  # type: ignore[arg-type]
        ("plant/pumps/1/state", b'{"time": 1, "temp_c": NaN}', "malformed JSON"),
        ("plant/pumps/1/state", json.dumps({"time": t, "temp_c": 1e400}).encode(), "malformed JSON"),
        ("plant/pumps/1/state", b"x" * 70_000, "over the limit"),
        ("plant/pumps/1/state", json.dumps({"time": t, "other": 1}).encode(), "none of the mapped fields"),
        ("plant/pumps/1/state", json.dumps({"temp_c": 50.0}).encode(), "event time field"),
        ("plant/pumps/1/state", reading(t, 999.0, 1.0), "outside"),
        ("edgeloop/edge-t/ingest", json.dumps({"device": "ghost", "ts": t, "values": {"temperature": 1}}).encode(),
         "unknown device"),
        ("edgeloop/edge-t/ingest", json.dumps({"device": "pump-2", "ts": t, "values": {"colour": 1}}).encode(),
         "unknown property"),
    ]
    for topic, payload, _ in bad:
        pub.publish(topic, payload, qos=1).wait_for_publish(5)
    # good records after the bad ones still flow, for both devices
    pub.publish("plant/pumps/2/state", reading(t + 1, 50.0, 1.0), qos=1).wait_for_publish(5)
    pub.publish("edgeloop/edge-t/ingest", json.dumps({"device": "pump-1", "ts": t + 2,
                                                      "values": {"temperature": 51.5}}).encode(), qos=1).wait_for_publish(5)
    wait_for(lambda: node.dead_letters.total >= len(bad), what="dead letters for each bad message")
    wait_for(lambda: len(node.store.query(devices=["pump-1", "pump-2"], since=t)) == 2, what="the good records")
    reasons = dead_letter_reasons(node)
    for _, _, expected in bad:
        assert any(expected in r for r in reasons), f"no dead letter saying {expected!r} in {reasons}"
    # counted and reported in the node's stats
    stats = wait_for(lambda: [s for s in out.payloads("edgeloop/edge-t/stats") if s["dead_letters"]["total"] >= len(bad)],
                     what="stats with the dead letters")
    assert stats[-1]["dead_letters"]["total"] >= len(bad)
    pub.loop_stop()


def test_modbus_device_polled_and_written_by_a_pipeline(node_env):
    node, out, server, _ = node_env
    wait_for(lambda: node.store.query(devices=["pump-3"]), what="a pump-3 reading from Modbus")
    rec = node.store.query(devices=["pump-3"])[-1]
    assert rec["values"]["temperature"] == pytest.approx(70.0) and rec["values"]["vibration"] == pytest.approx(1.5)
    assert rec["values"]["running"] is True
    # overheat beyond 110 degC: the emergency-stop pipeline calls pump.stop(), bound to a coil write
    server.set_holding(0, [1200])
    wait_for(lambda: not server.coil(0), what="the stop service to clear the running coil")
    notes = wait_for(lambda: out.payloads("edgeloop/edge-t/notifications"), what="the stop notification")
    assert notes[0]["device"] == "pump-3" and notes[0]["level"] == "ERROR"


def test_modbus_outage_is_counted_and_recovers(node_env):
    node, _out, server, _ = node_env
    wait_for(lambda: node.connectors["modbus"].devices["pump-3"].polls >= 2, what="polls")
    port = server.port
    server.stop()
    wait_for(lambda: any("pump-3" == d.get("device") and ("connect" in d["reason"] or "timeout" in d["reason"]
                                                         or "Connection" in d["reason"])
                         for d in node.dead_letters.recent), what="a dead letter for the unreachable device")
    # MQTT devices are not delayed while pump-3 is down
    pub = publisher(node.cfg.broker.port)
    pub.publish("plant/pumps/2/state", reading(time.time(), 40.0, 1.0), qos=1).wait_for_publish(5)
    wait_for(lambda: node.bus.per_device["pump-2"] >= 1, timeout=3, what="pump-2 record during the Modbus outage")
    restarted = ModbusServer(port).start()
    restarted.set_holding(0, [555])
    try:
        wait_for(lambda: any(r["values"].get("temperature") == pytest.approx(55.5)
                             for r in node.store.query(devices=["pump-3"])), timeout=40, what="polling to resume")
    finally:
        restarted.stop()
    pub.loop_stop()


def test_node_reconnects_after_broker_restart(node_env):
    node, _out, _server, mosquitto = node_env
    mosquitto.stop()
    wait_for(lambda: not node.connectors["mqtt"].link.connected.is_set(), what="the node to see the broker gone")
    mosquitto.start()
    wait_for(lambda: node.connectors["mqtt"].link.connected.is_set(), timeout=30, what="the node to reconnect")
    pub = publisher(mosquitto.port)
    before = node.bus.per_device["pump-1"]
    # subscriptions are restored on reconnect: a new reading arrives
    pub.publish("plant/pumps/1/state", reading(time.time(), 40.0, 1.0), qos=1).wait_for_publish(5)
    wait_for(lambda: node.bus.per_device["pump-1"] > before, what="a reading after the reconnect")
    pub.loop_stop()


def test_node_run_cli_stops_cleanly_on_sigterm(tmp_path, mosquitto):
    server = ModbusServer().start()
    try:
        cfg = pump_app_node(tmp_path, mosquitto.port, server.port)
        out = Collector(mosquitto.port, "edgeloop/edge-t/status")
        proc = subprocess.Popen([sys.executable, "-m", "edgeloop", "node", "run", "--config", str(cfg)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        wait_for(lambda: b"online" in [p for t, p in out.messages], timeout=30, what="the node to come online")
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode()
        assert proc.returncode == 0, output
        assert "stopped" in output
        wait_for(lambda: out.messages and out.messages[-1][1] == b"offline", what="offline status")
        out.close()
    finally:
        server.stop()


def test_node_yaml_instances_of_one_template_bring_their_own_params(tmp_path):
    from edge_runtime.operators.base import SpecError

    cfg = pump_app_node(tmp_path, 1883, 502)
    data = yaml.safe_load(cfg.read_text())
    data["pipelines"].append({"instance": "overheat-strict", "pipeline": "pipelines/overheat.yaml",
                              "params": {"hot_c": 70, "vibration_mm_s": 3}})
    cfg.write_text(yaml.safe_dump(data))
    plans = {i.name: i.plan for i in load_node_config(cfg).instances}
    assert plans["overheat"].steps[1].params == "temperature > 80"  # the pipeline's defaults
    assert plans["overheat-strict"].steps[1].params == "temperature > 70"
    assert plans["overheat-strict"].steps[5].params == "vibration_max > 3 and count >= 3"
    data["pipelines"][-1]["params"] = {"hot_c": 70, "vibration": 3}
    cfg.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as err:
        load_node_config(cfg)
    assert str(err.value).startswith(f"{cfg}:") and "field 'pipelines[2].params.vibration': unknown parameter" \
        in str(err.value) and "the pipeline declares: hot_c, vibration_mm_s" in str(err.value), str(err.value)
    data["pipelines"][-1]["params"] = {"hot_c": 70.5, "vibration_mm_s": [1]}  # a list where its default is a number
    cfg.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=r"pipelines\[2\]\.params\.vibration_mm_s'?: parameter 'vibration_mm_s': "
                                        r"expected a number like its default 4.5"):
        load_node_config(cfg)
    data["pipelines"][-1]["params"] = 70
    cfg.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=r"node.yaml:\d+, field 'pipelines\[2\]\.params': expected a mapping"):
        load_node_config(cfg)


def test_bad_node_config_exits_2_naming_file_line_and_field(tmp_path):
    bad = tmp_path / "node.yaml"
    bad.write_text("node: edge-x\nbroker: {port: 1883}\nproducts: [p.yaml]\n")
    (tmp_path / "p.yaml").write_text("products:\n  - name: pump\n    properties:\n      t: {type: numbr}\n")
    proc = edgeloop("node", "run", "--config", str(bad))
    assert proc.returncode == 2
    assert "p.yaml:4" in proc.stderr and "properties.t.type" in proc.stderr and "numbr" in proc.stderr


def test_a_window_open_across_a_clean_restart_keeps_its_readings(tmp_path, mosquitto):
    """Stopped cleanly with a 5 s window of pump-1 open, the node saves its pipelines' state in its store; started
    again on the same config, the window goes on: its aggregate holds the readings from before the restart."""
    server = ModbusServer().start()
    server.set_holding(0, [700, 150])
    cfg_path = pump_app_node(tmp_path, mosquitto.port, server.port)
    out = Collector(mosquitto.port, "edgeloop/edge-t/pipelines/overheat/out")
    pub = publisher(mosquitto.port)
    t0 = 1_800_000_000.0  # a multiple of 5: the window [t0, t0 + 5) of the overheat pipeline

    def run_node(readings):
        node = Node(load_node_config(cfg_path))
        node.start()
        try:
            assert node.connectors["mqtt"].link.wait_connected(10)
            before = node.bus.per_device["pump-1"]
            for t, temp in readings:
                pub.publish("plant/pumps/1/state", reading(t0 + t, temp, 6.0), qos=1).wait_for_publish(5)
            wait_for(lambda: node.bus.per_device["pump-1"] >= before + len(readings), what="pump-1's readings")
        finally:
            node.stop()

    try:
        run_node([(0.0, 91.0), (0.5, 95.0), (1.0, 93.0)])
        assert out.payloads("") == []  # the window was not flushed at the stop
        db = sqlite3.connect(tmp_path / "node.db")
        assert [r[0] for r in db.execute("SELECT instance FROM operator_state ORDER BY instance")] == ["estop", "overheat"]
        db.close()
        run_node([(2.0, 90.0), (3.5, 99.0), (5.0, 85.0)])  # the last one closes the window
        (window,) = wait_for(lambda: out.payloads(""), what="the overheat window")
        assert window["ts"] == t0 + 5 and window["values"]["count"] == 5
        assert window["values"]["temperature_max"] == 99.0
        assert window["values"]["temperature_mean"] == (91.0 + 95.0 + 93.0 + 90.0 + 99.0) / 5
    finally:
        pub.loop_stop()
        out.close()
        server.stop()
