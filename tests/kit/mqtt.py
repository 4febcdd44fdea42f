"""A real paho subscriber that keeps what it receives, and a real paho publisher, for the broker tests."""

from __future__ import annotations

import threading
from typing import Any

from edge_runtime.ports import free_port

__all__ = ["Collector", "publisher"]


class Collector:
    """A real paho subscriber that keeps what it receives (topic, payload)."""

    def __init__(self, port: int, *topics: str) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"collector-{free_port()}")
        self.ready = threading.Event()

        def on_connect(c: Any, u: Any, f: Any, rc: Any, p: Any) -> None:
            c.subscribe([(t, 1) for t in topics])

        def on_subscribe(c: Any, u: Any, mid: Any, rcs: Any, p: Any) -> None:
            self.ready.set()

        def on_message(c: Any, u: Any, msg: Any) -> None:
            with self.lock:
                self.messages.append((msg.topic, msg.payload))

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.ready.wait(10), "collector could not subscribe"

    def payloads(self, topic_part: str = "") -> list[Any]:
        import json

        def decode(p: bytes) -> Any:
            try:
                return json.loads(p)
            except ValueError:
                return p.decode(errors="replace")

        with self.lock:
            return [decode(p) for t, p in self.messages if topic_part in t]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publisher(port: int) -> Any:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{free_port()}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client
