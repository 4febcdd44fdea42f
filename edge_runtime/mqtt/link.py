"""The node's link to its MQTT broker (paho-mqtt 2.x): reconnects, restores subscriptions, publishes from any
thread.

:class:`MqttLink` is one client with reconnect (paho's own exponential backoff), subscriptions restored on
every connect, and an optional last will on ``edgeloop/<node>/status``. The node publishes its outputs,
alerts and stats through one, the uplink talks to the hub through another, the MQTT device connector
reads its topics through a third, and the hub's ingest uses :class:`~edge_runtime.mqtt.client.BufferedClient`
directly. Transport, not a device connector: it knows nothing of devices.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from ..sections import boolean, count, optional, setting, text
from ..sections import port as port_number
from .client import BufferedClient

__all__ = ["BrokerConfig", "MqttLink", "QUEUE_LIMIT"]

log = logging.getLogger("edgeloop.mqtt")


@dataclass(frozen=True)
class BrokerConfig:
    """The MQTT broker the node talks through (node.yaml broker:)."""

    host: str = setting("127.0.0.1", text, "the broker's host name or address")
    port: int = setting(1883, port_number(), "the broker's TCP port (1883; 8883 with TLS)")
    username: str | None = setting(None, optional(text), "user name, when the broker wants one")
    password: str | None = setting(None, None, "password of that user")
    keepalive: int = setting(30, count, "seconds between keep-alive pings")
    tls: bool = setting(False, boolean, "TLS to the broker")
    ca_certs: str | None = setting(None, optional(text), "CA bundle that signs the broker's certificate")


QUEUE_LIMIT = 20_000  # unacknowledged QoS 1 messages a publisher lets pile up before it waits (ids are 16 bits)


class MqttLink:
    """A paho client that reconnects, re-subscribes, and can publish from any thread."""

    def __init__(self, cfg: BrokerConfig, *, client_id: str | None = None, status_topic: str | None = None,
                 on_message: Callable[[str, bytes, float], None] | None = None) -> None:
        self.cfg = cfg
        self.client_id = client_id or f"edgeloop-{uuid.uuid4().hex[:10]}"
        self.client = BufferedClient(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                  protocol=mqtt.MQTTv311, clean_session=True)
        if cfg.username:
            self.client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            self.client.tls_set(ca_certs=cfg.ca_certs)
        self.client.reconnect_delay_set(min_delay=0.2, max_delay=10)  # type: ignore[arg-type]  # paho takes floats
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
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
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
            self.on_message_cb(msg.topic, cast(bytes, msg.payload), time.time())
