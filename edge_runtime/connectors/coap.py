"""CoAP devices (RFC 7252, aiocoap): observed, polled, or pushing readings to a resource of the node.

A binding ``connector: coap`` has a ``mode``:

- ``observe`` (the default when ``uri`` is given): ``GET`` with Observe (RFC 7641) on ``uri``; every
  notification is a reading. A device that restarts forgets its observers, and UDP says nothing about
  it, so an observation silent for ``reobserve`` seconds (default 60, CoAP's default Max-Age) is
  registered again.
- ``poll``: ``GET uri`` every ``interval`` (``timeout`` per request).
- ``push``: the node serves ``coap://<node>:<port>/devices/<id>/telemetry`` (node.yaml
  ``coap: {host, port, token_env}``); devices ``POST`` (or ``PUT``) JSON readings there with the
  device's token (``token_env`` in its binding, else the node's) as the Uri-Query ``token=...``, as
  ThingsBoard's CoAP API does: plain CoAP has no headers, and DTLS is not in aiocoap's server yet.
  Answers: 2.04 Changed, 4.00 Bad Request naming the reading and field (also a dead letter), 4.01
  Unauthorized, 4.04 Not Found, 4.13 over the node's payload limit, 4.15 not JSON.

Payloads are JSON readings (or lists of them) decoded with the binding's ``mapping`` / ``ts_field``, the
same as MQTT and HTTP. An unreachable device, an error code, garbage or a reading the product refuses is
a dead letter with its reason and a counted error; the device's next attempt waits longer (growing with
jitter), up to a minute. All CoAP devices share one asyncio loop on one thread, each on its own task: a slow or silent
device never delays the others.

Services: a binding maps a product service to a request, ``services: {stop: {path: /stop}}`` (``method``
POST by default, ``payload`` with ``$arg`` placeholders; default payload: the arguments), sent to the
device's host; ``set`` on a CoAP device is ``PUT`` of the values to ``uri``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from ..backoff import Backoff
from ..devices.readings import MAPPING_OPTIONS, FieldBinding, check_mapping, json_records
from ..records import RecordError
from ..sections import env_secret, setting, text
from ..sections import port as port_number
from .base import BindingCheck, Connector, NodeContext, substitute

if TYPE_CHECKING:
    from ..devices.catalog import DeviceBinding
    from ..metrics import ConnectorFamilies, Family

__all__ = ["CoapConfig", "CoapConnector"]

log = logging.getLogger("edgeloop.coap")
MAX_BACKOFF = 60.0
JSON_FORMATS = (None, 0, 50)  # absent, text/plain (a JSON text is fine), application/json


@dataclass(frozen=True)
class CoapConfig:
    """Where CoAP devices POST /devices/<id>/telemetry, and the node's token for them (node.yaml coap:)."""

    host: str = setting("127.0.0.1", text, "the address the node serves CoAP devices on")
    port: int = setting(5683, port_number(what="a UDP port number"), "the UDP port (5683)")
    #: the node's CoAP token (from the environment variable ``token_env`` names): for devices without their own
    token: str | None = setting(None, env_secret, "environment variable holding the node's CoAP device token",
                                key="token_env")


class _Device:
    __slots__ = ("fb", "opt", "mode", "received", "accepted", "errors", "last_error", "observing", "token")

    def __init__(self, fb: FieldBinding, opt: dict[str, Any]) -> None:
        self.fb, self.opt = fb, opt
        self.mode = opt.get("mode") or ("observe" if opt.get("uri") else "push")
        self.received = self.accepted = self.errors = 0
        self.last_error: str | None = None
        self.observing = False
        env = opt.get("token_env")
        self.token = os.environ.get(str(env)) if env else None


