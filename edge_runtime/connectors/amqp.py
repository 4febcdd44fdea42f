"""AMQP 0-9-1 devices: readings consumed from a queue (RabbitMQ), acknowledged once they are in the Device Bus.

A binding ``connector: amqp, queue: <name>`` (optional ``url_env``, else node.yaml ``amqp: {url_env}``,
else ``amqp://guest:guest@127.0.0.1:5672/%2F``; ``prefetch``; ``declare``). Each message is one JSON
reading (or a list), decoded with the binding's ``mapping`` / ``ts_field`` like MQTT payloads.

Acknowledgements are manual: the readings of a burst of deliveries go to the Device Bus first, then one
``basic_ack(multiple=True)`` covers them. A node that dies before that leaves them unacknowledged, and the
broker delivers them again. A reading the product refuses is a dead letter with its reason on the node
and is then acknowledged: it is kept, not redelivered for ever.

Client: pika (1.x), the RabbitMQ team's own Python client. Its blocking connection fits the node's model
of a thread per connector (aio-pika would need an asyncio loop in a node that has none). Each queue has
its own thread and connection: an unreachable broker, a refused login or a missing queue is a status
with the reason and a reconnect with backoff (0.5 s growing with jitter to 30 s), and never delays the
others (each queue has its own connection).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..backoff import Backoff
from ..devices.readings import MAPPING_OPTIONS, FieldBinding, check_mapping, json_records
from ..records import RecordError
from ..sections import env_secret, setting
from .base import BindingCheck, Connector, NodeContext

if TYPE_CHECKING:
    from ..devices.catalog import DeviceBinding
    from ..metrics import ConnectorFamilies, Family

__all__ = ["AmqpConfig", "AmqpConnector", "DEFAULT_URL"]

log = logging.getLogger("edgeloop.amqp")
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


@dataclass(frozen=True)
class AmqpConfig:
    """The AMQP broker of amqp devices without their own url_env (node.yaml amqp:)."""

    #: the broker URL, from the environment variable ``url_env`` names
    url: str | None = setting(None, env_secret, "the environment variable holding amqp://user:password@host:5672/vhost",
                              key="url_env")


class _Consumer:
    """One queue on one broker: a connection on a thread of its own, counters."""

    def __init__(self, url: str, bus: Any, max_payload: int) -> None:
        self.url, self.bus, self.max_payload = url, bus, max_payload
        self.queues: dict[str, tuple[FieldBinding, dict[str, Any]]] = {}
        self.received = self.accepted = self.refused = self.reconnects = 0
        self.connected = False
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="amqp-consumer", daemon=True)
        self._pending: list[dict[str, Any]] = []
        self._last_tag = 0

    def _on_message(self, queue: str, method: Any, body: bytes) -> None:
        fb, _ = self.queues[queue]
        self.received += 1
        self._last_tag = method.delivery_tag
        source = f"amqp:{queue}"
        try:
            if len(body) > self.max_payload:
                raise RecordError(f"message of {len(body)} bytes, over the limit of {self.max_payload}")
            records = json_records(fb, body, time.time())
            self._pending.extend(records)  # a message is taken whole or refused whole
        except RecordError as exc:
            self.refused += 1
            self.bus.dead(source, exc.reason, device=fb.device, raw=body[:1024])

    def _run(self) -> None:
        import pika

        backoff = Backoff(0.5, 30.0)
        while not self._stop.is_set():
            conn = None
            try:
                conn = pika.BlockingConnection(pika.URLParameters(self.url))
                ch = conn.channel()
                ch.basic_qos(prefetch_count=max(opt.get("prefetch", 1000) for _, opt in self.queues.values()))
                for queue, (_, opt) in self.queues.items():
                    if opt.get("declare", False):
                        ch.queue_declare(queue, durable=True)
                    ch.basic_consume(queue, lambda _c, m, _p, b, q=queue: self._on_message(q, m, b), auto_ack=False)
                self.connected, self.last_error = True, None
                backoff.reset()
                while not self._stop.is_set():
                    conn.process_data_events(time_limit=0.05)
                    if self._last_tag:
                        if self._pending:
                            self.bus.submit(self._pending)  # in the Device Bus first...
                            self.accepted += len(self._pending)
                            self._pending = []
                        ch.basic_ack(self._last_tag, multiple=True)  # ...then acknowledged
                        self._last_tag = 0
            except Exception as exc:  # pika's connection, channel and auth errors, and the broker going away
                self.connected = False
                self._pending, self._last_tag = [], 0  # unacknowledged: the broker delivers them again
                self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                self.reconnects += 1
                wait = backoff.next()
                log.warning("AMQP %s: %s; retrying in %.1f s", _safe(self.url), self.last_error, wait)
                self._stop.wait(wait)
            finally:
                if conn is not None and conn.is_open:
                    with contextlib.suppress(Exception):  # closing a broken connection
                        conn.close()
        self.connected = False

    def stats(self) -> dict[str, Any]:
        return {"url": _safe(self.url), "queues": sorted(self.queues), "connected": self.connected,
                "received": self.received, "accepted": self.accepted, "refused": self.refused,
                "reconnects": self.reconnects, "last_error": self.last_error}


def _safe(url: str) -> str:
    """The URL without its password, for logs and heartbeats."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    cred, _, host = rest.rpartition("@")
    return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}"


