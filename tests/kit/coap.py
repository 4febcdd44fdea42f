"""A real CoAP device for the tests: an aiocoap server on its own thread and asyncio loop, on a free UDP port.

Resources: ``sensors/power`` (observable: :meth:`CoapDevice.notify` sends a notification), ``sensors/slow``
(answers after ``slow_s``), ``stop`` (POST/PUT: what they got is kept in ``calls``). The
device can be stopped and started again on the same port (a restart forgets its observers, as a real one
does)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from typing import Any

from edge_runtime.ports import free_port


def free_udp_port() -> int:
    """A free UDP port below the ephemeral range (see edge_runtime.ports.free_port)."""
    return free_port(socket.SOCK_DGRAM)


class CoapDevice:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_udp_port()
        self.body: bytes = b'{"p": 1.5}'
        self.code: Any = None  # an aiocoap Code to answer GETs with instead of the body
        self.slow_s = 0.0
        self.gets = 0
        self.calls: list[tuple[str, str, Any]] = []
        self.loop = asyncio.new_event_loop()
        self.ctx: Any = None
        self.power: Any = None
        threading.Thread(target=self.loop.run_forever, name=f"coap-device-{self.port}", daemon=True).start()

    def _run(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> CoapDevice:
        self._run(self._start())
        return self

    async def _start(self) -> None:
        import aiocoap
        from aiocoap import resource

        dev = self

        class Power(resource.ObservableResource):
            async def render_get(self, request: Any) -> Any:
                dev.gets += 1
                if dev.code is not None:
                    return aiocoap.Message(code=dev.code)
                return aiocoap.Message(payload=dev.body, content_format=50)

            async def render_put(self, request: Any) -> Any:  # set: the node PUTs values on the resource
                dev.calls.append(("power", str(request.code), json.loads(request.payload or b"null")))
                return aiocoap.Message(code=aiocoap.CHANGED)

        class Slow(resource.Resource):
            async def render_get(self, request: Any) -> Any:
                await asyncio.sleep(dev.slow_s)
                return aiocoap.Message(payload=b'{"p": 9}', content_format=50)

        class Action(resource.Resource):
            def __init__(self, name: str) -> None:
                super().__init__()
                self.name = name

            async def render_post(self, request: Any) -> Any:
                dev.calls.append((self.name, str(request.code), json.loads(request.payload or b"null")))
                return aiocoap.Message(code=aiocoap.CHANGED)

            render_put = render_post

        site = resource.Site()
        self.power = Power()
        site.add_resource(["sensors", "power"], self.power)
        site.add_resource(["sensors", "slow"], Slow())
        site.add_resource(["stop"], Action("stop"))
        self.ctx = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", self.port))

    def notify(self, body: bytes) -> None:
        """Set the reading and notify the observers."""
        self.body = body
        self.loop.call_soon_threadsafe(self.power.updated_state)

    def observers(self) -> int:
        return len(self.power._observations) if self.power is not None else 0

    def stop(self) -> None:
        if self.ctx is not None:
            self._run(self.ctx.shutdown())
            self.ctx = None

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)


async def _request(method: str, uri: str, payload: bytes = b"", content_format: int | None = 50) -> Any:
    import aiocoap

    ctx = await aiocoap.Context.create_client_context()
    try:
        msg = aiocoap.Message(code=getattr(aiocoap, method), uri=uri, payload=payload)
        if content_format is not None:
            msg.opt.content_format = content_format
        return await asyncio.wait_for(ctx.request(msg).response, 10)
    finally:
        await ctx.shutdown()


def request(method: str, uri: str, payload: bytes = b"", content_format: int | None = 50) -> tuple[str, bytes]:
    """One CoAP request from a fresh client: (code as text, payload)."""
    r = asyncio.run(_request(method, uri, payload, content_format))
    return str(r.code), r.payload
