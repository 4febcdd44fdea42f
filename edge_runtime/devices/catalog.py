"""The unified device model: products (properties, services, events) and device bindings.

Products are abstract device classes written by users in YAML::

    products:
      - name: pump
        properties:
          temperature: {type: number, unit: degC, min: -40, max: 200}
          running: {type: boolean}
        services:
          stop: {}
          set_speed: {args: {rpm: {type: integer, min: 0, max: 3000}}}
        events:
          overheat: {level: WARN}

A device binding ties a concrete device to a product through a connector::

    devices:
      - id: pump-1
        product: pump
        connector: mqtt
        topic: plant/pumps/1
        mapping: {temperature: temp_c, running: state.on}

Errors name the file, the line, the item and the field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..operators.base import SpecError
from ..records import RecordError
from ..yamlspec import line_of, load_yaml

__all__ = ["Property", "Service", "Event", "Product", "DeviceBinding", "Catalog", "load_catalog",
           "PROPERTY_TYPES", "CONNECTORS"]

PROPERTY_TYPES = ("number", "integer", "boolean", "string", "image", "video")
CONNECTORS: dict[str, dict[str, str]] = {
    "mqtt": {"topic": "MQTT topic the device publishes on", "qos": "0 or 1",
             "mapping": "property -> JSON field path in the payload (a.b.c); default: same name",
             "ts_field": "payload field with the event time (epoch seconds); default: arrival time",
             "ts_unit": "s or ms", "command_topic": "where device_output sends commands",
             "event_topic": "where the device publishes its events ({event: name, ...fields})"},
    "modbus": {"host": "Modbus TCP host", "port": "TCP port (502)", "unit": "unit/device id (1)",
               "interval": "poll interval (1s)", "timeout": "request timeout (1s)",
               "registers": "property -> {table, address, type, scale, offset, byte_order, word_order}"},
    "video": {"file": "video file (looped when loop: true)", "url": "stream URL (rtsp://, rtmp://, http://)",
              "usb": "V4L2 camera index or /dev/videoN", "fps": "pace/limit (frames per second)",
              "onvif": "an ONVIF camera: {host, port, profile, username_env, password_env} (stream URI and PTZ)",
              "realtime": "pace a file at its frame rate (true)", "loop": "restart a file at its end",
              "stall_timeout": "reconnect after this many seconds without a frame (5)",
              "backoff": "first reconnect wait, s (0.5)", "max_backoff": "longest reconnect wait, s (10)",
              "property": "the product's video/image property the frames fill (default: the first one)"},
    "http": {"mode": "push (the device POSTs to the node; the default) or poll (the node GETs url)",
             "url": "poll: the device's HTTP/JSON endpoint", "interval": "poll: how often (1s)",
             "timeout": "poll: request timeout (5s)", "headers": "poll: extra request headers",
             "token_env": "push: environment variable holding this device's token (else the node's HTTP token)",
             "mapping": "property -> JSON field path in a reading (a.b.c); default: same name",
             "ts_field": "reading field with the event time (epoch seconds); default: arrival time",
             "ts_unit": "s or ms"},
    "amqp": {"queue": "the AMQP 0-9-1 queue the device's readings arrive in", "url_env":
             "environment variable with the broker URL (else the node's amqp.url_env, else local guest)",
             "prefetch": "unacknowledged messages in flight (1000)", "declare": "declare the queue, durable (false)",
             "mapping": "property -> JSON field path in a reading (a.b.c); default: same name",
             "ts_field": "reading field with the event time (epoch seconds); default: arrival time",
             "ts_unit": "s or ms"},
    "coap": {"mode": "observe (the default with a uri), poll, or push (devices POST to the node's CoAP resource)",
             "uri": "observe/poll: the device's resource, coap://host:port/path",
             "interval": "poll: how often (1s)", "timeout": "request timeout (5s)",
             "reobserve": "observe: register again after this long without a notification (60s)",
             "token_env": "push: environment variable holding this device's token (else the node's CoAP token)",
             "mapping": "property -> JSON field path in a reading (a.b.c); default: same name",
             "ts_field": "reading field with the event time (epoch seconds); default: arrival time",
             "ts_unit": "s or ms"},
    "opcua": {"endpoint": "the server, opc.tcp://host:4840[/path]",
              "nodes": "property -> node id (ns=2;s=Pump7.Temperature)",
              "mode": "subscribe (data-change notifications; the default) or poll (read every interval)",
              "interval": "publishing or poll interval (1s)", "timeout": "request timeout (5s)",
              "username_env": "environment variable with the user name", "password_env":
              "environment variable with the password",
              "security": "asyncua security string: Policy,Mode,client-cert,client-key[,server-cert]"},
    "ingest": {},
}
# how each connector carries out a product service (``services:`` of a binding)
SERVICE_KEYS: dict[str, set[str]] = {
    "mqtt": {"topic", "payload"}, "modbus": {"write"}, "opcua": {"object", "method", "args"},
    "http": {"url", "method", "payload", "headers"}, "coap": {"path", "uri", "method", "payload"},
    "amqp": set(), "video": {"ptz", "pan", "tilt", "zoom", "timeout", "preset"}, "ingest": set()}
_NODE_ID = re.compile(r"^(ns=\d+;)?[isgb]=.+$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


@dataclass(frozen=True)
class Property:
    name: str
    type: str
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    enum: tuple[Any, ...] | None = None

    def check(self, value: Any) -> Any:
        """Return the value normalised for this type, or raise RecordError saying why not."""
        t = self.type
        if t == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RecordError(f"property '{self.name}' must be a number, got {_show(value)}")
            if isinstance(value, float) and not math.isfinite(value):
                raise RecordError(f"property '{self.name}' is not finite ({value!r})")
        elif t == "integer":
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise RecordError(f"property '{self.name}' must be an integer, got {_show(value)}")
        elif t == "boolean":
            if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
                value = bool(value)
            if not isinstance(value, bool):
                raise RecordError(f"property '{self.name}' must be true or false, got {_show(value)}")
        elif t == "string":
            if not isinstance(value, str):
                raise RecordError(f"property '{self.name}' must be a string, got {_show(value)}")
        if self.min is not None and value < self.min or self.max is not None and value > self.max:
            raise RecordError(f"property '{self.name}' = {value!r} is outside [{self.min}, {self.max}]")
        if self.enum is not None and value not in self.enum:
            raise RecordError(f"property '{self.name}' = {value!r} is not one of {list(self.enum)}")
        return value


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}"


@dataclass(frozen=True)
class Service:
    name: str
    args: dict[str, Property] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    name: str
    level: str = "INFO"
    fields: tuple[str, ...] = ()


@dataclass
class Product:
    name: str
    properties: dict[str, Property]
    services: dict[str, Service] = field(default_factory=dict)
    events: dict[str, Event] = field(default_factory=dict)
    description: str = ""

    def check_values(self, values: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for k, v in values.items():
            prop = self.properties.get(k)
            if prop is None:
                raise RecordError(f"unknown property '{k}' for product '{self.name}'")
            out[k] = prop.check(v)
        return out


@dataclass
class DeviceBinding:
    id: str
    product: str
    connector: str
    options: dict[str, Any]
    services: dict[str, Any] = field(default_factory=dict)
    file: str | None = None
    line: int | None = None


@dataclass
class Catalog:
    """Products and device bindings of a node, cross-checked."""

    products: dict[str, Product] = field(default_factory=dict)
    devices: dict[str, DeviceBinding] = field(default_factory=dict)

    def devices_of(self, product: str) -> list[str]:
        return [d.id for d in self.devices.values() if d.product == product]


def _err(msg: str, *, file: str | None, data: Any = None, key: Any = None, item: str | None = None,
         fld: str | None = None, hint: str | None = None) -> SpecError:
    return SpecError(msg, file=file, line=line_of(data, key) if data is not None else None,
                     step=item, field=fld, hint=hint)


def _number(value: Any, *, file: str | None, data: Any, key: str, item: str, fld: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _err(f"expected a number, got {value!r}", file=file, data=data, key=key, item=item, fld=fld)
    return value


def _property(name: str, spec: Any, *, file: str | None, item: str, parent: Any, prefix: str) -> Property:
    fld = f"{prefix}.{name}"
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict):
        raise _err("expected {type: ...} or a type name", file=file, data=parent, key=name, item=item, fld=fld)
    unknown = set(spec) - {"type", "unit", "min", "max", "enum", "description"}
    if unknown:
        bad = sorted(unknown)[0]
        raise _err(f"unknown key {bad!r}", file=file, data=spec, key=bad, item=item, fld=f"{fld}.{bad}",
                   hint="a property has: type, unit, min, max, enum, description")
    ptype = spec.get("type")
    if ptype not in PROPERTY_TYPES:
        raise _err(f"unknown type {ptype!r}", file=file, data=spec, key="type", item=item, fld=f"{fld}.type",
                   hint="one of " + ", ".join(PROPERTY_TYPES))
    lo = _number(spec.get("min"), file=file, data=spec, key="min", item=item, fld=f"{fld}.min")
    hi = _number(spec.get("max"), file=file, data=spec, key="max", item=item, fld=f"{fld}.max")
    if lo is not None and hi is not None and lo > hi:
        raise _err(f"min {lo} is greater than max {hi}", file=file, data=spec, key="min", item=item, fld=fld)
    enum = spec.get("enum")
    if enum is not None and not isinstance(enum, list):
        raise _err("expected a list", file=file, data=spec, key="enum", item=item, fld=f"{fld}.enum")
    return Property(name, ptype, spec.get("unit"), lo, hi, tuple(enum) if enum is not None else None)


def _product(spec: Any, *, file: str | None, index: int, parent: Any) -> Product:
    if not isinstance(spec, dict):
        raise _err("each product is a mapping with a name and properties", file=file, data=parent, key=index,
                   item=f"products[{index}]")
    name = spec.get("name")
    if not isinstance(name, str) or not _ID.match(name):
        raise _err(f"expected a product name of letters, digits and - _ . : (got {name!r})", file=file,
                   data=spec, key="name", item=f"products[{index}]", fld="name")
    item = f"product '{name}'"
    unknown = set(spec) - {"name", "description", "properties", "services", "events"}
    if unknown:
        bad = sorted(unknown)[0]
        raise _err(f"unknown key {bad!r}", file=file, data=spec, key=bad, item=item, fld=bad,
                   hint="a product has: name, description, properties, services, events")
    props_raw = spec.get("properties") or {}
    if not isinstance(props_raw, dict) or not props_raw:
        raise _err("expected a mapping of at least one property", file=file, data=spec, key="properties",
                   item=item, fld="properties")
    props = {k: _property(k, v, file=file, item=item, parent=props_raw, prefix="properties")
             for k, v in props_raw.items()}
    if "event" in props:
        raise _err("'event' is the name field of events: call the property something else", file=file,
                   data=props_raw, key="event", item=item, fld="properties.event")
    services = {}
    services_raw = spec.get("services") or {}
    if not isinstance(services_raw, dict):
        raise _err("expected a mapping of services", file=file, data=spec, key="services", item=item,
                   fld="services")
    for sname, sspec in services_raw.items():
        sspec = sspec or {}
        args_raw = sspec.get("args") or {} if isinstance(sspec, dict) else None
        if not isinstance(args_raw, dict):
            raise _err("expected {args: {name: {type: ...}}}", file=file, data=services_raw, key=sname,
                       item=item, fld=f"services.{sname}")
        services[sname] = Service(sname, {a: _property(a, t, file=file, item=item, parent=args_raw,
                                                       prefix=f"services.{sname}.args")
                                          for a, t in args_raw.items()})
    events = {}
    events_raw = spec.get("events") or {}
    if not isinstance(events_raw, dict):
        raise _err("expected a mapping of events", file=file, data=spec, key="events", item=item, fld="events")
    for ename, espec in events_raw.items():
        espec = espec or {}
        level = espec.get("level", "INFO") if isinstance(espec, dict) else None
        if level not in ("INFO", "WARN", "ERROR"):
            raise _err(f"expected INFO, WARN or ERROR, got {level!r}", file=file, data=events_raw, key=ename,
                       item=item, fld=f"events.{ename}.level")
        events[ename] = Event(ename, level, tuple(espec.get("fields", ()) or ()))
    return Product(name, props, services, events, spec.get("description", "") or "")


def _binding(spec: Any, *, file: str | None, index: int, parent: Any, products: dict[str, Product]) -> DeviceBinding:
    where = f"devices[{index}]"
    if not isinstance(spec, dict):
        raise _err("each device is a mapping with id, product and connector", file=file, data=parent,
                   key=index, item=where)
    dev_id = spec.get("id")
    if not isinstance(dev_id, str) or not _ID.match(dev_id):
        raise _err(f"expected a device id of letters, digits and - _ . : (got {dev_id!r})", file=file,
                   data=spec, key="id", item=where, fld="id")
    item = f"device '{dev_id}'"
    product = spec.get("product")
    if product not in products:
        raise _err(f"unknown product {product!r}", file=file, data=spec, key="product", item=item,
                   fld="product", hint="known: " + (", ".join(sorted(products)) or "none; load products first"))
    connector = spec.get("connector")
    if connector not in CONNECTORS:
        raise _err(f"unknown connector {connector!r}", file=file, data=spec, key="connector", item=item,
                   fld="connector", hint="one of " + ", ".join(CONNECTORS))
    base = {"id", "product", "connector", "services", "events", "description"}
    options = {k: v for k, v in spec.items() if k not in base}
    for k in options:
        if k not in CONNECTORS[connector]:
            raise _err(f"unknown key {k!r} for a {connector} device", file=file, data=spec, key=k, item=item,
                       fld=k, hint=f"{connector} takes: " + ", ".join(CONNECTORS[connector]))
    prod = products[product]
    if connector == "mqtt":
        _check_mqtt(options, prod, file=file, spec=spec, item=item)
    elif connector == "video":
        _check_video(options, prod, file=file, spec=spec, item=item)
    elif connector == "http":
        _check_http(options, prod, file=file, spec=spec, item=item)
    elif connector == "coap":
        _check_coap(options, prod, file=file, spec=spec, item=item)
    elif connector == "opcua":
        _check_opcua(options, prod, file=file, spec=spec, item=item)
    elif connector == "amqp":
        queue = options.get("queue")
        if not isinstance(queue, str) or not queue or len(queue) > 255:
            raise _err("expected the name of the queue the readings arrive in", file=file, data=spec,
                       key="queue" if "queue" in spec else "connector", item=item, fld="queue")
        prefetch = options.setdefault("prefetch", 1000)
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or not 1 <= prefetch <= 65535:
            raise _err(f"expected 1..65535 messages, got {prefetch!r}", file=file, data=spec, key="prefetch",
                       item=item, fld="prefetch")
        if not isinstance(options.setdefault("declare", False), bool):
            raise _err("expected true or false", file=file, data=spec, key="declare", item=item, fld="declare")
        _check_mapping(options, prod, file=file, spec=spec, item=item)
    elif connector == "modbus":
        from .modbus import check_registers  # the modbus module validates its own register specs
        try:
            check_registers(options, prod)
        except SpecError as exc:
            raise exc.located(file=file, line=line_of(spec, exc.field.split(".")[0] if exc.field else None),
                              step=item) from None
    services = spec.get("services") or {}
    if not isinstance(services, dict):
        raise _err("expected a mapping service -> action", file=file, data=spec, key="services", item=item,
                   fld="services")
    for sname, how in services.items():
        if sname not in prod.services:
            raise _err(f"product '{product}' has no service {sname!r}", file=file, data=services, key=sname,
                       item=item, fld=f"services.{sname}",
                       hint="declared: " + (", ".join(prod.services) or "none"))
        _check_service(connector, sname, how, prod, file=file, services=services, item=item)
        if connector == "video" and "onvif" not in options:
            raise _err("PTZ services need an ONVIF camera (onvif: {host, ...})", file=file, data=services, key=sname,
                       item=item, fld=f"services.{sname}")
    events = spec.get("events")
    if events is not None:
        _check_events(events, prod, file=file, item=item, spec=spec)
        options["events"] = dict(events)
    return DeviceBinding(dev_id, product, connector, options, dict(services), file, line_of(parent, index))


def _check_events(events: Any, prod: Product, *, file: str | None, item: str, spec: Any) -> None:
    """``events: {overheat: "temperature > 90"}``: declared events, conditions that compile."""
    from ..expr import Expression, ExpressionError

    if not isinstance(events, dict) or not events:
        raise _err("expected a mapping event -> condition, e.g. {overheat: \"temperature > 90\"}", file=file,
                   data=spec, key="events", item=item, fld="events")
    for name, cond in events.items():
        if name not in prod.events:
            raise _err(f"product '{prod.name}' declares no event {name!r}", file=file, data=events, key=name,
                       item=item, fld=f"events.{name}", hint="declared: " + (", ".join(prod.events) or "none"))
        if not isinstance(cond, str):
            raise _err("expected a condition over the device's values", file=file, data=events, key=name, item=item,
                       fld=f"events.{name}")
        try:
            Expression(cond)
        except ExpressionError as exc:
            raise _err(str(exc), file=file, data=events, key=name, item=item, fld=f"events.{name}") from None


def substitute(template: Any, args: dict[str, Any]) -> Any:
    """``"$name"`` -> the service argument, through dicts and lists (services' payloads)."""
    if isinstance(template, str) and template.startswith("$") and template[1:] in args:
        return args[template[1:]]
    if isinstance(template, dict):
        return {k: substitute(v, args) for k, v in template.items()}
    if isinstance(template, list):
        return [substitute(v, args) for v in template]
    return template


def _check_service(connector: str, sname: str, how: Any, prod: Product, *, file: str | None, services: Any,
                   item: str) -> None:
    """A binding's way of carrying out a product service, checked against its connector."""
    keys = SERVICE_KEYS[connector]
    fld = f"services.{sname}"
    if not keys:
        raise _err(f"a {connector} device cannot carry out services", file=file, data=services, key=sname,
                   item=item, fld=fld)
    if how is None and connector == "mqtt":
        return  # the default: {"service": ..., "args": ...} on the command topic
    if not isinstance(how, dict):
        raise _err("expected a mapping", file=file, data=services, key=sname, item=item, fld=fld,
                   hint=f"a {connector} service takes: " + ", ".join(sorted(keys)))
    bad = sorted(set(how) - keys)
    if bad:
        raise _err(f"unknown key {bad[0]!r} for a {connector} service", file=file, data=how, key=bad[0], item=item,
                   fld=f"{fld}.{bad[0]}", hint=f"a {connector} service takes: " + ", ".join(sorted(keys)))
    required = {"modbus": ("write",), "opcua": ("object", "method"), "http": ("url",), "video": ("ptz",)
                }.get(connector, ())
    for key in required:
        if key not in how:
            raise _err(f"a {connector} service needs {key!r}", file=file, data=services, key=sname, item=item,
                       fld=f"{fld}.{key}")
    if connector == "opcua":
        for key in ("object", "method"):
            if not isinstance(how[key], str) or not _NODE_ID.match(how[key]):
                raise _err(f"expected a node id like ns=2;s=Pump7.Stop, got {how[key]!r}", file=file, data=how,
                           key=key, item=item, fld=f"{fld}.{key}")
        if not isinstance(how.get("args", []), list):
            raise _err("expected a list of arguments ($name for the service's)", file=file, data=how, key="args",
                       item=item, fld=f"{fld}.args")
    if connector == "video":
        from .onvif import PTZ_ACTIONS

        if how["ptz"] not in PTZ_ACTIONS:
            raise _err(f"unknown PTZ action {how['ptz']!r}", file=file, data=how, key="ptz", item=item,
                       fld=f"{fld}.ptz", hint="one of " + ", ".join(PTZ_ACTIONS))
        if how["ptz"] == "goto_preset" and "preset" not in how:
            raise _err("goto_preset needs 'preset' (a preset token, or $argument)", file=file, data=services,
                       key=sname, item=item, fld=f"{fld}.preset")
        for key in ("pan", "tilt", "zoom"):
            v = how.get(key, 0)
            if not (isinstance(v, str) and v.startswith("$")) and (
                    isinstance(v, bool) or not isinstance(v, (int, float)) or not -1 <= v <= 1):
                raise _err(f"expected a number in [-1, 1] or $argument, got {v!r}", file=file, data=how, key=key,
                           item=item, fld=f"{fld}.{key}")
        if "timeout" in how:
            from ..operators.base import parse_duration

            try:
                how["timeout"] = parse_duration(how["timeout"], "timeout")
            except SpecError as exc:
                raise _err(exc.problem, file=file, data=how, key="timeout", item=item, fld=f"{fld}.timeout") from None
    if connector == "coap" and "path" not in how and "uri" not in how:
        raise _err("a coap service needs 'path' (on the device's host) or 'uri'", file=file, data=services,
                   key=sname, item=item, fld=f"{fld}.path")
    if connector in ("http", "coap"):
        method = how.setdefault("method", "POST")
        allowed = ("POST", "PUT") if connector == "http" else ("POST", "PUT", "GET")
        if method not in allowed:
            raise _err(f"expected one of {', '.join(allowed)}, got {method!r}", file=file, data=how, key="method",
                       item=item, fld=f"{fld}.method")
    if connector == "http" and not str(how["url"]).startswith(("http://", "https://", "/")):
        raise _err("expected an http(s):// url, or a /path on the polled device's host", file=file, data=how,
                   key="url", item=item, fld=f"{fld}.url")
    args = prod.services[sname].args
    refs = _placeholders(how.get("payload", how.get("args", how.get("write"))))
    if connector == "video":
        refs = _placeholders([how.get(k) for k in ("pan", "tilt", "zoom", "preset")])
    for ref in refs:
        if ref not in args:
            raise _err(f"${ref} is not an argument of service {sname!r}", file=file, data=services, key=sname,
                       item=item, fld=fld, hint="arguments: " + (", ".join(args) or "none"))


def _placeholders(value: Any) -> list[str]:
    if isinstance(value, str) and value.startswith("$"):
        return [value[1:]]
    if isinstance(value, dict):
        return [r for v in value.values() for r in _placeholders(v)]
    if isinstance(value, list):
        return [r for v in value for r in _placeholders(v)]
    return []


def _check_coap(options: dict[str, Any], prod: Product, *, file: str | None, spec: Any, item: str) -> None:
    from ..operators.base import parse_duration

    mode = options.setdefault("mode", "observe" if options.get("uri") else "push")
    if mode not in ("observe", "poll", "push"):
        raise _err(f"expected observe, poll or push, got {mode!r}", file=file, data=spec, key="mode", item=item,
                   fld="mode")
    if mode == "push":
        if "uri" in options:
            raise _err("a pushing device has no uri: it POSTs to the node's /devices/<id>/telemetry", file=file,
                       data=spec, key="uri", item=item, fld="uri")
    else:
        uri = options.get("uri")
        if not isinstance(uri, str) or not uri.startswith(("coap://", "coap+tcp://")):
            raise _err(f"an {mode}d device needs its coap:// uri", file=file, data=spec,
                       key="uri" if "uri" in spec else "mode", item=item, fld="uri")
    for key, default in (("interval", 1.0), ("timeout", 5.0), ("reobserve", 60.0)):
        try:
            options[key] = parse_duration(options.get(key, default), key)
        except SpecError as exc:
            raise _err(exc.problem, file=file, data=spec, key=key, item=item, fld=key) from None
    _check_mapping(options, prod, file=file, spec=spec, item=item)


def _check_opcua(options: dict[str, Any], prod: Product, *, file: str | None, spec: Any, item: str) -> None:
    from ..operators.base import parse_duration

    endpoint = options.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint.startswith("opc.tcp://"):
        raise _err("expected the server's opc.tcp://host:port endpoint", file=file, data=spec,
                   key="endpoint" if "endpoint" in spec else "connector", item=item, fld="endpoint")
    nodes = options.get("nodes")
    if not isinstance(nodes, dict) or not nodes:
        raise _err("expected a mapping property -> node id (ns=2;s=Pump7.Temperature)", file=file, data=spec,
                   key="nodes" if "nodes" in spec else "connector", item=item, fld="nodes")
    for prop, node_id in nodes.items():
        if prop not in prod.properties:
            raise _err(f"product '{prod.name}' has no property {prop!r}", file=file, data=nodes, key=prop, item=item,
                       fld=f"nodes.{prop}", hint="properties: " + ", ".join(prod.properties))
        if not isinstance(node_id, str) or not _NODE_ID.match(node_id):
            raise _err(f"expected a node id like ns=2;s=Pump7.Temperature or ns=2;i=1001, got {node_id!r}",
                       file=file, data=nodes, key=prop, item=item, fld=f"nodes.{prop}")
    mode = options.setdefault("mode", "subscribe")
    if mode not in ("subscribe", "poll"):
        raise _err(f"expected subscribe or poll, got {mode!r}", file=file, data=spec, key="mode", item=item,
                   fld="mode")
    for key, default in (("interval", 1.0), ("timeout", 5.0)):
        try:
            options[key] = parse_duration(options.get(key, default), key)
        except SpecError as exc:
            raise _err(exc.problem, file=file, data=spec, key=key, item=item, fld=key) from None
    if options.get("password_env") and not options.get("username_env"):
        raise _err("a password without a user: add username_env", file=file, data=spec, key="password_env",
                   item=item, fld="password_env")


def _check_video(options: dict[str, Any], prod: Product, *, file: str | None, spec: Any, item: str) -> None:
    from .video import parse_source

    media = [p for p, pr in prod.properties.items() if pr.type in ("video", "image")]
    prop = options.pop("property", None) or (media[0] if media else None)
    if prop not in media:
        raise _err(f"product '{prod.name}' has no video/image property {prop!r}" if prop else
                   f"product '{prod.name}' declares no video or image property for the frames", file=file,
                   data=spec, key="property" if "property" in spec else "connector", item=item, fld="property")
    try:
        parse_source(options, item)
    except ValueError as exc:
        raise _err(str(exc).removeprefix(f"{item}: ").removeprefix(f"{item}."), file=file, data=spec,
                   key=next((k for k in ("file", "url", "usb") if k in spec), "connector"), item=item,
                   fld="source") from None
    options["property"] = prop


def _check_http(options: dict[str, Any], prod: Product, *, file: str | None, spec: Any, item: str) -> None:
    from ..operators.base import parse_duration

    mode = options.setdefault("mode", "push")
    if mode not in ("push", "poll"):
        raise _err(f"expected push or poll, got {mode!r}", file=file, data=spec, key="mode", item=item, fld="mode")
    if mode == "poll":
        url = options.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise _err("a polled device needs its http:// or https:// url", file=file, data=spec,
                       key="url" if "url" in spec else "mode", item=item, fld="url")
        for key, default in (("interval", 1.0), ("timeout", 5.0)):
            try:
                options[key] = parse_duration(options.get(key, default), key)
            except SpecError as exc:
                raise _err(exc.problem, file=file, data=spec, key=key,
                           item=item, fld=key) from None
        headers = options.get("headers") or {}
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise _err("expected a mapping header -> text", file=file, data=spec, key="headers", item=item,
                       fld="headers")
    else:
        for key in ("url", "interval", "timeout", "headers"):
            if key in options:
                raise _err(f"{key!r} is for polled devices (mode: poll)", file=file, data=spec, key=key, item=item,
                           fld=key)
    _check_mapping(options, prod, file=file, spec=spec, item=item)


def _check_mqtt(options: dict[str, Any], prod: Product, *, file: str | None, spec: Any, item: str) -> None:
    topic = options.get("topic")
    if not isinstance(topic, str) or not topic or "#" in topic or "+" in topic:
        raise _err("expected the device's MQTT topic (no wildcards)", file=file, data=spec, key="topic",
                   item=item, fld="topic")
    qos = options.setdefault("qos", 1)
    if qos not in (0, 1):
        raise _err(f"expected 0 or 1, got {qos!r}", file=file, data=spec, key="qos", item=item, fld="qos")
    _check_mapping(options, prod, file=file, spec=spec, item=item)


def _check_mapping(options: dict[str, Any], prod: Product, *, file: str | None, spec: Any, item: str) -> None:
    mapping = options.get("mapping")
    if mapping is None:
        options["mapping"] = {p: p for p, pr in prod.properties.items() if pr.type not in ("image", "video")}
    elif not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise _err("expected a mapping property -> payload field path", file=file, data=spec, key="mapping",
                   item=item, fld="mapping")
    else:
        for prop in mapping:
            if prop not in prod.properties:
                raise _err(f"product '{prod.name}' has no property {prop!r}", file=file, data=mapping, key=prop,
                           item=item, fld=f"mapping.{prop}", hint="properties: " + ", ".join(prod.properties))
    unit = options.setdefault("ts_unit", "s")
    if unit not in ("s", "ms"):
        raise _err(f"expected s or ms, got {unit!r}", file=file, data=spec, key="ts_unit", item=item, fld="ts_unit")


def _items(data: Any, key: str, file: str) -> tuple[list[Any], Any]:
    if isinstance(data, dict) and key in data:
        items = data[key]
        if not isinstance(items, list):
            raise _err(f"expected a list under '{key}'", file=file, data=data, key=key, fld=key)
        return items, items
    if isinstance(data, list):
        return data, data
    if isinstance(data, dict) and ("name" in data or "id" in data):
        return [data], None
    raise _err(f"expected '{key}:' with a list", file=file, data=data)


def load_catalog(product_files: Iterable[str | Path], device_files: Iterable[str | Path] = (),
                 *, products_data: list[tuple[str, Any]] = (), devices_data: list[tuple[str, Any]] = ()) -> Catalog:
    """Load products, then device bindings, from YAML files (or decoded data, for tests)."""
    cat = Catalog()
    sources = [(str(f), load_yaml(f)) for f in product_files] + list(products_data)
    for file, data in sources:
        items, parent = _items(data, "products", file)
        for i, spec in enumerate(items):
            prod = _product(spec, file=file, index=i, parent=parent)
            if prod.name in cat.products:
                raise _err(f"product {prod.name!r} is defined twice", file=file, data=spec, key="name",
                           item=f"product '{prod.name}'", fld="name")
            cat.products[prod.name] = prod
    dsources = [(str(f), load_yaml(f)) for f in device_files] + list(devices_data)
    topics: dict[str, str] = {}
    for file, data in dsources:
        items, parent = _items(data, "devices", file)
        for i, spec in enumerate(items):
            b = _binding(spec, file=file, index=i, parent=parent, products=cat.products)
            if b.id in cat.devices:
                raise _err(f"device {b.id!r} is bound twice", file=file, data=spec, key="id",
                           item=f"device '{b.id}'", fld="id")
            if b.connector == "mqtt":
                for key in ("topic", "event_topic"):
                    if key not in b.options:
                        continue
                    other = topics.setdefault(b.options[key], b.id)
                    if other != b.id or key == "event_topic" and b.options[key] == b.options["topic"]:
                        raise _err(f"topic {b.options[key]!r} is already bound to device {other!r}", file=file,
                                   data=spec, key=key, item=f"device '{b.id}'", fld=key)
            cat.devices[b.id] = b
    return cat
