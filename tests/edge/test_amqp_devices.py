"""AMQP devices against the machine's real RabbitMQ (127.0.0.1:5672, guest/guest): readings consumed with
manual acks (a queue is empty only once everything is in the Device Bus), refusals as dead letters, and a
refused login or a missing queue reported without stopping the other devices."""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.node import Node, load_node_config
from edge_runtime.testing import wait_for
from tests.kit.nodes import dead_letter_reasons, write_node

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def rabbit_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
        return True
    except OSError:
        return False


pytestmark = [pytest.mark.broker, pytest.mark.skipif(not rabbit_up(), reason="no RabbitMQ at 127.0.0.1:5672")]


def write(tmp: Path, broker: int, devices: list[dict[str, Any]]) -> Path:
    """Node edge-a with the meters ``devices``, their readings as instance all."""
    return write_node(tmp, "edge-a", broker_port=broker, devices=devices,
                      products=[{"name": "meter", "properties": {"power": {"type": "number", "min": 0, "max": 1000}}}],
                      pipelines={"all": {"name": "all", "product": "meter", "steps": [{"device_input": {}}]}})


def test_readings_are_acknowledged_once_on_the_bus_and_a_bad_device_delays_no_other(
        tmp_path: Path, mosquitto: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import pika

    queue, missing = f"edgeloop-test-{uuid.uuid4().hex[:8]}", f"edgeloop-none-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("BAD_AMQP_URL", "amqp://guest:wrong-password@127.0.0.1:5672/%2F")
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True)
    for i in range(500):
        ch.basic_publish("", queue, json.dumps({"p": i % 100, "t": 1.8e9 + i}).encode())
    ch.basic_publish("", queue, b"{not json")
    ch.basic_publish("", queue, json.dumps([{"p": 1, "t": 1.8e9}, {"p": 5000, "t": 1.8e9}]).encode())  # refused whole
    node = Node(load_node_config(write(tmp_path, mosquitto.port, [
        {"id": "m1", "product": "meter", "connector": "amqp", "queue": queue, "mapping": {"power": "p"}, "ts_field": "t"},
        {"id": "m2", "product": "meter", "connector": "amqp", "queue": "q", "url_env": "BAD_AMQP_URL"},
        {"id": "m3", "product": "meter", "connector": "amqp", "queue": missing}])))
    node.start()
    try:
        wait_for(lambda: node.bus.records_in == 500, 30, "the 500 readings on the bus")

        def left() -> int:
            return ch.queue_declare(queue, passive=True).method.message_count

        wait_for(lambda: left() == 0, 30, "every message acknowledged")
        by_queue = {s["queues"][0]: s for s in node.connectors["amqp"].stats()}
        ok = by_queue[queue]
        assert (ok["received"], ok["accepted"], ok["refused"], ok["connected"]) == (502, 500, 2, True)
        # the missing queue and the refused login: reported with the reason, retried, and they held up nothing
        wait_for(lambda: "NOT_FOUND" in (node.connectors["amqp"].stats()[2]["last_error"] or ""), 20, "the missing queue reported")
        wait_for(lambda: "Authentication" in (node.connectors["amqp"].stats()[1]["last_error"] or ""), 20, "the refused login reported")
        assert node.connectors["amqp"].stats()[1]["connected"] is False and node.connectors["amqp"].stats()[1]["reconnects"] >= 1
        assert "wrong-password" not in json.dumps(node.connectors["amqp"].stats())  # no password in stats or heartbeats
        reasons = dead_letter_reasons(node)
        assert any("malformed JSON" in r for r in reasons) and any("power" in r for r in reasons)
    finally:
        node.stop()
        ch.queue_delete(queue)
        conn.close()
