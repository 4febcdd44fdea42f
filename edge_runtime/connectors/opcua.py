"""OPC UA devices (asyncua): data-change subscriptions or reads on an interval; writes and method calls.

A binding::

    - id: pump-7
      product: pump
      connector: opcua
      endpoint: opc.tcp://plc-3:4840
      nodes: {temperature: "ns=2;s=Pump7.Temperature", running: "ns=2;s=Pump7.Running"}
      mode: subscribe          # (default) data-change notifications; or poll: read every `interval`
      interval: 1s             # publishing interval of the subscription, or the poll interval
      username_env: PLC_USER   # optional user and password from the environment
      password_env: PLC_PASSWORD
      security: "Basic256Sha256,SignAndEncrypt,client-cert.pem,client-key.pem"   # optional
      services:
        stop: {object: "ns=2;s=Pump7", method: "ns=2;s=Pump7.Stop"}
        set_speed: {object: "ns=2;s=Pump7", method: "ns=2;s=Pump7.SetSpeed", args: [$rpm]}

Each value goes through the product's property check. A data-change notification's event time is the
server's SourceTimestamp (else the arrival). A device's ``set`` writes the property's node with the node's
own data type (a Double variable is not written an Int64); a service calls the method on the object with
the arguments in order.

All devices on one endpoint share one connection (a PLC serves many). Every endpoint has its own task on
the connector's asyncio loop: an unreachable server, a refused login, a security failure or a node id
the server does not know is a counted error and a dead letter with the reason, then a reconnect after a
wait growing (with jitter) from 0.5 s to 30 s; a server that restarts is subscribed to again. One slow
endpoint never delays another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
import time
from typing import TYPE_CHECKING, Any, ClassVar

from ..backoff import Backoff
from ..records import RecordError
from .base import BindingCheck, Connector, NodeContext, substitute

if TYPE_CHECKING:
    from ..devices.catalog import DeviceBinding, Product
    from ..metrics import ConnectorFamilies, Family

__all__ = ["OpcuaConnector"]

log = logging.getLogger("edgeloop.opcua")
MAX_BACKOFF = 30.0
_NODE_ID = re.compile(r"^(ns=\d+;)?[isgb]=.+$")


class _Endpoint:
    """One OPC UA server: its devices' nodes, a client, counters."""

    def __init__(self, url: str, opt: dict[str, Any]) -> None:
        self.url, self.opt = url, opt
        # node id -> (device, property, product)
        self.watch: dict[str, tuple[str, str, Product]] = {}
        self.devices: dict[str, dict[str, Any]] = {}
        self.client: Any = None
        self.connected = False
        self.notifications = self.accepted = self.errors = self.reconnects = 0
        self.last_error: str | None = None
        self.pending: list[dict[str, Any]] = []


