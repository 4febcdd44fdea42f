"""Device readings as JSON: a binding's field mapping turns a decoded payload into a Record.

MQTT, HTTP, CoAP and AMQP devices send JSON readings (one object, or a list of them). A binding maps
product properties to payload fields (``mapping: {temperature: temp_c, running: state.on}``; default: the
property's own name), may name the field with the event time (``ts_field``, in ``ts_unit`` s or ms; default:
the arrival time), and every mapped value goes through the product's check. :func:`check_mapping` checks
those options while bindings load; :class:`FieldBinding` holds them ready to decode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import jsonio
from ..records import RecordError
from .events import event_record

if TYPE_CHECKING:
    from ..connectors.base import BindingCheck
    from .catalog import DeviceBinding, Product, Property

__all__ = ["FieldBinding", "MAPPING_OPTIONS", "check_mapping", "json_records", "reading"]

#: the binding options of JSON devices, described (a connector's ``options`` include them)
MAPPING_OPTIONS = {
    "mapping": "property -> JSON field path in a reading (a.b.c); default: same name",
    "ts_field": "reading field with the event time (epoch seconds); default: arrival time",
    "ts_unit": "s or ms",
}


def check_mapping(b: BindingCheck) -> None:
    """A JSON device's ``mapping``, ``ts_field`` and ``ts_unit`` against its product (defaults filled in)."""
    options, prod = b.options, b.product
    mapping = options.get("mapping")
    if mapping is None:
        options["mapping"] = {p: p for p, pr in prod.properties.items() if pr.type not in ("image", "video")}
    elif not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise b.error("expected a mapping property -> payload field path", "mapping")
    else:
        for prop in mapping:
            if prop not in prod.properties:
                raise b.error(f"product '{prod.name}' has no property {prop!r}", f"mapping.{prop}",
                              hint="properties: " + ", ".join(prod.properties))
    unit = options.setdefault("ts_unit", "s")
    if unit not in ("s", "ms"):
        raise b.error(f"expected s or ms, got {unit!r}", "ts_unit")


def reading(tb: FieldBinding, data: Any, arrived: float) -> dict[str, Any]:
    """One decoded JSON reading of a device -> a Record (its mapped fields checked against the product, its
    event time from ``ts_field`` or the arrival); RecordError says what is wrong. MQTT, HTTP, CoAP and AMQP share it."""
    if not isinstance(data, dict):
        raise RecordError(f"payload must be a JSON object, got {type(data).__name__}")
    values = {}
    for prop, path, spec in tb.fields:
        v = data.get(path[0], _ABSENT) if len(path) == 1 else _get(data, path)
        if v is _ABSENT:
            continue
        values[prop] = spec.check(v)
    if not values:
        raise RecordError("payload has none of the mapped fields " + ", ".join(".".join(p) for _, p, _ in tb.fields))
    ts = arrived
    if tb.ts_field is not None:
        t = _get(data, tb.ts_field)
        if t is _ABSENT or isinstance(t, bool) or not isinstance(t, (int, float)) or t != t \
                or t in (float("inf"), float("-inf")):
            raise RecordError(f"event time field '{'.'.join(tb.ts_field)}' missing or not a number")
        ts = float(t) * tb.ts_scale
    return {"device": tb.device, "product": tb.product.name, "ts": ts, "values": values}


def json_records(tb: FieldBinding, body: bytes, arrived: float, events: bool = False,
                 empty_ok: bool = False) -> list[dict[str, Any]]:
    """A JSON body pushed or polled from a device (one object, or a list of them) -> its readings (or, with
    ``events``, its own events), taken whole or refused whole: RecordError names the problem and, in a list,
    the item (``[2]: ...``). An empty list is refused unless ``empty_ok`` (a polled device with nothing new).
    HTTP, CoAP and AMQP share it."""
    try:
        data = jsonio.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordError(f"malformed JSON: {exc}") from None
    items = data if isinstance(data, list) else [data]
    if not items and not empty_ok:
        raise RecordError("an empty list: nothing to take")
    records = []
    for i, item in enumerate(items):
        try:
            records.append(event_record(tb.product, tb.device, item, arrived) if events else reading(tb, item, arrived))
        except RecordError as exc:
            raise RecordError((f"[{i}]: " if isinstance(data, list) else "") + exc.reason) from None
    return records


class FieldBinding:
    """A device's field mapping (property -> JSON path), event-time field and unit, ready to decode readings."""

    __slots__ = ("device", "product", "fields", "ts_field", "ts_scale")

    def __init__(self, binding: DeviceBinding, product: Product) -> None:
        self.device = binding.id
        self.product = product
        mapping = binding.options["mapping"]
        self.fields: list[tuple[str, tuple[str, ...], Property]] = [
            (prop, tuple(path.split(".")), product.properties[prop]) for prop, path in mapping.items()]
        ts_field = binding.options.get("ts_field")
        self.ts_field = tuple(ts_field.split(".")) if ts_field else None
        self.ts_scale = 0.001 if binding.options.get("ts_unit") == "ms" else 1.0


def _get(payload: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(payload, dict) or part not in payload:
            return _ABSENT
        payload = payload[part]
    return payload


_ABSENT = object()
