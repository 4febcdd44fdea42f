"""The durable uplink: the node's :class:`~edge_runtime.outbox.Outbox` drained to the hub.

A sender thread publishes the oldest rows as one MQTT QoS 1 message to ``edgeloop/<node>/uplink`` and waits
for the hub's ack on ``edgeloop/<node>/uplink/ack``, which the hub sends only after its commit; only then are
the rows deleted. One batch is in flight at a time (stop-and-wait): per-device order at the hub is the outbox
order, even with several ingest processes. Unacknowledged batches are resent (same ids; the hub stores each
id once) after ``ack_timeout`` or at once when an ingest announces itself on ``edgeloop/hub/status``.

Media files go over HTTP PUT; a file leaves when the hub answers 2xx.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

from . import jsonio
from .outbox import PRIORITY, Outbox, OutboxFull

__all__ = ["Outbox", "OutboxFull", "Uplink", "PRIORITY"]

log = logging.getLogger("edgeloop.uplink")


class Uplink:
    """Drains an :class:`Outbox` to the hub: records over MQTT QoS 1 (stop-and-wait), media over HTTP."""

    def __init__(self, node: str, outbox: Outbox, link: Any, *, http: Any = None, ack_timeout: float = 5.0,
                 batch_items: int = 1000, batch_bytes: int = 256 << 10,
                 on_rejected: Callable[[dict[str, Any], bytes | None], None] | None = None) -> None:
        self.node, self.outbox, self.link, self.http = node, outbox, link, http
        self.ack_timeout, self.batch_items, self.batch_bytes = ack_timeout, batch_items, batch_bytes
        self.on_rejected = on_rejected
        self.topic = f"edgeloop/{node}/uplink"
        self.ack_topic = f"edgeloop/{node}/uplink/ack"
        self._acked = threading.Event()
        self._ack: dict[str, Any] | None = None
        self._inflight: tuple[int, int] | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.sent = self.resent = self.acks = 0
        self.last_ack_at: float | None = None
        self._threads: list[threading.Thread] = []
        link.subscribe(self.ack_topic, 1)
        link.subscribe("edgeloop/hub/status", 0)

    def on_message(self, topic: str, payload: bytes) -> bool:
        """Feed MQTT messages here; returns True when the uplink consumed it."""
        if topic == self.ack_topic:
            try:
                ack = jsonio.loads(payload)
            except ValueError:
                log.warning("unreadable ack: %r", payload[:200])
                return True
            if self._inflight and (ack.get("first"), ack.get("last")) == self._inflight:
                self._ack = ack
                self._acked.set()
            return True
        if topic == "edgeloop/hub/status":
            self._wake.set()  # an ingest (re)connected: resend now instead of after the timeout
            return True
        return False

    def start(self) -> None:
        for target, name in ((self._send_loop, "uplink"), (self._media_loop, "uplink-media")):
            if name == "uplink-media" and self.http is None:
                continue
            t = threading.Thread(target=target, name=f"{name}-{self.node}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self.outbox.changed.set()
        for t in self._threads:
            t.join(timeout)

    def drained(self) -> bool:
        return bool(self.outbox.rows == 0)

    def _send_loop(self) -> None:
        attempt_of: tuple[int, int] | None = None
        while not self._stop.is_set():
            if not self.link.connected.wait(0.5):
                continue
            first, last, bodies = self.outbox.head(self.batch_items, self.batch_bytes)
            if not bodies:
                self.outbox.changed.wait(0.5)
                self.outbox.changed.clear()
                continue
            payload = b'{"first":%d,"last":%d,"items":[%s]}' % (first, last, b",".join(bodies))
            self._inflight = (first, last)
            self._acked.clear()
            self._wake.clear()
            self.link.publish(self.topic, payload, qos=1)
            if attempt_of == (first, last):
                self.resent += 1
            attempt_of = (first, last)
            self.sent += 1
            deadline = time.monotonic() + self.ack_timeout
            while not self._acked.is_set() and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0 or self._wake.is_set():
                    break
                self._acked.wait(min(left, 0.1))
            if not self._acked.is_set():
                continue  # resend the same head
            ack = self._ack or {}
            for rej in ack.get("rejected") or []:
                self._reject(rej, bodies)
            self.outbox.ack(first, last)
            self.acks += 1
            self.last_ack_at = time.time()
            self._inflight = None

    def _reject(self, rej: dict[str, Any], bodies: list[bytes]) -> None:
        i = rej.get("index")
        body = bodies[i] if isinstance(i, int) and 0 <= i < len(bodies) else None
        self.outbox.count("rejected")
        log.warning("hub rejected uplink item %s: %s", rej.get("id"), rej.get("reason"))
        if self.on_rejected is not None:
            self.on_rejected(rej, body)

    def _media_loop(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            m = self.outbox.media_head()
            if m is None:
                self.outbox.changed.wait(1.0)
                continue
            try:
                data = Path(m["path"]).read_bytes()
            except OSError as exc:
                log.error("media %s is gone from the outbox folder: %s", m["id"], exc)
                self.outbox.media_done(m["id"], failed=True)
                continue
            status = self.http.put_media(self.node, m["id"], data, sha256=m["sha256"], content_type=m["content_type"],
                                         upload_id=m["upload_id"])
            if status is not None and 200 <= status < 300:
                self.outbox.media_done(m["id"])
                backoff = 0.5
            elif status is not None and 400 <= status < 500 and status not in (401, 403, 404, 408, 429):
                log.error("hub refused media %s with %d: kept as failed", m["id"], status)
                self.outbox.media_done(m["id"], failed=True)
            else:
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30)

    def stats(self) -> dict[str, Any]:
        return {**self.outbox.stats(), "sent": self.sent, "resent": self.resent, "acks": self.acks,
                "last_ack_at": self.last_ack_at, "connected": self.link.connected.is_set()}
