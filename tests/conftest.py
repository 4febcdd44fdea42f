"""Fixtures that start real services: Mosquitto on a free port, a pymodbus TCP server."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from edge_runtime.broker import Mosquitto, free_port, wait_port

ROOT = Path(__file__).resolve().parent.parent


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll a condition until it is truthy or the deadline passes (then fail, naming it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """A real mosquitto on a free port, stopped after the test (tests may stop/start it)."""
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail("mosquitto is not installed: `make deps` (or apt-get install mosquitto) installs it")
    with Mosquitto() as broker:
        yield broker


class ModbusServer:
    """A real pymodbus TCP server in a thread with its own event loop."""

    def __init__(self, port: int | None = None, *, unit: int = 1, size: int = 200, delay: float = 0.0) -> None:
        from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext

        self.port = port or free_port()
        self.unit = unit
        # pymodbus 3.16's (deprecated but working) datastore: a block at address 1 serves protocol address 0
        self.device = ModbusDeviceContext(
            di=ModbusSequentialDataBlock(1, [False] * size), co=ModbusSequentialDataBlock(1, [False] * size),
            hr=ModbusSequentialDataBlock(1, [0] * size), ir=ModbusSequentialDataBlock(1, [0] * size))
        self.context = ModbusServerContext(devices={unit: self.device})
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: Any = None
        self.thread: threading.Thread | None = None

    # function codes: 3 = holding registers, 4 = input registers, 1 = coils, 2 = discrete inputs
    def _call(self, coro: Any) -> Any:
        assert self.loop is not None, "server not started"
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(5)

    def set_holding(self, address: int, values: list[int]) -> None:
        self._call(self.server.context.async_setValues(self.unit, 3, address, values))

    def set_input(self, address: int, values: list[int]) -> None:
        self._call(self.server.context.async_setValues(self.unit, 4, address, values))

    def set_coil(self, address: int, value: bool) -> None:
        self._call(self.server.context.async_setValues(self.unit, 1, address, [value]))

    def holding(self, address: int, count: int = 1) -> list[int]:
        return list(self._call(self.server.context.async_getValues(self.unit, 3, address, count)))

    def coil(self, address: int) -> bool:
        return bool(self._call(self.server.context.async_getValues(self.unit, 1, address, 1))[0])

    def start(self) -> ModbusServer:
        from pymodbus.server import ModbusTcpServer

        ready = threading.Event()

        async def serve() -> None:
            self.server = ModbusTcpServer(self.context, address=("127.0.0.1", self.port))
            asyncio.get_running_loop().call_soon(ready.set)
            await self.server.serve_forever()

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(serve())
            except Exception:  # noqa: S110 - shutdown races are fine here
                pass

        self.thread = threading.Thread(target=run, name=f"modbus-server-{self.port}", daemon=True)
        self.thread.start()
        ready.wait(10)
        if not wait_port(self.port):
            raise RuntimeError(f"modbus server did not open port {self.port}")
        return self

    def stop(self) -> None:
        if self.loop is not None and self.server is not None:
            fut = asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop)
            try:
                fut.result(10)
            except Exception:  # noqa: S110
                pass
        if self.thread is not None:
            self.thread.join(10)
        wait_port(self.port, up=False, timeout=5)
        self.loop = self.server = self.thread = None


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
