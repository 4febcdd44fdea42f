"""HTTP devices: readings pushed to the node, or polled from the device's HTTP/JSON endpoint.

Push (``connector: http``, the default ``mode: push``): the node serves
``POST /devices/<id>/telemetry`` (node.yaml ``http: {host, port, token_env}``) with one JSON reading or a
list of them, decoded with the device's ``mapping`` / ``ts_field`` exactly like an MQTT payload. No
record is accepted without a valid token: the device's own (``token_env`` in its binding) or, when it has
none, the node's HTTP token. Answers: 202 ``{"accepted": n}``; 401 missing or wrong token; 404 no such
HTTP device; 413 body over the node's payload limit; 415 not JSON; 422 a reading the product refuses
(every reading is checked first: a batch is taken whole or not at all, and the refusal is also a dead
letter with its reason). Connections are kept alive (HTTP/1.1).

Poll (``mode: poll``): ``url`` is fetched every ``interval`` (``timeout``, ``headers``); each answer is a
reading (or a list). An unreachable device, an error status, or an answer that is not JSON or that the
product refuses is a dead letter with the reason and a counted error; the next poll waits longer (from
the interval, growing with jitter up to a minute) until the device answers again. Each device polls on its
own thread: a slow one never delays the others.

Services: ``services: {stop: {url, method, payload, headers}}`` (POST or PUT; ``payload`` with ``$arg``
placeholders, default: the arguments); a ``/path`` url is on the polled device's host.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, ClassVar

from ..backoff import Backoff
from ..devices.readings import MAPPING_OPTIONS, FieldBinding, check_mapping, json_records
from ..records import RecordError
from ..sections import env_secret, setting, text
from ..sections import port as port_number
from .base import BindingCheck, Connector, NodeContext, substitute

if TYPE_CHECKING:
    from ..devices.catalog import DeviceBinding
    from ..metrics import ConnectorFamilies, Family

__all__ = ["HttpConfig", "HttpConnector", "call_service"]

log = logging.getLogger("edgeloop.http")
MAX_BACKOFF = 60.0


@dataclass(frozen=True)
class HttpConfig:
    """Where HTTP devices POST /devices/<id>/telemetry, and the node's token for them (node.yaml http:)."""

    host: str = setting("127.0.0.1", text, "the address the node serves HTTP devices on")
    port: int = setting(8090, port_number(zero="any free port"), "the TCP port (0: any free port)")
    #: the node's HTTP token (from the environment variable ``token_env`` names): for devices without their own
    token: str | None = setting(None, env_secret, "environment variable holding the node's HTTP device token",
                                key="token_env")


def _token(options: dict[str, Any]) -> str | None:
    env = options.get("token_env")
    return os.environ.get(str(env)) if env else None


