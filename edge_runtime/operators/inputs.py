"""Input operators: where a pipeline's records come from (the bound devices' readings, product events, the
node's local store). Video sources are in :mod:`.video_inputs`."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..records import DEVICES, Batch
from .base import Operator, SpecError, parse_duration, register
from .params import names

__all__ = ["DeviceInput", "EventInput", "TimeSeriesInput"]


def _event_rows(batch: Batch) -> NDArray[Any] | None:
    """Which rows are product events (they carry an ``event`` name); None when none are."""
    col = batch.cols.get("event")
    if col is None:
        return None
    return col.present.copy() if col.present is not None else np.ones(len(batch), dtype=bool)


@register
class DeviceInput(Operator):
    """Readings of the pipeline's product from its bound devices, optionally only some properties (product
    events are taken by ``event_input``)."""

    name = "device_input"
    params = {"properties": "property names to keep (default: all)",
              "devices": "device ids to take (default: the instance's bindings)"}
    source = True

    def configure(self, properties: Any = None, devices: Any = None) -> None:
        self.properties = names(properties, "properties")
        self.devices = names(devices, "devices")
        self._allowed_codes: NDArray[Any] | None = None

    def process(self, batch: Batch) -> Batch:
        keep = None
        if self.ctx.product is not None:  # records of unknown product (offline files) are taken
            keep = (batch.product == self.ctx.product) | (batch.product == None)  # noqa: E711
        devices = self.devices if self.devices is not None else (
            sorted(self.ctx.devices) if self.ctx.devices is not None else None)
        if devices is not None:
            codes = np.array([DEVICES[d] for d in devices], dtype=np.int64)
            m = np.isin(batch.codes, codes)
            keep = m if keep is None else keep & m
        events = _event_rows(batch)
        if events is not None:
            keep = ~events if keep is None else keep & ~events
        if keep is not None and not keep.all():
            batch = batch.take(keep)
        if self.properties is not None:
            batch = Batch(batch.codes, batch.product, batch.ts,
                          {k: c for k, c in batch.cols.items() if k in self.properties})
        return batch


@register
class EventInput(Operator):
    """Product events (declared in the product, raised by connectors or by a binding's ``events:``
    conditions) of the pipeline's devices: records with ``event``, ``level`` and the event's fields."""

    name = "event_input"
    params = {"events": "event names to take (default: all the product declares)",
              "devices": "device ids to take (default: the instance's bindings)"}
    source = True
    shorthand = "events"

    def configure(self, events: Any = None, devices: Any = None) -> None:
        self.events = names(events, "events")
        self.devices = names(devices, "devices")

    def process(self, batch: Batch) -> Batch:
        keep = _event_rows(batch)
        if keep is None:
            return Batch.empty()
        if self.ctx.product is not None:
            keep &= (batch.product == self.ctx.product) | (batch.product == None)  # noqa: E711
        devices = self.devices if self.devices is not None else (
            sorted(self.ctx.devices) if self.ctx.devices is not None else None)
        if devices is not None:
            keep &= np.isin(batch.codes, np.array([DEVICES[d] for d in devices], dtype=np.int64))
        if self.events is not None:
            keep &= np.isin(batch.cols["event"].data, np.array(self.events, dtype=object))
        return batch.take(keep) if not keep.all() else batch


@register
class TimeSeriesInput(DeviceInput):
    """Records read from the node's local store by device and time (then, if ``follow``, live ones)."""

    name = "time_series_input"
    params = {**DeviceInput.params, "since": "start: epoch seconds or a duration back from now (1h)",
              "until": "end: epoch seconds (default: now)", "follow": "then go on with live records"}

    def configure(self, properties: Any = None, devices: Any = None, since: Any = None,
                  until: Any = None, follow: Any = False) -> None:
        super().configure(properties, devices)
        self.since, self.until = since, until
        self.since_back: float | None = None
        if since is not None and not isinstance(since, (int, float)):
            self.since_back = parse_duration(since, "since")
        if until is not None and (isinstance(until, bool) or not isinstance(until, (int, float))):
            raise SpecError(f"expected epoch seconds, got {until!r}", field="until")
        if not isinstance(follow, bool):
            raise SpecError(f"expected true or false, got {follow!r}", field="follow")
        self.follow = follow
        self.replayed = False

    def history(self) -> Batch:
        """What the local store holds for this step (called once when a live instance starts; not again when
        it goes on from a snapshot: the state restored has seen those records)."""
        store = self.ctx.store
        if store is None or self.replayed:
            return Batch.empty()
        self.replayed = True
        now = time.time()
        since = now - self.since_back if self.since_back is not None else self.since
        devices = self.devices or (sorted(self.ctx.devices) if self.ctx.devices else None)
        records = store.query(devices=devices, since=since, until=self.until, product=self.ctx.product)
        return self.process(Batch.from_records(records)) if records else Batch.empty()

    def snapshot(self) -> dict[str, Any] | None:
        """Whether the store's history was replayed (then a restart does not replay it again)."""
        return {"replayed": True} if self.replayed else None

    def restore(self, state: dict[str, Any] | None) -> None:
        self.replayed = bool(state and state.get("replayed"))
