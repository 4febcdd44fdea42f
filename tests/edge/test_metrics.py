"""Prometheus metrics: the text format, and a real node's /metrics while Mosquitto feeds it."""

from __future__ import annotations

import httpx
import pytest

from edge_runtime.metrics import Family, render
from edge_runtime.node import Node, load_node_config
from edge_runtime.operators.base import SpecError
from edge_runtime.testing import wait_for
from edgeloop.devkit.modbus import ModbusServer
from tests.kit.mqtt import publisher
from tests.kit.nodes import pump_app_node, reading


def test_the_text_format_escapes_labels_and_writes_numbers_prometheus_reads() -> None:
    f = Family("x_total", "counter", "Things.").add(3, device='a"b\\c\nd').add(True, device="t").add(None, device="n")
    h = Family("lat_seconds", "histogram", "Latency.").add(2, __suffix__="_bucket", le="+Inf").add(0.25, __suffix__="_sum")
    assert render([f, h]).splitlines() == [
        "# HELP x_total Things.", "# TYPE x_total counter",
        'x_total{device="a\\"b\\\\c\\nd"} 3', 'x_total{device="t"} 1',
        "# HELP lat_seconds Latency.", "# TYPE lat_seconds histogram",
        'lat_seconds_bucket{le="+Inf"} 2', "lat_seconds_sum 0.25"]


def test_a_bad_metrics_section_is_refused_naming_the_field(tmp_path) -> None:
    path = pump_app_node(tmp_path, 1883, 502, metrics={"port": "ninety"})
    with pytest.raises(SpecError) as e:
        load_node_config(path)
    assert "metrics.port" in str(e.value) and "ninety" in str(e.value)


def test_a_metrics_token_the_config_names_must_exist_and_remote_metrics_need_one(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("NO_SUCH_TOKEN_VAR", raising=False)
    with pytest.raises(SpecError, match="NO_SUCH_TOKEN_VAR"):
        load_node_config(pump_app_node(tmp_path / "a", 1883, 502, metrics={"port": 0, "token_env": "NO_SUCH_TOKEN_VAR"}))
    with pytest.raises(SpecError, match="need a token"):
        load_node_config(pump_app_node(tmp_path / "b", 1883, 502, metrics={"port": 0, "host": "10.1.2.3"}))
    monkeypatch.setenv("SCRAPE_TOKEN", "abc")
    cfg = load_node_config(pump_app_node(tmp_path / "c", 1883, 502,
                                        metrics={"host": "10.1.2.3", "token_env": "SCRAPE_TOKEN"}))
    assert (cfg.metrics.host, cfg.metrics.port, cfg.metrics.bearer) == ("10.1.2.3", 9464, "abc")


@pytest.mark.broker
@pytest.mark.modbus
def test_a_node_serves_its_counters_on_metrics_behind_its_token(tmp_path, mosquitto) -> None:
    server = ModbusServer().start()
    server.set_holding(0, [700, 150])
    node = Node(load_node_config(pump_app_node(tmp_path, mosquitto.port, server.port,
                                              metrics={"port": 0, "token": "scrape-me"})))
    node.start()
    try:
        url = f"http://127.0.0.1:{node.metrics_server.port}"
        assert httpx.get(f"{url}/health").status_code == 200
        assert httpx.get(f"{url}/metrics").status_code == 401
        pub = publisher(mosquitto.port)
        for i in range(10):
            pub.publish("plant/pumps/1/state", reading(1_800_000_000 + i, 60.0, 1.0), qos=1).wait_for_publish(5)
        pub.publish("plant/pumps/1/state", b"{not json", qos=1).wait_for_publish(5)
        pub.loop_stop()

        def scrape() -> dict[str, float]:
            r = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer scrape-me"})
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
            return {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in r.text.splitlines()
                    if ln and not ln.startswith("#")}

        m = wait_for(lambda: (s := scrape()).get('edgeloop_node_mqtt_received_total{node="edge-t"}', 0) >= 11 and s,
                     what="11 MQTT messages counted")
        assert m['edgeloop_node_records_total{node="edge-t"}'] >= 10
        assert m['edgeloop_node_mqtt_connected{node="edge-t"}'] == 1
        assert sum(v for k, v in m.items() if k.startswith("edgeloop_node_dead_letters_total{")) >= 1
        assert any(k.startswith('edgeloop_pipeline_step_records_total{node="edge-t",instance="overheat"') for k in m)
        assert any(k.startswith('edgeloop_node_modbus_polls_total{node="edge-t"') for k in m)
    finally:
        node.stop()
        server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=2)


def test_json_logs_are_one_object_a_line_with_extra_fields(capsys) -> None:
    import json
    import logging

    from edge_runtime.logs import setup_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("json")
        logging.getLogger("edgeloop.test").warning("uplink %s", "down", extra={"node": "edge-1", "pending": 12})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("edgeloop.test").exception("failed")
        lines = capsys.readouterr().err.strip().splitlines()
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    first, second = json.loads(lines[0]), json.loads(lines[1])
    assert (first["level"], first["logger"], first["message"], first["node"], first["pending"]) == \
        ("WARNING", "edgeloop.test", "uplink down", "edge-1", 12)
    assert first["time"].endswith("Z") and isinstance(first["ts"], float)
    assert "RuntimeError: boom" in second["exception"] and len(lines) == 2
    with pytest.raises(ValueError, match="expected text or json"):
        setup_logging("xml")
