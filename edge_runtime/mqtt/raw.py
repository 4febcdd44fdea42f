"""A minimal MQTT 3.1.1 QoS 0 publisher for the telemetry fast path.

Republishing every record through paho costs tens of microseconds a message
(a locked queue and a wake-up of its network thread per publish). Telemetry is
QoS 0 and best effort (every record is also in the node's local store), so the
Device Bus writes a whole micro-batch of ready-made PUBLISH packets with one
``sendall`` on its own connection instead. Lost connections are counted and
retried with backoff (0.2 s growing to 10 s, jittered); publishing never blocks
the bus for long: while it waits, what would be sent is counted as dropped.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
import uuid
from typing import Iterable

from ..backoff import Backoff

__all__ = ["RawPublisher", "publish_packet"]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack(">H", len(raw)) + raw


def publish_packet(topic: str | bytes, payload: bytes) -> bytes:
    """One QoS 0 PUBLISH packet."""
    t = topic.encode() if isinstance(topic, str) else topic
    body_len = 2 + len(t) + len(payload)
    return b"\x30" + _varint(body_len) + struct.pack(">H", len(t)) + t + payload


class RawPublisher:
    """QoS 0 publishing over one plain (or TLS) socket, reconnecting with backoff."""

    def __init__(self, host: str, port: int, *, client_id: str | None = None, username: str | None = None,
                 password: str | None = None, keepalive: int = 30, tls: bool = False,
                 ca_certs: str | None = None, timeout: float = 2.0) -> None:
        self.host, self.port = host, port
        self.client_id = client_id or f"edgeloop-tel-{uuid.uuid4().hex[:8]}"
        self.username, self.password = username, password
        self.keepalive = keepalive
        self.tls, self.ca_certs = tls, ca_certs
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.sent = 0
        self.dropped = 0
        self.connects = 0
        self.last_error: str | None = None
        self._last_send = 0.0
        self._retry_at = 0.0
        self._backoff = Backoff(0.2, 10.0)

    def _connect(self) -> bool:
        now = time.monotonic()
        if now < self._retry_at:
            return False
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            if self.tls:
                ctx = ssl.create_default_context(cafile=self.ca_certs)
                sock = ctx.wrap_socket(sock, server_hostname=self.host)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            flags = 0x02  # clean session
            payload = _utf8(self.client_id)
            if self.username:
                flags |= 0x80
                payload += _utf8(self.username)
                if self.password:
                    flags |= 0x40
                    payload += _utf8(self.password)
            var = _utf8("MQTT") + bytes([4, flags]) + struct.pack(">H", self.keepalive)
            body = var + payload
            sock.sendall(b"\x10" + _varint(len(body)) + body)
            ack = b""
            while len(ack) < 4:
                chunk = sock.recv(4 - len(ack))
                if not chunk:
                    raise ConnectionError("broker closed the connection before CONNACK")
                ack += chunk
            if ack[0] != 0x20 or ack[3] != 0:
                raise ConnectionError(f"broker refused the connection (CONNACK return code {ack[3]})")
            sock.setblocking(True)
            sock.settimeout(self.timeout)
        except (OSError, ConnectionError) as exc:
            self.last_error = str(exc)
            self._retry_at = now + self._backoff.next()
            return False
        self.sock = sock
        self.connects += 1
        self._backoff.reset()
        self._last_send = time.monotonic()
        return True

    def publish_many(self, items: Iterable[tuple[str, bytes]]) -> int:
        """Send (topic, payload) pairs as QoS 0; returns how many went out (the rest are counted dropped)."""
        packets = [publish_packet(t, p) for t, p in items]
        if not packets:
            return 0
        if self.sock is None and not self._connect():
            self.dropped += len(packets)
            return 0
        now = time.monotonic()
        if now - self._last_send > self.keepalive / 2:
            packets.append(b"\xc0\x00")  # PINGREQ keeps the connection alive through quiet spells
            self._drain()
        try:
            self.sock.sendall(b"".join(packets))  # type: ignore[union-attr]
        except OSError as exc:
            self.last_error = str(exc)
            self.close()
            self.dropped += len(packets)
            return 0
        self._last_send = now
        self.sent += len(packets)
        return len(packets)

    def _drain(self) -> None:
        """Discard PINGRESPs the broker sent back."""
        if self.sock is None:
            return
        try:
            while self.sock.recv(4096, socket.MSG_DONTWAIT):
                pass
        except (BlockingIOError, ssl.SSLWantReadError):
            pass
        except OSError:
            self.close()

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.sendall(b"\xe0\x00")  # DISCONNECT
            except OSError:
                pass
            self.sock.close()
            self.sock = None
