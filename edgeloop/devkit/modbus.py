"""A real Modbus TCP server (pymodbus) in a thread with its own event loop: the simulated pumps of the demo,
the tests and the benchmarks."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from edge_runtime.ports import free_port, wait_port

__all__ = ["ModbusServer"]


class ModbusServer:
    """A real pymodbus TCP server in a thread with its own event loop."""

    def __init__(self, port: int | None = None, *, unit: int = 1, size: int = 200, delay: float = 0.0) -> None:
        # pymodbus 3.16 warns on every start that this datastore API goes away in v4: keep that out of output
        logging.getLogger("pymodbus.logging").setLevel(logging.ERROR)
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
