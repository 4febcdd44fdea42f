"""A real OPC UA server for the tests (asyncua), on its own thread and asyncio loop, on a free port.

Objects ``Pump1`` and ``Pump2`` (namespace 2, string node ids ``Pump<n>.Temperature`` Double,
``Pump<n>.Running`` Boolean, ``Pump<n>.Speed`` Int32 writable) with methods ``Pump<n>.Stop()`` and
``Pump<n>.SetSpeed(Int32)``; what the methods got is kept in ``calls``. The server can be stopped and
started again on the same port; with ``users`` it accepts only those user names and passwords."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from edge_runtime.ports import free_port

NS = "urn:edgeloop:test-plc"


class OpcuaServer:
    def __init__(self, port: int | None = None, users: dict[str, str] | None = None, pumps: int = 2,
                 secure_dir: Any = None) -> None:
        self.port = port or free_port()
        self.secure_dir = secure_dir  # a folder: serve Basic256Sha256 SignAndEncrypt only, with a cert made there
        self.users = users
        self.pumps = pumps
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.server: Any = None
        self.vars: dict[str, Any] = {}
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name=f"opcua-server-{self.port}", daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/plc/"

    def _run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> OpcuaServer:
        self._run(self._start())
        return self

    async def _start(self) -> None:
        from asyncua import Server, ua

        srv = Server(user_manager=_Users(self.users) if self.users else None)
        await srv.init()
        srv.set_endpoint(self.endpoint)
        if self.secure_dir is not None:
            await make_certificate(self.secure_dir, "server")
            await srv.load_certificate(str(self.secure_dir / "server-cert.der"))
            await srv.load_private_key(str(self.secure_dir / "server-key.pem"))
            srv.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        else:
            srv.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        if self.users:
            srv.set_security_IDs(["Username"])
        idx = await srv.register_namespace(NS)
        for n in range(1, self.pumps + 1):
            obj = await srv.nodes.objects.add_object(ua.NodeId(f"Pump{n}", idx), f"{idx}:Pump{n}")
            for name, value, vtype in (("Temperature", 20.0, ua.VariantType.Double),
                                       ("Running", True, ua.VariantType.Boolean), ("Speed", 0, ua.VariantType.Int32)):
                var = await obj.add_variable(ua.NodeId(f"Pump{n}.{name}", idx), f"{idx}:{name}", value, vtype)
                await var.set_writable()
                self.vars[f"Pump{n}.{name}"] = var

            def stop(parent: Any, n: int = n) -> list[Any]:
                self.calls.append((f"Pump{n}.Stop", ()))
                return []

            def set_speed(parent: Any, rpm: Any, n: int = n) -> list[Any]:
                self.calls.append((f"Pump{n}.SetSpeed", (rpm.Value,)))
                return [ua.Variant(True, ua.VariantType.Boolean)]

            await obj.add_method(ua.NodeId(f"Pump{n}.Stop", idx), f"{idx}:Stop", stop, [], [])
            await obj.add_method(ua.NodeId(f"Pump{n}.SetSpeed", idx), f"{idx}:SetSpeed", set_speed,
                                 [ua.VariantType.Int32], [ua.VariantType.Boolean])
        await srv.start()
        self.server = srv

    def set(self, name: str, value: Any) -> None:
        """Write a variable on the server side (a data change for the subscribers)."""
        var = self.vars[name]
        self._run(var.write_value(value, (self._run(var.read_data_type_as_variant_type()))))

    def get(self, name: str) -> Any:
        return self._run(self.vars[name].read_value())

    def stop(self) -> None:
        if self.server is not None:
            self._run(self.server.stop())
            self.server = None

    def close(self) -> None:
        self.stop()
        self._run(_cancel_all())  # asyncua's session and subscription loops, so none is left pending
        self.loop.call_soon_threadsafe(self.loop.stop)


async def _cancel_all() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def make_certificate(folder: Any, name: str) -> None:
    """A self-signed application certificate (DER) and its key (PEM) in ``folder``: ``<name>-cert.der``."""
    import socket

    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    use = [ExtendedKeyUsageOID.CLIENT_AUTH] if name == "client" else [ExtendedKeyUsageOID.SERVER_AUTH]
    uri = "urn:freeopcua.github.io:client" if name == "client" else "urn:freeopcua:python:server"
    await setup_self_signed_certificate(folder / f"{name}-key.pem", folder / f"{name}-cert.der", uri,
                                        socket.gethostname(), use, {"commonName": f"edgeloop-test-{name}"})


class _Users:
    """asyncua's user manager protocol: accept only the given user names and passwords."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> Any:
        from asyncua.crypto.permission_rules import User, UserRole

        if username in self.users and self.users[username] == password:
            return User(role=UserRole.User)
        return None
