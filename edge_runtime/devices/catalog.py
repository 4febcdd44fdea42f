"""The device catalogue: products (properties, services, events) and device bindings, from YAML.

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

Errors name the file, the line, the item and the field. What a binding's options mean is its connector's
business: the catalogue looks the connector up (edge_runtime.connectors), refuses keys it does not take,
and lets it check the rest (and the binding's services) against the product.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..connectors.base import BindingCheck
from ..connectors.registry import lookup as lookup_connector
from ..operators.base import SpecError
from ..records import RecordError
from ..yamlspec import line_of, load_yaml

__all__ = ["Property", "Service", "Event", "Product", "DeviceBinding", "Catalog", "load_catalog",
           "PROPERTY_TYPES"]

PROPERTY_TYPES = ("number", "integer", "boolean", "string", "image", "video")
_ID = re.compile(r"^(ns=\d+;)?[isgb]=.+$")
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


def _binding(spec: Any, *, file: str | None, index: int, parent: Any, products: dict[str, Product],
             claimed: dict[tuple[str, str, Any], str]) -> DeviceBinding:
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
    if not isinstance(product, str) or product not in products:
        raise _err(f"unknown product {product!r}", file=file, data=spec, key="product", item=item,
                   fld="product", hint="known: " + (", ".join(sorted(products)) or "none; load products first"))
    connector = spec.get("connector")
    try:
        conn = lookup_connector(connector)
    except SpecError as exc:
        raise exc.located(file=file, line=line_of(spec, "connector"), step=item) from None
    base = {"id", "product", "connector", "services", "events", "description"}
    options = {k: v for k, v in spec.items() if k not in base}
    for k in options:
        if k not in conn.options:
            raise _err(f"unknown key {k!r} for a {connector} device", file=file, data=spec, key=k, item=item,
                       fld=k, hint=f"{connector} takes: " + ", ".join(conn.options))
    prod = products[product]
    check = BindingCheck(dev_id, conn.name, prod, options, spec, file)
    conn.check(check)
    services = spec.get("services") or {}
    if not isinstance(services, dict):
        raise _err("expected a mapping service -> action", file=file, data=spec, key="services", item=item,
                   fld="services")
    checked = {}
    for sname, how in services.items():
        if sname not in prod.services:
            raise _err(f"product '{product}' has no service {sname!r}", file=file, data=services, key=sname,
                       item=item, fld=f"services.{sname}",
                       hint="declared: " + (", ".join(prod.services) or "none"))
        checked[sname] = conn.check_service(check, sname, how)
    for key, kind in check.claims:  # values this device holds alone (an MQTT topic)
        value = options[key]
        other = claimed.setdefault((conn.name, kind, value), dev_id)
        if other != dev_id:
            raise _err(f"{kind} {value!r} is already bound to device {other!r}", file=file, data=spec, key=key,
                       item=item, fld=key)
    events = spec.get("events")
    if events is not None:
        _check_events(events, prod, file=file, item=item, spec=spec)
        options["events"] = dict(events)
    return DeviceBinding(dev_id, product, conn.name, options, checked, file, line_of(parent, index))


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
                 *, products_data: Sequence[tuple[str, Any]] = (), devices_data: Sequence[tuple[str, Any]] = ()) -> Catalog:
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
    claimed: dict[tuple[str, str, Any], str] = {}
    for file, data in dsources:
        items, parent = _items(data, "devices", file)
        for i, spec in enumerate(items):
            if isinstance(spec, dict) and isinstance(spec.get("id"), str) and spec["id"] in cat.devices:
                raise _err(f"device {spec['id']!r} is bound twice", file=file, data=spec, key="id",
                           item=f"device '{spec['id']}'", fld="id")
            b = _binding(spec, file=file, index=i, parent=parent, products=cat.products, claimed=claimed)
            cat.devices[b.id] = b
    return cat
