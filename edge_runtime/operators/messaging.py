"""Messaging operators: what a pipeline tells people, the hub and devices (notification, alert, upload,
device_output), and the ``{field}`` templates their texts use."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..records import Batch, without_media
from .base import Operator, SpecError, parse_duration, register
from .images import column_values, media_jpeg
from .params import expression

__all__ = ["Notification", "Alert", "Upload", "DeviceOutput", "render_template"]


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
        images = column_values(rows, self.image) if self.image is not None else None
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

    def snapshot(self) -> dict[str, Any]:
        """Per device id: the event time of its last alert (``cooldown``) and of its last record
        (``until_quiet``); how many alerts were raised and suppressed."""
        return {"last": dict(self.last), "seen": dict(self.seen), "raised": self.raised,
                "suppressed": self.suppressed}

    def restore(self, state: dict[str, Any]) -> None:
        self.last, self.seen = dict(state["last"]), dict(state["seen"])
        self.raised, self.suppressed = state["raised"], state["suppressed"]


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
            images = column_values(chosen, self.image) if self.image is not None else None
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

    def snapshot(self) -> dict[str, Any]:
        """How many records were seen (``every`` counts on from it)."""
        return {"seen": self.seen}

    def restore(self, state: dict[str, Any]) -> None:
        self.seen = state["seen"]


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
        self.exprs = [(k, expression(v, f"{label}.{k}")) for k, v in mapping.items()]
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

