"""MQTT: the broker link and the device connector (paho-mqtt 2.x).

:class:`MqttLink` is one client with reconnect (paho's exponential backoff),
subscriptions restored on every connect, and a last will on
``edgeloop/<node>/status``. :class:`MqttConnector` binds devices to topics: the
network thread only queues (topic, payload, arrival time); a parser thread
decodes JSON, maps payload fields to product properties, checks types and hands
Records to the Device Bus. Anything wrong with a message (malformed JSON, wrong
type, NaN, too large, unknown device) becomes a dead letter with the reason.

A node also listens on ``edgeloop/<node>/ingest`` for ready-made Records from
gateways (``{"device", "ts", "values"}``) of bound devices.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import paho.mqtt.client as mqtt

from .. import jsonio
from ..records import RecordError, check_value
from .events import event_record
from .model import Catalog, DeviceBinding, Product, Property

__all__ = ["MqttLink", "MqttConnector", "BrokerConfig"]

log = logging.getLogger("edgeloop.mqtt")


@dataclass
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    keepalive: int = 30
    tls: bool = False
    ca_certs: str | None = None


class BufferedClient(mqtt.Client):
    """paho's Client with TCP_NODELAY, reading the socket in 64 KiB chunks and many packets per wake-up.

    paho leaves Nagle's algorithm on. An MQTT exchange is a run of small packets (a PUBACK, then
    the next PUBLISH): with Nagle the second waits for the peer's delayed ACK, 40 ms on Linux. The
    alert-latency bench traced its stop-and-wait uplink to exactly that (a 44 ms hub ack, p99 150 ms
    camera to hub); with TCP_NODELAY each packet leaves when it is written.

    Stock paho 2.x makes three ``recv`` calls per incoming packet (command byte,
    length, body) and reads one QoS 0 packet per ``select``. Here ``_sock_recv``
    serves those small reads from a user-space buffer filled with one large
    ``recv``, and ``loop_read`` handles up to ``max_burst`` packets per call; bytes
    left in the buffer are processed on the next loop turn without waiting in
    ``select``. The MQTT behaviour (acks, keepalive, reconnect) is paho's own.
    """

    max_burst = 2000
    _chunk = 65536

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        #: ``(topic, payload)`` for each QoS 0/1 PUBLISH that arrives whole in the buffer, bypassing paho's
        #: message objects and topic matcher (the node's links have one on_message for every subscription)
        self.fast_publish: Callable[[str, bytes], None] | None = None

    def _sock_recv(self, bufsize: int) -> bytes:
        buf, pos = self._rbuf, self._rpos
        if pos >= len(buf):
            buf = super()._sock_recv(max(bufsize, self._chunk))  # raises BlockingIOError when empty
            if not buf:
                return buf
            pos = 0
        end = pos + bufsize
        self._rbuf, self._rpos = buf, min(end, len(buf))
        return buf[pos:end]

    def _create_socket_connection(self) -> Any:
        sock = super()._create_socket_connection()
        with contextlib.suppress(OSError, AttributeError):  # a proxy socket may not take it
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _sock_close(self) -> None:
        self._rbuf, self._rpos = b"", 0
        super()._sock_close()

    def _fast_publish_one(self) -> bool:
        """Handle one whole PUBLISH (QoS 0 or 1) from the buffer; False leaves everything to paho.

        Only between packets (paho holds no partial one) and only for a packet entirely in the buffer:
        anything else (other packet types, QoS 2, a packet split across reads, a topic that is not UTF-8)
        takes paho's own path, reading the same buffer, so the two never disagree about the stream.
        """
        if self._in_packet["command"] != 0:
            return False
        buf, pos = self._rbuf, self._rpos
        if pos >= len(buf):
            try:
                buf = mqtt.Client._sock_recv(self, self._chunk)
            except (BlockingIOError, ssl.SSLWantReadError):
                return False
            except OSError:
                return False  # paho's read will see the same error and handle it
            if not buf:
                return False
            self._rbuf, self._rpos, pos = buf, 0, 0
        cmd = buf[pos]
        if cmd & 0xF0 != 0x30 or (cmd >> 1) & 3 > 1:
            return False
        length, mult, i = 0, 1, pos + 1
        while True:
            if i >= len(buf) or i - pos > 4:
                return False
            b = buf[i]
            length += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
        end = i + length
        if end > len(buf) or length < 2:
            return False
        tlen = (buf[i] << 8) | buf[i + 1]
        t_end = i + 2 + tlen
        qos = (cmd >> 1) & 3
        body = t_end + (2 if qos else 0)
        if body > end:
            return False
        try:
            topic = buf[i + 2:t_end].decode("utf-8")
        except UnicodeDecodeError:
            return False
        self._rpos = end
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()
        self.fast_publish(topic, buf[body:end])  # type: ignore[misc]
        if qos == 1:
            self._send_puback((buf[t_end] << 8) | buf[t_end + 1])
        return True

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        if self._sock is None:
            return mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN
        fast = self.fast_publish is not None
        for _ in range(max(max_packets, self.max_burst)):
            if self._sock is None:
                return mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN
            if fast and self._fast_publish_one():
                continue
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == mqtt.MQTTErrorCode.MQTT_ERR_AGAIN:
                break
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _loop(self, timeout: float = 1.0) -> mqtt.MQTTErrorCode:
        if self._rpos < len(self._rbuf) and self._sock is not None:
            rc = self.loop_read()  # buffered bytes: select() would not see them
            if rc or self._sock is None:
                return rc
            timeout = 0.0
        return super()._loop(timeout)


QUEUE_LIMIT = 20_000  # unacknowledged QoS 1 messages a publisher lets pile up before it waits (ids are 16 bits)


class MqttLink:
    """A paho client that reconnects, re-subscribes, and can publish from any thread."""

    def __init__(self, cfg: BrokerConfig, *, client_id: str | None = None, status_topic: str | None = None,
                 on_message: Callable[[str, bytes, float], None] | None = None) -> None:
        self.cfg = cfg
        self.client_id = client_id or f"edgeloop-{uuid.uuid4().hex[:10]}"
        self.client = BufferedClient(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                  protocol=mqtt.MQTTv311, clean_session=True)
        if cfg.username:
            self.client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            self.client.tls_set(ca_certs=cfg.ca_certs)
        self.client.reconnect_delay_set(min_delay=0.2, max_delay=10)
        self.client.max_queued_messages_set(0)
        self.client.max_inflight_messages_set(1000)
        self.status_topic = status_topic
        if status_topic:
            self.client.will_set(status_topic, b"offline", qos=1, retain=True)
        self.subscriptions: dict[str, int] = {}
        self.on_message_cb = on_message
        self.connected = threading.Event()
        self.connects = 0
        self.disconnects = 0
        self.dropped = 0
        self.last_error: str | None = None
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self._sub_mid: int | None = None
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        if on_message is not None:
            self.client.fast_publish = lambda topic, payload: on_message(topic, payload, time.time())

    def start(self) -> None:
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive)
        self.client.loop_start()

    def stop(self) -> None:
        if self.status_topic and self.connected.is_set():
            info = self.client.publish(self.status_topic, b"offline", qos=1, retain=True)
            with contextlib.suppress(ValueError, RuntimeError):  # not queued (a full queue): the will says it
                info.wait_for_publish(2)
        self.client.disconnect()
        self.client.loop_stop()

    def pending(self) -> int:
        """QoS 1 messages queued or in flight, not yet acknowledged by the broker."""
        return len(self.client._out_messages)

    def wait_room(self, limit: int = QUEUE_LIMIT, timeout: float = 5.0) -> bool:
        """Backpressure for QoS 1 publishers: wait while more than ``limit`` messages are unacknowledged (the
        broker is slower than we publish); False when it did not drain within ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.pending() > limit:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self.connected.wait(timeout)

    def subscribe(self, topic: str, qos: int = 0) -> None:
        self.subscriptions[topic] = qos
        if self.client.is_connected():  # else on_connect subscribes to it with the rest
            self.client.subscribe(topic, qos)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Publish; a message paho could not queue (its 65,535 message ids are all pending) is counted in
        ``dropped``, never lost silently."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == mqtt.MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            self.dropped += 1
        return info

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.last_error = f"connect refused: {reason}"
            log.warning("broker %s:%s refused the connection: %s", self.cfg.host, self.cfg.port, reason)
            return
        self.connects += 1
        if self.status_topic:
            client.publish(self.status_topic, b"online", qos=1, retain=True)
        if self.subscriptions:
            # connected means subscribed: a message published right after wait_connected() must not be missed
            _, self._sub_mid = client.subscribe([(t, q) for t, q in self.subscriptions.items()])
        else:
            self.connected.set()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        if mid == self._sub_mid:
            failed = [str(r) for r in reasons if getattr(r, "is_failure", False)]
            if failed:
                self.last_error = f"subscription refused: {', '.join(failed)}"
                log.warning("broker %s:%s refused a subscription: %s", self.cfg.host, self.cfg.port, failed)
            self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connected.clear()
        self.disconnects += 1
        self.last_error = f"disconnected: {reason}"

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self.on_message_cb is not None:
            self.on_message_cb(msg.topic, msg.payload, time.time())


