"""MQTT devices: readings on topics, commands back on the device's command topic.

:class:`MqttConnector` binds devices to topics through a link of its own (edge_runtime.mqtt): the network
thread only queues (topic, payload, arrival time); a parser thread decodes JSON, maps payload fields to
product properties, checks types and hands Records to the Device Bus. Anything wrong with a message
(malformed JSON, wrong type, NaN, too large, unknown device) becomes a dead letter with the reason.

A node also listens on ``edgeloop/<node>/ingest`` for ready-made Records from gateways
(``{"device", "ts", "values"}``) of bound devices, so this connector runs on every node.

``set`` publishes ``{"set": values}`` on the device's ``command_topic`` (default ``<topic>/set``); a
service publishes ``{"service", "args", ...payload}`` on the service's ``topic`` (default the command
topic, else ``<topic>/cmd``), both QoS 1 through the node's own link.
"""

from __future__ import annotations

import collections
import threading
import uuid
from typing import TYPE_CHECKING, Any, ClassVar

from .. import jsonio
from ..devices.events import event_record
from ..devices.readings import MAPPING_OPTIONS, FieldBinding, check_mapping, reading
from ..mqtt import MqttLink
from ..records import RecordError, check_value
from .base import BindingCheck, Connector, NodeContext, substitute

if TYPE_CHECKING:
    from ..devices.catalog import DeviceBinding, Product
    from ..metrics import ConnectorFamilies, Family

__all__ = ["MqttConnector"]


