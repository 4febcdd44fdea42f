"""Where a pipeline's results go: alerts, notifications and uploads to the store, MQTT and the outbox.

Alerts and notifications are kept in the node's local store and published on ``edgeloop/<node>/alerts``
and ``edgeloop/<node>/notifications`` (QoS 1); alerts, notifications and uploaded records also go into the
durable outbox for the hub (when the node has one), each desensitised by its pipeline first, with their
JPEGs as media. ``device_output`` actions are handed to the actuator.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from .. import jsonio
from ..outbox import OutboxFull

if TYPE_CHECKING:
    from ..mqtt import MqttLink
    from ..outbox import Outbox
    from ..store import LocalStore
    from .actuation import Actuator

__all__ = ["NodeSinks"]


class NodeSinks:
    """The sinks every pipeline instance of a node writes to (its StepContext.sinks)."""

    def __init__(self, node: str, *, store: LocalStore | None, publisher: MqttLink, outbox: Outbox | None,
                 desensitisers: dict[str, Any], actuator: Actuator) -> None:
        self.node = node
        self.store, self.publisher, self.outbox = store, publisher, outbox
        #: instance -> its pipeline's Desensitiser (what leaves for the hub is blurred/dropped/hashed by it)
        self.desensitisers = desensitisers
        self.actuator = actuator
        self.alerts = 0
        self.notifications = 0
        self.uploads = 0
        self.images = 0
        self.image_bytes = 0

    def _publish(self, kind: str, item: dict[str, Any]) -> None:
        if self.store is not None:
            self.store.add_message(kind, item)
        self.publisher.publish(f"edgeloop/{self.node}/{kind}s", jsonio.dumps({"node": self.node, **item}), qos=1)

    def _uplink(self, kind: str, items: list[dict[str, Any]], media: list[dict[str, Any]] | None = None) -> None:
        if self.outbox is None:
            return
        out = []
        for it in items:
            d = self.desensitisers.get(it.get("instance"))  # type: ignore[arg-type]
            out.append({**(d.item(it) if d is not None else it), "kind": kind})
        try:
            self.outbox.put(out, media=media or ())
        except OutboxFull:  # counted by the outbox (refused.disk_full.<kind>), logged, reported in heartbeats
            pass

    def _media(self, item: dict[str, Any], prefix: str) -> dict[str, Any] | None:
        """The item's JPEG (already desensitised by its step) as an outbox media file, named in the item."""
        data = item.pop("_image", None)
        if data is None:
            return None
        mid = f"{prefix}-{uuid.uuid4().hex}.jpg"
        item["image"] = {**item.get("image", {}), "media": mid, "size": len(data)}
        self.images += 1
        self.image_bytes += len(data)
        return {"id": mid, "data": data, "content_type": "image/jpeg"}

    def alert(self, item: dict[str, Any]) -> None:
        self.alerts += 1
        m = self._media(item, "alert")
        self._publish("alert", item)
        self._uplink("alert", [item], [m] if m is not None else None)

    def notification(self, item: dict[str, Any]) -> None:
        self.notifications += 1
        self._publish("notification", item)
        self._uplink("notification", [item])

    def upload(self, items: list[dict[str, Any]]) -> None:
        self.uploads += len(items)
        media = [m for m in (self._media(item, "record") for item in items) if m is not None]
        self._uplink("record", items, media)

    def device_output(self, action: dict[str, Any]) -> None:
        self.actuator.put(action)