class OpcuaConnector(Connector):
    """OPC UA devices: data-change subscriptions or polled reads; writes and method calls."""

    name = "opcua"
    options: ClassVar[dict[str, str]] = {
        "endpoint": "the server, opc.tcp://host:4840[/path]", "nodes": "property -> node id (ns=2;s=Pump7.Temperature)",
        "mode": "subscribe (data-change notifications; the default) or poll (read every interval)",
        "interval": "publishing or poll interval (1s)", "timeout": "request timeout (5s)",
        "username_env": "environment variable with the user name",
        "password_env": "environment variable with the password",
        "security": "asyncua security string: Policy,Mode,client-cert,client-key[,server-cert]"}
    service_keys = frozenset({"object", "method", "args"})
    service_required = ("object", "method")
    idle_stats = None

    @classmethod
    def check(cls, b: BindingCheck) -> None:
        options, prod = b.options, b.product
        endpoint = options.get("endpoint")
        if not isinstance(endpoint, str) or not endpoint.startswith("opc.tcp://"):
            raise b.error("expected the server's opc.tcp://host:port endpoint", "endpoint",
                          at="endpoint" if "endpoint" in b.spec else "connector")
        nodes = options.get("nodes")
        if not isinstance(nodes, dict) or not nodes:
            raise b.error("expected a mapping property -> node id (ns=2;s=Pump7.Temperature)", "nodes",
                          at="nodes" if "nodes" in b.spec else "connector")
        for prop, node_id in nodes.items():
            if prop not in prod.properties:
                raise b.error(f"product '{prod.name}' has no property {prop!r}", f"nodes.{prop}",
                              hint="properties: " + ", ".join(prod.properties))
            if not isinstance(node_id, str) or not _NODE_ID.match(node_id):
                raise b.error(f"expected a node id like ns=2;s=Pump7.Temperature or ns=2;i=1001, got {node_id!r}",
                              f"nodes.{prop}")
        mode = options.setdefault("mode", "subscribe")
        if mode not in ("subscribe", "poll"):
            raise b.error(f"expected subscribe or poll, got {mode!r}", "mode")
        b.duration("interval", 1.0)
        b.duration("timeout", 5.0)
        if options.get("password_env") and not options.get("username_env"):
            raise b.error("a password without a user: add username_env", "password_env")

    @classmethod
    def check_service(cls, b: BindingCheck, service: str, how: Any) -> Any:
        how = super().check_service(b, service, how)
        fld = f"services.{service}"
        for key in ("object", "method"):
            if not isinstance(how[key], str) or not _NODE_ID.match(how[key]):
                raise b.error(f"expected a node id like ns=2;s=Pump7.Stop, got {how[key]!r}", f"{fld}.{key}")
        if not isinstance(how.get("args", []), list):
            raise b.error("expected a list of arguments ($name for the service's)", f"{fld}.args")
        b.check_placeholders(service, how.get("args"))
        return how

    @classmethod
    def metric_families(cls, stats: Any, node: str, shared: ConnectorFamilies) -> list[Family]:
        for ep in stats or []:
            shared.accepted.add(ep.get("accepted"), node=node, connector="opcua", source=ep.get("endpoint"))
            shared.errors.add(ep.get("errors"), node=node, connector="opcua", source=ep.get("endpoint"))
            shared.connected.add(ep.get("connected"), node=node, connector="opcua", source=ep.get("endpoint"))
        return []

    def __init__(self, ctx: NodeContext, bindings: list[DeviceBinding]) -> None:
        from asyncua import ua

        super().__init__(ctx, bindings)
        catalog = ctx.catalog
        self.bus = ctx.bus
        self.catalog = catalog
        self.endpoints: dict[str, _Endpoint] = {}
        self.device_endpoint: dict[str, _Endpoint] = {}
        for b in bindings:
            opt = b.options
            key = f"{opt['endpoint']} {opt.get('mode', 'subscribe')} {opt.get('interval', 1.0)} " \
                  f"{opt.get('username_env')} {opt.get('security')}"
            ep = self.endpoints.setdefault(key, _Endpoint(opt["endpoint"], opt))
            product = catalog.products[b.product]
            for prop, node_id in opt["nodes"].items():
                # the form the server's notifications come back in (ns=0;i=85 -> i=85)
                ep.watch[ua.NodeId.from_string(node_id).to_string()] = (b.id, prop, product)
            ep.devices[b.id] = {"nodes": opt["nodes"], "services": b.services, "product": product}
            self.device_endpoint[b.id] = ep
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = threading.Event()

    # -- connections ------------------------------------------------------------------------------
    async def _connect(self, ep: _Endpoint) -> Any:
        from asyncua.client.client import Client

        opt = ep.opt
        client = Client(url=ep.url, timeout=float(opt.get("timeout", 5.0)), watchdog_intervall=1.0)
        user = os.environ.get(str(opt["username_env"])) if opt.get("username_env") else None
        if user:
            client.set_user(user)
            client.set_password(os.environ.get(str(opt.get("password_env") or ""), "") or "")
        if opt.get("security"):
            await client.set_security_string(str(opt["security"]))
        await asyncio.wait_for(client.connect(), float(opt.get("timeout", 5.0)) * 2)
        return client

    async def _endpoint(self, ep: _Endpoint) -> None:
        from asyncua.ua.uaerrors import UaError, UaStatusCodeError

        backoff, wait = Backoff(0.5, MAX_BACKOFF), 0.0
        mode = ep.opt.get("mode", "subscribe")
        interval = float(ep.opt.get("interval", 1.0))
        while True:
            if wait:
                await asyncio.sleep(wait)
            lost = asyncio.Event()
            client = None
            try:
                try:
                    client = await self._connect(ep)
                except UaStatusCodeError as exc:
                    raise RecordError(f"the server refused the session: {_status(exc)}") from None
                except UaError as exc:
                    if "No matching endpoints" in str(exc):
                        policy = str(exc).rsplit("#", 1)[-1]
                        raise RecordError(f"the server offers no endpoint with security {policy}: set the binding's "
                                          "security (Policy,Mode,client-cert,client-key)") from None
                    raise RecordError(f"the server refused the session: {exc}") from None
                except (TimeoutError, OSError, ConnectionError) as exc:
                    raise RecordError(f"the server is unreachable: {type(exc).__name__} {exc}".rstrip()) from None

                client.connection_lost_callback = _setter(lost)
                ep.client, ep.connected, ep.last_error = client, True, None
                backoff.reset()  # a session was up: after it is lost, the first wait is short again
                nodes = [client.get_node(n) for n in ep.watch]
                if mode == "subscribe":
                    sub = await client.create_subscription(interval * 1000, _Handler(self, ep))
                    results = await sub.subscribe_data_change(nodes, queuesize=100, sampling_interval=0)
                    for node_id, res in zip(ep.watch, results if isinstance(results, list) else [results]):
                        if not isinstance(res, int):  # a StatusCode: the server does not know this node
                            self._failed(ep, ep.watch[node_id][0], f"cannot subscribe to {node_id}: {_status(res)}")
                    await lost.wait()
                else:
                    while not lost.is_set():
                        await self._read_all(ep, client, nodes)
                        try:
                            await asyncio.wait_for(lost.wait(), interval)
                        except TimeoutError:
                            pass
                raise RecordError("the connection to the server was lost")
            except asyncio.CancelledError:
                raise
            except RecordError as exc:
                self._failed(ep, None, exc.reason)
            except Exception as exc:  # asyncua raises many kinds: the endpoint's problem, reported and retried
                self._failed(ep, None, f"{type(exc).__name__}: {exc}")
            finally:
                ep.connected, ep.client = False, None
                if client is not None:
                    with contextlib.suppress(Exception):  # the connection is already broken
                        await asyncio.wait_for(client.disconnect(), 2)
            ep.reconnects += 1
            wait = backoff.next()

    async def _read_all(self, ep: _Endpoint, client: Any, nodes: list[Any]) -> None:
        from asyncua.ua.attribute_ids import AttributeIds

        now = time.time()
        per_device: dict[str, dict[str, Any]] = {}
        values = await client.read_attributes(nodes, AttributeIds.Value)
        for node_id, dv in zip(ep.watch, values):
            device, prop, product = ep.watch[node_id]
            ep.notifications += 1
            if not dv.StatusCode.is_good():
                self._failed(ep, device, f"reading {node_id}: {dv.StatusCode.name}")
                continue
            try:
                per_device.setdefault(device, {})[prop] = product.properties[prop].check(_plain(dv.Value.Value))
            except RecordError as exc:
                self._failed(ep, device, f"{node_id}: {exc.reason}")
        records = [{"device": d, "product": ep.devices[d]["product"].name, "ts": now, "values": v}
                   for d, v in per_device.items()]
        if records:
            self.bus.submit(records)
            ep.accepted += len(records)

    def notified(self, ep: _Endpoint, node_id: str, value: Any, source_ts: Any) -> None:
        """A data-change notification (on the loop): checked, then queued for one submit per loop turn."""
        device, prop, product = ep.watch[node_id]
        ep.notifications += 1
        try:
            checked = product.properties[prop].check(_plain(value))
        except RecordError as exc:
            self._failed(ep, device, f"{node_id}: {exc.reason}")
            return
        ts = source_ts.timestamp() if source_ts is not None else time.time()
        if not ep.pending and self.loop is not None:
            self.loop.call_soon(self._flush, ep)
        ep.pending.append({"device": device, "product": product.name, "ts": ts, "values": {prop: checked}})

    def _flush(self, ep: _Endpoint) -> None:
        records, ep.pending = ep.pending, []
        if records:
            self.bus.submit(records)
            ep.accepted += len(records)

    def _failed(self, ep: _Endpoint, device: str | None, reason: str) -> None:
        ep.errors += 1
        ep.last_error = reason
        devices = [device] if device else list(ep.devices)
        log.warning("OPC UA %s: %s", ep.url, reason)
        for d in devices:
            self.bus.dead(f"opcua:{ep.url}", reason, device=d)

    # -- actions ------------------------------------------------------------------------------
    async def _write(self, device: str, values: dict[str, Any]) -> None:
        from asyncua import ua
        from asyncua.ua.uaerrors import UaStatusCodeError

        ep = self.device_endpoint[device]
        client = ep.client
        if client is None:
            raise RecordError(f"OPC UA {ep.url} is not connected: {ep.last_error or 'connecting'}")
        nodes = ep.devices[device]["nodes"]
        for prop, value in values.items():
            if prop not in nodes:
                raise RecordError(f"device {device} maps no OPC UA node for property {prop!r}")
            node = client.get_node(nodes[prop])
            try:
                vtype = await node.read_data_type_as_variant_type()
                await node.write_value(ua.DataValue(ua.Variant(value, vtype)))
            except UaStatusCodeError as exc:
                raise RecordError(f"writing {nodes[prop]}: {_status(exc)}") from None

    async def _call(self, device: str, service: str, args: dict[str, Any]) -> Any:
        from asyncua import ua
        from asyncua.ua.uaerrors import UaStatusCodeError

        ep = self.device_endpoint[device]
        client = ep.client
        if client is None:
            raise RecordError(f"OPC UA {ep.url} is not connected: {ep.last_error or 'connecting'}")
        how = ep.devices[device]["services"].get(service)
        if not how:
            raise RecordError(f"device {device} binds no OPC UA method for service {service!r}")
        argv = substitute(list(how.get("args") or []), args)
        try:
            # a method is a node id (a plain string would be taken as a browse name)
            return await client.get_node(how["object"]).call_method(ua.NodeId.from_string(how["method"]), *argv)
        except UaStatusCodeError as exc:
            raise RecordError(f"calling {how['method']}: {_status(exc)}") from None

    def _run_sync(self, coro: Any, timeout: float = 10.0) -> Any:
        if self.loop is None:
            coro.close()
            raise RecordError("the OPC UA connector is not running")
        try:
            return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)
        except TimeoutError:
            raise RecordError(f"the OPC UA server did not answer within {timeout:.0f} s") from None

    def write(self, device: str, values: dict[str, Any]) -> None:
        """device_output ``set`` (from the node's actuator thread)."""
        self._run_sync(self._write(device, values))

    def call_service(self, device: str, service: str, args: dict[str, Any], how: Any) -> None:
        """device_output ``service`` (from the node's actuator thread)."""
        if not how:
            super().call_service(device, service, args, how)  # raises: what the protocol cannot do
            return
        self.call(device, service, args)

    def call(self, device: str, service: str, args: dict[str, Any]) -> Any:
        """Call the OPC UA method the binding maps ``service`` to; its result."""
        return self._run_sync(self._call(device, service, args))

    # -- life ---------------------------------------------------------------------------------
    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        for ep in self.endpoints.values():
            self._tasks.append(self.loop.create_task(self._endpoint(ep), name=f"opcua-{ep.url}"))
        self._ready.set()
        self.loop.run_forever()

    def start(self) -> None:
        for name in ("asyncua", "asyncua.client", "asyncua.client.ua_client", "asyncua.uaprotocol"):
            logging.getLogger(name).setLevel(logging.ERROR)  # reasons are ours, said once per failure
        self._thread = threading.Thread(target=self._run, name="opcua", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    async def _shutdown(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def stop(self) -> None:
        if self.loop is None or self._thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(15)
        except Exception:  # noqa: BLE001 - stopping: report, go on
            log.exception("OPC UA shutdown")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def stats(self) -> list[dict[str, Any]]:
        return [{"endpoint": ep.url, "devices": sorted(ep.devices), "connected": ep.connected,
                 "notifications": ep.notifications, "accepted": ep.accepted, "errors": ep.errors,
                 "reconnects": ep.reconnects, "last_error": ep.last_error} for ep in self.endpoints.values()]


class _Handler:
    """asyncua's subscription callbacks, bound to one endpoint."""

    def __init__(self, conn: OpcuaConnector, ep: _Endpoint) -> None:
        self.conn, self.ep = conn, ep

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        dv = data.monitored_item.Value
        self.conn.notified(self.ep, node.nodeid.to_string(), val, getattr(dv, "SourceTimestamp", None))

    def status_change_notification(self, status: Any) -> None:
        self.conn._failed(self.ep, None, f"subscription status {status.Status}")


def _setter(event: asyncio.Event) -> Any:
    async def lost(_exc: Exception) -> None:
        event.set()

    return lost


def _plain(value: Any) -> Any:
    """OPC UA scalars to the record's types (enums and other ints stay ints; bytes/str as they are)."""
    if hasattr(value, "value") and isinstance(value.value, int) and not isinstance(value, bool):
        return int(value.value)
    return value


def _status(exc: Any) -> str:
    code = getattr(exc, "code", None)
    if code is not None:
        from asyncua import ua

        try:
            return ua.StatusCode(code).name
        except Exception:  # noqa: BLE001 - an unknown code: say it as a number
            return f"status 0x{code:08X}"
    name = getattr(exc, "name", None)
    return name or str(exc)
