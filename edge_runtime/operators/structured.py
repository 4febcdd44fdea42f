"""Operators for structured device data (the paper's table 1)."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import numpy as np

from ..expr import Expression, ExpressionError, is_finite_array
from ..records import Batch, without_media
from .base import Operator, SpecError, grow, parse_duration, register

log = logging.getLogger("edgeloop.operators")

__all__ = ["DeviceInput", "TimeSeriesInput", "Filter", "Sample", "ChangeTrigger", "CustomFunction",
           "Notification", "Alert", "DeviceOutput", "ApplyModel", "render_template"]


def _expression(source: Any, field: str) -> Expression:
    try:
        return Expression(source)
    except ExpressionError as exc:
        raise SpecError(str(exc), field=field) from None


def _names(value: Any, field: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SpecError(f"expected a list of names, got {value!r}", field=field)
    return list(value)


def _event_rows(batch: Batch) -> np.ndarray | None:
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
        self.properties = _names(properties, "properties")
        self.devices = _names(devices, "devices")
        self._allowed_codes: np.ndarray | None = None

    def process(self, batch: Batch) -> Batch:
        keep = None
        if self.ctx.product is not None:  # records of unknown product (offline files) are taken
            keep = (batch.product == self.ctx.product) | (batch.product == None)  # noqa: E711
        devices = self.devices if self.devices is not None else (
            sorted(self.ctx.devices) if self.ctx.devices is not None else None)
        if devices is not None:
            from ..records import DEVICES
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
        self.events = _names(events, "events")
        self.devices = _names(devices, "devices")

    def process(self, batch: Batch) -> Batch:
        keep = _event_rows(batch)
        if keep is None:
            return Batch.empty()
        if self.ctx.product is not None:
            keep &= (batch.product == self.ctx.product) | (batch.product == None)  # noqa: E711
        devices = self.devices if self.devices is not None else (
            sorted(self.ctx.devices) if self.ctx.devices is not None else None)
        if devices is not None:
            from ..records import DEVICES
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
        if since is not None and not isinstance(since, (int, float)):
            self.since_back = parse_duration(since, "since")
        else:
            self.since_back = None
        if until is not None and (isinstance(until, bool) or not isinstance(until, (int, float))):
            raise SpecError(f"expected epoch seconds, got {until!r}", field="until")
        if not isinstance(follow, bool):
            raise SpecError(f"expected true or false, got {follow!r}", field="follow")
        self.follow = follow

    def history(self) -> Batch:
        """What the local store holds for this step (called once when a live instance starts)."""
        store = self.ctx.store
        if store is None:
            return Batch.empty()
        now = time.time()
        since = now - self.since_back if self.since_back is not None else self.since
        devices = self.devices or (sorted(self.ctx.devices) if self.ctx.devices else None)
        records = store.query(devices=devices, since=since, until=self.until, product=self.ctx.product)
        return self.process(Batch.from_records(records)) if records else Batch.empty()


@register
class Filter(Operator):
    """Keep records for which a safe expression over their values is true."""

    name = "filter"
    params = {"expr": "expression over values, device and ts, e.g. temperature > 80"}
    required = ("expr",)
    shorthand = "expr"

    def configure(self, expr: Any) -> None:
        self.expr = _expression(expr, "expr")

    def process(self, batch: Batch) -> Batch:
        if not len(batch):
            return batch
        ev = self.expr.evaluate(batch)
        values = ev.values
        if values.dtype != bool:
            values = np.array([bool(v) for v in values.tolist()], dtype=bool)
        if ev.failed.any():
            bad = np.flatnonzero(ev.failed)
            self.ctx.dead_letter(batch.take(bad), [f"filter: {ev.reasons.get(i, 'error')}"
                                                   for i in bad.tolist()])
            values = values & ~ev.failed
        return batch if values.all() else batch.take(values)


@register
class Sample(Operator):
    """Per device, keep every Nth record (``every``) or one record per ``interval`` of event time."""

    name = "sample"
    params = {"every": "keep the 1st, (N+1)th, ... record of each device",
              "interval": "keep a record when this much event time passed since the last kept one"}

    def configure(self, every: Any = None, interval: Any = None) -> None:
        if (every is None) == (interval is None):
            raise SpecError("give exactly one of 'every' or 'interval'", field="every")
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise SpecError(f"expected a whole number >= 1, got {every!r}", field="every")
        self.every = every
        self.interval = parse_duration(interval, "interval") if interval is not None else None
        self.seen = np.zeros(64, dtype=np.int64)
        self.last_kept: dict[int, float] = {}

    def process(self, batch: Batch) -> Batch:
        n = len(batch)
        if not n:
            return batch
        codes = batch.codes
        if self.every is not None:
            self.seen = grow(self.seen, int(codes.max()) + 1, 0)
            order = np.argsort(codes, kind="stable")
            dev_s = codes[order]
            first = np.empty(n, dtype=bool)
            first[0] = True
            np.not_equal(dev_s[1:], dev_s[:-1], out=first[1:])
            seg_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
            pos = np.arange(n) - seg_start + self.seen[dev_s]
            keep_s = pos % self.every == 0
            np.add.at(self.seen, codes, 1)
            keep = np.empty(n, dtype=bool)
            keep[order] = keep_s
            return batch.take(keep)
        keep = np.zeros(n, dtype=bool)
        last = self.last_kept
        interval = self.interval
        for i, (c, t) in enumerate(zip(codes.tolist(), batch.ts.tolist())):
            prev = last.get(c)
            if prev is None or t - prev >= interval:
                keep[i] = True
                last[c] = t
        return batch.take(keep)


@register
class ChangeTrigger(Operator):
    """Pass a record when a listed field differs from the last passed record of its device."""

    name = "change_trigger"
    params = {"fields": "fields to watch", "threshold": "numbers: pass when |new - old| >= threshold"}
    required = ("fields",)
    shorthand = "fields"

    def configure(self, fields: Any, threshold: Any = None) -> None:
        self.fields = _names(fields, "fields") or []
        if not self.fields:
            raise SpecError("name at least one field", field="fields")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                      or threshold < 0):
            raise SpecError(f"expected a number >= 0, got {threshold!r}", field="threshold")
        self.threshold = threshold
        self.last: dict[int, tuple[Any, ...]] = {}

    def _changed(self, old: tuple[Any, ...], new: tuple[Any, ...]) -> bool:
        for a, b in zip(old, new):
            if self.threshold is not None and isinstance(a, (int, float)) and isinstance(b, (int, float)) \
                    and not isinstance(a, bool) and not isinstance(b, bool):
                if abs(b - a) >= self.threshold:
                    return True
            elif a != b:
                return True
        return False

    def process(self, batch: Batch) -> Batch:
        n = len(batch)
        if not n:
            return batch
        missing = np.zeros(n, dtype=bool)
        reasons: dict[int, str] = {}
        for f in self.fields:
            m = ~batch.has(f)
            for i in np.flatnonzero(m & ~missing).tolist():
                reasons[i] = f"change_trigger: missing field '{f}'"
            missing |= m
        cols = [batch.cols[f].data.tolist() if f in batch.cols else [None] * n for f in self.fields]
        keep = np.zeros(n, dtype=bool)
        last = self.last
        for i, c in enumerate(batch.codes.tolist()):
            if missing[i]:
                continue
            cur = tuple(col[i] for col in cols)
            prev = last.get(c)
            if prev is None or self._changed(prev, cur):
                keep[i] = True
                last[c] = cur
        if missing.any():
            bad = np.flatnonzero(missing)
            self.ctx.dead_letter(batch.take(bad), [reasons[i] for i in bad.tolist()])
        return batch.take(keep)


@register
class CustomFunction(Operator):
    """Add or replace fields with safe expressions, in order: ``{set: {temp_f: "temperature * 9 / 5 + 32"}}``."""

    name = "custom_function"
    params = {"set": "mapping field -> expression; later ones see earlier ones"}
    required = ("set",)

    def configure(self, set: Any) -> None:  # noqa: A002 - the spec's own word
        if not isinstance(set, dict) or not set:
            raise SpecError("expected a mapping of field: expression", field="set")
        self.assignments = [(k, _expression(v, f"set.{k}")) for k, v in set.items()]

    def process(self, batch: Batch) -> Batch:
        for name, expr in self.assignments:
            if not len(batch):
                return batch
            ev = expr.evaluate(batch)
            failed = ev.failed
            reasons = ev.reasons
            finite = is_finite_array(ev.values) if ev.values.dtype.kind in "fO" else None
            if finite is not None and not finite.all():
                nonfinite = ~finite & ~failed
                for i in np.flatnonzero(nonfinite).tolist():
                    reasons[i] = f"result is not finite ({ev.values[i]!r})"
                failed = failed | nonfinite
            values = ev.values
            if failed.any():
                bad = np.flatnonzero(failed)
                self.ctx.dead_letter(batch.take(bad), [f"custom_function {name}: {reasons.get(i, 'error')}"
                                                       for i in bad.tolist()])
                batch = batch.take(~failed)
                values = values[~failed]
            else:
                batch = Batch(batch.codes, batch.product, batch.ts, dict(batch.cols))
            batch.set_column(name, np.asarray(values))
        return batch


_TEMPLATE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]*))?\}")


def render_template(template: str, record: dict[str, Any]) -> str:
    """Fill ``{field}`` / ``{field:.1f}`` from a record; no attribute or index access, ever."""
    values = record.get("values", {})

    def sub(m: re.Match[str]) -> str:
        key, fmt = m.group(1), m.group(2)
        if key in ("device", "ts", "product"):
            value = record.get(key)
        elif key in values:
            value = values[key]
        else:
            return "{" + key + "?}"
        try:
            return format(value, fmt) if fmt else str(value)
        except (ValueError, TypeError):
            return str(value)
    return _TEMPLATE.sub(sub, template)


_LEVELS = ("INFO", "WARN", "ERROR")


class _Messaging(Operator):
    params = {"level": "INFO, WARN or ERROR", "message": "text with {field} placeholders"}
    default_level = "INFO"

    def configure(self, level: Any = None, message: Any = None) -> None:
        level = self.default_level if level is None else level
        if level not in _LEVELS:
            raise SpecError(f"expected one of {', '.join(_LEVELS)}, got {level!r}", field="level")
        if message is not None and not isinstance(message, str):
            raise SpecError("expected a text", field="message")
        self.level = level
        self.message = message or "{device}: " + self.name

    def _items(self, batch: Batch) -> list[dict[str, Any]]:
        out = []
        for rec in map(without_media, batch.to_records()):
            out.append({"level": self.level, "message": render_template(self.message, rec),
                        "pipeline": self.ctx.pipeline, "instance": self.ctx.instance,
                        "step": self.ctx.step, "device": rec["device"], "ts": rec["ts"], "record": rec})
        return out


@register
class Notification(_Messaging):
    """Persist each record as a leveled message on the node (INFO/WARN/ERROR); records go on."""

    name = "notification"

    def process(self, batch: Batch) -> Batch:
        if len(batch) and self.ctx.sinks is not None:
            for item in self._items(batch):
                self.ctx.sinks.notification(item)
        return batch


@register
class Alert(_Messaging):
    """Raise an alert for each record (persisted, published, uplinked); records go on.

    ``cooldown`` suppresses repeats for the same device within that much event time. ``until_quiet`` makes
    one alert per event: after an alert, records of the same device keep it quiet until none has come for
    that long (one alert per dumping act, not one per frame). ``image`` attaches a frame (or crop, or
    encoded bytes) from that field as a JPEG: it travels to the hub as a media file with the alert.
    """

    name = "alert"
    params = {**_Messaging.params, "cooldown": "per device: no new alert within this much event time",
              "until_quiet": "per device: one alert per event; a new event after this long without one",
              "image": "field holding a frame or crop (JPEG-encoded) or JPEG bytes to attach",
              "quality": "JPEG quality (default 85)"}
    default_level = "WARN"

    def configure(self, level: Any = None, message: Any = None, cooldown: Any = None, until_quiet: Any = None,
                  image: Any = None, quality: Any = 85) -> None:
        super().configure(level, message)
        self.cooldown = parse_duration(cooldown, "cooldown") if cooldown is not None else None
        self.until_quiet = parse_duration(until_quiet, "until_quiet") if until_quiet is not None else None
        if image is not None and (not isinstance(image, str) or not image):
            raise SpecError("expected the name of the field holding the image", field="image")
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise SpecError(f"expected a whole number from 1 to 100, got {quality!r}", field="quality")
        self.image, self.quality = image, quality
        self.last: dict[str, float] = {}
        self.seen: dict[str, float] = {}
        self.raised = self.suppressed = 0

    def _quiet(self, device: str, ts: float) -> bool:
        """True when this record belongs to an event that already raised its alert."""
        if self.until_quiet is not None:
            prev = self.seen.get(device)
            self.seen[device] = ts if prev is None else max(prev, ts)
            if prev is not None and ts - prev < self.until_quiet:
                return True
        if self.cooldown is not None:
            prev = self.last.get(device)
            if prev is not None and ts - prev < self.cooldown:
                return True
            self.last[device] = ts
        return False

    def process(self, batch: Batch) -> Batch:
        if not len(batch) or self.ctx.sinks is None:
            return batch
        # which rows raise: decided on device and time first, so suppressed rows cost no record or image work
        raise_rows = [i for i, (d, t) in enumerate(zip(batch.device.tolist(), batch.ts.tolist())) if not self._quiet(d, t)]
        self.suppressed += len(batch) - len(raise_rows)
        if not raise_rows:
            return batch
        rows = batch if len(raise_rows) == len(batch) else batch.take(np.array(raise_rows))
        images = image_column(rows, self.image) if self.image is not None else None
        for i, item in enumerate(self._items(rows)):
            if images is not None:
                data = self._jpeg(images[i])
                if data is not None:
                    item["image"] = {"content_type": "image/jpeg", "size": len(data)}
                    item["_image"] = data
            self.raised += 1
            self.ctx.sinks.alert(item)
        return batch

    def _jpeg(self, value: Any) -> bytes | None:
        return media_jpeg(self.ctx, value, self.quality, f"alert {self.ctx.step}")


def media_jpeg(ctx: Any, value: Any, quality: int, what: str) -> bytes | None:
    """``value`` (a frame or crop, a clip, or JPEG bytes) as JPEG with the pipeline's uplink blur applied,
    encoded once; None when there is nothing to send (bytes that cannot be blurred are never sent). A clip
    (frames, height, width, channels: ``stack``'s output) becomes one filmstrip, its frames side by side
    oldest first: what a person labels, and what the agile loop cuts back into the clip."""
    uplink = ctx.uplink
    if isinstance(value, np.ndarray):
        from .media import jpeg

        if uplink is not None and uplink.blur:
            value = uplink.blur_image(value)
        if value.ndim == 4:
            value = np.concatenate(list(value), axis=1)
        try:
            return jpeg(value, quality, optimize=True)  # rare, and it crosses the uplink
        except Exception as exc:  # e.g. a filmstrip wider than JPEG's 65,500 px: the record goes without it
            log.error("%s: image of shape %s left out: %s", what, value.shape, exc)
            return None
    if isinstance(value, (bytes, bytearray)):
        try:
            return uplink.jpeg(bytes(value), quality) if uplink is not None else bytes(value)
        except ValueError as exc:
            log.error("%s: image left out: %s", what, exc)
    return None


def image_column(batch: Batch, field: str) -> list[Any]:
    """The values of ``field`` per row (None where absent)."""
    col = batch.cols.get(field)
    if col is None:
        return [None] * len(batch)
    images = list(col.data)
    if col.present is not None:
        images = [v if p else None for v, p in zip(images, col.present.tolist())]
    return images


@register
class Upload(Operator):
    """Send each record to the hub through the node's durable outbox (with the pipeline's desensitisation).

    What the agile loop collects: put it after ``apply_model`` so predictions travel with their inputs.
    ``every`` keeps one record in N (a deterministic share); records go on unchanged. ``image`` attaches the
    frame or crop in that field as a JPEG media file (blurred like every image that leaves the node): what
    Label Studio shows a person labelling an image model's decision.
    """

    name = "upload"
    params = {"every": "upload one record in this many (default 1: all)",
              "when": "upload only records that have this field, e.g. the 'select' mark of apply_model",
              "image": "field holding a frame, crop or clip to attach as a JPEG (a clip: a filmstrip)",
              "quality": "JPEG quality (default 90)"}

    def configure(self, every: Any = 1, when: Any = None, image: Any = None, quality: Any = 90) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise SpecError(f"expected a whole number >= 1, got {every!r}", field="every")
        if when is not None and (not isinstance(when, str) or not when):
            raise SpecError("expected a field name", field="when")
        if image is not None and (not isinstance(image, str) or not image):
            raise SpecError("expected the name of the field holding the image", field="image")
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise SpecError(f"expected a whole number from 1 to 100, got {quality!r}", field="quality")
        self.every = every
        self.when = when
        self.image, self.quality = image, quality
        self.seen = 0

    def process(self, batch: Batch) -> Batch:
        if len(batch) and self.ctx.sinks is not None and hasattr(self.ctx.sinks, "upload"):
            chosen = batch
            if self.when is not None:
                col = batch.cols.get(self.when)
                mask = batch.has(self.when)
                if col is not None and col.data.dtype == object:
                    mask = mask & np.array([v is not None for v in col.data.tolist()], dtype=bool)
                chosen = batch.take(mask)
            items = []
            images = image_column(chosen, self.image) if self.image is not None else None
            for i, rec in enumerate(map(without_media, chosen.to_records())):
                self.seen += 1
                if (self.seen - 1) % self.every == 0:
                    item = {"kind": "record", "pipeline": self.ctx.pipeline, "instance": self.ctx.instance,
                            "step": self.ctx.step, "device": rec["device"], "ts": rec["ts"], "record": rec}
                    data = media_jpeg(self.ctx, images[i], self.quality, f"upload {self.ctx.step}") \
                        if images is not None else None
                    if data is not None:
                        item["image"] = {"content_type": "image/jpeg", "size": len(data)}
                        item["_image"] = data
                    items.append(item)
            if items:
                self.ctx.sinks.upload(items)
        return batch


@register
class DeviceOutput(Operator):
    """Act on a device: set properties (``set``) or call a product service (``service`` + ``args``)."""

    name = "device_output"
    params = {"device": "target device id; default: the record's own device; {field} allowed",
              "set": "mapping property -> expression", "service": "product service to call",
              "args": "mapping argument -> expression"}

    def configure(self, device: Any = None, set: Any = None, service: Any = None,  # noqa: A002
                  args: Any = None) -> None:
        if (set is None) == (service is None):
            raise SpecError("give exactly one of 'set' or 'service'", field="set")
        if device is not None and not isinstance(device, str):
            raise SpecError("expected a device id", field="device")
        self.device = device
        self.service = service
        if service is not None and not isinstance(service, str):
            raise SpecError("expected a service name", field="service")
        mapping = set if set is not None else (args or {})
        label = "set" if set is not None else "args"
        if not isinstance(mapping, dict):
            raise SpecError("expected a mapping of name: expression", field=label)
        self.exprs = [(k, _expression(v, f"{label}.{k}")) for k, v in mapping.items()]
        self.label = label

    def process(self, batch: Batch) -> Batch:
        if not len(batch) or self.ctx.sinks is None:
            return batch
        failed = np.zeros(len(batch), dtype=bool)
        reasons: dict[int, str] = {}
        results = {}
        for k, e in self.exprs:
            ev = e.evaluate(batch)
            for i in np.flatnonzero(ev.failed & ~failed).tolist():
                reasons[i] = f"device_output {self.label}.{k}: {ev.reasons.get(i, 'error')}"
            failed |= ev.failed
            results[k] = ev.values.tolist()
        records = batch.to_records()
        for i, rec in enumerate(records):
            if failed[i]:
                continue
            target = render_template(self.device, rec) if self.device else rec["device"]
            payload = {k: _plain(results[k][i]) for k, _ in self.exprs}
            action = {"device": target, "source_device": rec["device"], "ts": rec["ts"],
                      "pipeline": self.ctx.pipeline, "instance": self.ctx.instance}
            if self.service:
                action.update(kind="service", service=self.service, args=payload)
            else:
                action.update(kind="set", values=payload)
            self.ctx.sinks.device_output(action)
        if failed.any():
            bad = np.flatnonzero(failed)
            self.ctx.dead_letter(batch.take(bad), [reasons[i] for i in bad.tolist()])
        return batch


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


@register
class ApplyModel(Operator):
    """Run a model on the node over each record: its prediction, confidence and model tag go into the record.

    Inputs are numeric fields (``inputs``, in the model's feature order) or one field holding an image or
    a clip as a uint8 array (``image``: frames and crops from the multimedia operators). Rows are sent to
    the model ``batch_size`` at a time. The model comes from the node's model store (``name`` for the
    active version, ``name:version`` to pin one); a batch is served wholly by one version, so a hot swap
    never mixes versions inside a batch. Written fields: ``<output>``, ``<output>_confidence`` (or
    ``confidence``) and ``<output>_model`` (``name:version``).

    ``select`` marks records for the agile loop (set ``<mark>`` to the reason; ``upload: {when: ...}``
    sends only those): ``low_confidence`` (below this confidence), ``disagree`` (another model's
    prediction field that differs from this one) and ``random`` (a seeded share of the rest).
    """

    name = "apply_model"
    params = {"model": "model name (optionally name:version)", "inputs": "numeric input fields, in order",
              "image": "a field holding an image/clip array (instead of inputs)",
              "output": "field for the prediction (default: prediction)",
              "confidence": "field for the confidence (default: <output>_confidence)",
              "batch_size": "rows per model call (default 4096 for inputs, 32 for images)",
              "select": "{low_confidence: 0-1, disagree: field, random: 0-1, seed: int}: mark for upload",
              "mark": "field the selection reason goes into (default: select)",
              "annotate": "{frame, box, output}: draw the box and the prediction on a copy of the frame"}
    required = ("model",)

    def configure(self, model: Any, inputs: Any = None, image: Any = None, output: Any = "prediction",
                  confidence: Any = None, batch_size: Any = None, select: Any = None, mark: Any = "select",
                  annotate: Any = None) -> None:
        if not isinstance(model, str) or not model or model.count(":") > 1 or "" in model.split(":"):
            raise SpecError(f"expected a model name (or name:version), got {model!r}", field="model")
        self.model = model
        if (inputs is None) == (image is None):
            raise SpecError("give exactly one of 'inputs' (numeric fields) or 'image' (an array field)",
                            field="inputs")
        self.inputs = _names(inputs, "inputs") or [] if inputs is not None else []
        if image is not None and (not isinstance(image, str) or not image):
            raise SpecError("expected the name of the field holding the image", field="image")
        self.image = image
        for name, value in (("output", output), ("mark", mark)):
            if not isinstance(value, str) or not value:
                raise SpecError("expected a field name", field=name)
        self.output = output
        self.confidence = confidence or f"{output}_confidence"
        self.tag_field = f"{output}_model"
        self.mark = mark
        if batch_size is None:  # table models are fastest on large calls; images cost memory per row
            batch_size = 32 if image is not None else 4096
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise SpecError(f"expected a whole number >= 1, got {batch_size!r}", field="batch_size")
        self.batch_size = batch_size
        self.select = self._selection(select)
        if annotate is not None:
            if annotate is True:
                annotate = {}
            if not isinstance(annotate, dict) or set(annotate) - {"frame", "box", "output"}:
                raise SpecError("expected true or {frame, box, output}", field="annotate")
            annotate = {"frame": "frame", "box": "roi_box", "output": "annotated", **annotate}
        self.annotate = annotate
        self.rng = np.random.default_rng(self.select.get("seed"))

    @staticmethod
    def _selection(select: Any) -> dict[str, Any]:
        if select is None:
            return {}
        if not isinstance(select, dict):
            raise SpecError("expected {low_confidence, disagree, random, seed}", field="select")
        unknown = set(select) - {"low_confidence", "disagree", "random", "seed"}
        if unknown:
            raise SpecError(f"unknown key(s) {', '.join(sorted(map(str, unknown)))}", field="select",
                            hint="select has: low_confidence, disagree, random, seed")
        for key in ("low_confidence", "random"):
            v = select.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1):
                raise SpecError(f"expected a number from 0 to 1, got {v!r}", field=f"select.{key}")
        if select.get("disagree") is not None and not isinstance(select["disagree"], str):
            raise SpecError("expected the field of another model's prediction", field="select.disagree")
        seed = select.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise SpecError("expected an integer seed", field="select.seed")
        return dict(select)

    def _table(self, batch: Batch) -> tuple[Batch, np.ndarray]:
        n = len(batch)
        ok = np.ones(n, dtype=bool)
        reasons: dict[int, str] = {}
        for f in self.inputs:
            has = batch.has(f)
            for i in np.flatnonzero(~has & ok).tolist():
                reasons[i] = f"apply_model: missing input '{f}'"
            ok &= has
            col = batch.cols.get(f)
            if col is not None and col.data.dtype.kind not in "iuf":
                numeric = np.array([isinstance(v, (int, float)) and not isinstance(v, bool)
                                    for v in col.data.tolist()], dtype=bool) if col.data.dtype == object \
                    else np.zeros(len(col.data), dtype=bool)
                for i in np.flatnonzero(~numeric & ok).tolist():
                    reasons[i] = f"apply_model: input '{f}' is not a number"
                ok &= numeric
        batch = self._drop(batch, ok, reasons)
        if not self.inputs:
            return batch, np.zeros((len(batch), 0))
        return batch, np.column_stack([np.asarray(batch.cols[f].data, dtype=np.float64) for f in self.inputs])

    def _images(self, batch: Batch, shape: tuple[int, ...] | None) -> tuple[Batch, np.ndarray]:
        col = batch.cols.get(self.image)
        values = col.data.tolist() if col is not None and col.data.dtype == object else [None] * len(batch)
        has = batch.has(self.image)
        ok = np.zeros(len(batch), dtype=bool)
        reasons: dict[int, str] = {}
        for i, v in enumerate(values):
            if not has[i]:
                reasons[i] = f"apply_model: missing image field '{self.image}'"
            elif not isinstance(v, np.ndarray) or v.dtype != np.uint8:
                reasons[i] = f"apply_model: '{self.image}' is not a uint8 image array"
            elif shape and v.shape != shape:
                reasons[i] = f"apply_model: '{self.image}' has shape {v.shape}, the model takes {shape}"
            else:
                ok[i] = True
        batch = self._drop(batch, ok, reasons)
        arrays = [v for v, good in zip(values, ok) if good]
        return batch, (np.stack(arrays) if arrays else np.zeros((0, *(shape or ())), dtype=np.uint8))

    def _drop(self, batch: Batch, ok: np.ndarray, reasons: dict[int, str]) -> Batch:
        if ok.all():
            return batch
        bad = np.flatnonzero(~ok)
        self.ctx.dead_letter(batch.take(bad), [reasons[i] for i in bad.tolist()])
        return batch.take(ok)

    def process(self, batch: Batch) -> Batch:
        if not len(batch):
            return batch
        models = self.ctx.models
        fn = models.get(self.model) if models is not None else None  # once per batch: one version serves it
        if fn is None:
            self.ctx.dead_letter(batch, f"apply_model: model '{self.model}' is not loaded on this node")
            return Batch.empty()
        if self.image is not None:
            shape = tuple(getattr(fn, "shape", ()) or ()) or None
            batch, X = self._images(batch, shape)
        else:
            batch, X = self._table(batch)
        if not len(batch):
            return batch
        preds, confs = [], []
        try:
            for a in range(0, len(X), self.batch_size):
                res = fn(X[a:a + self.batch_size])
                p, c = res if isinstance(res, tuple) else (res, None)
                preds.append(np.asarray(p).reshape(-1))
                confs.append(None if c is None else np.asarray(c, dtype=np.float64).reshape(-1))
            pred = np.concatenate(preds)
            if len(pred) != len(batch):
                raise ValueError(f"returned {len(pred)} predictions for {len(batch)} inputs")
        except Exception as exc:  # a failing model must not stop the pipeline
            self.ctx.dead_letter(batch, f"apply_model: model '{self.model}' failed: {exc!r}")
            return Batch.empty()
        n = len(batch)
        out = Batch(batch.codes, batch.product, batch.ts, dict(batch.cols))
        out.set_column(self.output, pred)
        conf = np.concatenate(confs) if all(c is not None for c in confs) else None
        if conf is not None:
            out.set_column(self.confidence, conf)
        tag = getattr(fn, "tag", None) or f"{self.model.split(':')[0]}:{getattr(fn, 'version', 'local')}"
        out.set_column(self.tag_field, np.full(n, tag, dtype=object))
        if self.select:
            self._mark(out, pred, conf)
        if self.annotate:
            self._annotate(out, pred, conf)
        return out

    def _annotate(self, out: Batch, pred: np.ndarray, conf: np.ndarray | None) -> None:
        from .media import annotate

        a = self.annotate
        frames, boxes = out.cols.get(a["frame"]), out.cols.get(a["box"])
        if frames is None:
            return
        drawn = np.empty(len(out), dtype=object)
        for i, f in enumerate(frames.data):
            if isinstance(f, np.ndarray):
                label = f"{self.output} {pred[i]}" + ("" if conf is None else f" {conf[i]:.2f}")
                drawn[i] = annotate(f, None if boxes is None else boxes.data[i], label, bool(pred[i]))
        out.set_column(a["output"], drawn, np.array([v is not None for v in drawn], dtype=bool))

    def _mark(self, out: Batch, pred: np.ndarray, conf: np.ndarray | None) -> None:
        n = len(out)
        reason = np.full(n, None, dtype=object)
        low = self.select.get("low_confidence")
        if low is not None and conf is not None:
            reason[conf < low] = "low_confidence"
        other = self.select.get("disagree")
        if other is not None and other in out.cols:
            col = out.cols[other]
            differ = out.has(other) & (col.data.astype(object) != pred.astype(object))
            reason[differ & (reason == None)] = "disagreement"  # noqa: E711 - elementwise on an object array
        share = self.select.get("random")
        if share:
            pick = self.rng.random(n) < share
            reason[pick & (reason == None)] = "random"  # noqa: E711
        present = reason != None  # noqa: E711
        prev = out.cols.get(self.mark)
        if prev is not None:  # an earlier model's selection stands
            keep = out.has(self.mark)
            reason[keep] = prev.data[keep]
            present |= keep
        out.set_column(self.mark, reason, present)
