"""paho's MQTT client, made fast for the node: no Nagle, buffered reads, a fast path for PUBLISH packets."""

from __future__ import annotations

import contextlib
import socket
import ssl
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

__all__ = ["BufferedClient"]


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

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        if self._sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        fast = self.fast_publish is not None
        for _ in range(max(max_packets, self.max_burst)):
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            if fast and self._fast_publish_one():
                continue
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                break
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _loop(self, timeout: float = 1.0) -> MQTTErrorCode:
        if self._rpos < len(self._rbuf) and self._sock is not None:
            rc = self.loop_read()  # buffered bytes: select() would not see them
            if rc or self._sock is None:
                return rc
            timeout = 0.0
        return super()._loop(timeout)
