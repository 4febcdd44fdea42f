"""Fixtures that start real services: Mosquitto on a free port, a pymodbus TCP server."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from edge_runtime.broker import Mosquitto, free_port
from edge_runtime.testing import ModbusServer, wait_for  # noqa: F401 - re-exported for tests

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """A real mosquitto on a free port, stopped after the test (tests may stop/start it)."""
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail("mosquitto is not installed: `make deps` (or apt-get install mosquitto) installs it")
    with Mosquitto() as broker:
        yield broker


@pytest.fixture
def modbus_server() -> Iterator[ModbusServer]:
    server = ModbusServer().start()
    yield server
    server.stop()


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


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """All three reference models trained on tiny SYNTHETIC data, tracked in MLflow (tests/trained.py)."""
    from trained import build_workspace

    return build_workspace(tmp_path_factory.mktemp("workspace"))
