"""The hub's MQTT ingest: nodes' uplink batches into the database, acknowledged after commit.

Subscribes ``$share/<group>/edgeloop/+/uplink`` (QoS 1), so several ingest
processes share the load: the broker hands each message to one of them. A
message is ``{"first": s, "last": e, "items": [...]}`` from node ``<node>``'s
outbox; items are checked (bad ones are named in the ack and the node keeps them
as dead letters), stored once per id, and only after the commit is
``{"first", "last", "stored", "rejected"}`` published to
``edgeloop/<node>/uplink/ack``. Nodes resend what is not acknowledged, so a
message lost with a broker, or an ingest killed between commit and ack, costs a
redelivery and never a record.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
import uuid
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion

from edge_runtime.mqtt import BufferedClient

from .db import Node
from .uploads import UploadError, check_item, store_items

__all__ = ["Ingest"]

log = logging.getLogger("edgeloop.hub.ingest")
_TOPIC = re.compile(r"^edgeloop/([A-Za-z0-9][A-Za-z0-9_.\-]{0,63})/uplink$")


class Ingest:
    """One ingest worker: a paho client on the shared subscription and a writer thread."""

    def __init__(self, engine: sa.Engine, *, host: str = "127.0.0.1", port: int = 1883,
                 username: str | None = None, password: str | None = None, group: str = "edgeloop-ingest",
                 client_id: str | None = None, max_batch: int = 64) -> None:
        self.engine = engine
        self.group = group
        self.max_batch = max_batch
        self.client_id = client_id or f"hub-ingest-{uuid.uuid4().hex[:8]}"
        self.client = BufferedClient(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                     protocol=mqtt.MQTTv311, clean_session=True)
        if username:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(0.2, 5)  # type: ignore[arg-type]  # paho takes floats
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.host, self.port = host, port
        self.queue: queue.Queue[tuple[str, bytes | bytearray] | None] = queue.Queue(maxsize=10000)
        self.connected = threading.Event()
        self.known: dict[str, float] = {}
        self.messages = self.stored = self.rejected = self.unknown = self.bad = 0
        self._thread = threading.Thread(target=self._write_loop, name="ingest-writer", daemon=True)

    # -- MQTT side --------------------------------------------------------------------
    def start(self) -> Ingest:
        self._thread.start()
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.queue.put(None)
        self._thread.join(10)

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.warning("broker refused the ingest: %s", reason)
            return
        client.subscribe(f"$share/{self.group}/edgeloop/+/uplink", qos=1)
        client.publish("edgeloop/hub/status", orjson.dumps({"ingest": self.client_id, "online": True}), qos=0)
        self.connected.set()

    def _on_disconnect(self, *_: Any) -> None:
        self.connected.clear()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.queue.put((msg.topic, msg.payload))

    # -- writer side --------------------------------------------------------------------
    def _node_known(self, node: str) -> bool:
        now = time.monotonic()
        if self.known.get(node, 0) > now:
            return True
        with self.engine.connect() as c:
            ok = c.execute(sa.select(Node.name).where(Node.name == node)).first() is not None
        if ok:
            self.known[node] = now + 30
        return ok

    def _write_loop(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            msgs = [first]
            while len(msgs) < self.max_batch:
                try:
                    m = self.queue.get_nowait()
                except queue.Empty:
                    break
                if m is None:
                    self.queue.put(None)
                    break
                msgs.append(m)
            try:
                self._handle(msgs)
            except Exception:  # the database is away: the nodes resend, nothing is acknowledged
                log.exception("ingest of %d messages failed; not acknowledged", len(msgs))

    def _handle(self, msgs: list[tuple[str, bytes | bytearray]]) -> None:
        acks: list[tuple[str, dict[str, Any]]] = []
        by_node: dict[str, list[dict[str, Any]]] = {}
        for topic, payload in msgs:
            self.messages += 1
            m = _TOPIC.match(topic)
            if m is None:
                self.bad += 1
                continue
            node = m.group(1)
            try:
                doc = orjson.loads(payload)
                first, last, items = doc["first"], doc["last"], doc["items"]
                if not isinstance(items, list):
                    raise TypeError("items is not a list")
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                self.bad += 1
                log.warning("unreadable uplink message from %s: %s", node, exc)
                continue
            if not self._node_known(node):
                self.unknown += 1
                log.warning("uplink from unknown node %r ignored (create it with `edgeloop node create`)", node)
                continue
            good, rejected = [], []
            for i, it in enumerate(items):
                try:
                    good.append(check_item(it, i))
                except UploadError as exc:
                    rejected.append({"index": i, "id": it.get("id") if isinstance(it, dict) else None,
                                     "reason": str(exc)})
            by_node.setdefault(node, []).extend(good)
            self.rejected += len(rejected)
            acks.append((node, {"first": first, "last": last, "stored": len(good), "rejected": rejected,
                         "by": self.client_id}))
        self.stored += store_items(self.engine, by_node)
        for node, ack in acks:
            self.client.publish(f"edgeloop/{node}/uplink/ack", orjson.dumps(ack), qos=1)

    def stats(self) -> dict[str, Any]:
        return {"messages": self.messages, "stored": self.stored, "rejected": self.rejected,
                "unknown_node": self.unknown, "unreadable": self.bad, "queue": self.queue.qsize(),
                "connected": self.connected.is_set()}