class CoapConnector(Connector):
    """CoAP devices: observed, polled, or pushing JSON readings to the node's CoAP resource."""

    name = "coap"
    options: ClassVar[dict[str, str]] = {
        "mode": "observe (the default with a uri), poll, or push (devices POST to the node's CoAP resource)",
        "uri": "observe/poll: the device's resource, coap://host:port/path",
        "interval": "poll: how often (1s)", "timeout": "request timeout (5s)",
        "reobserve": "observe: register again after this long without a notification (60s)",
        "token_env": "push: environment variable holding this device's token (else the node's CoAP token)",
        **MAPPING_OPTIONS}
    service_keys = frozenset({"path", "uri", "method", "payload"})
    settings = CoapConfig
    idle_stats = None

    @classmethod
    def check(cls, b: BindingCheck) -> None:
        options = b.options
        mode = options.setdefault("mode", "observe" if options.get("uri") else "push")
        if mode not in ("observe", "poll", "push"):
            raise b.error(f"expected observe, poll or push, got {mode!r}", "mode")
        if mode == "push":
            if "uri" in options:
                raise b.error("a pushing device has no uri: it POSTs to the node's /devices/<id>/telemetry", "uri")
        else:
            uri = options.get("uri")
            if not isinstance(uri, str) or not uri.startswith(("coap://", "coap+tcp://")):
                kind = "an observed" if mode == "observe" else "a polled"
                raise b.error(f"{kind} device needs its coap:// uri", "uri", at="uri" if "uri" in b.spec else "mode")
        for key, default in (("interval", 1.0), ("timeout", 5.0), ("reobserve", 60.0)):
            b.duration(key, default)
        check_mapping(b)

    @classmethod
    def check_service(cls, b: BindingCheck, service: str, how: Any) -> Any:
        how = super().check_service(b, service, how)
        fld = f"services.{service}"
        if "path" not in how and "uri" not in how:
            raise b.error("a coap service needs 'path' (on the device's host) or 'uri'", f"{fld}.path")
        method = how.setdefault("method", "POST")
        if method not in ("POST", "PUT", "GET"):
            raise b.error(f"expected one of POST, PUT, GET, got {method!r}", f"{fld}.method")
        b.check_placeholders(service, how.get("payload"))
        return how

    @classmethod
    def metric_families(cls, stats: Any, node: str, shared: ConnectorFamilies) -> list[Family]:
        for dev, d in ((stats or {}).get("devices") or {}).items():
            shared.accepted.add(d.get("accepted"), node=node, connector="coap", source=dev)
            shared.errors.add(d.get("errors"), node=node, connector="coap", source=dev)
            if d.get("mode") == "observe":
                shared.connected.add(d.get("observing"), node=node, connector="coap", source=dev)
        return []

    def __init__(self, ctx: NodeContext, bindings: list[DeviceBinding]) -> None:
        super().__init__(ctx, bindings)
        self.bus, self.cfg, self.max_payload = ctx.bus, ctx.settings or CoapConfig(), ctx.max_payload
        self.devices: dict[str, _Device] = {}
        for b in bindings:
            self.devices[b.id] = _Device(FieldBinding(b, ctx.catalog.products[b.product]), b.options)
        self.port: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._server: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_error: BaseException | None = None

    # -- decoding ------------------------------------------------------------------------------
    def take(self, device: str, payload: bytes, content_format: Any, source: str, events: bool = False) -> str | None:
        """Decode a payload of ``device`` (readings, or its own events) into the bus; None when taken, else
        the reason it was refused."""
        d = self.devices[device]
        d.received += 1
        try:
            if len(payload) > self.max_payload:
                raise RecordError(f"payload of {len(payload)} bytes, over the limit of {self.max_payload}")
            if content_format not in JSON_FORMATS:
                raise RecordError(f"content-format {content_format} is not JSON (50)")
            records = json_records(d.fb, payload, time.time(), events=events)
        except RecordError as exc:
            self._failed(d, source, exc.reason, payload)
            return exc.reason
        self.bus.submit(records)
        d.accepted += len(records)
        d.last_error = None
        return None

    def _failed(self, d: _Device, source: str, reason: str, raw: bytes | None) -> None:
        d.errors += 1
        d.last_error = reason
        self.bus.dead(source, reason, device=d.fb.device, raw=raw[:1024] if raw else None)

    # -- client side: observe and poll -------------------------------------------------------
    async def _observe(self, device: str) -> None:
        from aiocoap import GET, Message

        d = self.devices[device]
        uri, source = d.opt["uri"], f"coap:{d.opt['uri']}"
        timeout, silent = float(d.opt.get("timeout", 5.0)), float(d.opt.get("reobserve", 60.0))
        backoff, wait = Backoff(0.5, MAX_BACKOFF), 0.0
        while True:
            if wait:
                await asyncio.sleep(wait)
            req = self._client.request(Message(code=GET, uri=uri, observe=0))
            try:
                first = await asyncio.wait_for(req.response, timeout)
                if not first.code.is_successful():
                    raise RecordError(f"the device answered {first.code}")
                d.observing = True
                self.take(device, first.payload, first.opt.content_format, source)  # a refusal is its own dead letter
                it = req.observation.__aiter__()
                while True:
                    try:
                        note = await asyncio.wait_for(it.__anext__(), silent)
                    except StopAsyncIteration:
                        raise RecordError("the device ended the observation") from None
                    except TimeoutError:
                        # a restarted device has forgotten us: register again (no error, no backoff)
                        log.info("CoAP %s: no notification for %.0f s, observing again", device, silent)
                        break
                    if not note.code.is_successful():
                        raise RecordError(f"the device answered {note.code}")
                    self.take(device, note.payload, note.opt.content_format, source)
                backoff.reset()
                wait = 0.0
            except RecordError as exc:
                d.observing = False
                self._failed(d, source, exc.reason, None)
                wait = backoff.next()
            except asyncio.CancelledError:
                req.observation.cancel()
                raise
            except Exception as exc:  # aiocoap's network errors and timeouts: the device is unreachable
                d.observing = False
                self._failed(d, source, f"the device is unreachable: {type(exc).__name__} {exc}".rstrip(), None)
                wait = backoff.next()
            finally:
                if not req.observation.cancelled:
                    req.observation.cancel()
            d.observing = False

    async def _poll(self, device: str) -> None:
        from aiocoap import GET, Message

        d = self.devices[device]
        uri, source = d.opt["uri"], f"coap:{d.opt['uri']}"
        interval, timeout = float(d.opt.get("interval", 1.0)), float(d.opt.get("timeout", 5.0))
        backoff, wait = Backoff(interval, MAX_BACKOFF), 0.0
        while True:
            if wait:
                await asyncio.sleep(wait)
            try:
                resp = await asyncio.wait_for(self._client.request(Message(code=GET, uri=uri)).response, timeout)
                if not resp.code.is_successful():
                    raise RecordError(f"the device answered {resp.code}")
                ok = self.take(device, resp.payload, resp.opt.content_format, source) is None
            except RecordError as exc:
                self._failed(d, source, exc.reason, None)
                ok = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # network errors and timeouts
                self._failed(d, source, f"the device is unreachable: {type(exc).__name__} {exc}".rstrip(), None)
                ok = False
            if ok:
                backoff.reset()
            wait = interval if ok else backoff.next()

    async def request(self, method: str, uri: str, payload: Any, timeout: float = 5.0) -> Any:
        """One confirmable request (services, set); raises RecordError naming what went wrong."""
        import aiocoap

        code = getattr(aiocoap, method.upper(), None)
        if not isinstance(code, aiocoap.Code):
            raise RecordError(f"unknown CoAP method {method!r}")
        msg = aiocoap.Message(code=code, uri=uri, payload=json.dumps(payload).encode(), content_format=50)
        try:
            resp = await asyncio.wait_for(self._client.request(msg).response, timeout)
        except Exception as exc:
            raise RecordError(f"CoAP {method} {uri}: the device is unreachable: {type(exc).__name__}") from None
        if not resp.code.is_successful():
            raise RecordError(f"CoAP {method} {uri}: the device answered {resp.code}")
        return resp

    def call(self, device: str, method: str, path_or_uri: str, payload: Any, timeout: float = 5.0) -> None:
        """Run a request from another thread (the node's actuator) on the CoAP loop and wait for it."""
        d = self.devices[device]
        uri = path_or_uri
        if not path_or_uri.startswith(("coap://", "coaps://")):
            base = urlsplit(d.opt.get("uri") or "")
            if not base.netloc:
                raise RecordError(f"device {device} has no uri to send a CoAP request to")
            uri = f"{base.scheme}://{base.netloc}/{path_or_uri.lstrip('/')}"
        if self.loop is None:
            raise RecordError("the CoAP connector is not running")
        fut = asyncio.run_coroutine_threadsafe(self.request(method, uri, payload, timeout), self.loop)
        fut.result(timeout + 1)

    # -- server side: push -------------------------------------------------------------------
    def _site(self) -> Any:
        from aiocoap import resource

        outer = self

        class Telemetry(resource.Resource):  # type: ignore[misc]  # aiocoap has no type hints
            def __init__(self, device: str, events: bool = False) -> None:
                super().__init__()
                self.device, self.events = device, events

            async def render_post(self, request: Any) -> Any:
                return outer._pushed(self.device, request, self.events)

            render_put = render_post

        site = resource.Site()
        for dev, d in self.devices.items():
            if d.mode == "push":
                site.add_resource(["devices", dev, "telemetry"], Telemetry(dev))
                site.add_resource(["devices", dev, "events"], Telemetry(dev, events=True))
        site.add_resource([".well-known", "core"], resource.WKCResource(site.get_resources_as_linkheader))
        return site

    def _pushed(self, device: str, request: Any, events: bool = False) -> Any:
        from aiocoap import Code, Message

        d = self.devices[device]
        want = d.token or self.cfg.token
        given = next((q[6:] for q in request.opt.uri_query if q.startswith("token=")), None)
        if not want or given is None or not hmac.compare_digest(given.encode(), want.encode()):
            return Message(code=Code.UNAUTHORIZED, payload=b"missing or wrong token: add ?token=<token>")
        if len(request.payload) > self.max_payload:
            return Message(code=Code.REQUEST_ENTITY_TOO_LARGE,
                           payload=f"{len(request.payload)} bytes, over the limit of {self.max_payload}".encode())
        if request.opt.content_format not in JSON_FORMATS:
            return Message(code=Code.UNSUPPORTED_CONTENT_FORMAT, payload=b"expected application/json (50)")
        reason = self.take(device, request.payload, request.opt.content_format,
                           f"coap:/devices/{device}/{'events' if events else 'telemetry'}", events)
        if reason is not None:
            return Message(code=Code.BAD_REQUEST, payload=reason.encode()[:1000])
        return Message(code=Code.CHANGED)

    # -- life ---------------------------------------------------------------------------------
    async def _main(self) -> None:
        from aiocoap import Context

        try:
            self._client = await Context.create_client_context()
            if any(d.mode == "push" for d in self.devices.values()):
                self._server = await Context.create_server_context(self._site(), bind=(self.cfg.host, self.cfg.port))
                self.port = self.cfg.port
                log.info("CoAP devices on coap://%s:%s/devices/<id>/telemetry", self.cfg.host, self.port)
            for dev, d in self.devices.items():
                if d.mode == "observe":
                    self._tasks.append(asyncio.create_task(self._observe(dev), name=f"coap-observe-{dev}"))
                elif d.mode == "poll":
                    self._tasks.append(asyncio.create_task(self._poll(dev), name=f"coap-poll-{dev}"))
        except BaseException as exc:
            self._start_error = exc
            raise
        finally:
            self._ready.set()

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        except BaseException:  # reported through start()
            return
        self.loop.run_forever()

    def start(self) -> None:
        logging.getLogger("coap").setLevel(logging.WARNING)
        logging.getLogger("coap-server").setLevel(logging.WARNING)
        self._thread = threading.Thread(target=self._run, name="coap", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._start_error is not None:
            raise RuntimeError(f"CoAP: cannot serve on {self.cfg.host}:{self.cfg.port}: {self._start_error}")

    async def _shutdown(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for ctx in (self._server, self._client):
            if ctx is not None:
                await ctx.shutdown()

    def stop(self) -> None:
        if self.loop is None or self._thread is None:
            return
        if self.loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop)
            try:
                fut.result(10)
            except Exception:  # noqa: BLE001 - stopping: a failing shutdown must not stop the node's stop
                log.exception("CoAP shutdown")
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def write(self, device: str, values: dict[str, Any]) -> None:
        uri = self.bindings[device].options.get("uri")
        if not uri:  # a pushing device: nothing to send a request to
            super().write(device, values)  # raises: what the protocol cannot do
            return
        self.call(device, "PUT", uri, values)

    def call_service(self, device: str, service: str, args: dict[str, Any], how: Any) -> None:
        if not how:
            super().call_service(device, service, args, how)  # raises: what the protocol cannot do
            return
        payload = substitute(how["payload"], args) if "payload" in how else args
        self.call(device, how.get("method", "POST"), how.get("uri") or how["path"], payload)

    def stats(self) -> dict[str, Any]:
        return {"port": self.port, "devices": {dev: {"mode": d.mode, "received": d.received, "accepted": d.accepted,
                                                     "errors": d.errors, "observing": d.observing,
                                                     "last_error": d.last_error}
                                               for dev, d in self.devices.items()}}