class HttpConnector(Connector):
    """HTTP/JSON devices: readings pushed to the node's endpoint or polled from the device's."""

    name = "http"
    options: ClassVar[dict[str, str]] = {
        "mode": "push (the device POSTs to the node; the default) or poll (the node GETs url)",
        "url": "poll: the device's HTTP/JSON endpoint", "interval": "poll: how often (1s)",
        "timeout": "poll: request timeout (5s)", "headers": "poll: extra request headers",
        "token_env": "push: environment variable holding this device's token (else the node's HTTP token)",
        **MAPPING_OPTIONS}
    service_keys = frozenset({"url", "method", "payload", "headers"})
    service_required = ("url",)
    settings = HttpConfig
    idle_stats = None

    @classmethod
    def check(cls, b: BindingCheck) -> None:
        options = b.options
        mode = options.setdefault("mode", "push")
        if mode not in ("push", "poll"):
            raise b.error(f"expected push or poll, got {mode!r}", "mode")
        if mode == "poll":
            url = options.get("url")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise b.error("a polled device needs its http:// or https:// url", "url",
                              at="url" if "url" in b.spec else "mode")
            b.duration("interval", 1.0)
            b.duration("timeout", 5.0)
            headers = options.get("headers") or {}
            if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
                raise b.error("expected a mapping header -> text", "headers")
        else:
            for key in ("url", "interval", "timeout", "headers"):
                if key in options:
                    raise b.error(f"{key!r} is for polled devices (mode: poll)", key)
        check_mapping(b)

    @classmethod
    def check_service(cls, b: BindingCheck, service: str, how: Any) -> Any:
        how = super().check_service(b, service, how)
        fld = f"services.{service}"
        method = how.setdefault("method", "POST")
        if method not in ("POST", "PUT"):
            raise b.error(f"expected one of POST, PUT, got {method!r}", f"{fld}.method")
        if not str(how["url"]).startswith(("http://", "https://", "/")):
            raise b.error("expected an http(s):// url, or a /path on the polled device's host", f"{fld}.url")
        b.check_placeholders(service, how.get("payload"))
        return how

    @classmethod
    def metric_families(cls, stats: Any, node: str, shared: ConnectorFamilies) -> list[Family]:
        if stats:
            shared.accepted.add(stats.get("accepted"), node=node, connector="http", source="push")
            shared.errors.add(stats.get("refused"), node=node, connector="http", source="push")
            for dev, p in (stats.get("polls") or {}).items():
                shared.errors.add(p.get("errors"), node=node, connector="http", source=dev)
        return []

    def __init__(self, ctx: NodeContext, bindings: list[DeviceBinding]) -> None:
        super().__init__(ctx, bindings)
        self.bus, self.cfg, self.max_payload = ctx.bus, ctx.settings or HttpConfig(), ctx.max_payload
        self.push: dict[str, tuple[FieldBinding, str | None]] = {}
        self.polls: dict[str, tuple[FieldBinding, dict[str, Any]]] = {}
        for b in bindings:
            fb = FieldBinding(b, ctx.catalog.products[b.product])
            if b.options.get("mode", "push") == "poll":
                self.polls[b.id] = (fb, b.options)
            else:
                self.push[b.id] = (fb, _token(b.options))
        self.accepted = self.refused = 0
        self.poll_stats: dict[str, dict[str, Any]] = {d: {"polls": 0, "errors": 0, "last_error": None}
                                                      for d in self.polls}
        self.server: ThreadingHTTPServer | None = None
        self.port: int | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- push ----------------------------------------------------------------------------------
    def authorised(self, device: str, header: str | None) -> bool:
        _, own = self.push[device]
        want = own or self.cfg.token
        if not want or not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[7:].strip().encode(), want.encode())

    def take(self, device: str, body: bytes, kind: str = "telemetry") -> tuple[int, dict[str, Any]]:
        """Decode and check a pushed body for ``device`` (readings, or ``kind="events"``); (status, answer)."""
        fb, _ = self.push[device]
        source = f"http:/devices/{device}/{kind}"
        try:
            records = json_records(fb, body, time.time(), events=kind != "telemetry")
        except RecordError as exc:
            self.bus.dead(source, exc.reason, device=device, raw=body[:1024])
            self.refused += 1
            return 422, {"detail": exc.reason}
        self.bus.submit(records)
        self.accepted += len(records)
        return 202, {"accepted": len(records)}

    def _serve(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # a response's headers and body must not wait on the client's delayed ACK
            timeout = 30

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                parts = self.path.split("?", 1)[0].strip("/").split("/")
                if len(parts) != 3 or parts[0] != "devices" or parts[2] not in ("telemetry", "events"):
                    return self._answer(404, {"detail": "POST /devices/<id>/telemetry or /devices/<id>/events"})
                device = parts[1]
                size = int(self.headers.get("Content-Length") or 0)
                if device not in outer.push:
                    self._discard(size)
                    return self._answer(404, {"detail": f"no HTTP device {device!r} on this node"})
                if not outer.authorised(device, self.headers.get("Authorization")):
                    self._discard(size)
                    return self._answer(401, {"detail": "missing or wrong token: send Authorization: Bearer <token>"})
                if size > outer.max_payload:
                    self.close_connection = True
                    return self._answer(413, {"detail": f"body of {size} bytes, over the limit of {outer.max_payload}"})
                ctype = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
                body = self.rfile.read(size)
                if ctype != "application/json":
                    return self._answer(415, {"detail": f"expected application/json, got {ctype}"})
                status, answer = outer.take(device, body, parts[2])
                self._answer(status, answer)

            def do_GET(self) -> None:  # noqa: N802
                if self.path.split("?", 1)[0] == "/health":
                    return self._answer(200, {"status": "ok"})
                self._answer(404, {"detail": "POST /devices/<id>/telemetry"})

            def _discard(self, size: int) -> None:
                if 0 < size <= outer.max_payload:
                    self.rfile.read(size)
                else:
                    self.close_connection = True

            def _answer(self, status: int, doc: dict[str, Any]) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if status == 401:
                    self.send_header("WWW-Authenticate", "Bearer")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((self.cfg.host, self.cfg.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        t = threading.Thread(target=self.server.serve_forever, name="http-devices", daemon=True)
        t.start()
        self._threads.append(t)
        log.info("HTTP devices on http://%s:%d/devices/<id>/telemetry", self.cfg.host, self.port)

    # -- poll ----------------------------------------------------------------------------------
    def poll_once(self, device: str) -> bool:
        """Fetch and take one answer of a polled device; True when it gave readings."""
        fb, opt = self.polls[device]
        st = self.poll_stats[device]
        st["polls"] += 1
        source = f"http:{opt['url']}"
        try:
            # the url is checked to be http(s) when the binding loads (HttpConnector.check)
            req = urllib.request.Request(opt["url"],  # noqa: S310
                                         headers={"Accept": "application/json", **(opt.get("headers") or {})})
            with urllib.request.urlopen(req, timeout=float(opt.get("timeout", 5))) as resp:  # noqa: S310
                body = resp.read(self.max_payload + 1)
            if len(body) > self.max_payload:
                raise RecordError(f"answer over the limit of {self.max_payload} bytes")
            records = json_records(fb, body, time.time(), empty_ok=True)
        except RecordError as exc:
            return self._poll_failed(device, source, exc.reason, locals().get("body"))
        except urllib.error.HTTPError as exc:
            return self._poll_failed(device, source, f"the device answered {exc.code} {exc.reason}", None)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return self._poll_failed(device, source, f"the device is unreachable: {reason}", None)
        self.bus.submit(records)
        self.accepted += len(records)
        st["last_error"] = None
        return True

    def _poll_failed(self, device: str, source: str, reason: str, raw: bytes | None) -> bool:
        st = self.poll_stats[device]
        st["errors"] += 1
        st["last_error"] = reason
        self.bus.dead(source, reason, device=device, raw=raw[:1024] if raw else None)
        return False

    def _poll_loop(self, device: str) -> None:
        _, opt = self.polls[device]
        interval = float(opt.get("interval", 1.0))
        backoff, wait = Backoff(interval, MAX_BACKOFF), 0.0
        while not self._stop.wait(wait):
            if self.poll_once(device):
                backoff.reset()
                wait = interval
            else:
                wait = backoff.next()

    # -- life ---------------------------------------------------------------------------------
    def start(self) -> None:
        if self.push:
            self._serve()
        for device in self.polls:
            t = threading.Thread(target=self._poll_loop, args=(device,), name=f"http-poll-{device}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        for t in self._threads:
            t.join(5)

    def stats(self) -> dict[str, Any]:
        return {"port": self.port, "accepted": self.accepted, "refused": self.refused, "polls": dict(self.poll_stats)}

    def call_service(self, device: str, service: str, args: dict[str, Any], how: Any) -> None:
        if not how:
            super().call_service(device, service, args, how)  # raises: what the protocol cannot do
            return
        payload = substitute(how["payload"], args) if "payload" in how else args
        call_service(self.bindings[device], how, payload)


def call_service(binding: Any, how: dict[str, Any], payload: Any, timeout: float = 5.0) -> int:
    """A product service as an HTTP request to the device (``services: {stop: {url, method, payload,
    headers}}``; a ``/path`` url is on the polled device's host). The status; RecordError on failure."""
    from urllib.parse import urlsplit

    url = str(how["url"])
    if url.startswith("/"):
        base = urlsplit(binding.options.get("url") or "")
        if not base.netloc:
            raise RecordError(f"device {binding.id}: service url {url!r} is a path, but the device has no url")
        url = f"{base.scheme}://{base.netloc}{url}"
    headers = {"Content-Type": "application/json", **(binding.options.get("headers") or {}),
               **(how.get("headers") or {})}
    # the url is checked to be http(s) when the binding loads (HttpConnector.check_service)
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method=how.get("method", "POST"),  # noqa: S310
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        raise RecordError(f"HTTP {req.method} {url}: the device answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise RecordError(f"HTTP {req.method} {url}: the device is unreachable: {getattr(exc, 'reason', exc)}") from None