class MqttConnector(Connector):
    """Devices bound to MQTT topics, plus the node's ingest topic for ready-made Records."""

    name = "mqtt"
    options: ClassVar[dict[str, str]] = {
        "topic": "MQTT topic the device publishes on", "qos": "0 or 1",
        "mapping": "property -> JSON field path in the payload (a.b.c); default: same name",
        "ts_field": "payload field with the event time (epoch seconds); default: arrival time",
        "ts_unit": MAPPING_OPTIONS["ts_unit"], "command_topic": "where device_output sends commands",
        "event_topic": "where the device publishes its events ({event: name, ...fields})"}
    service_keys = frozenset({"topic", "payload"})
    always = True  # the node's ingest topic

    @classmethod
    def check(cls, b: BindingCheck) -> None:
        topic = b.options.get("topic")
        if not isinstance(topic, str) or not topic or "#" in topic or "+" in topic:
            raise b.error("expected the device's MQTT topic (no wildcards)", "topic")
        qos = b.options.setdefault("qos", 1)
        if qos not in (0, 1):
            raise b.error(f"expected 0 or 1, got {qos!r}", "qos")
        check_mapping(b)
        b.claim("topic", "topic")
        if "event_topic" in b.options:
            if b.options["event_topic"] == topic:
                raise b.error(f"topic {topic!r} is already bound to device {b.device!r}", "event_topic")
            b.claim("event_topic", "topic")

    @classmethod
    def check_service(cls, b: BindingCheck, service: str, how: Any) -> Any:
        if how is None:
            return None  # the default: {"service": ..., "args": ...} on the command topic
        how = super().check_service(b, service, how)
        b.check_placeholders(service, how.get("payload"))
        return how

    @classmethod
    def metric_families(cls, stats: Any, node: str, shared: ConnectorFamilies) -> list[Family]:
        from ..metrics import Family

        return [
            Family("edgeloop_node_mqtt_received_total", "counter", "MQTT messages received.").add(
                stats.get("received"), node=node),
            Family("edgeloop_node_mqtt_connected", "gauge", "1 while connected to the broker.").add(
                stats.get("connected"), node=node),
            Family("edgeloop_node_mqtt_reconnects_total", "counter", "Broker reconnects.").add(
                stats.get("reconnects"), node=node),
        ]

    def __init__(self, ctx: NodeContext, bindings: list[DeviceBinding], *, shared_group: str | None = None,
                 chunk: int = 2000) -> None:
        super().__init__(ctx, bindings)
        catalog = ctx.catalog
        self.node = ctx.node
        self.catalog = catalog
        self.bus = ctx.bus
        self.max_payload = ctx.max_payload
        self.chunk = chunk
        self.topics: dict[str, FieldBinding] = {}
        self.event_topics: dict[str, tuple[str, Product]] = {}
        for b in bindings:
            self.topics[b.options["topic"]] = FieldBinding(b, catalog.products[b.product])
            if b.options.get("event_topic"):
                self.event_topics[b.options["event_topic"]] = (b.id, catalog.products[b.product])
        self.ingest_topic = f"edgeloop/{ctx.node}/ingest"
        self.inbox: collections.deque[tuple[str, bytes, float]] = collections.deque()
        self.wakeup = threading.Event()
        self.link = MqttLink(ctx.broker, client_id=f"{ctx.node}-devices-{uuid.uuid4().hex[:6]}",
                             on_message=self._enqueue)
        prefix = f"$share/{shared_group}/" if shared_group else ""
        for topic, tb in self.topics.items():
            qos = catalog.devices[tb.device].options.get("qos", 1)
            self.link.subscribe(prefix + topic, qos)
        for topic in self.event_topics:
            self.link.subscribe(prefix + topic, 1)
        self.link.subscribe(prefix + self.ingest_topic, 1)
        self.received = 0
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mqtt-parser", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self.link.start()

    def stop(self) -> None:
        self.link.stop()
        self._stop.set()
        self.wakeup.set()
        self._thread.join(10)

    def stats(self) -> dict[str, Any]:
        return {"received": self.received, "accepted": self.accepted, "connected": self.link.connected.is_set(),
                "reconnects": max(0, self.link.connects - 1)}

    def heartbeat(self) -> dict[str, dict[str, Any]]:
        return {"counters": {"mqtt_received": self.received}}

    # -- actions -----------------------------------------------------------------------------------
    def write(self, device: str, values: dict[str, Any]) -> None:
        opt = self.bindings[device].options
        topic = opt.get("command_topic") or opt["topic"] + "/set"
        self.ctx.publisher.publish(topic, jsonio.dumps({"set": values}), qos=1)

    def call_service(self, device: str, service: str, args: dict[str, Any], how: Any) -> None:
        opt = self.bindings[device].options
        topic = (how or {}).get("topic") or opt.get("command_topic") or opt["topic"] + "/cmd"
        payload = {"service": service, "args": args, **((how or {}).get("payload") or {})}
        self.ctx.publisher.publish(topic, jsonio.dumps(substitute(payload, args)), qos=1)

    # -- readings ----------------------------------------------------------------------------------
    def _enqueue(self, topic: str, payload: bytes, arrived: float) -> None:
        self.inbox.append((topic, payload, arrived))
        if len(self.inbox) == 1:
            self.wakeup.set()

    def _run(self) -> None:
        inbox = self.inbox
        while True:
            if not inbox:
                if self._stop.is_set():
                    return
                self.wakeup.wait(0.05)
                self.wakeup.clear()
                continue
            records: list[dict[str, Any]] = []
            n = min(len(inbox), self.chunk)
            for _ in range(n):
                topic, payload, arrived = inbox.popleft()
                rec = self.parse(topic, payload, arrived)
                if rec is not None:
                    records.append(rec)
            self.received += n
            self.accepted += len(records)
            self.bus.submit(records)

    def parse(self, topic: str, payload: bytes, arrived: float) -> dict[str, Any] | None:
        """One MQTT message -> a Record, or None after filing a dead letter."""
        tb = self.topics.get(topic)
        source = f"mqtt:{topic}"
        if len(payload) > self.max_payload:
            self.bus.dead(source, f"payload is {len(payload)} bytes, over the limit of {self.max_payload}",
                          device=tb.device if tb else None, raw=payload[:256])
            return None
        try:
            data = jsonio.loads(payload)
        except jsonio.DecodeError as exc:
            self.bus.dead(source, f"malformed JSON: {exc}", device=tb.device if tb else None, raw=payload[:1024])
            return None
        if tb is None:
            if topic == self.ingest_topic:
                return self._ingest(data, payload, arrived)
            if topic in self.event_topics:
                device, product = self.event_topics[topic]
                try:
                    return event_record(product, device, data, arrived)
                except RecordError as exc:
                    self.bus.dead(source, exc.reason, device=device, raw=payload[:1024])
                    return None
            self.bus.dead(source, "no device is bound to this topic", raw=payload[:1024])
            return None
        try:
            return reading(tb, data, arrived)
        except RecordError as exc:
            self.bus.dead(source, exc.reason, device=tb.device, raw=payload[:1024])
            return None

    def _ingest(self, data: Any, payload: bytes, arrived: float) -> dict[str, Any] | None:
        source = f"mqtt:{self.ingest_topic}"
        try:
            if not isinstance(data, dict):
                raise RecordError(f"a record must be a JSON object, got {type(data).__name__}")
            device = data.get("device")
            binding = self.catalog.devices.get(device) if isinstance(device, str) else None
            if binding is None:
                raise RecordError(f"unknown device {device!r}")
            product = self.catalog.products[binding.product]
            values = data.get("values")
            if not isinstance(values, dict) or not values:
                raise RecordError("record field 'values' must be a non-empty object")
            for k, v in values.items():
                check_value(k, v)
            values = product.check_values(values)
            ts = data.get("ts", arrived)
            if isinstance(ts, bool) or not isinstance(ts, (int, float)) or ts != ts or abs(ts) == float("inf"):
                raise RecordError(f"record field 'ts' must be a finite number, got {ts!r}")
        except RecordError as exc:
            self.bus.dead(source, exc.reason, device=data.get("device") if isinstance(data, dict) else None,
                          raw=payload[:1024])
            return None
        return {"device": device, "product": product.name, "ts": float(ts), "values": values}