def reading(tb: FieldBinding, data: Any, arrived: float) -> dict[str, Any]:
    """One decoded JSON reading of a device -> a Record (its mapped fields checked against the product, its
    event time from ``ts_field`` or the arrival); RecordError says what is wrong. MQTT and HTTP share it."""
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


class MqttConnector:
    """Devices bound to MQTT topics, plus the node's ingest topic for ready-made Records."""

    def __init__(self, node: str, catalog: Catalog, bus: Any, cfg: BrokerConfig, *,
                 max_payload: int = 65536, shared_group: str | None = None, chunk: int = 2000) -> None:
        self.node = node
        self.catalog = catalog
        self.bus = bus
        self.max_payload = max_payload
        self.chunk = chunk
        self.topics: dict[str, FieldBinding] = {}
        self.event_topics: dict[str, tuple[str, Product]] = {}
        for b in catalog.devices.values():
            if b.connector == "mqtt":
                self.topics[b.options["topic"]] = FieldBinding(b, catalog.products[b.product])
                if b.options.get("event_topic"):
                    self.event_topics[b.options["event_topic"]] = (b.id, catalog.products[b.product])
        self.ingest_topic = f"edgeloop/{node}/ingest"
        self.inbox: collections.deque[tuple[str, bytes, float]] = collections.deque()
        self.wakeup = threading.Event()
        self.link = MqttLink(cfg, client_id=f"{node}-devices-{uuid.uuid4().hex[:6]}",
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
