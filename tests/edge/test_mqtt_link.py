"""The node's MQTT link against a real Mosquitto: PUBLISH packets parsed on the fast path (whole packets in
the read buffer) and on paho's (split across reads, QoS 2, other packets) deliver the same stream."""

from __future__ import annotations

import threading

import pytest

from edge_runtime.mqtt import BrokerConfig, MqttLink
from edge_runtime.testing import wait_for
from tests.kit.mqtt import publisher

pytestmark = pytest.mark.broker


def test_every_message_arrives_once_in_order_whatever_its_size_and_qos(mosquitto) -> None:
    got: list[tuple[str, bytes]] = []
    lock = threading.Lock()

    def on_message(topic: str, payload: bytes, _arrived: float) -> None:
        with lock:
            got.append((topic, payload))

    link = MqttLink(BrokerConfig(port=mosquitto.port), on_message=on_message)
    fast = []
    original = link.client.fast_publish
    link.client.fast_publish = lambda t, p: (fast.append(1), original(t, p))
    link.subscribe("t/#", 1)
    link.start()
    try:
        assert link.wait_connected(10)
        pub = publisher(mosquitto.port)
        wait_for(lambda: link.client._sock is not None, what="subscribed")
        sent, infos, levels = [], [], {}
        for i in range(1500):
            size = 200_000 if i % 300 == 7 else (i % 300)  # big ones span many reads: paho's path
            qos = 2 if i % 97 == 3 else i % 2              # QoS 2 always goes through paho
            topic = f"t/{i % 7}/é"
            payload = bytes([i % 251]) * size + str(i).encode()
            infos.append(pub.publish(topic, payload, qos=qos))
            sent.append((topic, payload))
            levels[payload] = qos
        for info in infos:
            info.wait_for_publish(30)
        pub.loop_stop()
        wait_for(lambda: len(got) >= len(sent), 30, "every message")
    finally:
        link.stop()
    # nothing lost, nothing twice
    assert sorted(got) == sorted(sent)
    for t in {t for t, _ in sent}:  # in order per topic and QoS level (the publisher queues QoS > 0 behind acks)
        for q in (0, 1, 2):
            assert [p for tt, p in got if tt == t and levels[p] == q] == [p for tt, p in sent if tt == t and levels[p] == q]
    assert len(fast) > 1000  # most took the fast path, the rest paho's, and nothing differs


def test_qos1_messages_paho_cannot_queue_are_counted_and_stop_still_works(mosquitto) -> None:
    """With the broker away, QoS 1 messages pile up in paho; past its 65,535 message ids it refuses more.
    The link counts each refusal (the node reports them as dropped outputs) and stops cleanly after."""
    link = MqttLink(BrokerConfig(port=mosquitto.port), status_topic="edgeloop/t/status")
    link.start()
    assert link.wait_connected(10)
    mosquitto.stop()
    try:
        wait_for(lambda: not link.connected.is_set(), 10, "the link to notice the broker is gone")
        for _ in range(66_000):
            link.publish("t/out", b"x", qos=1)
        assert link.dropped >= 400 and link.pending() <= 65_535
        assert link.wait_room(limit=10, timeout=0.05) is False  # nothing drains while the broker is away
    finally:
        mosquitto.start()
        link.stop()
