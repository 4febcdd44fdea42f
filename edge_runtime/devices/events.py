"""Product events on the Device Bus: raised by connectors, taken by pipelines through ``event_input``.

A product declares its events (``events: {overheat: {level: WARN, fields: [temperature]}}``). An event is
a Record whose values hold ``event`` (its name), ``level`` and the event's fields::

    {"device": "pump-1", "product": "pump", "ts": 1732272000.1, "values": {"event": "overheat",
     "level": "WARN", "temperature": 93.5}}

Events come from two places:

- the device says so: an MQTT device publishes ``{"event": "overheat", ...fields}`` on its binding's
  ``event_topic``; an HTTP or CoAP device posts the same to ``/devices/<id>/events``. An event its product
  does not declare is a dead letter with the reason.
- the binding derives it from readings, for any protocol: ``events: {overheat: "temperature > 90"}`` (a
  safe expression over the device's values) raises the event once each time the condition becomes true
  (its rising edge), carrying the product event's fields from that reading.

``device_input`` passes readings only; ``event_input: {events: [overheat]}`` takes the events.
"""

from __future__ import annotations

import logging
from typing import Any

from ..records import RecordError, check_value
from .catalog import Catalog, Product

__all__ = ["EventRules", "event_record"]

log = logging.getLogger("edgeloop.events")


def event_record(product: Product, device: str, data: Any, ts: float) -> dict[str, Any]:
    """A device's own event message (``{"event": name, ...fields}``) -> an event Record; RecordError says
    what is wrong."""
    if not isinstance(data, dict):
        raise RecordError(f"an event must be a JSON object, got {type(data).__name__}")
    name = data.get("event")
    ev = product.events.get(name) if isinstance(name, str) else None
    if ev is None:
        raise RecordError(f"product '{product.name}' declares no event {name!r}"
                          + (f" (declared: {', '.join(product.events)})" if product.events else " (it declares none)"))
    values: dict[str, Any] = {"event": ev.name, "level": ev.level}
    for f in ev.fields:
        if f in data:
            check_value(f, data[f])
            values[f] = data[f]
    t = data.get("ts", ts)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or t != t or abs(t) == float("inf"):
        raise RecordError(f"event field 'ts' must be a finite number (epoch seconds), got {t!r}")
    return {"device": device, "product": product.name, "ts": float(t), "values": values}


class EventRules:
    """The ``events:`` conditions of device bindings, evaluated on their readings as they pass the bus."""

    def __init__(self, catalog: Catalog) -> None:
        from ..expr import Expression

        self.rules: dict[str, list[tuple[Any, Any, Product]]] = {}
        for b in catalog.devices.values():
            product = catalog.products[b.product]
            for name, cond in (b.options.get("events") or {}).items():
                self.rules.setdefault(b.id, []).append((product.events[name], Expression(cond), product))
        self.state: dict[tuple[str, str], bool] = {}
        self.raised = 0

    def __bool__(self) -> bool:
        return bool(self.rules)

    def scan(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The events these readings raise (rising edges), in order."""
        out = []
        rules, state = self.rules, self.state
        for r in records:
            mine = rules.get(r["device"])
            if mine is None or "event" in r["values"]:
                continue
            for ev, expr, product in mine:
                try:
                    now = bool(expr.eval_record(r))
                except ValueError:  # a reading without the condition's fields leaves the state as it is
                    continue
                key = (r["device"], ev.name)
                if now and not state.get(key, False):
                    values = {"event": ev.name, "level": ev.level,
                              **{f: r["values"][f] for f in ev.fields if f in r["values"]}}
                    out.append({"device": r["device"], "product": product.name, "ts": r["ts"], "values": values})
                state[key] = now
        self.raised += len(out)
        return out