class AmqpConnector(Connector):
    """AMQP 0-9-1 devices: JSON readings consumed from queues, acknowledged once on the bus."""

    name = "amqp"
    options: ClassVar[dict[str, str]] = {
        "queue": "the AMQP 0-9-1 queue the device's readings arrive in",
        "url_env": "environment variable with the broker URL (else the node's amqp.url_env, else local guest)",
        "prefetch": "unacknowledged messages in flight (1000)", "declare": "declare the queue, durable (false)",
        **MAPPING_OPTIONS}
    settings = AmqpConfig
    idle_stats = None

    @classmethod
    def check(cls, b: BindingCheck) -> None:
        options = b.options
        queue = options.get("queue")
        if not isinstance(queue, str) or not queue or len(queue) > 255:
            raise b.error("expected the name of the queue the readings arrive in", "queue",
                          at="queue" if "queue" in b.spec else "connector")
        prefetch = options.setdefault("prefetch", 1000)
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or not 1 <= prefetch <= 65535:
            raise b.error(f"expected 1..65535 messages, got {prefetch!r}", "prefetch")
        if not isinstance(options.setdefault("declare", False), bool):
            raise b.error("expected true or false", "declare")
        check_mapping(b)

    @classmethod
    def metric_families(cls, stats: Any, node: str, shared: ConnectorFamilies) -> list[Family]:
        for c in stats or []:
            src = ",".join(c.get("queues") or [])
            shared.accepted.add(c.get("accepted"), node=node, connector="amqp", source=src)
            shared.errors.add(c.get("refused"), node=node, connector="amqp", source=src)
            shared.connected.add(c.get("connected"), node=node, connector="amqp", source=src)
        return []

    def __init__(self, ctx: NodeContext, bindings: list[DeviceBinding]) -> None:
        super().__init__(ctx, bindings)
        default_url = ctx.settings.url if ctx.settings is not None else None
        self.consumers: dict[str, _Consumer] = {}
        for b in bindings:
            url = os.environ.get(str(b.options["url_env"])) if b.options.get("url_env") else None
            url = url or default_url or DEFAULT_URL
            # a connection per queue: a missing queue or a refused login is that device's problem alone
            c = self.consumers.setdefault(f"{url} {b.options['queue']}", _Consumer(url, ctx.bus, ctx.max_payload))
            c.queues[b.options["queue"]] = (FieldBinding(b, ctx.catalog.products[b.product]), b.options)
        if self.consumers:
            logging.getLogger("pika").setLevel(logging.CRITICAL)  # its errors are ours, said once with the reason

    def start(self) -> None:
        for c in self.consumers.values():
            c._thread.start()

    def stop(self) -> None:
        for c in self.consumers.values():
            c._stop.set()
        for c in self.consumers.values():
            c._thread.join(10)

    def stats(self) -> list[dict[str, Any]]:
        return [c.stats() for c in self.consumers.values()]
